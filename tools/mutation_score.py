"""Per-module mutation score of the last ``mutmut run`` (``make mutation``).

Reads mutmut's results (``mutants/**/*.py.meta``) and the mutants listed as equivalent in
``docs/development/mutation.md`` (table rows that start with a mutant name in backticks) and prints, per mutated
module: total, killed (a test failed or timed out), survived, equivalent, no tests (no selected test
runs the function) and the score ``killed / (total - equivalent)``. Surviving mutants that are not
listed as equivalent are printed by name (``mutmut show <name>`` shows the diff).

``--fail-under P`` exits with 1 when a module scores below P percent or a mutant is still unchecked.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3}  # a test failed; 3: pytest's internal error (the mutant broke collection)
TIMEOUT = {24, -24, 152, 255, 36}  # the CPU-time limit stopped the tests (an endless loop): detected
SURVIVED = {0}
NO_TESTS = {5, 33}
EQUIVALENT_ROW = re.compile(r"^\|\s*`(vizkit\.[^`]+__mutmut_\d+)`")


def equivalents(doc: Path) -> set[str]:
    """The mutant names in the first column of ``doc``'s tables."""
    if not doc.is_file():
        return set()
    return {m.group(1) for line in doc.read_text(encoding="utf-8").splitlines() if (m := EQUIVALENT_ROW.match(line))}


def results(mutants: Path) -> dict[str, dict[str, int | None]]:
    """``{source path: {mutant name: exit code or None (not checked)}}``."""
    out = {}
    for meta in sorted(mutants.glob("**/*.py.meta")):
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        if codes:
            out[str(meta.relative_to(mutants))[: -len(".meta")]] = codes
    return out


def table(by_file: dict[str, dict[str, int | None]], equivalent: set[str]) -> tuple[list[dict], list[str], list[str]]:
    """Rows per module, the surviving mutants not listed as equivalent, and listed equivalents that were killed."""
    rows, open_survivors, stale = [], [], []
    for path, codes in by_file.items():
        c = Counter()
        for name, code in codes.items():
            if name in equivalent:
                c["equivalent"] += 1
                if code not in SURVIVED:
                    stale.append(name)
            elif code in KILLED or code in TIMEOUT:
                c["killed"] += 1
                c["timeout"] += code in TIMEOUT
            elif code in SURVIVED:
                c["survived"] += 1
                open_survivors.append(name)
            elif code in NO_TESTS:
                c["no tests"] += 1
                open_survivors.append(name)
            else:
                c["unchecked"] += 1
                open_survivors.append(name)
        total = len(codes)
        rows.append({"module": path, "total": total, **c, "score": 100 * c["killed"] / max(total - c["equivalent"], 1)})
    return rows, open_survivors, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"), help="mutmut's working folder")
    parser.add_argument("--equivalents", type=Path, default=Path("docs/development/mutation.md"))
    parser.add_argument("--fail-under", type=float, default=None, help="minimum score per module, in percent")
    args = parser.parse_args(argv)

    by_file = results(args.mutants)
    if not by_file:
        print(f"no mutmut results under {args.mutants}/: run `make mutation` first", file=sys.stderr)
        return 1
    rows, open_survivors, stale = table(by_file, equivalents(args.equivalents))
    cols = ("total", "killed", "timeout", "survived", "equivalent", "no tests", "unchecked")
    width = max(len(r["module"]) for r in rows)
    print(f"{'module':<{width}} " + " ".join(f"{c:>10}" for c in cols) + f" {'score':>7}")
    for r in rows + [{"module": "all", **{c: sum(r.get(c, 0) for r in rows) for c in cols}}]:
        if r["module"] == "all":
            r["score"] = 100 * r["killed"] / max(r["total"] - r["equivalent"], 1)
        print(f"{r['module']:<{width}} " + " ".join(f"{r.get(c, 0):>10}" for c in cols) + f" {r['score']:>6.1f}%")
    if open_survivors:
        print(f"\n{len(open_survivors)} mutants neither killed nor listed as equivalent (mutmut show <name>):")
        print("\n".join(f"  {n}" for n in open_survivors))
    if stale:
        print(f"\n{len(stale)} mutants listed as equivalent in {args.equivalents} were killed (remove them):")
        print("\n".join(f"  {n}" for n in stale))
    if args.fail_under is not None:
        low = [r["module"] for r in rows if r["score"] < args.fail_under]
        unchecked = sum(r.get("unchecked", 0) for r in rows)
        if low or unchecked:
            print(f"\nbelow {args.fail_under:g} %: {', '.join(low) or '-'}; unchecked or suspicious: {unchecked}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
