"""``vizkit`` command line. ``vizkit clip-gradcam --help`` lists the flags of seed 003's script."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

def _layout_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", default=None, choices=["nchw", "nhwc", "tokens"],
                   help="where the target layers' channels are: nchw [B, C, h, w], nhwc [B, h, w, C] (Swin) or "
                        "tokens [B, N, C] (default: decided per layer; an ambiguous layer asks for this flag)")


def _clip_gradcam_parser(sub: argparse._SubParsersAction) -> None:
    from .methods import METHODS

    p = sub.add_parser("clip-gradcam", help="Grad-CAM of a CLIP image encoder toward a text",
                       description="Explain which image regions make a CLIP model match a text. Writes "
                                   "clip_gradcam_<image>.png (image, heatmap, overlay, probabilities), "
                                   "clip_gradcam_<image>_overlay.png and a .json sidecar per image.")
    p.add_argument("--model", default=None, help="zoo model (default shapes_clip), an open_clip model name "
                   "(with --model-path), or a Hugging Face CLIP directory")
    p.add_argument("--model-path", default=None, help="weights file (open_clip name or custom two-tower model)")
    p.add_argument("--image-path", required=True, nargs="+", help="an image, several images, or a folder")
    texts = p.add_mutually_exclusive_group()
    texts.add_argument("--class-texts", nargs="+", default=None, help="class texts")
    texts.add_argument("--class-texts-file", default=None, help='JSON file {"name": "description", ...}')
    p.add_argument("--target-text-idx", type=int, default=None, help="index of the text to explain (default: the most similar)")
    p.add_argument("--method", default="gradcam", choices=list(METHODS), help="CAM method (default gradcam)")
    p.add_argument("--target-layer", default="auto", help="layer name (default: chosen automatically)")
    p.add_argument("--probability", action="store_true", help="explain the softmax probability instead of the similarity")
    _layout_argument(p)
    p.add_argument("--image-encoder", default=None, help="custom model: timm/torchvision backbone name")
    p.add_argument("--text-encoder", default=None, help="custom model: local Hugging Face text encoder directory")
    p.add_argument("--embed-dim", type=int, default=512, help="custom model: embedding size (default 512)")
    p.add_argument("--img-size", type=int, default=224, help="custom model: input size (default 224)")
    p.add_argument("--output-dir", default="clip_gradcam_results", help="output folder (default clip_gradcam_results)")
    p.add_argument("--output-name", default=None, help="output file name (default clip_gradcam_<image name>)")
    p.add_argument("--cpu", action="store_true", help="force the CPU")
    _cluster_flags(p)
    p.set_defaults(run=_clip_gradcam)


def _clip_gradcam(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .scenarios.clip_text_gradcam import (explain_clip, load_class_texts, load_clip_model, load_image,
                                              output_stem, save_result)
    from .errors import InputError
    from .io import image_files

    if args.class_texts is None and args.class_texts_file is None:
        raise InputError("give the class texts with --class-texts or --class-texts-file")
    names, texts = load_class_texts(args.class_texts, args.class_texts_file)
    if args.target_text_idx is not None and not 0 <= args.target_text_idx < len(texts):
        raise InputError(f"--target-text-idx {args.target_text_idx} is out of range: there are {len(texts)} class "
                         f"texts (valid 0..{len(texts) - 1})")
    files = image_files(args.image_path)
    images = [load_image(f) for f in files]  # every image is read before anything is written
    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    adapter = load_clip_model(args.model, args.model_path, image_encoder=args.image_encoder,
                              text_encoder=args.text_encoder, embed_dim=args.embed_dim, img_size=args.img_size,
                              device=device)
    batch = len(files) > 1
    opts = _cluster(args, "batch")
    if opts is not None:
        from .distributed.chunks import map_tasks
        from .scenarios.cluster_tasks import clip_gradcam_task

        model_kwargs = dict(model=args.model, model_path=args.model_path, image_encoder=args.image_encoder,
                            text_encoder=args.text_encoder, embed_dim=args.embed_dim, img_size=args.img_size,
                            device=device)
        rows = map_tasks(opts, clip_gradcam_task, [(str(f), output_stem(f, args.output_name, batch)) for f in files],
                         args.output_dir, model_kwargs, names, texts, args.target_text_idx, args.method,
                         args.target_layer, args.probability, args.layout, progress="clip-gradcam", unit="image")
        r0 = rows[0]
        print(f"model: {r0['model']} | method: {r0['method']} | layer: {', '.join(r0['layers'])} | "
              f"explained score: image-text {r0['score']}")
        for path, r in zip(files, rows):
            print(f"{path.name}: target ({r['target_chosen']}) {names[r['target']]!r} p={r['prob']:.3f} -> "
                  f"{r['figure']}")
        return 0
    first = True
    for path, image in tqdm(list(zip(files, images)), desc="clip-gradcam", disable=not batch, unit="image"):
        result = explain_clip(adapter, [image], names, texts, args.target_text_idx, args.method, args.target_layer,
                              args.probability, [str(path)], layout=args.layout)[0]
        if first:
            print(f"model: {adapter.name} | method: {result.method} | layer: {', '.join(result.layers)} | "
                  f"explained score: image-text {result.score}")
            first = False
        written = save_result(result, args.output_dir, output_stem(path, args.output_name, batch))
        t = result.target
        print(f"{path.name}: target ({result.target_chosen}) {names[t]!r} p={result.probs[t]:.3f} -> {written['figure']}")
    return 0


def _detector_attention_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detector-attention", help="gradient-weighted attention of a ViT deepfake detector",
                       description="Real-class and fake-class gradient-weighted attention maps of a CLIP-ViT detector "
                                   "(seed 000). Writes {image}_real_attention.png, {image}_fake_attention.png, "
                                   "{image}_comparison.png, {image}_layers.png (--multi-layer) and {image}.json per "
                                   "image, and attention_report.md. Without model flags: the zoo's face_forgery_detector.")
    p.add_argument("--model-config", default=None, help="DeepfakeBench detector YAML (resolution, mean, std, ...)")
    p.add_argument("--weights", default=None, help="detector weights (.pth / .safetensors) or a Hugging Face directory")
    p.add_argument("--head", default=None, help="linear head weights for a HF CLIPVisionModel directory")
    _num_heads_argument(p)
    p.add_argument("--image-path", required=True, nargs="+", help="an image, several images, or a folder")
    p.add_argument("--output-dir", default="attention_results", help="output folder (default attention_results)")
    p.add_argument("--target-layers", nargs="+", default=None,
                   help="block indices or names, or last / last_4 / all (default: -4 -3 -2 -1, all blocks on a "
                        "detector with fewer than 4)")
    p.add_argument("--head-fusion", default="mean", choices=["mean", "max", "min"], help="head fusion (default mean)")
    p.add_argument("--aggregation", default="relevance", choices=["relevance", "mean"],
                   help="combine layers by Chefer relevance propagation (default) or the plain per-layer mean")
    p.add_argument("--multi-layer", action="store_true", help="also write {image}_layers.png (last / last 4 / all)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--debug", action="store_true", help="print the captured layers and keys")
    p.add_argument("--cpu", action="store_true", help="force the CPU")
    _cluster_flags(p)
    p.set_defaults(run=_detector_attention)


def _detector_attention(args: argparse.Namespace) -> int:
    import torch

    from .io import image_files
    from .runs import run_folder
    from .scenarios import clip_detector_attention as s

    files = image_files(args.image_path)
    if args.batch_size < 1:
        from .errors import InputError

        raise InputError(f"--batch-size must be positive, got {args.batch_size}")
    layers = s.parse_layers(",".join(args.target_layers)) if args.target_layers else None
    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    detector = s.load_detector_model(None, args.model_config, args.weights, head=args.head, num_heads=args.num_heads,
                                     device=device)
    checked = s.CLIPViTGradCAM(detector.model, layers, args.head_fusion, args.aggregation, detector.class_names)
    if checked.note:
        print(f"vizkit detector-attention: {checked.note}", file=sys.stderr)
    out = run_folder(args.output_dir, "detector-attention", overwrite=args.overwrite, overwrite_hint="pass --overwrite")
    opts = _cluster(args, "batch")
    if opts is not None:  # batches of images on the cluster, the report here
        import math

        from .distributed.chunks import map_tasks
        from .scenarios.cluster_tasks import detector_attention_task

        pairs = list(zip(map(str, files), s._stems(files)))
        size = max(1, min(args.batch_size, math.ceil(len(pairs) / 8)))
        parts = map_tasks(opts, detector_attention_task, [pairs[i:i + size] for i in range(0, len(pairs), size)],
                          str(out), args.model_config, args.weights, args.head, layers, args.head_fusion,
                          args.aggregation, args.multi_layer, args.batch_size, device, args.num_heads,
                          progress="detector-attention", unit="batch")
        results = [r for res, _ in parts for r in res]
        failures = [f for _, fails in parts for f in fails]
    else:
        results, failures = s.analyze_images(detector, files, out, layers, args.head_fusion, args.aggregation,
                                             multi_layer=args.multi_layer, batch_size=args.batch_size,
                                             progress=len(files) > 1, debug=args.debug)
    params = {k: v for k, v in vars(args).items() if k not in ("run", "command")}
    report = s.write_attention_report(out, params, detector, results, failures=failures)
    for r in results:
        print(f"{r.stem}: predicted {r.class_names[r.predicted]} (p(fake) = {r.probs[detector.fake_index]:.3f}); "
              f"{r.sentence}")
    for name, err in failures:
        print(f"vizkit detector-attention: skipped {name}: {err}", file=sys.stderr)
    print(f"{len(results)} image(s) explained into {out}; report: {report}")
    return 1 if failures else 0


def _detector_gradcam_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detector-gradcam", help="Grad-CAM / Grad-CAM++ of a deepfake detector on named layers",
                       description="Seed 002's gradcam_demo: per image one overlay per layer "
                                   "(gradcam_{layer}_{image}.png), a comparison across layers with the prediction in "
                                   "the title ({image}_comparison.png) and {image}.json. Without --config/--weights: "
                                   "the zoo's face_forgery_detector.")
    p.add_argument("--input", required=True, nargs="+", help="an image, several images, or a folder")
    p.add_argument("--output", default="gradcam_results", help="output folder (default gradcam_results)")
    p.add_argument("--config", default=None, help="DeepfakeBench detector YAML (its gradcam_layers are the default)")
    p.add_argument("--weights", default=None, help="detector weights (.pth) or a Hugging Face directory")
    _num_heads_argument(p)
    p.add_argument("--layers", nargs="+", default=None, help="e.g. encoder.layers.23 encoder.layers.20 (negative "
                   "indices count from the end; default: the inputs of the seed's blocks or of the last four)")
    p.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++"], help="CAM method (default gradcam)")
    p.add_argument("--target", default="predicted", choices=["predicted", "fake", "real"],
                   help="explained class (default: the predicted one)")
    _layout_argument(p)
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--cpu", action="store_true", help="force the CPU")
    _cluster_flags(p)
    p.set_defaults(run=_detector_gradcam)


def _detector_gradcam(args: argparse.Namespace) -> int:
    import torch

    from .scenarios.detector_gradcam_eval import gradcam_demo

    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    opts = _cluster(args, "batch")
    mapper = None
    if opts is not None:
        from .scenarios.cluster_tasks import detector_gradcam_mapper

        mapper = detector_gradcam_mapper(opts, args.config, args.weights, args.method, args.target, device,
                                         args.layout, args.num_heads)
    results, failures = gradcam_demo(args.input, args.output, args.config, args.weights, args.layers, args.method,
                                     args.target, overwrite=args.overwrite, progress=True, device=device,
                                     layout=args.layout, map_images=mapper, num_heads=args.num_heads)
    for r in results:
        print(f"{r['image']}: predicted {r['prediction']} (p(fake) = {r['fake_probability']:.4f}); "
              f"layers {', '.join(r['layers'])}")
    for name, err in failures:
        print(f"vizkit detector-gradcam: skipped {name}: {err}", file=sys.stderr)
    print(f"{len(results)} image(s) explained into {args.output}")
    return 1 if failures else 0


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a deepfake detector on a test set, with Grad-CAM of its mistakes",
                       description="Seed 002's test_with_gradcam: AUC, accuracy, EER, AP (and video AUC) over the test "
                                   "set into metrics.json, every prediction into predictions.csv, Grad-CAM maps of the "
                                   "first --gradcam_samples wrong predictions into sample{i}/, and report.md. "
                                   "Resumable: rerun the same command after an interruption. Without model flags: the "
                                   "zoo detector on its test faces.")
    p.add_argument("--detector_path", "--detector-path", default=None, help="DeepfakeBench detector YAML")
    p.add_argument("--weights_path", "--weights-path", default=None, help="detector weights (.pth)")
    p.add_argument("--test_config", "--test-config", default=None,
                   help="DeepfakeBench's test_config.yaml (rgb_dir, dataset_json_folder, label_dict), merged over the "
                        "detector YAML as its test.py does (default: training/config/test_config.yaml under the "
                        "working directory when --detector_path is given and that file exists)")
    _num_heads_argument(p)
    p.add_argument("--test_dataset", "--test-dataset", default=None,
                   help="zoo:face_forgery (default), a folder with real/ and fake/, a CSV / JSON list, a DeepfakeBench "
                        "dataset JSON, or a NAME under the config's dataset_json_folder")
    p.add_argument("--gradcam_enabled", "--gradcam-enabled", action="store_true", default=None,
                   help="compute Grad-CAM maps (default: the config's gradcam_enabled, else off)")
    p.add_argument("--gradcam_samples", "--gradcam-samples", type=int, default=50,
                   help="how many wrong predictions get sample folders (default 50)")
    p.add_argument("--gradcam_output_dir", "--gradcam-output-dir", "--output-dir", default=None,
                   help="run folder (default: the config's gradcam_save_dir, else gradcam_evaluation)")
    p.add_argument("--save_all_predictions", "--save-all-predictions", action="store_true",
                   help="sample folders for all predictions, not only the wrong ones")
    p.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++"], help="CAM method (default gradcam)")
    p.add_argument("--layers", nargs="+", default=None, help="layer names (default: the config's gradcam_layers, else "
                   "the inputs of the seed's blocks or of the last four)")
    p.add_argument("--target", default="fake", choices=["fake", "predicted", "real", "label"],
                   help="explained class (default fake: the score the metrics rank by)")
    p.add_argument("--table-methods", default="gradcam,gradcam++",
                   help="methods of the localisation table (when the set has masks; default gradcam,gradcam++)")
    _layout_argument(p)
    p.add_argument("--batch-size", "--batch_size", type=int, default=32, help="images per chunk (default 32)")
    p.add_argument("--max-samples", "--max_samples", type=int, default=0, help="only the first N images (0: all)")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in the output folder")
    p.add_argument("--cpu", action="store_true", help="force the CPU")
    _cluster_flags(p)
    p.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from .scenarios.detector_gradcam_eval import metrics_table, run_evaluation

    extra: dict = {}
    test_config = args.test_config
    if args.detector_path:
        from pathlib import Path

        from .models.load_detector import read_detector_config

        default = Path("training/config/test_config.yaml")  # DeepfakeBench's test.py reads it from its root
        if test_config is None and default.is_file():
            test_config = str(default.resolve())
        extra = read_detector_config(args.detector_path, test_config).extra
    elif test_config:
        from .models.load_detector import read_detector_config

        extra = read_detector_config(test_config).extra
    dataset = args.test_dataset
    if dataset is None and isinstance(extra.get("test_dataset"), (list, str)) and extra["test_dataset"]:
        dataset = extra["test_dataset"] if isinstance(extra["test_dataset"], str) else extra["test_dataset"][0]
    enabled = args.gradcam_enabled if args.gradcam_enabled is not None else bool(extra.get("gradcam_enabled", False))
    out = args.gradcam_output_dir or extra.get("gradcam_save_dir") or "gradcam_evaluation"
    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    mapper = _cluster(args, "evaluation")
    summary = run_evaluation(out, detector_path=args.detector_path, weights_path=args.weights_path,
                             test_dataset=dataset, max_samples=args.max_samples, gradcam_enabled=enabled,
                             layers=args.layers or extra.get("gradcam_layers") or None, method=args.method,
                             table_methods=[m.strip() for m in args.table_methods.split(",") if m.strip()],
                             target=args.target, batch_size=args.batch_size, gradcam_samples=args.gradcam_samples,
                             save_all_predictions=args.save_all_predictions, overwrite=args.overwrite, progress=True,
                             device=device, map_chunks=mapper, layout=args.layout, num_heads=args.num_heads,
                             test_config=test_config)
    print(metrics_table(summary.metrics).to_string(index=False))
    if summary.localization is not None:
        print(summary.localization.round(4).to_string(index=False))
    for row in summary.errors.itertuples():
        print(f"vizkit evaluate: skipped unreadable {row.path}: {row.error}", file=sys.stderr)
    print(f"{summary.metrics['samples']} image(s) evaluated into {summary.run_dir}; "
          f"{len(summary.samples)} sample folder(s); report: {summary.report}")
    return 1 if len(summary.errors) else 0


def _num_heads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-heads", "--num_heads", type=int, default=None,
                   help="attention heads per layer of a CLIP detector whose width is not a known CLIP tower (a state "
                        "dict does not record it; default: the YAML's num_heads, else the CLIP tower of that width)")


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    """The shared ``--workers N | --scheduler ADDRESS`` of the batch commands (vizkit.distributed)."""
    from .distributed.cluster import add_cluster_flags

    add_cluster_flags(p)


def _cluster(args: argparse.Namespace, what: str):
    """None (single process), or the cluster options / evaluation mapper of ``--workers/--scheduler``."""
    from .distributed.cluster import cluster_requested

    if not cluster_requested(args):
        return None
    from .distributed import chunks
    from .scenarios import cluster_tasks

    if what == "evaluation":
        return cluster_tasks.EvaluationMapper(args.workers, args.scheduler, progress=True)
    return chunks.ClusterOptions(args.workers, args.scheduler)


def _run_parser(sub: argparse._SubParsersAction) -> None:
    from .distributed.cluster import add_cluster_flags

    p = sub.add_parser("run", help="run a notebook headless (papermill), or a parameter sweep on Dask",
                       description="Validate the parameters against the notebook's parameters cell, then execute "
                                   "it with papermill: one run, or one run per point of --grid, in parallel on a "
                                   "Dask cluster. Each run writes into <output-dir>/<run name>/; index.csv and "
                                   "index.md list every run. Rerunning skips complete runs (--force reruns them). "
                                   "Exit code 1 when a run failed, 2 on bad input, 130 on Ctrl-C.")
    p.add_argument("notebook", help="the notebook, e.g. notebooks/02_vit_mnist_attention.ipynb")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="set a parameter (repeatable); VALUE is read as the parameter's type")
    p.add_argument("-f", "--parameters-file", default=None, metavar="params.yaml", help="YAML mapping of parameters")
    p.add_argument("--grid", default=None, metavar="grid.yaml",
                   help="YAML mapping of parameter -> list of values (cartesian product) or a list of mappings")
    p.add_argument("--output-dir", default="runs/sweep", help="folder of the run folders and the index "
                   "(default runs/sweep)")
    p.add_argument("--force", action="store_true", help="rerun runs whose folders are already complete")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    add_cluster_flags(p, retries=True)
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from .distributed.params import load_grid, load_yaml_mapping, read_notebook
    from .distributed.sweep import SweepInterrupted, run_sweep
    from .errors import InputError
    from .scenarios.registry import notebook_validator

    spec = read_notebook(args.notebook, notebook_validator)  # a registered notebook's own check, by its stem
    params: dict = {}
    if args.parameters_file:
        loaded = load_yaml_mapping(args.parameters_file)
        if not isinstance(loaded, dict):
            raise InputError(f"parameter file {args.parameters_file!r} must be a mapping of name -> value")
        params.update(loaded)
    for name, raw in args.parameter:
        params[name] = spec.parse_value(name, raw)
    grid = load_grid(args.grid) if args.grid else None
    try:
        result = run_sweep(spec, params, grid, output_dir=args.output_dir, workers=args.workers,
                           scheduler=args.scheduler, retries=args.retries, force=args.force, kernel_name=args.kernel)
    except SweepInterrupted as stop:
        counts = stop.result.counts()
        print(f"vizkit run: interrupted: {counts.get('cancelled', 0)} run(s) cancelled, {counts.get('done', 0)} "
              f"done; index: {stop.result.index_md}", file=sys.stderr)
        return 130
    for rec in result.failed:
        print(f"vizkit run: {rec.name} failed: {rec.error}", file=sys.stderr)
    counts = result.counts()
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; index: {result.index_md}")
    return 1 if result.failed else 0


def _vlm_video_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vlm-video", help="per-token attention of a VLM over text and image patches, as an mp4",
                       description="Seed 004: while a vision-language model (a local folder of a supported family: README) "
                                   "writes its answer, the attention of each new token over the earlier text and the "
                                   "image patches, side by side in combined_attention_visualization_layer{idx}.mp4 "
                                   "(one per layer), with contact_sheet_layer{idx}.png, attention.npz and report.md. "
                                   "Without model flags: the zoo's tiny_vlm on its sample benchmark.")
    p.add_argument("--model_path", "--model-path", default=None, help="a local VLM folder (default: the zoo's tiny_vlm)")
    p.add_argument("--benchmark_json", "--benchmark-json", default=None,
                   help="JSON list of {image, problem, solution} (default: tiny_vlm's sample benchmark)")
    p.add_argument("--image_dir", "--image-dir", default=None, help="folder the image paths are relative to "
                   "(default: the JSON's folder)")
    p.add_argument("--sample_idx", "--sample-idx", default="0",
                   help="which sample: an index (default 0), a list 0,2,5, a range 1-4, or all; several samples go "
                        "into sample_<idx>/ folders with an index.md, and a rerun into the same folder resumes")
    p.add_argument("--layer_idx", "--layer-idx", type=int, default=None,
                   help="decoder layer (default 20, or the last layer of a model with 20 or fewer)")
    p.add_argument("--layers", type=int, nargs="+", default=None, help="several decoder layers: one video each")
    p.add_argument("--start_phrase", "--start-phrase", default=DEFAULT_VLM_START,
                   help=f"the video starts where this phrase begins ('' = first token; default {DEFAULT_VLM_START!r})")
    p.add_argument("--heads", default="mean", help="mean (default), max, or a head index")
    p.add_argument("--max_image_num", "--max-image-num", type=int, default=2, help="use at most N images (default 2)")
    p.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=128, help="generation length (default 128)")
    p.add_argument("--mode", default="generate", choices=["generate", "solution"],
                   help="generate (default) or teacher-force the sample's solution")
    p.add_argument("--fps", type=int, default=4, help="video frames per second (default 4)")
    p.add_argument("--sinks", choices=("keep", "mask"), default="keep",
                   help="keep the attention sinks in the video (default) or mask them, rows renormalised over the "
                        "rest (README: Attention sinks)")
    p.add_argument("--output-dir", "--output_dir", default=None, help="run folder (default runs/<time>-vlm-video)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    _cluster_flags(p)
    p.set_defaults(run=_vlm_video)


DEFAULT_VLM_START = "Based on the following requirements"


def _vlm_video(args: argparse.Namespace) -> int:
    from .scenarios.vlm_attention_video import run_video

    spec = args.sample_idx.strip()
    one = spec.lstrip("-").isdigit()
    res = run_video(args.model_path, args.benchmark_json, args.image_dir, int(spec) if one else spec, args.layer_idx,
                    args.start_phrase, args.layers, args.heads, args.max_image_num, args.max_new_tokens, args.mode,
                    args.output_dir, args.overwrite, args.fps, sinks=args.sinks, cluster=_cluster(args, "batch"))
    if not one:
        for row in res["samples"]:
            print(f"sample {row['sample']}: {row['status']}" + (f" ({row['error']})" if row["error"] else ""))
        print(f"{len(res['samples'])} sample(s) into {res['folder']} ({res['skipped']} complete from an earlier run); "
              f"index: {res['index']}")
        return 1 if res["failed"] else 0
    for note in res["notes"]:
        print(f"vizkit vlm-video: {note}", file=sys.stderr)
    t = res["trace"]
    print(f"answer ({t.num_answer_tokens} tokens): {t.text.strip()}")
    for name, path in res["outputs"].items():
        print(f"{name}: {path}")
    print(f"{len(t.frame_tokens)} frame(s) per video into {res['folder']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vizkit", description="vizkit: explain vision models")
    sub = parser.add_subparsers(dest="command", required=True)
    _clip_gradcam_parser(sub)
    _detector_attention_parser(sub)
    _detector_gradcam_parser(sub)
    _evaluate_parser(sub)
    _run_parser(sub)
    _vlm_video_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import VizkitError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except VizkitError as err:
        print(f"vizkit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # finished chunks / runs are kept: rerun the same command to resume
        print(f"vizkit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
