"""Pool, Executor and PoolOptions agree with the one declaration of the pool options.

``workcrew._core._options.OPTIONS`` declares each option once: its default, its
PoolOptions field and its keyword in each front end.  The checkers below list
every way a front end's ``__init__``, ``PoolOptions.build``, the PoolOptions
fields or a front end's docstring drift from it; the last test feeds them
mutated copies of the declaration to show each drift is caught.
"""

from __future__ import annotations

import inspect
import multiprocessing.pool
import re
from collections.abc import Callable, Collection
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from operator import attrgetter
from typing import Any

import pytest

from workcrew import Executor, Pool
from workcrew._core._options import OPTIONS, RESOLVED_FIELDS, Option, PoolOptions

Options = tuple[Option, ...]

FRONTS: dict[str, type] = {"Pool": Pool, "Executor": Executor}


#: Options a front end's docstring does not name yet (as ``keyword`` or ``keyword=``).
#: Exact: the test fails as well when one of them gets documented, to strike it here.
def _same(a: object, b: object) -> bool:
    """Equal and of one type: 0, 0.0 and False are three different defaults."""
    return type(a) is type(b) and a == b


def keyword_of(option: Option, front: str) -> str | None:
    """``option``'s keyword in front end ``front``; None when it does not take it."""
    keyword: str | None = getattr(option, front.lower())
    return keyword


def _parameters(function: Callable[..., object]) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(function).parameters)
    params.pop("self", None)
    return params


def _parameter_drift(
    where: str, params: dict[str, inspect.Parameter], declared: dict[str, Option]
) -> list[str]:
    """How ``params`` differ from ``declared`` (by keyword): gained, lost, other defaults."""
    problems = [
        f"{where} takes {name!r}, which no option declares"
        for name in params
        if name not in declared
    ]
    for name, option in declared.items():
        param = params.get(name)
        if param is None:
            problems.append(f"{where} lacks {name!r} (option {option.name!r})")
        elif param.default is not param.empty and not _same(param.default, option.default):
            problems.append(
                f"{where}'s {name}={param.default!r} but option {option.name!r} "
                f"declares {option.default!r}"
            )
    return problems


def signature_drift(front: str, options: Options) -> list[str]:
    """Every way ``front``'s ``__init__`` differs from ``options``: names and defaults."""
    declared = {kw: o for o in options if (kw := keyword_of(o, front)) is not None}
    params = _parameters(FRONTS[front].__init__)
    problems = _parameter_drift(f"{front}.__init__", params, declared)
    # a front end without a default would make the option required
    problems += [
        f"{front}.__init__'s {name!r} has no default"
        for name, param in params.items()
        if name in declared and param.default is param.empty
    ]
    return problems


def build_drift(options: Options) -> list[str]:
    """Every way ``PoolOptions.build`` differs from ``options`` (its count is positional)."""
    declared = {o.name: o for o in options if o.in_build}
    return _parameter_drift("PoolOptions.build", _parameters(PoolOptions.build), declared)


def field_drift(options: Options) -> list[str]:
    """Every way the fields of PoolOptions (and its TaskPolicy) differ from ``options``."""
    declared = {o.field: o for o in options if o.field is not None}
    top = set(PoolOptions._fields)
    named = {path.split(".")[0] for path in declared} | set(RESOLVED_FIELDS)
    problems = [f"PoolOptions.{name} is not declared" for name in sorted(top - named)]
    problems += [
        f"{name!r} is declared but not a PoolOptions field" for name in sorted(named - top)
    ]
    defaults = PoolOptions(workers=1)
    for path, option in declared.items():
        if path.split(".")[0] in RESOLVED_FIELDS or path.split(".")[0] not in top:
            continue  # a resolved field's default is its own; a missing one is reported above
        try:
            value = attrgetter(path)(defaults)
        except AttributeError:
            problems.append(f"option {option.name!r} is kept in {path!r}, which does not exist")
            continue
        if not _same(value, option.default):
            problems.append(f"PoolOptions.{path} defaults to {value!r}, not {option.default!r}")
    for name in sorted(named & top):
        nested = getattr(defaults, name)
        record_fields = getattr(type(nested), "_fields", None)  # a NamedTuple: TaskPolicy
        if record_fields is not None:  # each field of a nested record is an option too
            paths = {f"{name}.{field}" for field in record_fields}
            problems += [f"PoolOptions.{p} is not declared" for p in sorted(paths - set(declared))]
    return problems


