"""Every scenario notebook is a jupytext pair: ``notebooks/NN_<stem>.ipynb`` (executed, with outputs) and
``notebooks/NN_<stem>.py`` (percent format, the cells as text), paired by ``notebooks/jupytext.toml``, and the
two are in sync: the cells jupytext reads from the ``.py`` (type, source, tags) are the ``.ipynb``'s. After an
edit of either, ``make sync-notebooks`` brings the other up to date."""

from __future__ import annotations

import difflib
from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.config import load_jupytext_config

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
IPYNBS = sorted(NOTEBOOKS.glob("*.ipynb"))

Cell = tuple[str, str, tuple[str, ...]]


def cells(nb: nbformat.NotebookNode) -> list[Cell]:
    """(cell type, source, tags) of every cell."""
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def pair_differences(ipynb: Path, py: Path) -> list[str]:
    """What differs between the cells of ``ipynb`` and the cells jupytext reads from ``py`` (empty: in sync)."""
    left, right = cells(nbformat.read(ipynb, as_version=4)), cells(jupytext.read(py))
    out = []
    if len(left) != len(right):
        out.append(f"{py.name} has {len(right)} cells, {ipynb.name} {len(left)}")
    for i, (a, b) in enumerate(zip(left, right)):
        if a[0] != b[0] or a[2] != b[2]:
            out.append(
                f"cell {i}: {ipynb.name} has a {a[0]} cell tagged {list(a[2])}, {py.name} a {b[0]} cell "
                f"tagged {list(b[2])}"
            )
        if a[1] != b[1]:
            diff = difflib.unified_diff(a[1].splitlines(), b[1].splitlines(), ipynb.name, py.name, lineterm="", n=0)
            out.append(f"cell {i} source:\n" + "\n".join(diff))
    return out


def test_every_notebook_has_its_percent_pair() -> None:
    assert [p.name for p in IPYNBS] == [
        f"0{n}_{s}.ipynb"
        for n, s in enumerate(
            (
                "clip_detector_attention",
                "vit_mnist_attention",
                "detector_gradcam_eval",
                "clip_text_gradcam",
                "vlm_attention_video",
            ),
            start=1,
        )
    ]
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.py")) == [p.stem for p in IPYNBS]  # no orphan script either
    for ipynb in IPYNBS:
        assert load_jupytext_config(str(ipynb)).default_formats(str(ipynb)) == "ipynb,py:percent", ipynb.name
        text = jupytext.read(ipynb.with_suffix(".py"))
        assert text.metadata["jupytext"]["text_representation"]["format_name"] == "percent", ipynb.name
        assert text.metadata["kernelspec"]["name"] == "python3", ipynb.name


@pytest.mark.parametrize("ipynb", IPYNBS, ids=[p.stem for p in IPYNBS])
def test_pair_is_in_sync(ipynb: Path) -> None:
    problems = pair_differences(ipynb, ipynb.with_suffix(".py"))
    assert not problems, "\n".join(problems) + "\nrun `make sync-notebooks`"


def test_the_pairs_keep_the_tags_and_checked_cells() -> None:
    for ipynb in IPYNBS:
        found = cells(jupytext.read(ipynb.with_suffix(".py")))
        tags = [t for _, _, t in found]
        assert tags.count(("parameters",)) == 1 and ("nbval-ignore-output",) in tags, ipynb.name
        assert any(src.startswith("# NBVAL_CHECK_OUTPUT\n") for kind, src, _ in found if kind == "code"), ipynb.name
        assert not any("injected-parameters" in t for t in tags), ipynb.name  # papermill's cell is not a source


def test_a_one_line_edit_of_the_script_is_caught(tmp_path: Path) -> None:
    ipynb = NOTEBOOKS / "02_vit_mnist_attention.ipynb"
    lines = ipynb.with_suffix(".py").read_text(encoding="utf-8").splitlines(keepends=True)
    assert pair_differences(ipynb, ipynb.with_suffix(".py")) == []
    at = lines.index("num_samples: int = 8  # how many test digits to analyse\n")
    edited = tmp_path / ipynb.with_suffix(".py").name
    edited.write_text(
        "".join([*lines[:at], "num_samples: int = 9  # how many test digits to analyse\n", *lines[at + 1 :]]),
        encoding="utf-8",
    )
    problems = pair_differences(ipynb, edited)
    assert len(problems) == 1 and problems[0].startswith("cell 3 source:")
    assert "-num_samples: int = 8" in problems[0] and "+num_samples: int = 9" in problems[0]
    # a tag removed (the widget cell would then be compared by nbval) is caught too
    untagged = "".join(lines).replace('# %% tags=["nbval-ignore-output"]\nif interactive:', "# %%\nif interactive:")
    edited.write_text(untagged, encoding="utf-8")
    assert [p.split(":")[0] for p in pair_differences(ipynb, edited)] == ["cell 28"]
