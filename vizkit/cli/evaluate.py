"""``vizkit evaluate``: a deepfake detector over a test set, with Grad-CAM of its mistakes
(scenario 3, :func:`vizkit.scenarios.detector_gradcam_eval.evaluate_detector`)."""

from __future__ import annotations

import argparse

from .common import cluster_flags, cluster_options, cpu_argument, device, layout_argument, num_heads_argument, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a deepfake detector on a test set, with Grad-CAM of its mistakes",
        description="Seed 002's test_with_gradcam: AUC, accuracy, EER, AP (and video AUC) over the test "
        "set into metrics.json, every prediction into predictions.csv, Grad-CAM maps of the "
        "first --gradcam_samples wrong predictions into sample{i}/, and report.md. "
        "Resumable: rerun the same command after an interruption. Without model flags: the "
        "zoo detector on its test faces.",
    )
    p.add_argument("--detector_path", "--detector-path", default=None, help="DeepfakeBench detector YAML")
    p.add_argument("--weights_path", "--weights-path", default=None, help="detector weights (.pth)")
    p.add_argument(
        "--test_config",
        "--test-config",
        default=None,
        help="DeepfakeBench's test_config.yaml (rgb_dir, dataset_json_folder, label_dict), merged over the "
        "detector YAML as its test.py does (default: training/config/test_config.yaml under the "
        "working directory when --detector_path is given and that file exists)",
    )
    num_heads_argument(p)
    p.add_argument(
        "--test_dataset",
        "--test-dataset",
        default=None,
        help="zoo:face_forgery (default), a folder with real/ and fake/, a CSV / JSON list, a DeepfakeBench "
        "dataset JSON, or a NAME under the config's dataset_json_folder",
    )
    p.add_argument(
        "--gradcam_enabled",
        "--gradcam-enabled",
        action="store_true",
        default=None,
        help="compute Grad-CAM maps (default: the config's gradcam_enabled, else off)",
    )
    p.add_argument(
        "--gradcam_samples",
        "--gradcam-samples",
        type=int,
        default=50,
        help="how many wrong predictions get sample folders (default 50)",
    )
    p.add_argument(
        "--gradcam_output_dir",
        "--gradcam-output-dir",
        "--output-dir",
        default=None,
        help="run folder (default: the config's gradcam_save_dir, else gradcam_evaluation)",
    )
    p.add_argument(
        "--save_all_predictions",
        "--save-all-predictions",
        action="store_true",
        help="sample folders for all predictions, not only the wrong ones",
    )
    p.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++"], help="CAM method (default gradcam)")
    p.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help="layer names (default: the config's gradcam_layers, else "
        "the inputs of the seed's blocks or of the last four)",
    )
    p.add_argument(
        "--target",
        default="fake",
        choices=["fake", "predicted", "real", "label"],
        help="explained class (default fake: the score the metrics rank by)",
    )
    p.add_argument(
        "--table-methods",
        default="gradcam,gradcam++",
        help="methods of the localisation table (when the set has masks; default gradcam,gradcam++)",
    )
    p.add_argument(
        "--faithfulness",
        action="store_true",
        help="also score every map by ROAD (MoRF, LeRF, combined) and the confidence change, per layer x method "
        "over all images, in the same resumable chunks (turns Grad-CAM on; columns of localization.csv and the "
        "report). A folder holding the same run made without it is refused: pass --overwrite to recompute",
    )
    p.add_argument(
        "--road-percentiles",
        type=float,
        nargs="+",
        default=None,
        help="the percentiles ROAD averages over (default 10 20 ... 90)",
    )
    layout_argument(p)
    p.add_argument("--batch-size", "--batch_size", type=int, default=32, help="images per chunk (default 32)")
    p.add_argument("--max-samples", "--max_samples", type=int, default=0, help="only the first N images (0: all)")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in the output folder")
    cpu_argument(p)
    cluster_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..scenarios.detector_gradcam_eval import evaluate_detector

    summary = evaluate_detector(
        args.gradcam_output_dir,
        detector_path=args.detector_path,
        weights_path=args.weights_path,
        test_config=args.test_config,
        test_dataset=args.test_dataset,
        gradcam_enabled=args.gradcam_enabled,
        layers=args.layers,
        table_methods=args.table_methods,
        cluster=cluster_options(args),
        device=device(args),
        max_samples=args.max_samples,
        method=args.method,
        target=args.target,
        batch_size=args.batch_size,
        gradcam_samples=args.gradcam_samples,
        save_all_predictions=args.save_all_predictions,
        overwrite=args.overwrite,
        progress=True,
        layout=args.layout,
        num_heads=args.num_heads,
        faithfulness=args.faithfulness,
        **({"road_percentiles": args.road_percentiles} if args.road_percentiles else {}),
    )
    print(summary.text())
    for row in summary.errors.itertuples():
        say(args, f"skipped unreadable {row.path}: {row.error}")
    print(
        f"{summary.metrics['samples']} image(s) evaluated into {summary.run_dir}; "
        f"{len(summary.samples)} sample folder(s); report: {summary.report}"
    )
    return 1 if len(summary.errors) else 0
