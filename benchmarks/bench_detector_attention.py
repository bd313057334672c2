#!/usr/bin/env python
"""Scenario 1 benchmark: real- and fake-class gradient-weighted attention over all layers.

One run, one model: a DeepfakeBench-layout CLIP detector (:class:`vizkit.models.ClipDetector`:
HF ``CLIPVisionModel`` + ``Linear(hidden, 2)``) with the ViT-B/16 shape (hidden 768, 12 layers,
12 heads, patch 16, 224 px), random weights (``torch.manual_seed(0)``), eval mode, batch 8,
``--threads`` torch threads. It times, round-robin, ``--repeats`` calls each of

1. ``forward``: ``model(x)`` under ``torch.no_grad()`` (the model's own attention, sdpa);
2. ``vizkit``: ``CLIPViTGradCAM(model, "all").explain(x)``: both classes' attention and
   gradients from ONE forward pass (two ``autograd.grad`` calls, no parameter gradients),
   then the Chefer relevance maps of both classes;
3. ``baseline``: what a script like seed 000's does — eager attention with
   ``output_attentions=True``, ``retain_grad()`` on every attention map, a full ``backward()``
   with parameter gradients, one forward and backward per class, the same relevance math.

It prints min / median / max, the ratios of the medians (targets: vizkit <= 3.0x forward,
vizkit >= 2x faster than the baseline), the largest difference between the two methods' maps
(target <= 1e-5) and the peak extra memory of each method (one fresh process per method, see
``benchlib``). The exit code is 0 whether the targets are met or not.

    .venv/bin/python benchmarks/bench_detector_attention.py            # ViT-B/16, batch 8, 3 repeats
    .venv/bin/python benchmarks/bench_detector_attention.py --quick    # a small model, batch 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import measure_memory, peak_memory, print_worker_result, summary, time_round_robin  # noqa: E402

TARGET_VS_FORWARD = 3.0
TARGET_SPEEDUP = 2.0
TARGET_DIFF = 1e-5
METHODS = ("forward", "vizkit", "baseline")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="hidden 192, 4 layers, 112 px, batch 2")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--_mem-worker", dest="mem_worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def build(args: argparse.Namespace):
    from transformers import CLIPVisionConfig

    from vizkit.models import ClipDetector

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.quick:
        cfg = CLIPVisionConfig(
            hidden_size=192,
            intermediate_size=768,
            num_hidden_layers=4,
            num_attention_heads=3,
            image_size=112,
            patch_size=16,
        )
    else:
        cfg = CLIPVisionConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
        )
    model = ClipDetector(cfg).eval()
    batch = 2 if args.quick else args.batch
    x = torch.randn(batch, 3, cfg.image_size, cfg.image_size)
    return model, x


def baseline_maps(model, x: torch.Tensor) -> torch.Tensor:
    """Seed-style: eager attention with output_attentions, retain_grad, full backward, one pass per class."""
    from vizkit import attention_math as am

    backbone = model.backbone
    impl = backbone.config._attn_implementation
    backbone.set_attn_implementation("eager")
    try:
        maps = []
        for k in (0, 1):
            model.zero_grad(set_to_none=True)
            out = backbone(pixel_values=x, output_attentions=True)
            attns = list(out.attentions)
            for a in attns:
                a.retain_grad()
            logits = model.head(out.pooler_output)
            logits[:, k].sum().backward()
            r = am.relevance_matrix([a.detach() for a in attns], [a.grad for a in attns], "mean")
            side = int(round((r.shape[-1] - 1) ** 0.5))
            maps.append(r[:, 0, 1:].reshape(-1, side, side))
        model.zero_grad(set_to_none=True)
        return torch.stack(maps, 1)  # [B, 2, h, w]
    finally:
        backbone.set_attn_implementation(impl)


def make_runners(model, x):
    from vizkit.scenarios.clip_detector_attention import CLIPViTGradCAM

    gradcam = CLIPViTGradCAM(model, "all", "mean", "relevance", ["real", "fake"])

    def forward(inp):
        with torch.no_grad():
            return model(inp)

    def vizkit(inp):
        res = gradcam.explain(inp, classes=[0, 1])
        return torch.stack([res.raw(0), res.raw(1)], 1)

    def baseline(inp):
        return baseline_maps(model, inp)

    return {"forward": forward, "vizkit": vizkit, "baseline": baseline}


def main() -> int:
    args = parse_args()
    model, x = build(args)
    runners = make_runners(model, x)
    if args.mem_worker:
        run = runners[args.mem_worker]
        print_worker_result(args.mem_worker, peak_memory(lambda: run(x), lambda: run(x[:1]), model))
        return 0
    cfg = model.backbone.config
    print("=" * 78)
    print(
        f"scenario 1 benchmark: ClipDetector hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
        f"{cfg.num_attention_heads} heads, {cfg.image_size} px, batch {x.shape[0]}, threads {args.threads}, "
        f"repeats {args.repeats}, loadavg {os.getloadavg()[0]:.2f}"
    )
    print("=" * 78)
    viz = runners["vizkit"](x)
    base = runners["baseline"](x)
    diff = float((viz - base).abs().max())
    times = time_round_robin({m: (lambda r=runners[m]: r(x)) for m in METHODS}, args.repeats)
    med = {m: statistics.median(v) for m, v in times.items()}
    for m in METHODS:
        print(f"  {m:<9} min / median / max = {summary(times[m])}")
    r_fwd = med["vizkit"] / med["forward"]
    speedup = med["baseline"] / med["vizkit"]
    print(
        f"real + fake, all layers: vizkit ÷ forward = {r_fwd:.2f}x (target <= {TARGET_VS_FORWARD}x) "
        f"{'PASS' if r_fwd <= TARGET_VS_FORWARD else 'MISS'}"
    )
    print(
        f"baseline ÷ vizkit = {speedup:.2f}x faster (target >= {TARGET_SPEEDUP}x) "
        f"{'PASS' if speedup >= TARGET_SPEEDUP else 'MISS'}"
    )
    print(
        f"max |vizkit - baseline| over the relevance maps = {diff:.2e} (target <= {TARGET_DIFF:.0e}) "
        f"{'PASS' if diff <= TARGET_DIFF else 'MISS'}"
    )
    if not args.no_memory:
        flags = ["--batch", str(args.batch), "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
        mem = measure_memory(__file__, flags, METHODS)
        for m in METHODS:
            r = mem[m]
            print(f"  peak extra memory {m:<9}: " + (f"{r['delta_mb']:7.0f} MiB" if "error" not in r else r["error"]))
        if all("error" not in mem[m] for m in ("vizkit", "baseline")):
            print(f"  vizkit ÷ baseline peak memory = {mem['vizkit']['delta_mb'] / mem['baseline']['delta_mb']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
