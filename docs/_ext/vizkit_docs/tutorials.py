"""The tutorials: the committed, executed scenario notebooks, shown with their outputs as committed (the docs
build never executes them).

Each ``notebooks/NN_<stem>.ipynb`` is copied to ``docs/tutorials/`` with three changes that concern only the
page: a "Run it yourself" cell after the title cell; the live widgets, which need a kernel, replaced by a
note (the explorer, with its controls from the scenario registry) or dropped (tqdm progress bars, whose
text form is a frozen ``0%``); and the saved widget state removed from the metadata, so the page loads no
widget manager from elsewhere. Everything else (figures, printed tables, notebook 05's video embedded as
an mp4) is the notebook's own output.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from .util import ROOT, write_if_changed

WIDGET = "application/vnd.jupyter.widget-view+json"
_PROGRESS = re.compile(r"\d+%\|")


def notebooks() -> list[Path]:
    """The scenario notebooks, ``notebooks/NN_<stem>.ipynb``, in order."""
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def run_yourself(spec: Any) -> str:
    """The "Run it yourself" note of one notebook."""
    nb = f"notebooks/{spec.notebook}"
    lines = [
        ":::{admonition} Run it yourself",
        ":class: tip",
        "",
        f"Headless, into a run folder: `vizkit run {nb} --output-dir runs/nb{spec.number:02d}` (add",
        "`-p NAME VALUE` to change a parameter), or with papermill:",
        f"`.venv/bin/papermill -k python3 {nb} out.ipynb -p interactive False`.",
        f"Interactive, with the explorer: `.venv/bin/jupyter lab {nb}`, then *Run All*.",
        f"The parameters are listed in {{ref}}`params-{spec.stem}`. This page shows the notebook's committed",
        "outputs as executed (the docs build does not run it); the widget explorer needs a running kernel.",
        ":::",
    ]
    return "\n".join(lines)


def _note(spec: Any) -> dict[str, Any]:
    controls = ", ".join(f"*{c['label']}* ({c['kind']})" for c in spec.controls)
    text = (
        f"**Interactive explorer** (`{spec.explorer}`, controls: {controls}): a live widget that needs a running "
        "kernel. Run the notebook in JupyterLab to use it; every figure it shows is also written to the run folder."
    )
    return {"output_type": "display_data", "data": {"text/markdown": text}, "metadata": {}}


def page_notebook(nb: dict[str, Any], spec: Any) -> dict[str, Any]:
    """The notebook as its tutorial page shows it (see the module docstring)."""
    nb = copy.deepcopy(nb)
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET in data:
                text = "".join(data.get("text/plain", ""))
                if _PROGRESS.search(text):
                    continue  # a tqdm bar: its text form is the bar at 0 %
                outputs.append(_note(spec))
                continue
            outputs.append(out)
        cell["outputs"] = outputs
    note = {"cell_type": "markdown", "id": "run-it-yourself", "metadata": {}, "source": run_yourself(spec)}
    nb["cells"].insert(1, note)
    return nb


def write(folder: Path) -> list[Path]:
    """Write the tutorial copies into ``folder``; returns their paths."""
    from vizkit.scenarios.registry import get_scenario

    paths = []
    for path in notebooks():
        spec = get_scenario(path)
        nb = page_notebook(json.loads(path.read_text(encoding="utf-8")), spec)
        target = folder / path.name
        write_if_changed(target, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        paths.append(target)
    return paths
