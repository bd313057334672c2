"""Scenario 3's arguments: what determines an evaluation run (:class:`EvalArgs`, its manifest),
their checks, what a chunk is computed with (:class:`EvalContext`), the defaults DeepfakeBench's
configs decide (:func:`config_defaults`). The score explained is the
detector's logit of the explained class (:data:`TARGETS`), by Grad-CAM or Grad-CAM++
(:data:`CAM_METHODS`).

Example::

    from vizkit.scenarios.detector_gradcam_params import EvalArgs, check_eval_args
    args = EvalArgs(max_samples=100, method="gradcam++", target="label")
    check_eval_args(args)                  # one ParameterError for a bad value, before any work
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..datasets import EvalDataset
from ..errors import ParameterError
from ..methods import get_method
from ..metrics.road import ROAD_PERCENTILES
from ..models import Detector
from ..models.detector_layers import LayerInfo
from ..models.load_detector import read_detector_config
from ..targets import REAL_FAKE_TARGETS
from ..zoo.face_test_split import FACE_FORGERY

__all__ = [
    "SEED_LAYERS",
    "CAM_METHODS",
    "TARGETS",
    "LABEL_NAMES",
    "EvalArgs",
    "EvalContext",
    "check_eval_args",
    "refuse_added_faithfulness",
    "eval_methods",
    "ConfigDefaults",
    "config_defaults",
]

#: the four layers the seed explains in its 24-block CLIP ViT-L/14 detector
SEED_LAYERS = ("encoder.layers.23", "encoder.layers.20", "encoder.layers.15", "encoder.layers.10")
#: the CAM methods scenario 3 compares
CAM_METHODS = ("gradcam", "gradcam++")
#: the classes a map can explain (:data:`vizkit.targets.REAL_FAKE_TARGETS`)
TARGETS = REAL_FAKE_TARGETS
#: a detector's class index -> its name in titles and reports
LABEL_NAMES = {0: "Real", 1: "Fake"}


@dataclass(frozen=True)
class EvalArgs:
    """Everything that determines a run's results (its manifest)."""

    detector_path: str | None = None
    weights_path: str | None = None
    test_dataset: str = FACE_FORGERY
    max_samples: int = 0
    gradcam_enabled: bool = True
    layers: tuple[str, ...] = ()
    method: str = "gradcam"
    table_methods: tuple[str, ...] = CAM_METHODS
    target: str = "fake"
    batch_size: int = 32
    gradcam_samples: int = 50
    save_all_predictions: bool = False
    #: images per Grad-CAM forward/backward inside a chunk: the activations kept for the backward
    #: scale with it (a ViT-B/16 x 24 at 224 px keeps ~115 MiB per image down to block 10)
    cam_batch_size: int = 2
    #: where the Grad-CAM layers' channels are (None: decided per layer; see :func:`vizkit.cam`)
    layout: str | None = None
    #: attention heads per layer of a CLIP detector whose width is not a known CLIP tower
    num_heads: int | None = None
    #: DeepfakeBench's test_config.yaml merged over the detector YAML (rgb_dir, label_dict, ...)
    test_config: str | None = None
    #: also score every map by ROAD (MoRF, LeRF, combined) and the confidence change
    #: (:func:`vizkit.metrics.faithfulness_scores`), over all images of each chunk
    faithfulness: bool = False
    #: the percentiles ROAD averages over (with ``faithfulness``)
    road_percentiles: tuple[float, ...] = ROAD_PERCENTILES
    #: with ``faithfulness``: score only the first N images of the test set (0: all); ROAD costs
    #: 2 x len(road_percentiles) imputations and forwards per map
    faithfulness_samples: int = 0

    def manifest(self, dataset: EvalDataset, layers: Sequence[LayerInfo]) -> dict[str, Any]:
        """The run's manifest: these arguments with the layers as resolved, the test set's name,
        source and size, and the detector files' absolute paths and sizes. Without
        ``faithfulness`` its two keys are left out (the manifest of a run made before they existed)."""
        d = asdict(self)
        if not self.faithfulness:
            del d["faithfulness"], d["road_percentiles"]
        if not self.faithfulness_samples:  # all images: the manifest of a run made before the option existed
            del d["faithfulness_samples"]
        d["layers"] = [i.name for i in layers]
        d["dataset"] = {"name": dataset.name, "source": dataset.source, "samples": len(dataset)}
        for key in ("detector_path", "weights_path", "test_config"):
            if d[key]:
                p = Path(d[key])
                d[key] = str(p.resolve())
                if p.is_file():
                    d[key + "_size"] = p.stat().st_size
        return json.loads(json.dumps(d))  # as stored: tuples become lists


@dataclass
class EvalContext:
    """What :func:`~vizkit.scenarios.detector_gradcam_eval.evaluate_chunk` computes a chunk with:
    the arguments, the detector, the test set, the resolved layers, the CAM methods to run (none
    without Grad-CAM; the table's too when the set has masks) and the detector's device."""

    args: EvalArgs
    detector: Detector
    dataset: EvalDataset
    layers: list[LayerInfo]
    methods: list[str]
    device: torch.device


