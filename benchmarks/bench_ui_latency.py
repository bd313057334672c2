"""Slider latency in the browser: the time from a control's change in JupyterLab to the new
figure in the page, per scenario notebook (issue: the notebooks as a person uses them).

Starts the same real components as ``tests/ui`` (JupyterLab on 127.0.0.1, Debian's Chromium
through playwright), runs every notebook with the widgets on, then moves each explorer control
``--moves`` times in all and prints the median and the worst latency per notebook, against the
goal of a median <= 100 ms (after the first compute, the explorers redraw from cached results).
Measured and printed, never asserted.

    .venv/bin/python benchmarks/bench_ui_latency.py                 # every notebook, 12 moves each
    .venv/bin/python benchmarks/bench_ui_latency.py --notebooks 02_vit_mnist_attention.ipynb --moves 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from labdriver import chromium, explore, jupyterlab, notebook_names  # noqa: E402

GOAL_MS = 100.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebooks", nargs="*", default=None, help="notebook file names (default: all)")
    ap.add_argument("--moves", type=int, default=12, help="control moves per notebook (default 12)")
    ap.add_argument("--json", default=None, help="also write the per-move numbers to this JSON file")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = args.notebooks or notebook_names()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, jupyterlab(Path(tmp)) as server, chromium() as browser:
        shots = Path(tmp) / "shots"
        shots.mkdir()
        for name in names:
            session = explore(browser, server, name, shots, min_moves=args.moves)
            try:
                problems = session.problems()
                rows.append({**session.latency_summary(), "problems": problems})
            finally:
                session.close()
    print(f"\nchange -> new image in the page, {args.moves} moves per notebook (goal: median <= {GOAL_MS:.0f} ms)")
    print(f"{'notebook':36s} {'Run All':>8s} {'moves':>6s} {'median':>9s} {'worst':>9s}  per control (median ms)")
    for r in rows:
        per: dict[str, list[float]] = {}
        for m in r["per_move"]:
            per.setdefault(m["control"], []).append(m["ms"])
        detail = ", ".join(f"{c} {statistics.median(v):.0f}" for c, v in per.items())
        flag = "" if r["median_ms"] <= GOAL_MS else "  (above the goal)"
        print(
            f"{r['notebook']:36s} {r['run_all_s']:7.1f}s {r['moves']:6d} {r['median_ms']:7.0f}ms "
            f"{r['worst_ms']:7.0f}ms  {detail}{flag}"
        )
        if r["problems"]:
            print(f"  problems shown in the page: {r['problems']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
