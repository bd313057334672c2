"""Print the branch total of the last coverage run (``make test``, ``make coverage``).

Writes coverage's JSON report to ``runs/coverage.json`` (``coverage json``) and prints one line,
``<label>: branches covered <covered> of <total> (<percent> %)``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label", help="what was measured, e.g. 'unit tests'")
    parser.add_argument("--json", type=Path, default=Path("runs/coverage.json"), help="where the JSON report goes")
    args = parser.parse_args(argv)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "coverage", "json", "-q", "-o", str(args.json)], check=True)
    totals = json.loads(args.json.read_text(encoding="utf-8"))["totals"]
    covered, total = totals["covered_branches"], totals["num_branches"]
    print(f"{args.label}: branches covered {covered} of {total} ({totals['percent_branches_covered']:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
