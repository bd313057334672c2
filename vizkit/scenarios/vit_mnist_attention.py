"""Scenario 2: CLS attention of a ViT on handwritten digits, with seed 001's API (notebook
``02_vit_mnist_attention.ipynb``).

What is explained: the predicted digit, through the post-softmax attention of the CLS token
per layer and head, attention rollout (Abnar & Zuidema, ACL 2020) and gradient-weighted
attention of the predicted-class logit (Chefer et al., ICCV 2021).

``AttentionVisualizer(model).run_comprehensive_analysis(output_dir)`` writes the files seed
001's users know (``attention_pattern_sample_{i}.png``, ``attention_heads_sample_{i}.png``,
``layer_comparison_sample_{i}.png``, ``attention_statistics.png``,
``attention_analysis_report.md``). The attention of the shown samples comes from ONE batched forward pass
(:meth:`AttentionVisualizer.analyze`), cached in a :class:`vizkit.attention_cache.AttentionCache`
that the figures (:mod:`vizkit.figures.cls_attention`) and the widget explorer index into without
running the model again; the statistics are over more images (:meth:`AttentionVisualizer.analyze_statistics`,
the first 1,000 test images by default, one more forward pass without gradients), beside the level of
uniform attention (:meth:`AttentionVisualizer.reference`); the tables, observations and report are in
:mod:`.vit_mnist_report`. Layers and heads are numbered from 0 ("layer 4" is ``blocks.4``).

Example::

    from vizkit.scenarios import AttentionVisualizer
    result = AttentionVisualizer("mnist_vit").run_comprehensive_analysis("runs/mnist", num_samples=4)
    result.statistics        # per image x layer x head: max, mean, entropy, CLS-row and patch-query distance
    result.report            # runs/mnist/attention_analysis_report.md
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import render, stats
from ..attention_cache import AttentionCache, cache_attention
from ..attention_math import HEAD_FUSIONS
from ..errors import VizkitError
from ..evaluate import SELECTIONS, predicted_classes, select_indices
from ..figures import cls_attention
from ..render import RELEVANCE_CMAP
from ..report import markdown_table
from ..state import model_device, resolve_device
from ..widgets import Control, Explorer, HeatmapView
from ..zoo.mnist import mnist_preprocess
from . import vit_mnist_params as checks
from .vit_mnist_params import parse_index_list
from .vit_mnist_report import (
    entropy_trend,
    head_table,
    layer_summary,
    observations,
    rollout_agreement,
    top_patch,
    write_report,
)

__all__ = [
    "AttentionVisualizer",
    "AttentionCache",
    "AnalysisResult",
    "AttentionExplorer",
    "observations",
    "layer_summary",
    "head_table",
    "rollout_agreement",
    "top_patch",
    "entropy_trend",
    "write_report",
    "mnist_preprocess",
    "markdown_table",
    "notebook_parameters",
    "check_notebook_parameters",
    "parse_index_list",
]


@dataclass
class AnalysisResult:
    """What :meth:`AttentionVisualizer.run_comprehensive_analysis` produced."""

    output_dir: Path
    files: list[Path]
    statistics: pd.DataFrame
    summary: pd.DataFrame
    observations: list[str]
    test_accuracy: float | None
    sample_accuracy: float
    report: Path


class AttentionVisualizer:
    """Explain a ViT digit classifier through its CLS attention (seed 001's API).

    ``model``: None or ``"mnist_vit"`` (the zoo model), an ``nn.Module``, or the path of a
    user's checkpoint together with ``config`` (seed 001's config dict or a JSON path).
    """

    def __init__(
        self,
        model: Any = None,
        config: Any = None,
        device: str | None = None,
        output_dir: str | Path = "attention_analysis",
        head_fusion: str = "mean",
        cmap: str = RELEVANCE_CMAP,
    ):
        self.model_spec, self.config = model, config
        self.device = resolve_device(device or "auto")
        self.output_dir = Path(output_dir)
        if head_fusion not in HEAD_FUSIONS:
            raise VizkitError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")
        self.head_fusion, self.cmap = head_fusion, cmap
        self.model: nn.Module | None = None
        self.preprocess = mnist_preprocess
        self.model_info: dict[str, Any] = {}
        self.cache: AttentionCache | None = None
        self.statistics_cache: AttentionCache | None = None
        self._test_predictions: torch.Tensor | None = None

    # ---------------------------------------------------------------- model and data
    def load_optimal_model(self) -> nn.Module:
        """Load the model (the zoo's ``mnist_vit`` by default) in eval mode."""
        spec = self.model_spec
        if isinstance(spec, nn.Module):
            self.model, self.model_info = spec, {"source": type(spec).__name__}
        elif spec is None or str(spec) in ("mnist_vit", "zoo:mnist_vit"):
            from .. import zoo

            bundle = zoo.load("mnist_vit")
            self.model, self.preprocess = bundle.model, bundle.preprocess
            self.model_info = {"source": "zoo:mnist_vit", **bundle.meta}
        else:
            from ..models.loaders import load_vit_checkpoint

            if self.config is None:
                raise VizkitError(
                    f"model {str(spec)!r} is a checkpoint path: also pass its config (seed 001's dict with img_size, "
                    "patch_size, in_channels, num_classes, embed_dim, num_heads, num_layers, mlp_dim, dropout, "
                    "or the path of a JSON file holding it)"
                )
            loaded = load_vit_checkpoint(self.config, spec)
            self.model, self.model_info = loaded.model, {"source": str(spec), **loaded.meta}
        self.model = self.model.to(self.device).eval()
        return self.model

    def _ensure_model(self) -> nn.Module:
        return self.model if self.model is not None else self.load_optimal_model()

    def test_predictions(self, batch_size: int = 1000) -> torch.Tensor:
        """Predicted digits for the 10,000 MNIST test images (computed once)."""
        if self._test_predictions is None:
            from ..zoo.mnist import load_mnist

            model = self._ensure_model()
            images, _ = load_mnist("test")
            self._test_predictions = predicted_classes(model, images, self.preprocess, batch_size)
        return self._test_predictions

    def test_accuracy(self) -> float:
        """Accuracy on the full MNIST test set."""
        from ..zoo.mnist import load_mnist

        _, labels = load_mnist("test")
        return float((self.test_predictions() == torch.from_numpy(np.array(labels))).float().mean())

    def get_test_samples(
        self, num_samples: int = 8, selection: str = "one_per_class", indices: Sequence[int] | None = None
    ) -> list[tuple[np.ndarray, int]]:
        """``(image uint8 28x28, label)`` pairs from the MNIST test set.

        ``one_per_class``: the first test image of each digit in turn (0, 1, 2, ...);
        ``indices``: the given test-set indices; ``misclassified_first``: the model's errors
        first, then correctly classified images.
        """
        from ..zoo.mnist import load_mnist

        images, labels = load_mnist("test")
        chosen = self.select_indices(labels, num_samples, selection, indices)
        self.sample_indices = chosen
        return [(images[i], int(labels[i])) for i in chosen]

    def select_indices(
        self, labels: np.ndarray, num_samples: int, selection: str, indices: Sequence[int] | None
    ) -> list[int]:
        """The test-set indices :meth:`get_test_samples` reads (:func:`vizkit.evaluate.select_indices`)."""
        return select_indices(labels, num_samples, selection, indices, self.test_predictions)

    # ---------------------------------------------------------------- the one forward pass
    def analyze(
        self, samples: Sequence[tuple[np.ndarray, int]], layers: Any = "all", relevance: bool = True
    ) -> AttentionCache:
        """Attention of every sample from one batched forward (plus one backward for the
        gradient-weighted relevance of the predicted class); cached in ``self.cache``."""
        model = self._ensure_model()
        if not samples:
            raise VizkitError("no samples to analyse")
        images = np.stack([np.asarray(im) for im, _ in samples])
        x = torch.stack([self.preprocess(im) for im, _ in samples]).to(model_device(model))
        labels = [li for _, li in samples]
        self.cache = cache_attention(model, x, images, labels, layers, relevance, self.head_fusion)
        return self.cache

    def analyze_statistics(self, num_images: int = 1000, layers: Any = "all") -> AttentionCache:
        """The attention of the first ``num_images`` MNIST test images (any digit) from one batched forward
        pass without gradients, for :meth:`statistics`; cached in ``self.statistics_cache``."""
        from ..zoo.mnist import load_mnist

        model = self._ensure_model()
        images, labels = load_mnist("test")
        if not 1 <= num_images <= len(labels):
            raise VizkitError(f"num_images must be in 1..{len(labels)}, got {num_images}")
        x = torch.stack([self.preprocess(im) for im in images[:num_images]]).to(model_device(model))
        chosen = [int(v) for v in labels[:num_images]]
        self.statistics_cache = cache_attention(model, x, images[:num_images], chosen, layers, relevance=False)
        return self.statistics_cache

    def _cached(self, image: np.ndarray, label: int, i: int) -> tuple[AttentionCache, int]:
        """The cache row of sample ``i``; an image that is not cached is analysed on its own."""
        if self.cache is not None and i < len(self.cache.images) and np.array_equal(self.cache.images[i], image):
            return self.cache, i
        return self.analyze([(image, label)]), 0

    # ---------------------------------------------------------------- figures (vizkit.figures.cls_attention)
    def visualize_attention_patterns(
        self, image: np.ndarray, label: int, i: int, layers: Sequence[int] | None = None
    ) -> Path:
        """``attention_pattern_sample_{i}.png``: CLS attention per layer; top raw, bottom overlay."""
        cache, s = self._cached(image, label, i)
        fig = cls_attention.layers_figure(cache, s, image, f"Sample {i}", layers, self.head_fusion, self.cmap)
        return render.save_figure(fig, self.output_dir / f"attention_pattern_sample_{i}.png")

    def analyze_attention_heads(
        self, image: np.ndarray, label: int, i: int, layer: int = -1, heads: Sequence[int] | None = None
    ) -> Path:
        """``attention_heads_sample_{i}.png``: every head of one layer; top raw, bottom overlay."""
        cache, s = self._cached(image, label, i)
        fig = cls_attention.heads_figure(cache, s, image, f"Sample {i}", layer, heads, self.cmap)
        return render.save_figure(fig, self.output_dir / f"attention_heads_sample_{i}.png")

    def create_layer_comparison(self, image: np.ndarray, label: int, i: int) -> Path:
        """``layer_comparison_sample_{i}.png``: layer evolution side by side (top), and raw
        last-layer attention next to rollout and gradient-weighted attention (bottom)."""
        cache, s = self._cached(image, label, i)
        fig = cls_attention.layer_evolution_figure(cache, s, image, f"Sample {i}", self.head_fusion, self.cmap)
        return render.save_figure(fig, self.output_dir / f"layer_comparison_sample_{i}.png")

    def _statistics_source(self) -> AttentionCache:
        cache = self.statistics_cache if self.statistics_cache is not None else self.cache
        if cache is None:
            raise VizkitError("no cached attention: call analyze_statistics(n) or analyze(samples) first")
        return cache

    def statistics(self) -> pd.DataFrame:
        """Per image, layer and head: max, mean, entropy of the CLS row, its spread (``cls_distance``) and the
        patch queries' mean attention distance (:func:`vizkit.stats.attention_statistics`), over the images of
        :meth:`analyze_statistics` (or, before it, the shown samples)."""
        a = self._statistics_source().attn
        return stats.attention_statistics(a.maps, a.grid, a.prefix_tokens, query="cls")

    def reference(self) -> dict[str, float]:
        """Each statistic under uniform attention (:func:`vizkit.stats.uniform_statistics`): the chance levels;
        both distances are :func:`vizkit.metrics.chance.uniform_attention_distance` (2.008 on MNIST's 4 x 4)."""
        a = self._statistics_source().attn
        return stats.uniform_statistics(a.grid, a.prefix_tokens)

    def create_attention_statistics(self, samples: Sequence[tuple[np.ndarray, int]] | None = None) -> Path:
        """``attention_statistics.png``: distributions per layer and head of the largest CLS weight, the CLS
        row's entropy and spread and the patch-query distance, with the uniform-attention level of each."""
        if samples is not None and (self.cache is None or len(self.cache.images) != len(samples)):
            self.analyze(samples)
        fig = cls_attention.statistics_figure(self.statistics(), self.reference())
        return render.save_figure(fig, self.output_dir / "attention_statistics.png")

    # ---------------------------------------------------------------- the whole run
    def run_comprehensive_analysis(
        self,
        output_dir: str | Path | None = None,
        num_samples: int = 8,
        selection: str = "one_per_class",
        indices: Sequence[int] | None = None,
        layers: Any = "all",
        heads: Sequence[int] | None = None,
        head_layer: int = -1,
        parameters: dict[str, Any] | None = None,
        statistics_images: int = 1000,
    ) -> AnalysisResult:
        """Every figure, the statistics (over the first ``statistics_images`` test images) and the markdown
        report, into ``output_dir``."""
        if output_dir is not None:
            self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_model()
        samples = self.get_test_samples(num_samples, selection, indices)
        cache = self.analyze(samples, layers=layers)
        stats_cache = self.analyze_statistics(statistics_images, layers=layers)
        files = []
        for i, (image, label) in enumerate(samples):
            files.append(self.visualize_attention_patterns(image, label, i))
            files.append(self.analyze_attention_heads(image, label, i, layer=head_layer, heads=heads))
            files.append(self.create_layer_comparison(image, label, i))
        files.append(self.create_attention_statistics())
        df = self.statistics()
        summary = stats.summarize(df)
        accuracy = self.test_accuracy()
        sample_acc = float((cache.preds == cache.labels).float().mean())
        reference = self.reference()
        obs = observations(df, stats_cache, self.head_fusion, shown=cache)
        report = write_report(
            self.output_dir,
            parameters or {},
            self.model_info,
            accuracy,
            sample_acc,
            layer_summary(df, reference),
            head_table(df, reference),
            obs,
            files,
            self.sample_indices,
            cache,
            statistics_images,
        )
        return AnalysisResult(self.output_dir, files + [report], df, summary, obs, accuracy, sample_acc, report)


# ---------------------------------------------------------------- notebook parameters
def notebook_parameters() -> list:
    """The parameter spec of ``notebooks/02_vit_mnist_attention.ipynb`` (checks in :mod:`.vit_mnist_params`)."""
    from ..notebook import Param, positive
    from .registry import common_parameters

    return [
        Param("model", (str,), help="'mnist_vit' (the zoo model) or the path of a ViT checkpoint"),
        Param("model_config", (str,), help="JSON config of a checkpoint (seed 001's keys)"),
        Param("num_samples", (int,), check=positive),
        Param("statistics_images", (int,), check=checks.statistics_images_ok, help="first N test images"),
        Param("selection", (str,), choices=SELECTIONS),
        Param("indices", (list, tuple), check=checks.indices_ok),
        Param("layers", (str, list, tuple), check=checks.layers_ok),
        Param("heads", (str, list, tuple), check=checks.heads_ok),
        Param("head_layer", (int,)),
        Param("head_fusion", (str,), choices=HEAD_FUSIONS),
        *common_parameters("output_dir", "overwrite", "interactive", "seed", "device"),
    ]


def check_notebook_parameters(namespace: dict, before: Any) -> dict[str, Any]:
    """Validate the notebook's parameters (names, types, choices, and the combinations)."""
    from ..notebook import check_parameters

    p = checks.check_combinations(check_parameters(namespace, before, notebook_parameters()))
    resolve_device(p["device"])  # cuda without a GPU: one clear error
    return p


# ---------------------------------------------------------------- explorer
VIEWS = ("CLS attention", "rollout", "gradient-weighted")
FUSED = -1  # the head dropdown's value for "all heads, fused"


class AttentionExplorer(Explorer):
    """Sample x layer x head explorer over an :class:`AttentionCache` (a :class:`vizkit.widgets.Explorer`).

    Controls: ``sample``, ``layer`` (0-based position in ``cache.layers``; the title names the block, "layer 4"
    being ``blocks.4``), ``head`` (0-based; -1 = fused), ``fusion``
    (mean/max/min) and ``view`` (CLS attention of the layer, rollout, gradient-weighted).
    ``drawn`` holds the ``[h, w]`` map on screen; ``draws`` counts redraws. ``interactive=False`` (or no
    ipywidgets): no widgets, the explorer displays :meth:`static`.
    """

    #: the controls as the page shows them (label, kind): read by the notebook build and the browser test
    CONTROLS = (
        ("sample", "slider"),
        ("layer", "slider"),
        ("head", "dropdown"),
        ("fusion", "dropdown"),
        ("view", "toggle"),
    )
    LAYOUT = (("sample", "layer"), ("head", "fusion"), ("view",))
    DESCRIPTION_WIDTH = "70px"

    def __init__(
        self, cache: AttentionCache, head_fusion: str = "mean", cmap: str = RELEVANCE_CMAP, *, interactive: bool = True
    ):
        self.cache, self.head_fusion = cache, head_fusion
        self.numbers = cls_attention.layer_numbers(cache.layers)
        super().__init__(interactive=interactive, cmap=cmap)

    def control_specs(self) -> list[Control]:
        """sample, layer (0-based, starting at the last), head (fused or one, 0-based), fusion, view."""
        cache = self.cache
        n_samples, n_layers = len(cache.images), len(cache.layers)
        views = list(VIEWS) if cache.relevance is not None else list(VIEWS[:2])
        # "fused" is -1, not None: a Dropdown shows a None value as an empty box
        heads = [("fused", FUSED)] + [(f"head {h}", h) for h in range(cache.num_heads)]
        return [
            Control("sample", "slider", "sample", min=0, max=n_samples - 1, value=0),
            Control("layer", "slider", "layer", min=0, max=n_layers - 1, value=n_layers - 1),
            Control("head", "dropdown", "head", heads, FUSED),
            Control("fusion", "dropdown", "fusion", list(HEAD_FUSIONS), self.head_fusion),
            Control("view", "toggle", "view", views, views[0]),
        ]

    def current_map(self, state: Mapping[str, Any] | None = None) -> np.ndarray:
        """The ``[h, w]`` map the controls (or ``state``) select, read from the cache."""
        st = self.state if state is None else state
        s, view = st["sample"], st["view"]
        if view == "rollout":
            return self.cache.rollout_map(s, st["fusion"])
        if view == "gradient-weighted":
            return self.cache.relevance[s].numpy()
        head = None if st["head"] in (FUSED, None) else st["head"]
        return self.cache.cls_map(s, st["layer"], head, st["fusion"])

    def title(self, state: Mapping[str, Any] | None = None) -> str:
        """The view's title: sample, label, prediction and what is shown."""
        st = self.state if state is None else state
        s, view, head = st["sample"], st["view"], st["head"]
        label, pred = int(self.cache.labels[s]), int(self.cache.preds[s])
        what = (
            view
            if view != "CLS attention"
            else (
                f"layer {self.numbers[st['layer']]}, "
                + (f"head {head}" if head not in (FUSED, None) else f"{st['fusion']} of heads")
            )
        )
        return f"sample {s} (label {label}, predicted {pred}): {what}"

    def render(self, state: Mapping[str, Any]) -> HeatmapView:
        """The selected map over the sample's image."""
        return HeatmapView(
            self.current_map(state),
            self.cache.images[state["sample"]],
            map_title="attention",
            suptitle=self.title(state),
        )
