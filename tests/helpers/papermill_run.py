"""The scenario notebooks run headless through papermill (a helper module, not a test)."""

from pathlib import Path

import nbformat
import papermill as pm

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def run(name: str, tmp_path: Path, **parameters) -> nbformat.NotebookNode:
    """Execute notebooks/NAME.ipynb with ``parameters`` in the notebooks folder; the executed copy is
    written to ``tmp_path`` and returned."""
    out = tmp_path / f"{name}.out.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(out),
        kernel_name="python3",
        cwd=str(NOTEBOOKS),
        parameters=parameters,
        progress_bar=False,
    )
    return nbformat.read(out, as_version=4)
