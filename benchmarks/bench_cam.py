#!/usr/bin/env python
"""Speed, memory and side-effect benchmark of vizkit's ViT explanations.

One run, one model (timm, random weights, ``torch.manual_seed(0)``, eval mode), one input:

1. plain forward ``model(x)`` under ``torch.no_grad()``: the baseline;
2. ``vizkit.cam`` (Grad-CAM on ``blocks[-1].norm1``, one target class per image) vs
   pytorch-grad-cam ``GradCAM`` on the same layer with ``ClassifierOutputTarget``s;
3. ``vizkit.gradient_attention(layers="all")``;
4. ``vizkit.attention(layers="all")`` + ``vizkit.rollout``;
5. model state after all calls (``requires_grad``, train/eval, leftover hooks).

Times: median of ``--repeats`` runs after one warm-up per method; the methods are run
round-robin (forward, vizkit, pytorch-grad-cam, ...) so that background load hits all of
them alike. Peak memory: one fresh subprocess per method (see ``_mem_worker``), run after
the timings so it cannot disturb them.

Usage::

    .venv/bin/python benchmarks/bench_cam.py            # vit_base_patch16_224, batch 8
    .venv/bin/python benchmarks/bench_cam.py --quick    # vit_tiny_patch16_224, batch 2

The exit code is 0 whether targets are met or not (a crash still exits non-zero).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import MEM_ENV, peak_memory, print_worker_result  # noqa: E402
from benchlib import measure_memory as _measure_memory

TARGET_CAM_VS_FORWARD = 1.15  # vizkit Grad-CAM time / forward time, at most
TARGET_SPEEDUP_VS_PGC = 2.8  # pytorch-grad-cam time / vizkit Grad-CAM time, at least
TARGET_MAX_DIFF = 1e-4  # max |vizkit heatmap - pytorch-grad-cam heatmap|
TARGET_GRADATTN_VS_FORWARD = 2.5

METHODS = ("forward", "vizkit_cam", "pgc_cam", "vizkit_gradattn", "vizkit_attn_rollout")
LABELS = {
    "forward": "forward (no_grad)",
    "vizkit_cam": "vizkit.cam gradcam",
    "pgc_cam": "pytorch-grad-cam GradCAM",
    "vizkit_gradattn": "vizkit.gradient_attention all",
    "vizkit_attn_rollout": "vizkit.attention+rollout",
}


# --------------------------------------------------------------------------------------
# setup shared by the main process and the memory workers
# --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="vit_base_patch16_224", help="timm ViT name (random weights)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224, help="input height = width")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for every measurement")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method (median), after 1 warm-up")
    p.add_argument("--quick", action="store_true", help="smoke run: vit_tiny_patch16_224, batch 2")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--_mem-worker", dest="mem_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.batch = "vit_tiny_patch16_224", 2
    return args


def build(args: argparse.Namespace):
    """Model (seed 0, eval), input, per-image target classes, the layer, the reshape transform."""
    import timm

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, img_size=args.size).eval()
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    num_classes = model.num_classes
    classes = [(17 * i + 3) % num_classes for i in range(args.batch)]  # a different class per image
    layer = model.blocks[-1].norm1
    prefix = getattr(model, "num_prefix_tokens", 1)
    grid = tuple(model.patch_embed.grid_size)

    def reshape_transform(t: torch.Tensor) -> torch.Tensor:  # [B, N, C] -> [B, C, h, w], CLS dropped
        t = t[:, prefix:, :]
        return t.reshape(t.shape[0], grid[0], grid[1], t.shape[2]).permute(0, 3, 1, 2)

    return model, x, classes, layer, reshape_transform


def make_runners(model, x, classes, layer, reshape_transform) -> dict[str, Callable[[torch.Tensor], Any]]:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import vizkit

    def forward(inp):
        with torch.no_grad():
            return model(inp)

    def vizkit_cam(inp):
        return vizkit.cam(model, inp, classes[: len(inp)], layers=layer, method="gradcam").heatmap

    def pgc_cam(inp):
        # the documented usage: a context manager, so that its hooks are released afterwards
        with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape_transform) as cam:
            return cam(input_tensor=inp, targets=[ClassifierOutputTarget(c) for c in classes[: len(inp)]])

    def vizkit_gradattn(inp):
        return vizkit.gradient_attention(model, inp, classes[: len(inp)], layers="all").heatmap

    def vizkit_attn_rollout(inp):
        return vizkit.rollout(vizkit.attention(model, inp, layers="all"))

    return {
        "forward": forward,
        "vizkit_cam": vizkit_cam,
        "pgc_cam": pgc_cam,
        "vizkit_gradattn": vizkit_gradattn,
        "vizkit_attn_rollout": vizkit_attn_rollout,
    }


# --------------------------------------------------------------------------------------
# peak memory: one fresh process per method
# --------------------------------------------------------------------------------------
# Per method, in a fresh process: see benchlib.peak_memory (the extra memory the call needed on
# top of model + input, after a batch-1 warm-up of the same method).


def _mem_worker(args: argparse.Namespace) -> None:
    model, x, classes, layer, rt = build(args)
    run = make_runners(model, x, classes, layer, rt)[args.mem_worker]
    result = peak_memory(lambda: run(x), lambda: run(x[:1]), model)
    print_worker_result(args.mem_worker, result)


def measure_memory(args: argparse.Namespace) -> dict[str, dict]:
    return _measure_memory(
        __file__,
        ["--model", args.model, "--batch", str(args.batch), "--size", str(args.size), "--threads", str(args.threads)],
        METHODS,
    )


# --------------------------------------------------------------------------------------
# model state checks
# --------------------------------------------------------------------------------------
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def leftover_hooks(model: torch.nn.Module) -> list[str]:
    found = []
    for name, m in model.named_modules():
        for d in HOOK_DICTS:
            n = len(getattr(m, d, {}) or {})
            if n:
                found.append(f"{name or '<model>'}.{d}={n}")
    import torch.nn.modules.module as mm

    for g in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    ):
        n = len(getattr(mm, g, {}) or {})
        if n:
            found.append(f"global {g}={n}")
    return found


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
    }


def diff_state(before: dict, after: dict) -> list[str]:
    out = []
    for key in ("requires_grad", "training"):
        changed = [n for n in before[key] if before[key][n] != after[key].get(n)]
        if changed:
            out.append(f"{key} changed on {len(changed)} (e.g. {changed[0] or '<model>'})")
    return out


def global_state_problems(fastpath_before: bool) -> list[str]:
    out = []
    stack = torch._C._len_torch_function_stack()
    if stack:
        out.append(f"{stack} TorchFunctionMode(s) left active")
    if torch.backends.mha.get_fastpath_enabled() != fastpath_before:
        out.append("torch.backends.mha fastpath flag changed")
    if not torch.is_grad_enabled():
        out.append("grad mode left disabled")
    return out


def strict_state_check(model, x, classes, layer) -> list[str]:
    """vizkit alone, on a model in a mixed state: train mode, some parameters frozen, no
    parameter gradients. After each call the state must be exactly as before and no
    parameter may have received a gradient."""
    import vizkit

    problems = []
    saved = snapshot(model)
    model.train()
    frozen = {n for n, _ in model.named_parameters() if n.startswith(("patch_embed", "blocks.0."))}
    for n, p in model.named_parameters():
        p.requires_grad_(n not in frozen)
        p.grad = None
    model.blocks[1].eval()  # a submodule in a different mode than its parent
    x1, t1 = x[:1], classes[:1]
    calls = {
        "cam": lambda: vizkit.cam(model, x1, t1, layers=layer),
        "cam(auto)": lambda: vizkit.cam(model, x1, t1),
        "gradient_attention": lambda: vizkit.gradient_attention(model, x1, t1, layers="all"),
        "attention+rollout": lambda: vizkit.rollout(vizkit.attention(model, x1, layers="all")),
    }
    try:
        for name, call in calls.items():
            before = snapshot(model)
            call()
            for p in diff_state(before, snapshot(model)):
                problems.append(f"{name}: {p}")
            grads = [n for n, p in model.named_parameters() if p.grad is not None]
            if grads:
                problems.append(f"{name}: left .grad on {len(grads)} parameters (e.g. {grads[0]})")
            hooks = leftover_hooks(model)
            if hooks:
                problems.append(f"{name}: hooks left: {', '.join(hooks[:3])}")
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved["requires_grad"][n])
            p.grad = None
        for n, m in model.named_modules():
            m.training = saved["training"][n]
    return problems


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------
def fmt_ms(s: float) -> str:
    return f"{s * 1e3:9.1f} ms"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    args = parse_args()
    if args.mem_worker:
        _mem_worker(args)
        return 0

    from importlib.metadata import version

    import timm

    try:
        pgc_version = version("grad-cam")
    except Exception:  # pragma: no cover
        pgc_version = "?"
    load0 = os.getloadavg()
    print("=" * 78)
    print(
        f"vizkit CAM benchmark  model={args.model}  batch={args.batch}  size={args.size}  "
        f"threads={args.threads}  repeats={args.repeats}"
    )
    print(
        f"python {platform.python_version()}  torch {torch.__version__}  timm {timm.__version__}  "
        f"grad-cam {pgc_version}  cpus={os.cpu_count()}  loadavg(1m)={load0[0]:.2f}"
    )
    print("=" * 78)

    model, x, classes, layer, rt = build(args)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {n_params / 1e6:.1f} M parameters ({n_params * 4 / 2**20:.0f} MiB fp32), random weights, "
        f"eval; layer blocks[-1].norm1; targets per image {classes}"
    )
    fastpath0 = torch.backends.mha.get_fastpath_enabled()
    state0 = snapshot(model)
    hooks0 = leftover_hooks(model)
    runners = make_runners(model, x, classes, layer, rt)

    # ---- warm-up (1 call each) and the outputs to compare -------------------------------
    outputs = {}
    for m in METHODS:
        outputs[m] = runners[m](x)
    # ---- timed runs, round-robin --------------------------------------------------------
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(args.repeats):
        for m in METHODS:
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            runners[m](x)
            t1, c1 = time.perf_counter(), time.process_time()
            times[m].append(t1 - t0)
            cpu[m].append(c1 - c0)
    med = {m: statistics.median(v) for m, v in times.items()}
    med_cpu = {m: statistics.median(v) for m, v in cpu.items()}
    spread = {m: (max(v) - min(v)) / med[m] if med[m] > 0 else 0.0 for m, v in times.items()}

    # ---- state after all calls (before the strict check, which changes the state on purpose)
    state_problems = diff_state(state0, snapshot(model))
    hooks_after = leftover_hooks(model)
    global_problems = global_state_problems(fastpath0)
    pgc_grads = [p for p in model.parameters() if p.grad is not None]
    for p in model.parameters():
        p.grad = None
    strict_problems = strict_state_check(model, x, classes, layer)

    # ---- heatmap agreement ----------------------------------------------------------------
    viz = outputs["vizkit_cam"].detach().cpu().numpy()
    ref = np.asarray(outputs["pgc_cam"])
    shape_ok = viz.shape == ref.shape
    max_diff = float(np.abs(viz - ref).max()) if shape_ok else float("inf")

    # ---- memory (after the timings, in subprocesses) -----------------------------------
    mem = {} if args.no_memory else measure_memory(args)
    load1 = os.getloadavg()

    # ---- report -------------------------------------------------------------------------
    f = med["forward"]
    r_cam = med["vizkit_cam"] / f
    speedup = med["pgc_cam"] / med["vizkit_cam"]
    r_ga = med["vizkit_gradattn"] / f
    r_ro = med["vizkit_attn_rollout"] / f

    def mem_str(m: str) -> str:
        if not mem:
            return "      (skipped)"
        r = mem.get(m, {})
        if "error" in r:
            return f"  ERROR {r['error']}"
        return f"{r['delta_mb']:8.0f} MiB"

    print()
    print(f"1-4. wall time (median of {args.repeats} after 1 warm-up), peak extra memory")
    print("     spread = (max-min)/median of the wall times; cpu ÷ fwd = same ratio in process CPU time (info:")
    print("     less sensitive to other processes taking the cores, but counts OpenMP spin-waiting)")
    print(f"  {'method':32s} {'median':>12s} {'÷ forward':>10s} {'spread':>7s} {'cpu ÷ fwd':>10s} {'peak mem':>12s}")
    for m in METHODS:
        print(
            f"  {LABELS[m]:32s} {fmt_ms(med[m]):>12s} {med[m] / f:9.2f}x {spread[m]:6.0%} "
            f"{med_cpu[m] / med_cpu['forward']:9.2f}x {mem_str(m):>12s}"
        )
    print()
    print("2. Grad-CAM, blocks[-1].norm1, one class per image")
    print(f"  vizkit ÷ forward              = {r_cam:6.2f}x    (target <= {TARGET_CAM_VS_FORWARD}x)")
    print(
        f"  vizkit ÷ pytorch-grad-cam     = {1 / speedup:6.3f}     -> vizkit is {speedup:.2f}x faster "
        f"(target >= {TARGET_SPEEDUP_VS_PGC}x)"
    )
    print(
        f"  max |heatmap diff|            = {max_diff:.2e}   (target <= {TARGET_MAX_DIFF:.0e}; "
        f"shapes {viz.shape} vs {ref.shape})"
    )
    if mem and "error" not in mem.get("vizkit_cam", {"error": 1}) and "error" not in mem.get("pgc_cam", {"error": 1}):
        print(
            f"  peak extra memory             = vizkit {mem['vizkit_cam']['delta_mb']:.0f} MiB vs "
            f"pytorch-grad-cam {mem['pgc_cam']['delta_mb']:.0f} MiB (forward alone "
            f"{mem['forward']['delta_mb']:.0f} MiB)"
        )
    print("3. gradient_attention(layers='all')")
    print(f"  ÷ forward                     = {r_ga:6.2f}x    (target <= {TARGET_GRADATTN_VS_FORWARD}x)")
    print("4. attention(layers='all') + rollout")
    print(f"  ÷ forward                     = {r_ro:6.2f}x    (no target)")
    print("5. model state after all timed calls (vizkit and pytorch-grad-cam, eval model)")
    print(f"  requires_grad / train-eval    : {'unchanged' if not state_problems else '; '.join(state_problems)}")
    print(
        f"  leftover module hooks         : {'none' if not hooks_after else ', '.join(hooks_after[:5])}"
        + ("" if not hooks0 else f"  (already present before: {len(hooks0)})")
    )
    print(f"  global state (modes, flags)   : {'clean' if not global_problems else '; '.join(global_problems)}")
    print(
        f"  parameter .grad after the run : {len(pgc_grads)} tensors "
        f"({sum(p.numel() for p in pgc_grads) * 4 / 2**20:.0f} MiB) — left by pytorch-grad-cam's "
        "loss.backward(); vizkit computes none (cleared before the next check)"
    )
    print("  strict vizkit check (train mode, blocks.1 in eval, patch_embed+blocks.0 frozen, batch 1):")
    print(f"    {'state, grads and hooks exactly restored' if not strict_problems else '; '.join(strict_problems)}")
    if mem:
        any_reset = all(r.get("reset") for r in mem.values() if "error" not in r)
        print()
        print(
            "memory method: one fresh subprocess per method; glibc env "
            + " ".join(f"{k}={v}" for k, v in MEM_ENV.items())
        )
        print("  (each large tensor is its own mmap, unmapped on free); batch-1 warm-up of the same method;")
        print(
            "  then "
            + (
                "peak-RSS reset via /proc/self/clear_refs, peak = VmHWM"
                if any_reset
                else "peak = ru_maxrss (clear_refs not allowed: may include earlier peaks)"
            )
            + "; reported = peak - RSS before the call,"
        )
        print("  i.e. the memory the call needs on top of model + input. Timings are not affected.")
    print(
        f"noise: {os.cpu_count()} CPUs, loadavg(1m) {load0[0]:.2f} at start, {load1[0]:.2f} at end; "
        "other processes on the machine make times noisy, compare ratios measured in the same run."
    )

    rows = [
        ("vizkit cam ÷ forward", f"{r_cam:.2f}x", f"<= {TARGET_CAM_VS_FORWARD}x", r_cam <= TARGET_CAM_VS_FORWARD),
        (
            "vizkit cam speed-up vs pytorch-grad-cam",
            f"{speedup:.2f}x",
            f">= {TARGET_SPEEDUP_VS_PGC}x",
            speedup >= TARGET_SPEEDUP_VS_PGC,
        ),
        (
            "max |vizkit - pytorch-grad-cam| heatmap",
            f"{max_diff:.1e}",
            f"<= {TARGET_MAX_DIFF:.0e}",
            max_diff <= TARGET_MAX_DIFF,
        ),
        (
            "gradient_attention ÷ forward",
            f"{r_ga:.2f}x",
            f"<= {TARGET_GRADATTN_VS_FORWARD}x",
            r_ga <= TARGET_GRADATTN_VS_FORWARD,
        ),
        (
            "state restored, no hooks left",
            "ok" if not (state_problems or hooks_after or global_problems or strict_problems) else "problems",
            "unchanged",
            not (state_problems or hooks_after or global_problems or strict_problems),
        ),
    ]
    print()
    print(f"  {'check':42s} {'measured':>10s} {'target':>10s}  result")
    print("  " + "-" * 72)
    for name, val, target, ok in rows:
        print(f"  {name:42s} {val:>10s} {target:>10s}  {verdict(ok)}")
    print(f"  {'attention + rollout ÷ forward':42s} {r_ro:9.2f}x {'-':>10s}  info")
    print(f"  {'(summary)':42s} {'':>10s} {'':>10s}  {sum(r[3] for r in rows)}/{len(rows)} PASS")
    if args.quick or args.model != "vit_base_patch16_224" or args.batch != 8:
        print("  note: the targets are set for vit_base_patch16_224, batch 8; on a small model or batch the fixed")
        print("  per-call costs (a few ms: hooks, state save/restore, resizing) weigh more, so ratios are higher.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
