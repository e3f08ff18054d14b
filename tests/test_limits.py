"""Limits that keep the code readable (docs/design.md, "Limits"): checked on every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import workcrew

PACKAGE = Path(workcrew.__file__).parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
# A suppression comment (noqa or type: ignore) must be followed by its reason.
SUPPRESSION = re.compile(r"#\s*(noqa(?::\s*[A-Z0-9, ]+)?|type:\s*ignore(?:\[[^\]]*\])?)(.*)")

MODULES = sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_a_module_fits_in_a_sitting(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, (
        f"{_name(path)} has {lines} lines (at most {MAX_MODULE_LINES}): split it by idea"
    )


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_a_function_fits_on_a_screen(path: Path) -> None:
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{_name(path)}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def unexplained_suppressions(text: str) -> list[int]:
    """Line numbers of ``noqa`` / ``type: ignore`` comments that give no reason."""
    bare = []
    for number, line in enumerate(text.splitlines(), 1):
        match = SUPPRESSION.search(line)
        if match and not match.group(2).lstrip(" -#:").strip():
            bare.append(number)
    return bare


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_every_suppression_says_why(path: Path) -> None:
    bare = unexplained_suppressions(path.read_text())
    assert not bare, f"{_name(path)}: noqa/type: ignore without a reason on lines {bare}"


def test_the_suppression_check_tells_reasons_from_none() -> None:
    text = "\n".join(
        [
            "x = 1  # noqa: BLE001",
            "y = 2  # noqa: BLE001 - the caller's own error",
            "z = 3  # type: ignore[attr-defined]",
            "w = 4  # type: ignore[attr-defined]  # private attribute",
        ]
    )
    assert unexplained_suppressions(text) == [1, 3]
