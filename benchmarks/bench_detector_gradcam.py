#!/usr/bin/env python
"""Scenario 3 benchmark: the evaluation with Grad-CAM maps at the seed's four layers.

One run, one model: a DeepfakeBench-layout CLIP detector (:class:`vizkit.models.ClipDetector`:
HF ``CLIPVisionModel`` + ``Linear(hidden, 2)``) with the ViT-B/16 width and 24 layers so that
the seed's names exist (hidden 768, 12 heads, patch 16, 224 px), random weights
(``torch.manual_seed(0)``), eval mode, batch 8, ``--threads`` torch threads. The layers are the
seed's ``encoder.layers.23 / 20 / 15 / 10`` (block outputs, as the seed names them), method
``--method``. It times, round-robin, ``--repeats`` calls each of

1. ``without``: :func:`evaluate_chunk` of one chunk of 8 images without Grad-CAM (preprocess,
   forward under ``torch.inference_mode``, probabilities);
2. ``with``: the same chunk with Grad-CAM maps for every sample at the four layers (one
   forward, one ``autograd.grad`` from the fake logit down to ``encoder.layers.10``, no parameter
   gradients), the maps copied out as the chunk file stores them;
3. ``pytorch-grad-cam``: ``GradCAM`` / ``GradCAMPlusPlus`` of pytorch-grad-cam with the same four
   layers and target (``ClassifierOutputTarget(1)``), on the already preprocessed batch.

It prints min / median / max, the ratios of the medians (targets: with / without <= 1.8x,
pytorch-grad-cam / with >= 1.7x), the largest difference between vizkit's and
pytorch-grad-cam's combined maps (target <= 1e-4) and the peak memory of ``with`` and
``without`` (one fresh process each, see ``benchlib``: the extra memory above model + input, and
the process's whole peak; target whole peak with / without <= 1.3x). Exit code 0 either way.

    .venv/bin/python benchmarks/bench_detector_gradcam.py            # ViT-B/16 x 24 layers, batch 8, 3 repeats
    .venv/bin/python benchmarks/bench_detector_gradcam.py --quick    # a small model, batch 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import measure_memory, peak_memory, print_worker_result, summary, time_round_robin  # noqa: E402

TARGET_VS_WITHOUT = 1.8
TARGET_SPEEDUP = 1.7
TARGET_DIFF = 1e-4
TARGET_MEMORY = 1.3
METHODS = ("without", "with", "pytorch-grad-cam")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++"])
    p.add_argument("--quick", action="store_true", help="hidden 192, 24 layers, 64 px, batch 2")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--_mem-worker", dest="mem_worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args()


def build(args: argparse.Namespace):
    from transformers import CLIPVisionConfig

    from vizkit.datasets import EvalDataset, Item
    from vizkit.io import read_image_opencv
    from vizkit.models import ClipDetector, Detector
    from vizkit.models.preprocess import CvResizeNormalize
    from vizkit.scenarios import detector_gradcam_eval as dge

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hidden, size = (192, 64) if args.quick else (768, 224)
    cfg = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=24,
        num_attention_heads=hidden // 64,
        image_size=size,
        patch_size=16,
    )
    model = ClipDetector(cfg).eval()
    batch = 2 if args.quick else args.batch
    rng = np.random.default_rng(0)
    samples = [
        SimpleNamespace(image=rng.integers(0, 256, (size, size, 3), dtype=np.uint8), label=i % 2, mask=None)
        for i in range(batch)
    ]
    dataset = EvalDataset(
        "random", [Item(f"random/{i}", s.label) for i, s in enumerate(samples)], "random images", zoo_samples=samples
    )
    det = Detector(
        model,
        CvResizeNormalize(size, (0.5,) * 3, (0.5,) * 3),
        read_image_opencv,
        ["real", "fake"],
        size,
        "random",
        "deepfakebench:clip",
        "deepfakebench",
    )
    layers = dge.resolve_gradcam_layers(model, list(dge.SEED_LAYERS))

    def ctx(enabled: bool):
        a = dge.EvalArgs(gradcam_enabled=enabled, layers=tuple(dge.SEED_LAYERS), method=args.method, batch_size=batch)
        return dge.evaluation_context(a, "cpu", detector=det, dataset=dataset)

    with_ctx, without_ctx = ctx(True), ctx(False)
    x = torch.stack([det.preprocess(s.image) for s in samples])
    return model, layers, with_ctx, without_ctx, x, size


def make_runners(model, layers, with_ctx, without_ctx, x, size, method):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from vizkit.layers import get_module
    from vizkit.scenarios import detector_gradcam_eval as dge

    grid = size // 16

    def reshape(t):
        t = t[0] if isinstance(t, tuple) else t
        return t[:, 1:, :].reshape(t.shape[0], grid, grid, t.shape[-1]).permute(0, 3, 1, 2)

    cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    modules = [get_module(model, i.module) for i in layers]

    def pgc(images):
        with cls(model=model, target_layers=modules, reshape_transform=reshape) as c:
            return c(input_tensor=images, targets=[ClassifierOutputTarget(1)] * images.shape[0])

    return {
        "without": lambda images: dge.evaluate_chunk(without_ctx, 0),
        "with": lambda images: dge.evaluate_chunk(with_ctx, 0),
        "pytorch-grad-cam": pgc,
    }


def main() -> int:
    args = parse_args()
    model, layers, with_ctx, without_ctx, x, size = build(args)
    runners = make_runners(model, layers, with_ctx, without_ctx, x, size, args.method)
    if args.mem_worker:
        run = runners[args.mem_worker]
        print_worker_result(args.mem_worker, peak_memory(lambda: run(x), lambda: run(x), model))
        return 0
    print(
        f"model: ClipDetector (CLIPVisionModel hidden {model.head.in_features}, 24 layers, {size} px, random "
        f"weights); batch {x.shape[0]}; {torch.get_num_threads()} threads; method {args.method}"
    )
    print("layers: " + ", ".join(f"{i.name} -> {i.module}" for i in layers))
    times = time_round_robin({m: (lambda r=r: r(x)) for m, r in runners.items()}, args.repeats)
    print(f"{'':18s}{'min / median / max':>36s}")
    for m in METHODS:
        print(f"{m:18s}{summary(times[m])}")
    med = {m: statistics.median(t) for m, t in times.items()}
    r1, r2 = med["with"] / med["without"], med["pytorch-grad-cam"] / med["with"]
    print(
        f"evaluation with maps / without:     {r1:5.2f}x  (target <= {TARGET_VS_WITHOUT}x: "
        f"{'met' if r1 <= TARGET_VS_WITHOUT else 'NOT met'})"
    )
    print(
        f"pytorch-grad-cam / vizkit with maps: {r2:5.2f}x  (target >= {TARGET_SPEEDUP}x: "
        f"{'met' if r2 >= TARGET_SPEEDUP else 'NOT met'})"
    )
    from vizkit.explain import cam

    ours = cam(model, x, 1, layers=[i.module for i in layers], method=args.method).heatmap.numpy()
    theirs = runners["pytorch-grad-cam"](x)
    diff = float(np.abs(ours - theirs).max())
    print(
        f"max |vizkit - pytorch-grad-cam| combined map: {diff:.2e}  (target <= {TARGET_DIFF:g}: "
        f"{'met' if diff <= TARGET_DIFF else 'NOT met'})"
    )
    if not args.no_memory:
        flags = ["--batch", str(args.batch), "--threads", str(args.threads), "--method", args.method] + (
            ["--quick"] if args.quick else []
        )
        mem = measure_memory(__file__, flags, ("without", "with"))
        for m, r in mem.items():
            if "error" in r:
                print(f"peak memory {m}: {r['error']}")
            else:
                print(
                    f"peak memory {m:8s}: +{r['delta_mb']:7.1f} MiB above model + input; whole process "
                    f"{r['peak_mb']:7.1f} MiB"
                )
        if all("error" not in r for r in mem.values()):
            whole = mem["with"]["peak_mb"] / mem["without"]["peak_mb"]
            extra = mem["with"]["delta_mb"] / max(mem["without"]["delta_mb"], 1e-6)
            print(
                f"peak memory with / without: {whole:5.2f}x whole process (target <= {TARGET_MEMORY}x: "
                f"{'met' if whole <= TARGET_MEMORY else 'NOT met'}); {extra:5.2f}x of the extra memory"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
