"""``vizkit clip-gradcam``: Grad-CAM of a CLIP image encoder toward a text (scenario 4,
:func:`vizkit.scenarios.clip_text_gradcam.run_clip_gradcam`)."""

from __future__ import annotations

import argparse

from .common import cluster_flags, cluster_options, cpu_argument, device, layout_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..methods import METHODS

    p = sub.add_parser(
        "clip-gradcam",
        help="Grad-CAM of a CLIP image encoder toward a text",
        description="Explain which image regions make a CLIP model match a text. Writes "
        "clip_gradcam_<image>.png (image, heatmap, overlay, probabilities), "
        "clip_gradcam_<image>_overlay.png and a .json sidecar per image.",
    )
    p.add_argument(
        "--model",
        default=None,
        help="zoo model (default shapes_clip), an open_clip model name "
        "(with --model-path), or a Hugging Face CLIP directory",
    )
    p.add_argument("--model-path", default=None, help="weights file (open_clip name or custom two-tower model)")
    p.add_argument("--image-path", required=True, nargs="+", help="an image, several images, or a folder")
    texts = p.add_mutually_exclusive_group()
    texts.add_argument("--class-texts", nargs="+", default=None, help="class texts")
    texts.add_argument("--class-texts-file", default=None, help='JSON file {"name": "description", ...}')
    p.add_argument(
        "--target-text-idx", type=int, default=None, help="index of the text to explain (default: the most similar)"
    )
    p.add_argument("--method", default="gradcam", choices=list(METHODS), help="CAM method (default gradcam)")
    p.add_argument("--target-layer", default="auto", help="layer name (default: chosen automatically)")
    p.add_argument(
        "--probability", action="store_true", help="explain the softmax probability instead of the similarity"
    )
    layout_argument(p)
    p.add_argument("--image-encoder", default=None, help="custom model: timm/torchvision backbone name")
    p.add_argument("--text-encoder", default=None, help="custom model: local Hugging Face text encoder directory")
    p.add_argument("--embed-dim", type=int, default=512, help="custom model: embedding size (default 512)")
    p.add_argument("--img-size", type=int, default=224, help="custom model: input size (default 224)")
    p.add_argument("--output-dir", default="clip_gradcam_results", help="output folder (default clip_gradcam_results)")
    p.add_argument("--output-name", default=None, help="output file name (default clip_gradcam_<image name>)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an output folder that holds another run (docs: How-to, Batches and resuming)",
    )
    cpu_argument(p)
    cluster_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..scenarios.clip_text_gradcam import run_clip_gradcam

    res = run_clip_gradcam(
        args.image_path,
        args.class_texts,
        args.class_texts_file,
        model=args.model,
        model_path=args.model_path,
        image_encoder=args.image_encoder,
        text_encoder=args.text_encoder,
        embed_dim=args.embed_dim,
        img_size=args.img_size,
        target_text_idx=args.target_text_idx,
        method=args.method,
        target_layer=args.target_layer,
        probability=args.probability,
        layout=args.layout,
        output_dir=args.output_dir,
        output_name=args.output_name,
        device=device(args),
        cluster=cluster_options(args),
        overwrite=args.overwrite,
    )
    print(
        f"model: {res.model} | method: {res.method} | layer: {', '.join(res.layers)} | "
        f"explained score: image-text {res.score}"
    )
    for r in res.rows:
        print(
            f"{r['image']}: target ({r['target_chosen']}) {res.names[r['target']]!r} p={r['prob']:.3f} -> {r['figure']}"
        )
    return 0
