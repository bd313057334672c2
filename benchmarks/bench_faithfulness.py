"""ROAD: vizkit.metrics.road vs pytorch-grad-cam on the same model, images and maps (target >= 10x).

    .venv/bin/python benchmarks/bench_faithfulness.py                  # resnet18, 8 images, 224 px, 9 percentiles
    .venv/bin/python benchmarks/bench_faithfulness.py --channels-last  # vizkit forwards channels-last batches
    .venv/bin/python benchmarks/bench_faithfulness.py --channels-last --fold-batchnorm  # ... with BatchNorm folded
    .venv/bin/python benchmarks/bench_faithfulness.py --parts          # also time pytorch-grad-cam's parts
    .venv/bin/python benchmarks/bench_faithfulness.py --threads 2 --size 128 --batch 4

ResNet-18 with random weights (torch.manual_seed(0), eval), a fixed random batch and smooth random
maps (7x7 upsampled bilinearly, like a CAM). Both orders (MoRF and LeRF averages over the 9
percentiles 10..90) are timed for each library, with noise 0 so that the scores can be compared:
the largest |score difference| is printed beside the times. pytorch-grad-cam solves one scipy
sparse system per image and percentile and forwards the clean batch again for every percentile;
vizkit (``road_curves``, both orders in one call) solves all masks of a chunk together (Galerkin
multigrid-preconditioned conjugate gradients) and forwards each imputed image once.

Every time is given as wall-clock and as this process's CPU time (``time.process_time``): on a
shared machine the wall-clock of either library depends on the other jobs, the CPU time much
less. vizkit's parts (mask building, imputation, forward passes) are then timed on their own;
their floor is the forward passes, which pytorch-grad-cam makes too (twice as many). Everything
is measured in one run; the exit code is 0 whatever the ratio.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall-clock and its CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads for both (default: torch's, one per physical core; scipy's solve is single-threaded)",
    )
    parser.add_argument("--channels-last", action="store_true", help="vizkit forwards channels-last batches")
    parser.add_argument(
        "--fold-batchnorm",
        action="store_true",
        help="vizkit forwards with the model's BatchNorms folded into its convolutions (fold_batchnorm=True)",
    )
    parser.add_argument("--parts", action="store_true", help="also time pytorch-grad-cam's imputation and forwards")
    args = parser.parse_args()

    import torchvision
    from pytorch_grad_cam.metrics import road as pgc_road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from vizkit.metrics import road_curves
    from vizkit.metrics.batchnorm_folding import fold_batchnorm
    from vizkit.metrics.imputation import noisy_linear_impute
    from vizkit.metrics.road import _keep_masks

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    g = torch.Generator().manual_seed(0)
    b, size = args.batch, args.size
    x = torch.randn(b, 3, size, size, generator=g)
    maps = torch.nn.functional.interpolate(torch.rand(b, 1, 7, 7, generator=g), size=size, mode="bilinear")[:, 0]
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    percentiles = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    pgc_road.NoisyLinearImputer.__init__.__defaults__ = (0.0, pgc_road.neighbors_weights)  # noise 0 for parity
    cl, fold = args.channels_last, args.fold_batchnorm

    # warm-up of both libraries on the full batch (one percentile each): the first forward of a batch shape
    # builds oneDNN's kernels, which neither library should pay inside its timed call
    targets = [ClassifierOutputTarget(c) for c in classes]
    road_curves(model, x, maps, classes, percentiles=[50], noise=0, channels_last=cl, fold_batchnorm=fold)
    pgc_road.ROADMostRelevantFirstAverage([50])(x, maps.numpy(), targets, model)
    curves, t_viz, c_viz = timed(
        lambda: road_curves(
            model, x, maps, classes, percentiles=percentiles, noise=0, channels_last=cl, fold_batchnorm=fold
        )
    )
    ours = {o: c.mean(1) for o, c in curves.items()}

    theirs, t_pgc, c_pgc = timed(
        lambda: {
            "morf": pgc_road.ROADMostRelevantFirstAverage(percentiles)(x, maps.numpy(), targets, model),
            "lerf": pgc_road.ROADLeastRelevantFirstAverage(percentiles)(x, maps.numpy(), targets, model),
        }
    )
    diff = max(float(np.abs(ours[o].numpy() - theirs[o]).max()) for o in ours)

    # vizkit's parts on their own: masks, imputation (chunks of 16 images as road_curves), forwards
    keep, t_mask, c_mask = timed(lambda: torch.cat([_keep_masks(maps, o, percentiles) for o in ("morf", "lerf")]))
    rows = torch.arange(b).repeat(keep.shape[0])
    flat = keep.flatten(0, 1)

    def impute() -> torch.Tensor:
        return torch.cat([noisy_linear_impute(x[rows[i : i + 16]], flat[i : i + 16]) for i in range(0, len(rows), 16)])

    imputed, t_imp, c_imp = timed(impute)
    batches = [x] + list(imputed.split(16))
    ours_model = fold_batchnorm(model) if fold else model

    def forwards() -> None:
        with torch.no_grad():
            for batch in batches:
                ours_model(batch.contiguous(memory_format=torch.channels_last) if cl else batch)

    _, t_fwd, c_fwd = timed(forwards)
    n_fwd = b + len(imputed)

    print(
        f"ROAD MoRF + LeRF, resnet18, {b} images at {size} px, {len(percentiles)} percentiles, noise 0, "
        f"{args.threads} thread(s), vizkit channels_last={cl} fold_batchnorm={fold}"
    )

    def row(label: str, wall: float, cpu: float, unit: str = "s", note: str = "") -> None:
        print(f"  {label:34s}{wall:9.2f}{cpu:9.2f} {unit}{note}")

    print(f"  {'':34s}{'wall':>9s}{'cpu':>9s}")
    row("vizkit.metrics.road_curves", t_viz, c_viz)
    row("pytorch-grad-cam ROAD", t_pgc, c_pgc)
    row("speed-up", t_pgc / t_viz, c_pgc / c_viz, "x", "   (target >= 10x)")
    print(f"  max |score difference|  {diff:.2e}    (target <= 1e-3)")
    print("  vizkit's parts, timed alone:")
    row(f"  masks ({len(rows)})", t_mask, c_mask)
    row(f"  imputation ({len(rows)} masks)", t_imp, c_imp)
    row(f"  forwards ({n_fwd} images)", t_fwd, c_fwd, "s", f"   ({1e3 * c_fwd / n_fwd:.1f} ms cpu per image)")
    row("  speed-up ceiling (free imputation)", t_pgc / t_fwd, c_pgc / c_fwd, "x")
    if args.parts:
        imputer = pgc_road.NoisyLinearImputer(noise=0.0)

        def pgc_impute() -> None:
            for order in ("morf", "lerf"):
                for p in percentiles:
                    for i in range(b):
                        m = maps[i].numpy() if order == "morf" else 1 - maps[i].numpy()
                        imputer(x[i], torch.from_numpy(np.float32(m < np.percentile(m, p))))

        def pgc_forwards() -> None:
            with torch.no_grad():
                for _ in range(4 * len(percentiles)):  # clean + imputed batch per percentile and order
                    model(x)

        _, t_pi, c_pi = timed(pgc_impute)
        _, t_pf, c_pf = timed(pgc_forwards)
        n = 4 * len(percentiles) * b
        print("  pytorch-grad-cam's parts, timed alone:")
        row(f"  imputation ({len(rows)} masks)", t_pi, c_pi)
        row(f"  forwards ({n} images)", t_pf, c_pf, "s", f"   ({1e3 * c_pf / n:.1f} ms cpu per image)")


if __name__ == "__main__":
    main()
