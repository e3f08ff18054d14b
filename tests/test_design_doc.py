"""docs/design.md stays true of the code: every module and test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import workcrew

ROOT = Path(__file__).resolve().parent.parent
DESIGN = (ROOT / "docs" / "design.md").read_text()
PACKAGE = Path(workcrew.__file__).parent


def test_every_test_the_design_names_exists() -> None:
    defined = set()
    for path in (ROOT / "tests").glob("*.py"):
        defined.update(re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE))
    named = set(re.findall(r"\b(test_\w+)(?!\.py)\b", DESIGN)) - {"test_core", "test_layering"}
    named = {name for name in named if not name.endswith("_py")}
    missing = sorted(named - defined)
    assert not missing, f"design.md names tests that do not exist: {missing}"


def test_every_module_the_design_names_exists() -> None:
    named = set(re.findall(r"`(_[a-z_]+/_?[a-z_]+\.py)`", DESIGN))
    assert named, "the reader found no module paths: has the design's notation changed?"
    missing = sorted(path for path in named if not (PACKAGE / path).exists())
    assert not missing, f"design.md names modules that do not exist: {missing}"
