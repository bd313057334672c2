"""Notebook plumbing shared by every scenario notebook: parameter validation (run folders are
:mod:`vizkit.runs`; ``run_folder`` is re-exported here).

The notebook convention (see CONTRIBUTING.md): the first code cell imports and records
``_before = baseline(globals())``; the next cell, tagged ``parameters``, assigns the
parameters; papermill injects overrides after it; the cell after that calls
``check_parameters(globals(), _before, SPEC)``, which rejects unknown names and invalid
values before any work is done.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ParameterError
from .runs import run_folder, runs_root

__all__ = ["Param", "ParameterError", "baseline", "check_parameters", "validate", "positive", "run_folder", "runs_root"]


@dataclass(frozen=True)
class Param:
    """A parameter: its accepted types, allowed choices and an extra check returning an error or None."""

    name: str
    types: tuple[type, ...]
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None
    help: str = ""


def baseline(namespace: Mapping[str, Any]) -> frozenset[str]:
    """The names defined before the parameters cell (call it as the last line of the import cell)."""
    return frozenset(namespace) | {"_before"}


def check_parameters(namespace: Mapping[str, Any], before: Iterable[str], spec: Iterable[Param]) -> dict[str, Any]:
    """Validate the parameters defined after ``before``; return them as a dict.

    Unknown names (a typo in ``papermill -p``) and invalid values raise one
    :class:`ParameterError` listing every problem.
    """
    spec = {p.name: p for p in spec}
    before = set(before)
    new = [n for n in namespace if n not in before and not n.startswith("_")]
    problems = []
    for name in new:
        if name not in spec:
            close = difflib.get_close_matches(name, list(spec), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"unknown parameter {name!r}{hint}")
    values = {}
    for name, p in spec.items():
        if name not in namespace:
            problems.append(f"parameter {name!r} is missing from the parameters cell")
            continue
        value = namespace[name]
        values[name] = value
        problem = validate(p, value)
        if problem:
            problems.append(problem)
    if problems:
        valid = ", ".join(spec)
        raise ParameterError(
            "invalid notebook parameters:\n  - " + "\n  - ".join(problems) + f"\nvalid parameters: {valid}"
        )
    return values


def validate(p: Param, value: Any) -> str | None:
    """The problem with ``value`` for parameter ``p``, or None."""
    if isinstance(value, bool) and bool not in p.types:
        return f"{p.name}={value!r}: expected {_type_names(p.types)}"
    if not isinstance(value, p.types):
        return f"{p.name}={value!r}: expected {_type_names(p.types)}, got {type(value).__name__}"
    if p.choices is not None and value not in p.choices:
        return f"{p.name}={value!r}: choose one of {', '.join(repr(c) for c in p.choices)}"
    if p.check is not None:
        problem = p.check(value)
        if problem:
            return f"{p.name}={value!r}: {problem}"
    return None


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)


def positive(value: Any) -> str | None:
    """A :class:`Param` check: None for a value above 0, else the problem."""
    return None if value > 0 else "must be positive"
