"""``python -m vizkit.zoo build [NAME ...] [--quick] [--out DIR] [--threads N] [--jobs J]``,
``python -m vizkit.zoo card [--model NAME ...] [--out DIR] [--samples N] [--threads N]`` and
``python -m vizkit.zoo list``."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from ..errors import VizkitError
from . import entry, names
from .common import data_root

#: builds run at the same time by default, one per core: these models are too small for a
#: second thread to double a build's speed (measured on 2 cores: a training step at 1 thread
#: took 1.45-1.72x as long as at 2, not 2x), so two 1-thread builds side by side finish a full
#: rebuild sooner than one 2-thread build after another. Each build's torch thread count is its
#: model's ``Entry.build_threads`` (the float sums, and so the model, depend on it)
BUILD_JOBS = 2


def resolve_build(spec: str) -> Callable[..., dict[str, Any]]:
    """The training recipe an :attr:`Entry.build <vizkit.zoo.common.Entry.build>` string names:
    ``"package.module:function"`` (e.g. ``"vizkit.zoo.train.mnist_vit:build"``), imported."""
    module, sep, function = spec.partition(":")
    if not sep or not module or not function:
        raise VizkitError(f"a zoo build recipe is named 'module:function', got {spec!r}")
    recipe = getattr(importlib.import_module(module), function, None)
    if not callable(recipe):
        raise VizkitError(f"zoo build recipe {spec!r}: {module} has no function {function!r}")
    return recipe


def build_function(name: str) -> Callable[..., dict[str, Any]]:
    """The recipe that rebuilds zoo model ``name``: ``build_function(name)(out_root=DIR, quick=False)``
    trains it, writes ``DIR/<name>/`` and returns the metrics."""
    return resolve_build(entry(name).build)


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
    b.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of every build (default: each model's shipped checkpoint's count, "
        "see `list`); the float sums, and so the model, depend on the count (see docs/howto/reproduce-zoo.md)",
    )
    b.add_argument(
        "--jobs",
        type=int,
        default=BUILD_JOBS,
        help=f"models built at the same time, each in its own interpreter with --threads threads "
        f"(default {BUILD_JOBS}); does not change the models",
    )
    sub.add_parser("list", help="list the zoo models")
    c = sub.add_parser("card", help="write the metric cards (data/zoo/cards/<model>.md and .json)")
    c.add_argument("--model", action="append", default=None, help="a model to card (repeatable; default: all)")
    c.add_argument("--out", type=Path, default=None, help="folder of the cards (default: data/zoo/cards)")
    c.add_argument("--samples", type=int, default=None, help="held-out samples per model (default: the model's)")
    c.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the cards' numbers)")
    args = parser.parse_args(argv)
    if args.command == "card":
        return card(args.model, args.out, args.samples, args.threads)
    if args.command == "list":
        for n in names():
            print(f"{n:24s} {entry(n).build_threads} thread(s)  {entry(n).description}")
        return 0
    todo = args.names or names()
    unknown = [n for n in todo if n not in names()]
    if unknown:
        print(f"error: unknown zoo model(s) {', '.join(unknown)}; choose from {', '.join(names())}", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    out = args.out or data_root() / "zoo"
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError("not writable")
    except OSError as e:
        print(
            f"error: cannot write checkpoints to {out} ({e.strerror or e}); choose a writable folder with --out DIR",
            file=sys.stderr,
        )
        return 2
    threads = {n: args.threads or entry(n).build_threads for n in todo}
    total = time.perf_counter()
    if len(todo) == 1:
        n = todo[0]
        torch.set_num_threads(threads[n])
        print(
            f"== building {n} into {out / n}{' (quick)' if args.quick else ''}; {threads[n]} torch thread(s), "
            f"this machine's sgemm {sgemm_gflops():.0f} GFLOPS",
            flush=True,
        )
        metrics = build_function(n)(out_root=out, quick=args.quick)
        print(f"== {n} done in {time.perf_counter() - total:.0f} s: {json.dumps(metrics, sort_keys=True)}", flush=True)
        return 0
    # several: one fresh interpreter per model, so that a model comes out the same whether it is
    # built alone or with the others (no RNG, allocator or backend state carried over)
    common = max(threads.values(), key=list(threads.values()).count)  # the most frequent count
    mine, _ = torch.get_num_threads(), torch.set_num_threads(common)
    try:  # measured at the builds' (usual) thread count; this process keeps its own
        gflops = sgemm_gflops()
    finally:
        torch.set_num_threads(mine)
    jobs = min(args.jobs, len(todo))
    others = [f"{n} {t}" for n, t in threads.items() if t != common]
    per_build = f"{common}" + (f" ({', '.join(others)})" if others else "")
    print(
        f"== building {len(todo)} models, one interpreter each, {jobs} at a time, {per_build} torch thread(s) "
        f"each; this machine's sgemm {gflops:.0f} GFLOPS at {common} (build times scale with it)",
        flush=True,
    )
    flags = {n: ["--out", str(out), "--threads", str(threads[n]), *(["--quick"] if args.quick else [])] for n in todo}
    estimate = {n: entry(n).build_seconds for n in todo}
    lanes = plan_lanes(estimate, jobs)
    if jobs > 1:
        print(
            "== lanes (measured build times): "
            + " | ".join(" + ".join(lane) + f" (~{sum(estimate[n] for n in lane):.0f} s)" for lane in lanes),
            flush=True,
        )
    seconds, failed = _run_builds(lanes, flags)
    if failed:
        for n, code in failed.items():
            print(
                f"error: building {n} failed (exit code {code}); rerun it alone with: "
                f"python -m vizkit.zoo build {n} {' '.join(flags[n])}",
                file=sys.stderr,
            )
        skipped = [n for n in todo if n not in seconds and n not in failed]
        if skipped:
            print(f"error: not started after the failure: {', '.join(skipped)}", file=sys.stderr)
        if seconds:
            print(f"the models built are saved: {', '.join(n for n in todo if n in seconds)}", file=sys.stderr)
        return next(iter(failed.values()))
    print(
        f"== all {len(todo)} done in {time.perf_counter() - total:.0f} s ("
        + ", ".join(f"{n} {seconds[n]:.0f} s" for n in todo)
        + ")",
        flush=True,
    )
    return 0


def card(models: list[str] | None, out: Path | None, samples: int | None, threads: int) -> int:
    """``python -m vizkit.zoo card``: build the metric card of each model (all cardable ones by default)."""
    from .cards import CARD_MODELS, build_card, cards_dir

    todo = models or list(CARD_MODELS)
    unknown = [m for m in todo if m not in CARD_MODELS]
    if unknown:
        print(
            f"error: no metric card for {', '.join(unknown)}; cards exist for {', '.join(CARD_MODELS)}",
            file=sys.stderr,
        )
        return 2
    if threads < 1 or (samples is not None and samples < 1):
        print(f"error: --threads and --samples must be at least 1, got {threads} and {samples}", file=sys.stderr)
        return 2
    torch.set_num_threads(threads)
    folder = out or cards_dir()
    total = time.perf_counter()
    for name in todo:
        start = time.perf_counter()
        md, js, _ = build_card(name, folder, samples=samples, log=lambda line: print(f"== {line}", flush=True))
        print(f"== {name}: {md} and {js.name} in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"== {len(todo)} card(s) in {time.perf_counter() - total:.0f} s", flush=True)
    return 0


def plan_lanes(seconds: dict[str, float], jobs: int) -> list[list[str]]:
    """Split the builds into ``jobs`` lanes, each run one after the other, so that the longest
    lane (by the measured ``seconds``) is as short as possible: an exhaustive search for the few
    models of the zoo (the longest-first greedy can be a few minutes worse), the greedy beyond.
    Each lane is longest first; lanes are ordered by their first build; no lane is empty."""
    names_ = sorted(seconds, key=lambda n: -seconds[n])  # stable: ties keep their order
    jobs = max(1, min(jobs, len(names_)))
    best: list[int] = []
    if jobs ** len(names_) <= 200_000:
        best_span = math.inf

        def search(i: int, loads: list[float], lane_of: list[int]) -> None:
            nonlocal best, best_span
            if max(loads) >= best_span:
                return
            if i == len(names_):
                if len(set(lane_of)) == jobs:
                    best, best_span = list(lane_of), max(loads)
                return
            used = max(lane_of, default=-1) + 1  # symmetric lanes: open at most one new lane
            for k in range(min(jobs, used + 1)):
                loads[k] += seconds[names_[i]]
                lane_of.append(k)
                search(i + 1, loads, lane_of)
                lane_of.pop()
                loads[k] -= seconds[names_[i]]

        search(0, [0.0] * jobs, [])
    if not best:  # greedy: each build to the lane that is free first (the emptiest on a tie)
        loads, counts = [0.0] * jobs, [0] * jobs
        for n in names_:
            k = min(range(jobs), key=lambda j: (loads[j], counts[j]))
            best.append(k)
            loads[k] += seconds[n]
            counts[k] += 1
    return [[n for n, k in zip(names_, best) if k == lane] for lane in range(jobs)]


def build_command(name: str, flags: list[str]) -> list[str]:
    """The command line that builds one model in a fresh interpreter."""
    return [sys.executable, "-m", "vizkit.zoo", "build", name, *flags]


def _relay(name: str, stream: IO[str]) -> None:
    """Print a child's output line by line, each line tagged with its model's name."""
    tag = f"[{name}]"
    for line in stream:
        print(line.rstrip("\n") if line.startswith(tag) else f"{tag} {line.rstrip()}", flush=True)


def _run_builds(lanes: list[list[str]], flags: dict[str, list[str]]) -> tuple[dict[str, float], dict[str, int]]:
    """Build each lane's models one after the other, the lanes side by side; after a failure
    start no more but let the running ones finish. Returns (seconds per built model, exit code
    per failed model)."""
    pending = [list(lane) for lane in lanes]
    running: dict[str, tuple[subprocess.Popen, threading.Thread, float]] = {}
    lane_of = {n: k for k, lane in enumerate(lanes) for n in lane}
    seconds: dict[str, float] = {}
    failed: dict[str, int] = {}
    try:
        while any(pending) or running:
            busy = {lane_of[n] for n in running}
            for k, queue in enumerate(pending):
                if not queue or k in busy or failed:
                    continue
                n = queue.pop(0)
                proc = subprocess.Popen(
                    build_command(n, flags[n]),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    bufsize=1,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
                relay = threading.Thread(target=_relay, args=(n, proc.stdout), daemon=True)
                relay.start()
                running[n] = (proc, relay, time.perf_counter())
            if failed and not running:
                break
            time.sleep(0.05)
            for n, (proc, relay, start) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                relay.join()
                del running[n]
                if code == 0:
                    seconds[n] = time.perf_counter() - start
                else:
                    failed[n] = code
    finally:  # interrupted: stop the children rather than leave them running
        for proc, relay, _ in running.values():
            proc.terminate()
            proc.wait()
            relay.join()
    return seconds, failed


if __name__ == "__main__":
    sys.exit(main())
