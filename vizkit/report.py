"""Markdown reports: headings, prose, parameter tables, data tables and linked figures."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

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
