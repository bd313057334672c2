"""The zoo reference, generated from the zoo registry and each checkpoint's ``config.json`` (the metrics its
build measured), plus every metric card in ``data/zoo/cards/*.md`` when that folder exists."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .util import ROOT, md_cell, write_if_changed

ZOO = ROOT / "data" / "zoo"
CARDS = ZOO / "cards"
_SKIP = ("quick", "seconds", "time", "threads", "load_average", "split", "torch")


def recorded_metrics(config: dict[str, Any]) -> dict[str, Any]:
    """The metrics block of a checkpoint's ``config.json`` (top level, or under ``vizkit`` for HF folders)."""
    if "metrics" in config:
        return dict(config["metrics"])
    return dict(config.get("vizkit", {}).get("metrics", {}))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def headline(metrics: dict[str, Any]) -> str:
    """The scalar metrics, ``name value`` each, the bookkeeping ones (times, threads, flags) left out."""
    parts = []
    for key, value in metrics.items():
        if any(s in key for s in _SKIP) or isinstance(value, (dict, list, bool)):
            continue
        parts.append(f"{key.replace('_', ' ')} {_fmt(value)}")
    return "; ".join(parts)


def cards() -> list[Path]:
    """The metric cards (``data/zoo/cards/*.md``), sorted; empty when there are none."""
    return sorted(CARDS.glob("*.md")) if CARDS.is_dir() else []


def page(docs_page: Path) -> str:
    """The markdown source of the zoo reference page written at ``docs_page``."""
    from vizkit import zoo

    out = [
        "# The model zoo",
        "",
        "Generated from the zoo registry (`vizkit.zoo`) and each checkpoint's `config.json` (`make docs`): the",
        "metrics are the ones the build measured and recorded with the checkpoint. How to rebuild the zoo and",
        "what a rebuild reproduces: {doc}`../howto/reproduce-zoo`.",
        "",
        "| name | model and data | recorded metrics (held-out) | checkpoint | build (1 run) |",
        "|---|---|---|---|---|",
    ]
    for name in zoo.names():
        entry = zoo.entry(name)
        folder = ZOO / name
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
        out.append(
            f"| `{name}` | {md_cell(entry.description)} | {md_cell(headline(recorded_metrics(config)))} "
            f"| {size:.1f} MB | {entry.build_seconds:.0f} s at {entry.build_threads} thread(s) |"
        )
    found = cards()
    out += ["", "## Metric cards", ""]
    if found:
        out += ["One card per model, from `data/zoo/cards/`.", ""]
        for card in found:
            out += ["```{include} " + os.path.relpath(card, docs_page.parent), ":relative-images:", "```", ""]
    else:
        out += ["No metric cards in `data/zoo/cards/` in this checkout; the table above is the record.", ""]
    return "\n".join(out)


def write(path: Path) -> Path:
    write_if_changed(path, page(path))
    return path
