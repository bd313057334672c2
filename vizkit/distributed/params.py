"""A notebook's parameters, read from its ``parameters`` cell and validated before anything runs.

The cell assigns literals with type annotations (``num_samples: int = 8  # comment``); the cell
after it calls the scenario's ``check_notebook_parameters(globals(), _before)``. :func:`read_notebook`
parses the parameters cell (``ast``, nothing executed) and takes the notebook's validator from a
lookup by the notebook's stem: the caller passes the scenario registry's
(:func:`vizkit.scenarios.registry.notebook_validator`; this layer does not import the scenarios).
:meth:`NotebookSpec.validate` then calls that same function on the defaults merged with the
overrides, so the rule lives in one place: an unknown name suggests the closest valid one, a bad
value says what is allowed. A notebook the lookup does not know (or read without one) is checked
against the annotations of its parameters cell.

Grids (``--grid grid.yaml``): a mapping ``name: [values...]`` (the cartesian product) or a list
of mappings (explicit runs). No dask here: this module is imported by the CLI before any cluster.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, ParameterError

__all__ = [
    "NotebookSpec",
    "Validator",
    "ValidatorLookup",
    "read_notebook",
    "parse_value",
    "load_yaml_mapping",
    "load_grid",
    "expand_grid",
    "run_name",
    "RESERVED",
]

#: a notebook's own check, ``check(namespace, names_defined_before_the_parameters_cell) -> parameters``, which
#: raises :class:`ParameterError` listing every problem (a scenario module's ``check_notebook_parameters``)
Validator = Callable[[Mapping[str, Any], Iterable[str]], dict[str, Any]]
#: notebook stem (``02_vit_mnist_attention``) -> its validator, or None for a notebook it does not know
ValidatorLookup = Callable[[str], "Validator | None"]

#: parameters ``vizkit run`` sets itself: each run writes into its own folder, without widgets
RESERVED = ("output_dir",)
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
}


@dataclass
class NotebookSpec:
    """``defaults`` (name -> value, in cell order), ``types`` (name -> accepted types from the
    annotation, or None), ``comments`` (the trailing comments) and ``validator`` (the notebook's
    own check, or None: the annotations are checked)."""

    path: Path
    defaults: dict[str, Any]
    types: dict[str, tuple[type, ...] | None]
    comments: dict[str, str] = field(default_factory=dict)
    validator: Validator | None = None

    @property
    def stem(self) -> str:
        return self.path.stem

    def parse_value(self, name: str, raw: str) -> Any:
        """A ``-p NAME VALUE`` string as the parameter's type: kept as text for a ``str``
        parameter, else read as YAML (``3``, ``0.5``, ``true``, ``[1, 2]``)."""
        return parse_value(raw, self.types.get(name))

    def validate(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """All parameters (defaults + ``overrides``) once the notebook's own check accepts them;
        else one :class:`ParameterError` listing every problem."""
        namespace = {**self.defaults, **dict(overrides)}
        if self.validator is not None:
            self.validator(namespace, frozenset())
            return namespace
        problems = []
        for name in overrides:
            if name not in self.defaults:
                close = difflib.get_close_matches(name, list(self.defaults), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                problems.append(f"unknown parameter {name!r}{hint}")
            else:
                types, value = self.types.get(name), overrides[name]
                if types and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
                    names = " or ".join(t.__name__ for t in types)
                    problems.append(f"{name}={value!r}: expected {names}, got {type(value).__name__}")
        if problems:
            raise ParameterError(
                "invalid notebook parameters:\n  - "
                + "\n  - ".join(problems)
                + f"\nvalid parameters: {', '.join(self.defaults)}"
            )
        return namespace


def parse_value(raw: str, types: tuple[type, ...] | None = None) -> Any:
    """``raw`` as the given types: kept as text when ``str`` is one of them, else read as YAML."""
    if types and str in types:
        return raw
    import yaml

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _code(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def read_notebook(path: str | Path, validator_for: ValidatorLookup | None = None) -> NotebookSpec:
    """The parameters of the notebook at ``path``, with the validator ``validator_for`` gives for the
    notebook's stem (see the module docstring): ``vizkit run`` passes the scenario registry's
    :func:`~vizkit.scenarios.registry.notebook_validator`."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.parent.is_dir():
            close = difflib.get_close_matches(path.name, [p.name for p in path.parent.glob("*.ipynb")], n=1)
            hint = f" (did you mean {str(path.parent / close[0])!r}?)" if close else ""
        raise InputError(f"notebook {str(path)!r} does not exist{hint}")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = [c for c in nb["cells"] if c.get("cell_type") == "code"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise InputError(f"{str(path)!r} is not a Jupyter notebook: {err}") from err
    where = next((i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if where is None:
        raise InputError(f"notebook {str(path)!r} has no cell tagged 'parameters': papermill cannot set its parameters")
    source = _code(cells[where])
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise InputError(f"the parameters cell of {str(path)!r} is not valid Python: {err}") from err
    defaults: dict[str, Any] = {}
    types: dict[str, tuple[type, ...] | None] = {}
    comments: dict[str, str] = {}
    lines = source.splitlines()
    for node in tree.body:
        target = (
            node.target
            if isinstance(node, ast.AnnAssign)
            else (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        )
        if not isinstance(target, ast.Name) or node.value is None:
            continue
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            continue  # not a literal: papermill can still override it, but it has no default we can read
        defaults[target.id] = value
        ann = ast.unparse(node.annotation) if isinstance(node, ast.AnnAssign) else ""
        types[target.id] = _TYPES.get(ann)
        line = lines[node.lineno - 1]
        comments[target.id] = line.split("#", 1)[1].strip() if "#" in line else ""
    validator = validator_for(path.stem) if validator_for is not None else None
    return NotebookSpec(path, defaults, types, comments, validator)


def load_yaml_mapping(path: str | Path, what: str = "parameter file") -> Any:
    """The YAML document at ``path`` (an :class:`InputError` when missing or malformed)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(f"{what} {str(path)!r} is not valid YAML: {err}") from err


def load_grid(path: str | Path) -> list[dict[str, Any]]:
    """The runs of a grid file (see :func:`expand_grid`)."""
    return expand_grid(load_yaml_mapping(path, "grid file"), str(path))


def expand_grid(grid: Any, where: str = "the grid") -> list[dict[str, Any]]:
    """A mapping of parameter -> list of values (the cartesian product, first key varying slowest)
    or a list of mappings (explicit runs) -> the list of runs."""
    if isinstance(grid, list) and grid and all(isinstance(r, dict) for r in grid):
        if any(not all(isinstance(k, str) for k in r) for r in grid):
            raise InputError(f"{where}: every run of the list must map parameter names to values")
        return [dict(r) for r in grid]
    if not isinstance(grid, dict) or not grid:
        raise InputError(
            f"{where} must be a mapping of parameter -> list of values (or a list of mappings), got "
            f"{type(grid).__name__ if grid is not None else 'an empty file'}"
        )
    bad = [k for k, v in grid.items() if not isinstance(v, list) or not v]
    if bad:
        raise InputError(
            f"{where} must be a mapping of parameter -> list of values: "
            + ", ".join(f"{k!r} is {grid[k]!r}" for k in bad)
            + f" (write e.g. {bad[0]}: [{grid[bad[0]]!r}])"
        )
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value) or "empty"
    return "empty" if value == "" else str(value)


def run_name(params: Mapping[str, Any], keys: Sequence[str] | None = None, limit: int = 96) -> str:
    """A folder name from the parameters ``keys`` (default all): ``num_samples=4__head_fusion=max``;
    characters outside ``[A-Za-z0-9_.,=+-]`` become ``_``; a long name is cut and ends in a hash."""
    keys = list(params) if keys is None else [k for k in keys if k in params]
    if not keys:
        return "defaults"
    name = "__".join(f"{k}={_text(params[k])}" for k in keys)
    name = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", name)
    if len(name) > limit:
        digest = hashlib.sha1(json.dumps({k: params[k] for k in keys}, sort_keys=True, default=str).encode())
        name = name[: limit - 9] + "-" + digest.hexdigest()[:8]
    return name
