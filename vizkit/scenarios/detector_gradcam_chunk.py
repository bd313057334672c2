"""Scenario 3's unit of work: one chunk of the test set evaluated (:func:`evaluate_chunk`, a pure
function of (arguments, chunk index)) and what it is computed with (:func:`evaluation_context`).
The score explained: the detector's logit of the explained class (``args.target``), by Grad-CAM
or Grad-CAM++ at every requested layer; the chunk's fakes with masks score its maps (pointing
game, energy in the mask); with ``args.faithfulness`` every image's maps are also scored by ROAD
and the confidence change (:func:`vizkit.evaluate.faithfulness_record`).

Example::

    from vizkit.scenarios.detector_gradcam_chunk import evaluate_chunk, evaluation_context
    from vizkit.scenarios.detector_gradcam_params import EvalArgs
    ctx = evaluation_context(EvalArgs(max_samples=20, batch_size=10))
    result, arrays = evaluate_chunk(ctx, 1)      # samples 10..19: predictions, maps, scores
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..datasets import EvalDataset
from ..evaluate import cam_in_parts, faithfulness_record, score_maps
from ..metrics import pointing_chance
from ..models import Detector
from ..models.detector_layers import default_layers, resolve_gradcam_layers
from ..models.load_detector import load_eval_detector
from ..state import model_device
from ..targets import real_fake_targets
from ..zoo.face_test_split import resolve_test_set
from .detector_gradcam_params import EvalArgs, EvalContext, check_eval_args, eval_methods

__all__ = ["evaluation_context", "evaluate_chunk"]


def evaluation_context(
    args: EvalArgs,
    device: str | torch.device = "cpu",
    *,
    detector: Detector | None = None,
    dataset: EvalDataset | None = None,
) -> EvalContext:
    """What :func:`evaluate_chunk` needs for ``args``: the arguments checked (one
    :class:`ParameterError`), the detector loaded (``detector``: one already loaded), its layers
    resolved, the test set resolved (``dataset``: one already resolved) and the methods to run. A
    process that computes chunks elsewhere builds it once from the picklable ``args``."""
    check_eval_args(args)
    det = detector or load_eval_detector(
        args.detector_path, args.weights_path, num_heads=args.num_heads, test_config=args.test_config, device=device
    )
    layers = resolve_gradcam_layers(det.model, list(args.layers) or default_layers(det.model), det.size)
    ds = dataset or resolve_test_set(args.test_dataset, det.config, args.max_samples or None)
    return EvalContext(args, det, ds, layers, eval_methods(args, ds), model_device(det.model))


def evaluate_chunk(ctx: EvalContext, k: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Chunk ``k`` (samples ``k*B .. (k+1)*B - 1``): predictions, unreadable images, and with
    Grad-CAM the raw per-layer maps of every method (``{"<method>|<layer>": [n, h, w]}``) and the
    localisation scores of the fakes with masks; with ``args.faithfulness`` the ROAD and
    confidence-change scores of every image's maps (``result["faithfulness"]``, as the
    localisation scores: ``{method: {layer: record}}``) and of a uniform random map per image
    (``result["faithfulness_chance"]``: their chance level); with masks, the chance level of the
    pointing game per fake (``result["chance"]``). A pure function of (arguments, chunk index)."""
    a, det = ctx.args, ctx.detector
    start = k * a.batch_size
    images, ok, errors = ctx.dataset.read_images(range(start, min(start + a.batch_size, len(ctx.dataset))), det.read)
    result: dict[str, Any] = {"chunk": k, "indices": ok, "errors": errors, "predictions": [], "localization": {}}
    arrays: dict[str, np.ndarray] = {"index": np.asarray(ok, dtype=np.int64)}
    if not ok:
        return result, arrays
    x = torch.stack([det.preprocess(im) for im in images]).to(ctx.device)
    targets = real_fake_targets(a.target, torch.tensor([ctx.dataset.items[i].label for i in ok]), det.fake_index)
    modules = [i.module for i in ctx.layers]
    explanations = {
        m: cam_in_parts(det.model, x, targets, layers=modules, method=m, part_size=a.cam_batch_size, layout=a.layout)
        for m in ctx.methods
    }
    if explanations:
        logits = explanations[ctx.methods[0]].output
    else:
        with torch.inference_mode():
            logits = det.model(x)
    probs = torch.softmax(logits.float(), -1)[:, det.fake_index].cpu()
    preds = (logits.argmax(-1).cpu() == det.fake_index).long()
    for j, i in enumerate(ok):
        item = ctx.dataset.items[i]
        result["predictions"].append(
            {
                "index": i,
                "path": item.path,
                "label": int(item.label),
                "prob": float(probs[j]),
                "pred": int(preds[j]),
                "correct": bool(int(preds[j]) == int(item.label)),
                "video": item.video,
            }
        )
    names = {i.module: i.name for i in ctx.layers}
    for method, exp in explanations.items():
        for module, m in exp.layer_maps.items():
            arrays[f"{method}|{names[module]}"] = m.detach().float().cpu().numpy()
    if explanations and ctx.dataset.has_masks:
        result["localization"] = _chunk_localization(ctx, ok, explanations, tuple(x.shape[-2:]))
        result["chance"] = _chunk_chance(ctx, ok, tuple(x.shape[-2:]))
    rows = [j for j, i in enumerate(ok) if not a.faithfulness_samples or i < a.faithfulness_samples]
    if explanations and a.faithfulness and rows:
        index, picked = [ok[j] for j in rows], torch.tensor(rows)
        chosen = targets[picked] if isinstance(targets, torch.Tensor) else targets
        result["faithfulness"] = _chunk_faithfulness(ctx, index, x[picked], chosen, explanations, picked)
        g = torch.Generator().manual_seed(k)  # random maps: a pure function of the chunk index
        random_maps = torch.rand(len(rows), *x.shape[-2:], generator=g).to(x.device)
        result["faithfulness_chance"] = faithfulness_record(
            det.model, x[picked], random_maps, index, chosen, percentiles=a.road_percentiles
        )
    return result, arrays


