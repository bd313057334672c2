"""``python -m vizkit.zoo build [NAME ...] [--quick] [--out DIR] [--threads N]`` and ``python -m vizkit.zoo list``."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import entry, names
from .common import data_root

#: torch threads of a build: fixed rather than the core count, because the float sums (and so
#: the model) depend on it; each checkpoint's config.json records the count it was built with
BUILD_THREADS = 2


def sgemm_gflops(size: int = 512, seconds: float = 0.5) -> float:
    """This machine's float32 matrix-multiply speed at the current torch thread count, in
    GFLOPS (the best of five windows after a warm-up): the yardstick for comparing build
    times across machines (the builds are matmul-bound). Leaves every global random state
    untouched."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(size, size, generator=gen), torch.rand(size, size, generator=gen)

    def window(length: float) -> float:
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < length:
            a @ b
            n += 1
        return 2 * size**3 * n / elapsed / 1e9

    window(seconds / 5)  # warm-up: clocks, caches, thread pool
    return max(window(seconds / 5) for _ in range(5))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vizkit.zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="retrain zoo models deterministically")
    b.add_argument("names", nargs="*", help="models to build (default: all)")
    b.add_argument("--quick", action="store_true", help="a tiny run that checks the pipeline end to end (for CI)")
    b.add_argument("--out", type=Path, default=None, help="root folder for checkpoints (default: data/zoo)")
    b.add_argument("--threads", type=int, default=BUILD_THREADS,
                   help=f"torch threads (default {BUILD_THREADS}); the float sums, and so the model, depend on "
                        "the count: rebuild at the count in the checkpoint's config.json (see the README)")
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
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError("not writable")
    except OSError as e:
        print(f"error: cannot write checkpoints to {out} ({e.strerror or e}); choose a writable folder with --out DIR",
              file=sys.stderr)
        return 2
    total = time.perf_counter()
    if len(todo) == 1:
        n = todo[0]
        torch.set_num_threads(args.threads)
        print(f"== building {n} into {out / n}{' (quick)' if args.quick else ''}; {args.threads} torch thread(s), "
              f"this machine's sgemm {sgemm_gflops():.0f} GFLOPS", flush=True)
        metrics = entry(n).build(out_root=out, quick=args.quick)
        print(f"== {n} done in {time.perf_counter() - total:.0f} s: {json.dumps(metrics, sort_keys=True)}", flush=True)
        return 0
    # several: one fresh interpreter per model, so that a model comes out the same whether it is
    # built alone or with the others (no RNG, allocator or backend state carried over)
    threads, _ = torch.get_num_threads(), torch.set_num_threads(args.threads)
    try:  # measured at the builds' thread count; this process keeps its own
        gflops = sgemm_gflops()
    finally:
        torch.set_num_threads(threads)
    print(f"== building {len(todo)} models, one interpreter each, {args.threads} torch thread(s); this machine's "
          f"sgemm {gflops:.0f} GFLOPS (build times scale with it)", flush=True)
    seconds = {}
    for n in todo:
        start = time.perf_counter()
        flags = ["--out", str(out), "--threads", str(args.threads), *(["--quick"] if args.quick else [])]
        code = subprocess.run([sys.executable, "-m", "vizkit.zoo", "build", n, *flags], check=False).returncode
        if code != 0:
            print(f"error: building {n} failed (exit code {code}); the models before it are saved; rerun it alone "
                  f"with: python -m vizkit.zoo build {n} {' '.join(flags)}", file=sys.stderr)
            return code
        seconds[n] = time.perf_counter() - start
    print(f"== all {len(todo)} done in {time.perf_counter() - total:.0f} s ("
          + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items()) + ")", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
