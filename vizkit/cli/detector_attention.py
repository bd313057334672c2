"""``vizkit detector-attention``: gradient-weighted attention of a ViT deepfake detector
(scenario 1, :func:`vizkit.scenarios.clip_detector_attention.run_detector_attention`)."""

from __future__ import annotations

import argparse

from .common import cluster_flags, cluster_options, cpu_argument, device, num_heads_argument, parameters, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detector-attention",
        help="gradient-weighted attention of a ViT deepfake detector",
        description="Real-class and fake-class gradient-weighted attention maps of a CLIP-ViT detector "
        "(seed 000). Writes {image}_real_attention.png, {image}_fake_attention.png, "
        "{image}_comparison.png, {image}_layers.png (--multi-layer) and {image}.json per "
        "image, and attention_report.md. Without model flags: the zoo's "
        "face_forgery_detector.",
    )
    p.add_argument("--model-config", default=None, help="DeepfakeBench detector YAML (resolution, mean, std, ...)")
    p.add_argument("--weights", default=None, help="detector weights (.pth / .safetensors) or a Hugging Face directory")
    p.add_argument("--head", default=None, help="linear head weights for a HF CLIPVisionModel directory")
    num_heads_argument(p)
    p.add_argument("--image-path", required=True, nargs="+", help="an image, several images, or a folder")
    p.add_argument("--output-dir", default="attention_results", help="output folder (default attention_results)")
    p.add_argument(
        "--target-layers",
        nargs="+",
        default=None,
        help="block indices or names, or last / last_4 / all (default: -4 -3 -2 -1, all blocks on a "
        "detector with fewer than 4)",
    )
    p.add_argument("--head-fusion", default="mean", choices=["mean", "max", "min"], help="head fusion (default mean)")
    p.add_argument(
        "--aggregation",
        default="relevance",
        choices=["relevance", "mean"],
        help="combine layers by Chefer relevance propagation (default) or the plain per-layer mean",
    )
    p.add_argument("--multi-layer", action="store_true", help="also write {image}_layers.png (last / last 4 / all)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--debug", action="store_true", help="print the captured layers and keys")
    cpu_argument(p)
    cluster_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..scenarios.clip_detector_attention import run_detector_attention

    res = run_detector_attention(
        args.image_path,
        args.output_dir,
        model_config=args.model_config,
        weights=args.weights,
        head=args.head,
        num_heads=args.num_heads,
        target_layers=args.target_layers,
        head_fusion=args.head_fusion,
        aggregation=args.aggregation,
        multi_layer=args.multi_layer,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        debug=args.debug,
        device=device(args),
        cluster=cluster_options(args),
        params=parameters(args),
    )
    for note in res.notes:
        say(args, note)
    for r in res.results:
        print(
            f"{r.stem}: predicted {r.class_names[r.predicted]} (p(fake) = {r.probs[res.fake_index]:.3f}); {r.sentence}"
        )
    for name, err in res.failures:
        say(args, f"skipped {name}: {err}")
    print(f"{len(res.results)} image(s) explained into {res.folder}; report: {res.report}")
    return 1 if res.failures else 0