def documentation_gaps(front: str, options: Options) -> set[str]:
    """``front``'s keywords that its docstring (class or ``__init__``) does not name."""
    cls = FRONTS[front]
    doc = f"{cls.__doc__ or ''}\n{cls.__init__.__doc__ or ''}"
    keywords = {kw for o in options if (kw := keyword_of(o, front)) is not None}
    return {kw for kw in keywords if not re.search(rf"``{kw}``|\b{kw}=", doc)}


@pytest.mark.parametrize("front", list(FRONTS))
def test_front_end_takes_every_declared_option_with_its_default(front: str) -> None:
    assert signature_drift(front, OPTIONS) == []


def test_build_takes_every_declared_option_with_its_default() -> None:
    assert build_drift(OPTIONS) == []


def test_pool_options_fields_are_the_declared_ones_with_their_defaults() -> None:
    assert field_drift(OPTIONS) == []


@pytest.mark.parametrize("front", list(FRONTS))
def test_front_end_docstring_names_its_options(front: str) -> None:
    gaps = documentation_gaps(front, OPTIONS)
    assert gaps == set(), f"document these in {front}'s docstring"


def test_pool_options_docstring_comes_from_the_declaration() -> None:
    doc = PoolOptions.__doc__ or ""
    for option in OPTIONS:
        assert "\n" not in option.doc and option.doc, f"{option.name}: one line of doc"
        if option.field is not None and option.field not in RESOLVED_FIELDS:
            assert f"``{option.field}``" in doc and option.doc in doc, option.name
    for field, meaning in RESOLVED_FIELDS.items():
        assert f"``{field}``: {meaning}" in doc


@pytest.mark.parametrize(
    ("front", "standard"),
    [("Pool", multiprocessing.pool.Pool), ("Executor", ProcessPoolExecutor)],
)
def test_positional_parameters_are_the_standard_librarys(front: str, standard: type) -> None:
    # drop-in: code passing them by position keeps working
    def positional(cls: type) -> list[tuple[str, object]]:
        params = _parameters(cls.__init__).values()
        return [(p.name, p.default) for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]

    assert positional(FRONTS[front]) == positional(standard)


def _change(name: str, **changes: Any) -> Callable[[Options], Options]:
    return lambda options: tuple(o._replace(**changes) if o.name == name else o for o in options)


def _drop(name: str) -> Callable[[Options], Options]:
    return lambda options: tuple(o for o in options if o.name != name)


def _add(option: Option) -> Callable[[Options], Options]:
    return lambda options: (*options, option)


def _undocumented(front: str) -> Callable[[Options], set[str]]:
    return lambda options: documentation_gaps(front, options)


NEW = Option("spare_workers", 0, "idle workers kept ready", executor=None)
POOL = partial(signature_drift, "Pool")
EXECUTOR = partial(signature_drift, "Executor")


@pytest.mark.parametrize(
    ("mutate", "check", "expected"),
    [
        (_change("workers", pool="procs"), POOL, "takes 'processes', which no option declares"),
        (_change("workers", pool="procs"), POOL, "lacks 'procs'"),
        (_change("chunksize", default=1), EXECUTOR, "chunksize=None but option"),
        (_change("retry_backoff", default=0), POOL, "retry_backoff=0.0 but option"),
        (_change("thread_name_prefix", executor=None), EXECUTOR, "takes 'thread_name_prefix'"),
        (_change("thread_name_prefix", pool="thread_name_prefix"), POOL, "lacks"),
        (_drop("security"), EXECUTOR, "takes 'security'"),
        (_drop("security"), build_drift, "takes 'security'"),
        (_drop("security"), field_drift, "dask_security is not declared"),
        (_drop("retry_on"), field_drift, "policy.retry_on is not declared"),
        (_add(NEW), POOL, "lacks 'spare_workers'"),
        (_add(NEW), build_drift, "lacks 'spare_workers'"),
        (_add(NEW), field_drift, "'spare_workers' is declared but not a PoolOptions field"),
        (_add(NEW), _undocumented("Pool"), "spare_workers"),
        (_change("kind", in_build=False), build_drift, "'kind', which no option declares"),
        (_change("timeline", default=None), build_drift, "timeline=False but option"),
        (_change("timeline", default=None), field_drift, "PoolOptions.timeline defaults"),
        (_change("address", field="dask_addr"), field_drift, "dask_address is not declared"),
        (_change("task_timeout", field="policy.limit"), field_drift, "'policy.limit'"),
    ],
)
def test_each_checker_catches_a_drift_of_the_declaration(
    mutate: Callable[[Options], Options],
    check: Callable[[Options], Collection[str]],
    expected: str,
) -> None:
    assert not check(OPTIONS)  # the real declaration passes ...
    found = check(mutate(OPTIONS))
    assert any(expected in problem for problem in found), found  # ... and a drift does not
