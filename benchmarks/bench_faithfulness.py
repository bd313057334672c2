"""ROAD: vizkit.metrics.road vs pytorch-grad-cam on the same model, images and maps (target >= 10x).

    .venv/bin/python benchmarks/bench_faithfulness.py                # resnet18, 8 images, 224 px, 9 percentiles
    .venv/bin/python benchmarks/bench_faithfulness.py --threads 2 --size 128 --batch 4

ResNet-18 with random weights (torch.manual_seed(0), eval), a fixed random batch and smooth random
maps (7x7 upsampled bilinearly, like a CAM). Both orders (MoRF and LeRF averages over the 9
percentiles 10..90) are timed for each library, with noise 0 so that the scores can be compared:
the largest |score difference| is printed beside the times. pytorch-grad-cam solves one scipy
sparse system per image and percentile; vizkit solves all masks of a chunk together
(multigrid-preconditioned conjugate gradients) and forwards all imputed images in few passes.
Everything is measured in one run; the exit code is 0 whatever the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both (scipy is single-threaded)")
    args = parser.parse_args()

    import torchvision
    from pytorch_grad_cam.metrics import road as pgc_road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from vizkit.metrics import road

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    maps = torch.nn.functional.interpolate(
        torch.rand(args.batch, 1, 7, 7, generator=g), size=args.size, mode="bilinear"
    )[:, 0]
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    percentiles = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    pgc_road.NoisyLinearImputer.__init__.__defaults__ = (0.0, pgc_road.neighbors_weights)  # noise 0 for parity

    road(model, x[:1], maps[:1], classes[:1], percentiles=[50], order="morf", noise=0)  # warm-up
    start = time.perf_counter()
    ours = {o: road(model, x, maps, classes, percentiles=percentiles, order=o, noise=0) for o in ("morf", "lerf")}
    t_vizkit = time.perf_counter() - start

    targets = [ClassifierOutputTarget(c) for c in classes]
    start = time.perf_counter()
    theirs = {
        "morf": pgc_road.ROADMostRelevantFirstAverage(percentiles)(x, maps.numpy(), targets, model),
        "lerf": pgc_road.ROADLeastRelevantFirstAverage(percentiles)(x, maps.numpy(), targets, model),
    }
    t_pgc = time.perf_counter() - start

    diff = max(float(np.abs(ours[o].numpy() - theirs[o]).max()) for o in ours)
    print(
        f"ROAD MoRF + LeRF, resnet18, {args.batch} images at {args.size} px, {len(percentiles)} percentiles, "
        f"noise 0, {args.threads} thread(s)"
    )
    print(f"  vizkit.metrics.road     {t_vizkit:8.2f} s")
    print(f"  pytorch-grad-cam ROAD   {t_pgc:8.2f} s")
    print(f"  speed-up                {t_pgc / t_vizkit:8.2f} x   (target >= 10x)")
    print(f"  max |score difference|  {diff:.2e}    (target <= 1e-3)")


if __name__ == "__main__":
    main()
