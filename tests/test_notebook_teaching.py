"""What a student sees in the committed notebooks: rendered properties of the executed ``.ipynb`` files and
the teaching structure every notebook shares (issue 30).

- no markdown cell holds a literal backslash-n (it renders as one run-on line or a heading);
- no output is the text ``<Figure size ...>`` instead of the figure, and no progress bar was frozen into an
  output (tqdm's ``NN%|`` or transformers' "Loading weights");
- each notebook opens with what you will learn and what you need to know first, has at least one "Method in
  brief" cell with a formula and a paper link, and two or three exercises: a markdown cell tagged
  ``exercise`` followed by a collapsed code cell tagged ``answer`` that nbval re-executes and compares
  (``# NBVAL_CHECK_OUTPUT``) and whose committed output has an ``answer: <what> = <number> ...`` line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LITERAL_NEWLINE = re.compile(r"\\n(?![a-z])")  # not a LaTeX command such as \nabla or \neq
PROGRESS = re.compile(r"\d+%\|| Loading weights|Loading checkpoint shards")
ANSWER = re.compile(r"^answer: .+ = [-−]?\d", re.MULTILINE)  # the number, then units or a remark


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _texts(cell: dict) -> list[str]:
    """Every text an executed code cell shows: streams, plain-text results, error tracebacks."""
    out = []
    for o in cell.get("outputs", []):
        if "text" in o:
            out.append("".join(o["text"]) if isinstance(o["text"], list) else o["text"])
        for key in ("text/plain", "text/html", "text/markdown"):
            value = o.get("data", {}).get(key)
            if value is not None:
                out.append("".join(value) if isinstance(value, list) else value)
    return out


def test_there_are_five_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_has_no_literal_backslash_n(path):
    bad = [i for i, c in enumerate(_cells(path)) if c["cell_type"] == "markdown" and LITERAL_NEWLINE.search(_source(c))]
    assert not bad, f"{path.name}: markdown cells {bad} contain a literal \\n"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_show_figures_not_their_repr_and_no_frozen_progress_bar(path):
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] != "code":
            continue
        for text in _texts(cell):
            assert "<Figure size" not in text, f"{path.name} cell {i} prints a figure's repr instead of the figure"
            assert not PROGRESS.search(text), f"{path.name} cell {i} has a progress bar in its output: {text[:120]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_teaches(path):
    cells = _cells(path)
    markdown = [_source(c) for c in cells if c["cell_type"] == "markdown"]
    head = "\n".join(markdown[:3]).lower()
    assert "what you will learn" in head and "what you need to know first" in head, path.name
    methods = [m for m in markdown if m.lstrip().startswith("#") and "method in brief" in m.splitlines()[0].lower()]
    assert methods, f"{path.name} has no 'Method in brief' cell"
    for m in methods:
        assert "$$" in m or "$" in m, f"{path.name}: a 'Method in brief' cell without a formula: {m[:80]!r}"
        assert re.search(r"\]\(https?://", m), f"{path.name}: a 'Method in brief' cell without a paper link"
        assert "when it fails" in m.lower(), f"{path.name}: a 'Method in brief' cell without 'When it fails'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_have_checked_collapsed_answers(path):
    cells = _cells(path)
    exercises = [i for i, c in enumerate(cells) if "exercise" in c.get("metadata", {}).get("tags", [])]
    assert 2 <= len(exercises) <= 3, f"{path.name}: {len(exercises)} exercises"
    for n, i in enumerate(exercises):
        assert cells[i]["cell_type"] == "markdown"
        end = exercises[n + 1] if n + 1 < len(exercises) else len(cells)
        answers = [c for c in cells[i + 1 : end] if "answer" in c.get("metadata", {}).get("tags", [])]
        assert len(answers) == 1, f"{path.name}: exercise at cell {i} needs exactly one answer cell"
        answer = answers[0]
        assert answer["cell_type"] == "code"
        assert answer["metadata"].get("jupyter", {}).get("source_hidden") is True, "answers start collapsed"
        assert _source(answer).lstrip().startswith("# NBVAL_CHECK_OUTPUT"), "nbval must compare the answer"
        printed = "".join(_texts(answer))
        assert ANSWER.search(printed), f"{path.name}: answer at cell {i} printed {printed[:120]!r}"
