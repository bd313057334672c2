"""``vizkit vlm-video``: per-token attention of a VLM over text and image patches, as an mp4
(scenario 5, :func:`vizkit.scenarios.vlm_attention_video.run_video`)."""

from __future__ import annotations

import argparse

from .common import cluster_flags, cluster_options, say

DEFAULT_VLM_START = "Based on the following requirements"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "vlm-video",
        help="per-token attention of a VLM over text and image patches, as an mp4",
        description="Seed 004: while a vision-language model (a local folder of a supported family: "
        "docs/howto/vlm-families.md) writes its answer, the attention of each new token over the earlier text "
        "and the image patches, side by side in "
        "combined_attention_visualization_layer{idx}.mp4 "
        "(one per layer), with contact_sheet_layer{idx}.png, attention.npz and report.md. "
        "Without model flags: the zoo's tiny_vlm on its sample benchmark.",
    )
    p.add_argument(
        "--model_path", "--model-path", default=None, help="a local VLM folder (default: the zoo's tiny_vlm)"
    )
    p.add_argument(
        "--benchmark_json",
        "--benchmark-json",
        default=None,
        help="JSON list of {image, problem, solution} (default: tiny_vlm's sample benchmark)",
    )
    p.add_argument(
        "--image_dir",
        "--image-dir",
        default=None,
        help="folder the image paths are relative to (default: the JSON's folder)",
    )
    p.add_argument(
        "--sample_idx",
        "--sample-idx",
        default="0",
        help="which sample: an index (default 0), a list 0,2,5, a range 1-4, or all; several samples go "
        "into sample_<idx>/ folders with an index.md, and a rerun into the same folder resumes",
    )
    p.add_argument(
        "--layer_idx",
        "--layer-idx",
        type=int,
        default=None,
        help="decoder layer (default 20, or the last layer of a model with 20 or fewer)",
    )
    p.add_argument("--layers", type=int, nargs="+", default=None, help="several decoder layers: one video each")
    p.add_argument(
        "--start_phrase",
        "--start-phrase",
        default=DEFAULT_VLM_START,
        help=f"the video starts where this phrase begins ('' = first token; default {DEFAULT_VLM_START!r})",
    )
    p.add_argument(
        "--heads",
        default="auto",
        help="auto (default: per layer, the head view with the most attention mass on the asked-about object in "
        "tiny_vlm's ground-truth table; the mean over heads for other models), mean, max, or a head index",
    )
    p.add_argument("--max_image_num", "--max-image-num", type=int, default=2, help="use at most N images (default 2)")
    p.add_argument(
        "--max_new_tokens", "--max-new-tokens", type=int, default=128, help="generation length (default 128)"
    )
    p.add_argument(
        "--mode",
        default="generate",
        choices=["generate", "solution"],
        help="generate (default) or teacher-force the sample's solution",
    )
    p.add_argument("--fps", type=int, default=4, help="video frames per second (default 4)")
    p.add_argument(
        "--sinks",
        choices=("keep", "mask"),
        default="keep",
        help="keep the attention sinks in the video (default) or mask them, rows renormalised over the "
        "rest (docs/howto/vlm-video.md: Attention sinks)",
    )
    p.add_argument(
        "--explain_token",
        "--explain-token",
        default=None,
        help="also explain one answer token (an index, negative from the end, or a word): its relevance "
        "(gradient-weighted attention over all layers) beside the attention, relevance_token<j>.png "
        "and relevance.npz (docs/howto/vlm-video.md: Per-token relevance)",
    )
    p.add_argument(
        "--relevance_layers",
        "--relevance-layers",
        type=int,
        nargs="+",
        default=None,
        help="decoder layers the relevance runs over (default all)",
    )
    p.add_argument("--output-dir", "--output_dir", default=None, help="run folder (default runs/<time>-vlm-video)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    cluster_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..scenarios.vlm_attention_video import run_video

    spec = args.sample_idx.strip()
    one = spec.lstrip("-").isdigit()
    res = run_video(
        args.model_path,
        args.benchmark_json,
        args.image_dir,
        int(spec) if one else spec,
        args.layer_idx,
        args.start_phrase,
        args.layers,
        args.heads,
        args.max_image_num,
        args.max_new_tokens,
        args.mode,
        args.output_dir,
        args.overwrite,
        args.fps,
        sinks=args.sinks,
        cluster=cluster_options(args),
        explain_token=args.explain_token,
        relevance_layers=args.relevance_layers,
    )
    if not one:
        for row in res["samples"]:
            print(f"sample {row['sample']}: {row['status']}" + (f" ({row['error']})" if row["error"] else ""))
        print(
            f"{len(res['samples'])} sample(s) into {res['folder']} ({res['skipped']} complete from an earlier run); "
            f"index: {res['index']}"
        )
        return 1 if res["failed"] else 0
    for note in res["notes"]:
        say(args, note)
    t = res["trace"]
    print(f"answer ({t.num_answer_tokens} tokens): {t.text.strip()}")
    for name, path in res["outputs"].items():
        print(f"{name}: {path}")
    print(f"{len(t.frame_tokens)} frame(s) per video into {res['folder']}")
    return 0