def _fake_masks(ctx: EvalContext, ok: Sequence[int], size: tuple[int, int]) -> list[tuple[int, int, np.ndarray]]:
    """``(row in the chunk, dataset index, mask at size)`` of the chunk's fakes with a non-empty mask."""
    fakes = [(j, i, ctx.dataset.mask(i, size)) for j, i in enumerate(ok) if ctx.dataset.items[i].label == 1]
    return [(j, i, m) for j, i, m in fakes if m is not None and m.any()]


def _chunk_chance(ctx: EvalContext, ok: Sequence[int], size: tuple[int, int]) -> dict[str, list]:
    """What a map with no information scores on the chunk's fakes with masks
    (:func:`vizkit.metrics.pointing_chance`): ``pointing`` (the pointing game and the energy in the
    mask: the mask's area fraction) and ``pointing_tol1`` (the mask dilated by 1 px), per fake."""
    fakes = _fake_masks(ctx, ok, size)
    if not fakes:
        return {"index": [], "pointing": [], "pointing_tol1": []}
    masks = torch.from_numpy(np.stack([m for _, _, m in fakes]))
    return {
        "index": [i for _, i, _ in fakes],
        "pointing": [round(float(v), 6) for v in pointing_chance(masks, 0)],
        "pointing_tol1": [round(float(v), 6) for v in pointing_chance(masks, 1)],
    }


def _chunk_faithfulness(
    ctx: EvalContext,
    ok: Sequence[int],
    x: torch.Tensor,
    targets: Any,
    explanations: dict[str, Any],
    rows: torch.Tensor,
) -> dict[str, dict[str, dict[str, list]]]:
    """Per method and layer (and ``"all layers"``), ROAD and the confidence change of the maps of
    the chunk's images ``rows`` (dataset indices ``ok``, images ``x`` ``[n, C, H, W]``), for the
    class each map explains."""
    names = {i.module: i.name for i in ctx.layers}
    out: dict[str, dict[str, dict[str, list]]] = {}
    for method, exp in explanations.items():
        heats = {names[mod]: h for mod, h in exp.layer_heatmaps.items()}
        heats["all layers"] = exp.heatmap
        out[method] = {
            layer: faithfulness_record(
                ctx.detector.model, x, heat[rows].to(x.device), ok, targets, percentiles=ctx.args.road_percentiles
            )
            for layer, heat in heats.items()
        }
    return out


def _chunk_localization(
    ctx: EvalContext, ok: Sequence[int], explanations: dict[str, Any], size: tuple[int, int]
) -> dict[str, dict[str, dict[str, list]]]:
    """Per method and layer (and ``"all layers"``), the pointing game (tolerance 0 and 1 px) and
    energy of the maps of the chunk's fakes with a non-empty mask (none: ``{}``)."""
    found = _fake_masks(ctx, ok, size)
    if not found:
        return {}
    fakes = [(j, i) for j, i, _ in found]
    masks = {i: m for _, i, m in found}
    rows = torch.tensor([j for j, _ in fakes])
    index = [i for _, i in fakes]
    names = {i.module: i.name for i in ctx.layers}
    out: dict[str, dict[str, dict[str, list]]] = {}
    for method, exp in explanations.items():
        heats = {names[mod]: h for mod, h in exp.layer_heatmaps.items()}
        heats["all layers"] = exp.heatmap
        out[method] = {
            layer: score_maps(heat[rows], [masks[i] for i in index], tolerances=(0, 1)).record(index)
            for layer, heat in heats.items()
        }
    return out
