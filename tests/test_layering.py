"""The layering rule of docs/design.md, read from every module's imports (lazy ones included).

Each row of the design's layer table is one test here: a module may import, of workcrew,
only what its layer allows.  Every module must belong to a layer, so a new room has to be
placed in the table (and in design.md) before its imports can pass.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import workcrew

PACKAGE = Path(workcrew.__file__).parent


@dataclass(frozen=True)
class Layer:
    """A row of design.md's table: where its modules live and what of workcrew they may import."""

    name: str
    places: tuple[str, ...]  # module names (dotted, under workcrew) or packages ending in ".*"
    may_import: tuple[str, ...]  # the same; "workcrew" alone is the public API's package


LAYERS = (
    Layer("core", ("_core.*",), ("_core.*",)),
    Layer("sharing", ("_sharing.*",), ("_core.*", "_sharing.*")),
    Layer("worker kinds", ("_backends.*",), ("_core.*", "_sharing.*", "_backends.*")),
    Layer("displays", ("_display.*",), ("_display.*",)),
    Layer(
        "front ends",
        ("_front.*",),
        ("_core.*", "_display.*", "_front.*", "_backends"),  # the registry, not a worker kind
    ),
    Layer(
        "public API",
        ("__init__",),
        ("_core.*", "_sharing.*", "_front.*", "_display.*"),
    ),
    Layer("command line", ("_cli.*", "__main__"), ("workcrew", "_cli.*")),
    Layer("integrations", ("joblib",), ("workcrew", "_display.*")),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts)  # "_core._master", "_core.__init__", "__init__"


def _package_of(module: str) -> list[str]:
    parts = module.split(".")
    return parts[:-1]  # a module's package (for __init__, the package itself)


def imports_of(path: Path) -> set[str]:
    """The workcrew modules ``path`` imports, as names under workcrew ("" = workcrew itself)."""
    found: set[str] = set()
    here = _package_of(_module_name(path))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            elif node.module and (node.module + ".").startswith("workcrew."):
                target = node.module.removeprefix("workcrew").lstrip(".")
            else:
                continue
            found.add(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if (alias.name + ".").startswith("workcrew."):
                    found.add(alias.name.removeprefix("workcrew").lstrip("."))
    return found


def _matches(module: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern == "workcrew":
            if module == "":
                return True
        elif pattern.endswith(".*"):
            package = pattern[:-2]
            if module == package or module.startswith(package + "."):
                return True
        elif module == pattern or module == pattern + ".__init__":
            return True
    return False


def _modules() -> list[str]:
    return sorted(_module_name(p) for p in PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_exactly_one_layer() -> None:
    for module in _modules():
        homes = [layer.name for layer in LAYERS if _matches(module, layer.places)]
        assert len(homes) == 1, f"workcrew.{module} belongs to {homes or 'no layer'}"


@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.name)
def test_a_layer_imports_only_what_design_md_allows(layer: Layer) -> None:
    mine = [m for m in _modules() if _matches(m, layer.places)]
    assert mine, f"layer {layer.name} has no modules: is the table out of date?"
    for module in mine:
        path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
        for target in imports_of(path):
            assert _matches(target, layer.may_import), (
                f"workcrew.{module} ({layer.name}) imports "
                f"{'workcrew.' + target if target else 'workcrew'}, which its layer may not "
                f"(allowed: {', '.join(layer.may_import)}; see docs/design.md)"
            )


def test_the_reader_of_imports_sees_relative_lazy_and_absolute_imports(tmp_path: Path) -> None:
    # The rule is only as good as the reader: check it on the shapes imports take here.
    path = PACKAGE / "_front" / "_pool.py"
    seen = imports_of(path)
    assert "_core._options" in seen  # relative, two levels up
    assert "_front._shared" in seen  # relative, same package
    assert "_backends" in seen  # a package's __init__
    cli = imports_of(PACKAGE / "_cli" / "_main.py")
    assert "" in cli  # `import workcrew`
    assert "_cli._advise" in cli  # a lazy import inside a function