def check_eval_args(args: EvalArgs) -> None:
    """One :class:`ParameterError` for the first invalid argument: a batch size or sample count
    below 1, an unknown target, a method scenario 3 does not compare."""
    if args.batch_size < 1:
        raise ParameterError(f"--batch-size must be positive, got {args.batch_size}")
    if args.gradcam_samples <= 0:
        raise ParameterError(f"--gradcam_samples must be positive, got {args.gradcam_samples}")
    if args.target not in TARGETS:
        raise ParameterError(f"target {args.target!r}: choose one of {', '.join(TARGETS)}")
    for m in (args.method, *args.table_methods):
        if m not in CAM_METHODS:
            raise ParameterError(f"method {m!r}: scenario 3 compares {' and '.join(CAM_METHODS)}")
    if args.faithfulness:
        if not args.gradcam_enabled:
            raise ParameterError("--faithfulness scores the Grad-CAM maps: it needs --gradcam_enabled")
        if not args.road_percentiles or any(not 0 < float(p) < 100 for p in args.road_percentiles):
            raise ParameterError(f"--road-percentiles must be numbers in (0, 100), got {list(args.road_percentiles)}")
        if args.faithfulness_samples < 0:
            raise ParameterError(f"faithfulness_samples must be >= 0 (0 means all), got {args.faithfulness_samples}")


def refuse_added_faithfulness(output_dir: str | os.PathLike | None, manifest: dict[str, Any], overwrite: bool) -> None:
    """One clear :class:`ParameterError` when ``output_dir`` holds the same run made without
    ``--faithfulness`` (its chunks hold no ROAD scores, and resuming never recomputes a written
    chunk): rerun with ``--overwrite`` to recompute every chunk, or choose another folder."""
    old = Path(output_dir or "") / "manifest.json"
    if not output_dir or overwrite or not manifest.get("faithfulness") or not old.is_file():
        return
    added = ("faithfulness", "road_percentiles", "faithfulness_samples")
    without = {k: v for k, v in manifest.items() if k not in added}
    try:
        same = json.loads(old.read_text(encoding="utf-8")) == json.loads(json.dumps(without))
    except json.JSONDecodeError:
        return
    if same:
        raise ParameterError(
            f"output folder {str(output_dir)!r} holds this run evaluated without --faithfulness: its chunks "
            "have no ROAD scores; pass --overwrite to recompute every chunk with them, or choose another folder"
        )


def eval_methods(args: EvalArgs, dataset: EvalDataset) -> list[str]:
    """The CAM methods a run computes, by their canonical names: none without Grad-CAM, else
    ``args.method`` first, then the table's methods when ``dataset`` has manipulation masks."""
    if not args.gradcam_enabled:
        return []
    extra = list(args.table_methods) if dataset.has_masks else []
    return list(dict.fromkeys([get_method(args.method).name] + [get_method(m).name for m in extra]))


@dataclass
class ConfigDefaults:
    """What DeepfakeBench's configs decide when the caller does not (:func:`config_defaults`)."""

    test_config: str | None
    test_dataset: str | None
    gradcam_enabled: bool
    output_dir: str
    layers: list[str] | None


def config_defaults(
    detector_path: str | None = None,
    test_config: str | None = None,
    *,
    test_dataset: str | None = None,
    gradcam_enabled: bool | None = None,
    output_dir: str | None = None,
    layers: Sequence[str] | None = None,
) -> ConfigDefaults:
    """The values given, else the configs' as DeepfakeBench's test.py reads them: with a
    ``detector_path``, ``test_config`` defaults to ``training/config/test_config.yaml`` under the
    working directory when that file exists, merged over the detector YAML; the merged config's
    ``test_dataset`` (its first when a list), ``gradcam_enabled`` (else off), ``gradcam_save_dir``
    (else ``gradcam_evaluation``) and ``gradcam_layers`` fill what is None."""
    extra: dict[str, Any] = {}
    if detector_path:
        default = Path("training/config/test_config.yaml")
        if test_config is None and default.is_file():
            test_config = str(default.resolve())
        extra = read_detector_config(detector_path, test_config).extra
    elif test_config:
        extra = read_detector_config(test_config).extra
    named = extra.get("test_dataset")
    if test_dataset is None and isinstance(named, (list, str)) and named:
        test_dataset = named if isinstance(named, str) else named[0]
    return ConfigDefaults(
        test_config,
        test_dataset,
        gradcam_enabled if gradcam_enabled is not None else bool(extra.get("gradcam_enabled", False)),
        output_dir or extra.get("gradcam_save_dir") or "gradcam_evaluation",
        list(layers or ()) or extra.get("gradcam_layers") or None,
    )
