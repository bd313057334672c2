"""``vizkit detector-gradcam``: Grad-CAM / Grad-CAM++ of a deepfake detector on named layers
(scenario 3, :func:`vizkit.scenarios.detector_gradcam_demo.gradcam_demo`)."""

from __future__ import annotations

import argparse

from .common import cluster_flags, cluster_options, cpu_argument, device, layout_argument, num_heads_argument, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detector-gradcam",
        help="Grad-CAM / Grad-CAM++ of a deepfake detector on named layers",
        description="Seed 002's gradcam_demo: per image one overlay per layer "
        "(gradcam_{layer}_{image}.png), a comparison across layers with the prediction in "
        "the title ({image}_comparison.png) and {image}.json. Without --config/--weights: "
        "the zoo's face_forgery_detector.",
    )
    p.add_argument("--input", required=True, nargs="+", help="an image, several images, or a folder")
    p.add_argument("--output", default="gradcam_results", help="output folder (default gradcam_results)")
    p.add_argument("--config", default=None, help="DeepfakeBench detector YAML (its gradcam_layers are the default)")
    p.add_argument("--weights", default=None, help="detector weights (.pth) or a Hugging Face directory")
    num_heads_argument(p)
    p.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help="e.g. encoder.layers.23 encoder.layers.20 (negative "
        "indices count from the end; default: the inputs of the seed's blocks or of the last four)",
    )
    p.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++"], help="CAM method (default gradcam)")
    p.add_argument(
        "--target",
        default="predicted",
        choices=["predicted", "fake", "real"],
        help="explained class (default: the predicted one)",
    )
    layout_argument(p)
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    cpu_argument(p)
    cluster_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..scenarios.detector_gradcam_demo import gradcam_demo

    results, failures = gradcam_demo(
        args.input,
        args.output,
        args.config,
        args.weights,
        args.layers,
        args.method,
        args.target,
        overwrite=args.overwrite,
        progress=True,
        device=device(args),
        layout=args.layout,
        num_heads=args.num_heads,
        cluster=cluster_options(args),
    )
    for r in results:
        print(
            f"{r['image']}: predicted {r['prediction']} (p(fake) = {r['fake_probability']:.4f}); "
            f"layers {', '.join(r['layers'])}"
        )
    for name, err in failures:
        say(args, f"skipped {name}: {err}")
    print(f"{len(results)} image(s) explained into {args.output}")
    return 1 if failures else 0
