"""``python -m vizkit.zoo build [NAME ...] [--quick] [--out DIR] [--threads N]`` and ``python -m vizkit.zoo list``."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import entry, names
from .common import data_root

#: torch threads of a build: fixed, so that a rebuild gives the shipped bytes on any core count
BUILD_THREADS = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vizkit.zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="retrain zoo models deterministically")
    b.add_argument("names", nargs="*", help="models to build (default: all)")
    b.add_argument("--quick", action="store_true", help="a tiny run that checks the pipeline end to end (for CI)")
    b.add_argument("--out", type=Path, default=None, help="root folder for checkpoints (default: data/zoo)")
    b.add_argument("--threads", type=int, default=BUILD_THREADS,
                   help=f"torch threads (default {BUILD_THREADS}, as the shipped checkpoints were built; another "
                        "count gives a slightly different model, float sums being split differently)")
    sub.add_parser("list", help="list the zoo models")
    args = parser.parse_args(argv)
    if args.command == "list":
        for n in names():
            print(f"{n:24s} {entry(n).description}")
        return 0
    todo = args.names or names()
    unknown = [n for n in todo if n not in names()]
    if unknown:
        print(f"error: unknown zoo model(s) {', '.join(unknown)}; choose from {', '.join(names())}", file=sys.stderr)
        return 2
    if args.threads < 1:
        print(f"error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    out = args.out or data_root() / "zoo"
    total = time.perf_counter()
    if len(todo) == 1:
        n = todo[0]
        torch.set_num_threads(args.threads)
        print(f"== building {n} into {out / n}{' (quick)' if args.quick else ''}", flush=True)
        metrics = entry(n).build(out_root=out, quick=args.quick)
        print(f"== {n} done in {time.perf_counter() - total:.0f} s: {json.dumps(metrics, sort_keys=True)}", flush=True)
        return 0
    # several: one fresh interpreter per model, so that a model comes out the same whether it is
    # built alone or with the others (no RNG, allocator or backend state carried over)
    seconds = {}
    for n in todo:
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "vizkit.zoo", "build", n, "--out", str(out), "--threads", str(args.threads), *(["--quick"] if args.quick else [])]
        code = subprocess.run(cmd, check=False).returncode
        if code != 0:
            print(f"error: building {n} failed (exit code {code}); the models before it are saved; rerun it alone "
                  f"with: python -m vizkit.zoo build {n}{' --quick' if args.quick else ''} --out {out} --threads {args.threads}",
                  file=sys.stderr)
            return code
        seconds[n] = time.perf_counter() - start
    print(f"== all {len(todo)} done in {time.perf_counter() - total:.0f} s ("
          + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items()) + ")", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
