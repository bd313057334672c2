"""Markdown reports: headings, prose, parameter tables, data tables and linked figures, and the
sentence saying which row of a score table wins by which metric (:func:`metric_winners`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import InputError
from .io import write_text


class Report:
    """Build a markdown document in memory; :meth:`write` it atomically.

    Figure links are written relative to the report's folder, so a run folder can be moved.
    """

    def __init__(self, title: str):
        self.parts: list[str] = [f"# {title}", ""]

    def heading(self, text: str, level: int = 2) -> "Report":
        self.parts += [f"{'#' * level} {text}", ""]
        return self

    def paragraph(self, text: str) -> "Report":
        self.parts += [text, ""]
        return self

    def bullets(self, items: list[str]) -> "Report":
        self.parts += [f"- {item}" for item in items] + [""]
        return self

    def parameters(self, params: Mapping[str, Any]) -> "Report":
        rows = pd.DataFrame({"parameter": list(params), "value": [repr(v) for v in params.values()]})
        return self.table(rows, index=False)

    def table(self, df: pd.DataFrame, index: bool = True, floatfmt: str = ".4f") -> "Report":
        self.parts += [markdown_table(df, index, floatfmt), ""]
        return self

    def figure(self, path: str | Path, caption: str, relative_to: str | Path | None = None) -> "Report":
        target = Path(path)
        if relative_to is not None:
            target = Path(os.path.relpath(target, relative_to))
        self.parts += [f"![{caption}]({target.as_posix()})", "", f"*{caption}*", ""]
        return self

    def text(self) -> str:
        return "\n".join(self.parts).rstrip() + "\n"

    def write(self, path: str | Path) -> Path:
        return write_text(path, self.text())


def markdown_table(df: pd.DataFrame, index: bool = True, floatfmt: str = ".4f") -> str:
    """A GitHub markdown table (multi-level columns are joined with spaces)."""
    frame = df.reset_index() if index else df
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = [" ".join(str(c) for c in col if str(c)) for col in frame.columns]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def metric_winners(
    table: pd.DataFrame, label: str | list[str], metrics: Mapping[str, str], exclude: tuple[str, ...] = ()
) -> str:
    """One sentence read off a table of scores: which row wins by each metric and whether the metrics agree.

    ``table``: one row per method / configuration; ``label``: the column(s) naming a row (joined by
    " @ "); ``metrics``: ``{column: "higher" | "lower"}``, the direction in which each score is
    better (columns absent from the table, and NaN scores, are skipped); ``exclude``: row labels
    that never win (e.g. a random-map baseline). "" when no metric has a score."""
    cols = [label] if isinstance(label, str) else list(label)
    names = table[cols].astype(str).agg(" @ ".join, axis=1)
    keep = ~names.isin(exclude)
    wins = []
    for column, direction in metrics.items():
        if direction not in ("higher", "lower"):
            raise InputError(f"metric {column!r}: direction must be 'higher' or 'lower', got {direction!r}")
        if column not in table:
            continue
        values = table.loc[keep, column].astype(float).dropna()
        if values.empty:
            continue
        best = values.idxmax() if direction == "higher" else values.idxmin()
        wins.append((column, direction, names[best], float(values[best])))
    if not wins:
        return ""
    parts = [f"{c} ({d} is better) picks **{n}** ({v:.3g})" for c, d, n, v in wins]
    winners = list(dict.fromkeys(n for _, _, n, _ in wins))
    if len(winners) == 1:
        verdict = f"all {len(wins)} metric(s) agree on **{winners[0]}**."
    else:
        verdict = f"the metrics disagree: {len(winners)} different winners among {len(wins)} metrics."
    return "By " + "; ".join(parts) + " — " + verdict
