"""The notebooks' parameters, generated from the scenario specs (:mod:`vizkit.scenarios.registry`): per
notebook, every parameter's types, allowed values and help as its scenario module declares them
(``notebook_parameters()``), with the default its ``parameters`` cell assigns (read from the jupytext pair)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from .util import ROOT, md_cell, write_if_changed


def cell_defaults(notebook_py: Path) -> dict[str, str]:
    """``name -> source of the default`` of the ``parameters`` cell of a jupytext percent pair."""
    text = notebook_py.read_text(encoding="utf-8")
    cells = text.split("\n# %%")
    for cell in cells:
        header, _, body = cell.partition("\n")
        if "parameters" not in header:
            continue
        tree = ast.parse(body)
        out = {}
        for node in tree.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                out[node.target.id] = ast.get_source_segment(body, node.value) or ""
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        out[target.id] = ast.get_source_segment(body, node.value) or ""
        return out
    raise ValueError(f"{notebook_py}: no cell tagged parameters")


def _types(types: tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in types)


def _choices(choices: Any) -> str:
    if not choices:
        return ""
    return ", ".join(f"`{c!r}`" for c in choices)


def page() -> str:
    """The markdown source of the notebook parameters page."""
    from vizkit.scenarios.registry import SCENARIOS

    out = [
        "# Notebook parameters",
        "",
        "Generated from the scenario registry (`vizkit/scenarios/registry.py`) and each scenario module's",
        "`notebook_parameters()` (`make docs`); the defaults are the notebook's `parameters` cell. Set them with",
        "`papermill -p NAME VALUE`, `vizkit run NOTEBOOK -p NAME VALUE` (or `-f params.yaml`, `--grid grid.yaml`),",
        "or edit the cell in JupyterLab. Every value is checked by the notebook's own validator before any",
        "work: an unknown name gets the closest valid one, a bad value what is allowed.",
        "",
    ]
    for spec in SCENARIOS.values():
        py = ROOT / "notebooks" / f"{spec.notebook_stem}.py"
        defaults = cell_defaults(py)
        controls = ", ".join(f"{c['label']} ({c['kind']})" for c in spec.controls)
        out += [
            f"(params-{spec.stem})=",
            f"## {spec.number:02d} · {spec.title}",
            "",
            f"Notebook `notebooks/{spec.notebook}` ({{doc}}`tutorial <../tutorials/{spec.notebook_stem}>`), "
            f"module `{spec.module}`, explorer `{spec.explorer}` (controls: {controls}).",
            "",
            "| parameter | type | default | allowed | what it sets |",
            "|---|---|---|---|---|",
        ]
        for p in spec.parameters():
            default = defaults.get(p.name)
            out.append(
                f"| `{p.name}` | {_types(p.types)} | {md_cell(f'`{default}`') if default is not None else ''} "
                f"| {md_cell(_choices(p.choices))} | {md_cell(p.help)} |"
            )
        if spec.ui_parameters:
            shown = ", ".join(f"`{k} = {v!r}`" for k, v in spec.ui_parameters.items())
            out += ["", f"The browser test (`make ui-test`) runs it with {shown}."]
        out += [""]
    return "\n".join(out)


def write(path: Path) -> Path:
    write_if_changed(path, page())
    return path
