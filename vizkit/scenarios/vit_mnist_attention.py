"""Scenario 2: CLS attention of a ViT on handwritten digits, with seed 001's API (notebook
``02_vit_mnist_attention.ipynb``).

What is explained: the predicted digit, through the post-softmax attention of the CLS token
per layer and head, attention rollout (Abnar & Zuidema, ACL 2020) and gradient-weighted
attention of the predicted-class logit (Chefer et al., ICCV 2021).

``AttentionVisualizer(model).run_comprehensive_analysis(output_dir)`` writes the files seed
001's users know (``attention_pattern_sample_{i}.png``, ``attention_heads_sample_{i}.png``,
``layer_comparison_sample_{i}.png``, ``attention_statistics.png``,
``attention_analysis_report.md``). All attention comes from ONE batched forward pass
(:meth:`AttentionVisualizer.analyze`), cached in an :class:`AttentionCache` that the figures
and the widget explorer index into without running the model again.

Example::

    from vizkit.scenarios import AttentionVisualizer
    result = AttentionVisualizer("mnist_vit").run_comprehensive_analysis("runs/mnist", num_samples=4)
    result.statistics        # per sample x layer x head: max, mean, entropy, attention distance
    result.report            # runs/mnist/attention_analysis_report.md
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import render, stats
from ..attention_math import HEAD_FUSIONS, fuse_heads
from ..errors import VizkitError
from ..evaluate import batched
from ..explain import AttentionMaps, attention, gradient_attention, rollout
from ..report import Report, markdown_table
from ..state import model_device, resolve_device
from ..widgets import Control, Explorer, HeatmapView

__all__ = [
    "AttentionVisualizer",
    "AttentionCache",
    "AnalysisResult",
    "AttentionExplorer",
    "observations",
    "layer_summary",
    "write_report",
    "mnist_preprocess",
    "markdown_table",
    "notebook_parameters",
    "check_notebook_parameters",
    "parse_index_list",
]

SELECTIONS = ("one_per_class", "indices", "misclassified_first")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def mnist_preprocess(image: Any) -> torch.Tensor:
    """uint8 28x28 (or [1, 28, 28] float in [0, 1]) -> normalised ``[1, 28, 28]`` tensor."""
    t = torch.from_numpy(np.array(image, copy=True)) if not isinstance(image, torch.Tensor) else image
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    if t.ndim == 2:
        t = t[None]
    return (t - MNIST_MEAN) / MNIST_STD


@dataclass
class AttentionCache:
    """Everything the figures and widgets need, computed once.

    ``images`` ``[S, H, W]`` uint8 for display; ``inputs`` ``[S, C, H, W]`` model inputs;
    ``attn`` per-layer ``[S, heads, N, N]``; ``relevance`` ``[S, h, w]`` gradient-weighted
    attention for the predicted class (optional).
    """

    images: np.ndarray
    inputs: torch.Tensor
    labels: torch.Tensor
    preds: torch.Tensor
    probs: torch.Tensor
    attn: AttentionMaps
    relevance: torch.Tensor | None = None
    _rollouts: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return self.attn.layers

    @property
    def num_heads(self) -> int:
        return int(self.attn.maps[self.layers[0]].shape[1])

    def cls_map(self, sample: int, layer: int | str, head: int | None = None, head_fusion: str = "mean") -> np.ndarray:
        """CLS -> patch attention ``[h, w]`` of one sample: one head, or fused over heads."""
        per_head = self.attn.cls_attention(layer, head_fusion=None)[sample]  # [heads, h, w]
        if head is not None:
            return per_head[head].numpy()
        return fuse_heads(per_head[None], head_fusion)[0].numpy()

    def rollout_map(self, sample: int, head_fusion: str = "mean") -> np.ndarray:
        """Attention rollout ``[h, w]`` over all captured layers (cached per head fusion)."""
        if head_fusion not in self._rollouts:
            self._rollouts[head_fusion] = rollout(self.attn, head_fusion=head_fusion)
        return self._rollouts[head_fusion][sample].numpy()


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
        cmap: str = "jet",
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
            preds = []
            with torch.no_grad():
                for _, chunk in batched(images, batch_size):
                    x = torch.stack([self.preprocess(im) for im in chunk])
                    preds.append(model(x.to(model_device(model))).argmax(-1).cpu())
            self._test_predictions = torch.cat(preds)
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
        if selection not in SELECTIONS:
            raise VizkitError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        if selection == "indices":
            if not indices:
                raise VizkitError("selection='indices' needs a non-empty list of test-set indices")
            bad = [i for i in indices if not 0 <= int(i) < len(labels)]
            if bad:
                raise VizkitError(f"test-set indices {bad} are out of range 0..{len(labels) - 1}")
            return [int(i) for i in indices]
        if num_samples < 1:
            raise VizkitError(f"num_samples must be positive, got {num_samples}")
        if selection == "one_per_class":
            firsts = {c: iter(np.flatnonzero(labels == c)) for c in range(int(labels.max()) + 1)}
            return [int(next(firsts[k % len(firsts)])) for k in range(num_samples)]
        wrong = torch.nonzero(self.test_predictions() != torch.from_numpy(np.array(labels))).flatten().tolist()
        right = [i for i in range(len(labels)) if i not in set(wrong)]
        return (wrong + right)[:num_samples]

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
        attn = attention(model, x, layers=layers)
        probs = attn.output.softmax(-1).cpu()
        preds = probs.argmax(-1)
        rel = None
        if relevance:
            rel = gradient_attention(model, x, preds.tolist(), layers=layers, head_fusion=self.head_fusion)
            rel = torch.nn.functional.interpolate(rel.heatmap[:, None], size=attn.grid, mode="area")[:, 0]
        self.cache = AttentionCache(
            images=images,
            inputs=x.cpu(),
            labels=torch.tensor([li for _, li in samples]),
            preds=preds,
            probs=probs,
            attn=attn,
            relevance=rel,
        )
        return self.cache

    def _cached(self, image: np.ndarray, label: int, i: int) -> tuple[AttentionCache, int]:
        """The cache row of sample ``i``; an image that is not cached is analysed on its own."""
        if self.cache is not None and i < len(self.cache.images) and np.array_equal(self.cache.images[i], image):
            return self.cache, i
        return self.analyze([(image, label)]), 0

    # ---------------------------------------------------------------- figures
    def _overlay(self, image: np.ndarray, heat: np.ndarray) -> np.ndarray:
        return render.overlay(image, heat, alpha=0.5, cmap=self.cmap)

    def _title(self, cache: AttentionCache, s: int) -> str:
        label = int(cache.labels[s])
        pred, conf = int(cache.preds[s]), float(cache.probs[s].max())
        truth = f"label {label}, " if label >= 0 else ""
        return f"{truth}predicted {pred} ({conf:.1%})"

    def visualize_attention_patterns(
        self, image: np.ndarray, label: int, i: int, layers: Sequence[int] | None = None
    ) -> Path:
        """``attention_pattern_sample_{i}.png``: CLS attention per layer; top raw, bottom overlay."""
        cache, s = self._cached(image, label, i)
        idx = list(layers) if layers is not None else list(range(len(cache.layers)))
        fig, axes = plt.subplots(2, len(idx), figsize=(2.2 * len(idx), 4.8), squeeze=False)
        for col, li in enumerate(idx):
            heat = cache.cls_map(s, li, None, self.head_fusion)
            render.show_heatmap(axes[0, col], heat, title=f"layer {li + 1}", cmap=self.cmap)
            render.show_overlay(axes[1, col], image, heat, title=f"layer {li + 1} overlay", cmap=self.cmap)
        fig.suptitle(
            f"Sample {i}: CLS attention per layer ({self.head_fusion} over heads) - {self._title(cache, s)}\n"
            "red = high, blue = low",
            fontsize=10,
        )
        return render.save_figure(fig, self.output_dir / f"attention_pattern_sample_{i}.png")

    def analyze_attention_heads(
        self, image: np.ndarray, label: int, i: int, layer: int = -1, heads: Sequence[int] | None = None
    ) -> Path:
        """``attention_heads_sample_{i}.png``: every head of one layer; top raw, bottom overlay."""
        cache, s = self._cached(image, label, i)
        li = layer % len(cache.layers)
        hs = list(heads) if heads is not None else list(range(cache.num_heads))
        fig, axes = plt.subplots(2, len(hs), figsize=(2.4 * len(hs), 5), squeeze=False)
        for col, h in enumerate(hs):
            heat = cache.cls_map(s, li, h)
            render.show_heatmap(axes[0, col], heat, title=f"head {h + 1}", cmap=self.cmap)
            render.show_overlay(axes[1, col], image, heat, title=f"head {h + 1} overlay", cmap=self.cmap)
        fig.suptitle(f"Sample {i}: CLS attention of each head in layer {li + 1} - {self._title(cache, s)}", fontsize=10)
        return render.save_figure(fig, self.output_dir / f"attention_heads_sample_{i}.png")

    def create_layer_comparison(self, image: np.ndarray, label: int, i: int) -> Path:
        """``layer_comparison_sample_{i}.png``: layer evolution side by side (top), and raw
        last-layer attention next to rollout and gradient-weighted attention (bottom)."""
        cache, s = self._cached(image, label, i)
        n = len(cache.layers)
        panels: list[list[render.Panel | None]] = [
            [render.Panel(image=image, kind="image", title="input")]
            + [
                render.Panel(
                    image=image,
                    heatmap=cache.cls_map(s, li, None, self.head_fusion),
                    title=f"layer {li + 1}",
                    cmap=self.cmap,
                )
                for li in range(n)
            ],
            [
                render.Panel(image=image, kind="image", title="input"),
                render.Panel(
                    image=image,
                    heatmap=cache.cls_map(s, n - 1, None, self.head_fusion),
                    title="raw last layer",
                    cmap=self.cmap,
                ),
                render.Panel(
                    image=image, heatmap=cache.rollout_map(s, self.head_fusion), title="rollout", cmap=self.cmap
                ),
            ]
            + (
                [
                    render.Panel(
                        image=image, heatmap=cache.relevance[s].numpy(), title="gradient-weighted", cmap=self.cmap
                    )
                ]
                if cache.relevance is not None
                else []
            ),
        ]
        fig = render.figure_grid(
            panels,
            titles=["layer evolution", "last layer vs rollout"],
            suptitle=f"Sample {i}: from layer 1 to layer {n} - {self._title(cache, s)}",
        )
        return render.save_figure(fig, self.output_dir / f"layer_comparison_sample_{i}.png")

    def statistics(self) -> pd.DataFrame:
        """Per sample, layer and head: max, mean, entropy and mean distance of the CLS attention."""
        if self.cache is None:
            raise VizkitError("no cached attention: call analyze(samples) first")
        a = self.cache.attn
        return stats.attention_statistics(a.maps, a.grid, a.prefix_tokens, query="cls")

    def create_attention_statistics(self, samples: Sequence[tuple[np.ndarray, int]] | None = None) -> Path:
        """``attention_statistics.png``: distributions per layer of max, mean, entropy, distance."""
        import seaborn as sns

        if samples is not None and (self.cache is None or len(self.cache.images) != len(samples)):
            self.analyze(samples)
        df = self.statistics().assign(layer_no=lambda d: d["layer_index"] + 1, head=lambda d: d["head"] + 1)
        fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
        titles = {
            "max": "max CLS attention",
            "mean": "mean CLS attention",
            "entropy": "entropy of the CLS row (nats)",
            "distance": "mean attention distance (patches)",
        }
        for ax, (metric, title) in zip(axes.flat, titles.items()):
            sns.boxplot(data=df, x="layer_no", y=metric, hue="head", ax=ax, fliersize=2, palette="tab10")
            ax.set_title(title)
            ax.set_xlabel("layer")
            ax.legend(title="head", fontsize=7, title_fontsize=7, ncols=2)
        fig.suptitle(f"Attention statistics over {df['sample'].nunique()} samples, per layer and head")
        fig.tight_layout()
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
    ) -> AnalysisResult:
        """Every figure, the statistics and the markdown report, into ``output_dir``."""
        if output_dir is not None:
            self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_model()
        samples = self.get_test_samples(num_samples, selection, indices)
        cache = self.analyze(samples, layers=layers)
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
        obs = observations(df, cache, self.head_fusion)
        report = write_report(
            self.output_dir,
            parameters or {},
            self.model_info,
            accuracy,
            sample_acc,
            df,
            summary,
            obs,
            files,
            self.sample_indices,
            cache,
        )
        return AnalysisResult(self.output_dir, files + [report], df, summary, obs, accuracy, sample_acc, report)


def layer_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean max / mean / entropy / distance per layer (rows in layer order, 1-based layer numbers)."""
    out = df.groupby("layer_index")[["max", "mean", "entropy", "distance"]].mean()
    out.index = pd.Index(out.index + 1, name="layer")
    return out


def observations(df: pd.DataFrame, cache: AttentionCache, head_fusion: str = "mean") -> list[str]:
    """Sentences computed from the numbers (not canned text)."""
    per_layer = layer_summary(df)
    per_head = df.groupby(["layer_index", "head"])["distance"].mean()
    obs = []
    lo, hi = int(per_layer["entropy"].idxmin()), int(per_layer["entropy"].idxmax())
    n_tokens = cache.attn.maps[cache.layers[0]].shape[-1]
    obs.append(
        f"The CLS attention is most concentrated in layer {lo} (mean entropy {per_layer.loc[lo, 'entropy']:.3f} "
        f"nats) and most diffuse in layer {hi} ({per_layer.loc[hi, 'entropy']:.3f} nats); a uniform row over "
        f"{n_tokens} tokens would have {np.log(n_tokens):.3f}."
    )
    if len(per_layer) > 2:
        rho = float(pd.Series(per_layer.index).corr(pd.Series(per_layer["entropy"].values), method="spearman"))
        trend = "falls" if rho <= -0.5 else "rises" if rho >= 0.5 else "shows no monotonic trend"
        obs.append(f"Entropy {trend} with depth (Spearman rho = {rho:+.2f} between layer number and mean entropy).")
    (l_loc, h_loc), (l_glob, h_glob) = per_head.idxmin(), per_head.idxmax()
    obs.append(
        f"The most local head is layer {l_loc + 1}, head {h_loc + 1} (mean attention distance "
        f"{per_head.min():.2f} patches); the most global is layer {l_glob + 1}, head {h_glob + 1} "
        f"({per_head.max():.2f} patches)."
    )
    top = int(per_layer["max"].idxmax())
    obs.append(
        f"The strongest single CLS->patch weight is found in layer {top} (mean max {per_layer.loc[top, 'max']:.3f})."
    )
    n = len(cache.labels)
    wrong = [i for i in range(n) if int(cache.preds[i]) != int(cache.labels[i])]
    obs.append(
        f"{n - len(wrong)} of {n} analysed samples are classified correctly"
        + (
            "; misclassified: "
            + ", ".join(f"sample {i} ({int(cache.labels[i])} -> {int(cache.preds[i])})" for i in wrong)
            + "."
            if wrong
            else "."
        )
    )
    last = cache.attn.cls_attention(-1, head_fusion=head_fusion).flatten(1)
    roll = rollout(cache.attn, head_fusion=head_fusion).flatten(1)
    corr = float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(last.numpy(), roll.numpy())]))
    obs.append(
        f"Rollout and the raw last-layer attention agree with a mean Pearson correlation of {corr:.2f} "
        "over the samples."
    )
    return obs


def write_report(
    out: Path,
    params: dict[str, Any],
    info: dict[str, Any],
    accuracy: float | None,
    sample_acc: float,
    df: pd.DataFrame,
    summary: pd.DataFrame,
    obs: list[str],
    files: list[Path],
    indices: Sequence[int],
    cache: AttentionCache,
) -> Path:
    """``attention_analysis_report.md``: parameters, accuracy, figures, statistics, observations."""
    rep = Report("ViT attention analysis on MNIST")
    rep.heading("Run parameters").parameters(params or {"(defaults)": True})
    rep.heading("Model")
    source = info.get("source", "?")
    acc = f"{accuracy:.2%}" if accuracy is not None else "not measured"
    rep.bullets(
        [
            f"source: `{source}`",
            f"test accuracy (10,000 MNIST test images): **{acc}**",
            f"layers analysed: {len(cache.layers)}, heads per layer: {cache.num_heads}, patch grid "
            f"{cache.attn.grid[0]}x{cache.attn.grid[1]} + {cache.attn.prefix_tokens} CLS token",
            f"analysed samples (test-set indices): {', '.join(str(i) for i in indices)}; "
            f"accuracy on them {sample_acc:.0%}",
        ]
    )
    rep.heading("Observations").bullets(obs)
    rep.heading("Statistics per layer (mean and std over samples and heads)")
    rep.table(summary)
    rep.heading("Figures")
    for f in files:
        rep.figure(f, f.stem.replace("_", " "), relative_to=out)
    return rep.write(out / "attention_analysis_report.md")


# ---------------------------------------------------------------- notebook parameters
def _layers_ok(value: Any) -> str | None:
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("all", "last") or v.startswith("last_") or all(p.strip().lstrip("-").isdigit() for p in v.split(",")):
            return None
        return "use 'all', 'last', 'last_K', a comma-separated list of block indices like '0,2,5', or a list of ints"
    return (
        None if all(isinstance(i, int) and not isinstance(i, bool) for i in value) else "a list of block indices (ints)"
    )


def _heads_ok(value: Any) -> str | None:
    if isinstance(value, str):
        return (
            None
            if value.strip().lower() == "all" or all(p.strip().isdigit() for p in value.split(","))
            else "use 'all', a comma-separated list of head indices like '0,2', or a list of ints"
        )
    return (
        None
        if all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)
        else "a list of non-negative head indices"
    )


def parse_index_list(value: Any, keywords: tuple[str, ...] = ("all",)) -> Any:
    """'0,2,5' -> [0, 2, 5]; keywords ('all', 'last_4') and lists pass through."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v in keywords or v.startswith("last"):
            return v
        return [int(p) for p in v.split(",") if p.strip()]
    return list(value)


def notebook_parameters() -> list:
    """The parameter spec of ``notebooks/02_vit_mnist_attention.ipynb`` (and its checks)."""
    from ..notebook import Param, positive
    from .registry import common_parameters

    return [
        Param("model", (str,), help="'mnist_vit' (the zoo model) or the path of a ViT checkpoint"),
        Param("model_config", (str,), help="JSON config of a checkpoint (seed 001's keys)"),
        Param("num_samples", (int,), check=positive),
        Param("selection", (str,), choices=SELECTIONS),
        Param(
            "indices",
            (list, tuple),
            check=lambda v: (
                None if all(isinstance(i, int) and i >= 0 for i in v) else "a list of non-negative test-set indices"
            ),
        ),
        Param("layers", (str, list, tuple), check=_layers_ok),
        Param("heads", (str, list, tuple), check=_heads_ok),
        Param("head_layer", (int,)),
        Param("head_fusion", (str,), choices=HEAD_FUSIONS),
        *common_parameters("output_dir", "overwrite", "interactive", "seed", "device"),
    ]


def check_notebook_parameters(namespace: dict, before: Any) -> dict[str, Any]:
    """Validate the notebook's parameters (names, types, choices, and the combinations)."""
    from ..notebook import ParameterError, check_parameters

    p = check_parameters(namespace, before, notebook_parameters())
    if p["selection"] == "indices" and not p["indices"]:
        raise ParameterError("selection='indices' needs a non-empty indices list, e.g. indices=[0, 7, 42]")
    if p["model"] not in ("mnist_vit", "zoo:mnist_vit") and not p["model_config"]:
        raise ParameterError(f"model={p['model']!r} is a checkpoint path: also set model_config to its JSON config")
    resolve_device(p["device"])  # cuda without a GPU: one clear error
    return p


# ---------------------------------------------------------------- explorer
VIEWS = ("CLS attention", "rollout", "gradient-weighted")
FUSED = -1  # the head dropdown's value for "all heads, fused"


class AttentionExplorer(Explorer):
    """Sample x layer x head explorer over an :class:`AttentionCache` (a :class:`vizkit.widgets.Explorer`).

    Controls: ``sample``, ``layer`` (1-based), ``head`` (-1 = fused), ``fusion``
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
        self, cache: AttentionCache, head_fusion: str = "mean", cmap: str = "jet", *, interactive: bool = True
    ):
        self.cache, self.head_fusion = cache, head_fusion
        super().__init__(interactive=interactive, cmap=cmap)

    def control_specs(self) -> list[Control]:
        """sample, layer (1-based, starting at the last), head (fused or one), fusion, view."""
        cache = self.cache
        n_samples, n_layers = len(cache.images), len(cache.layers)
        views = list(VIEWS) if cache.relevance is not None else list(VIEWS[:2])
        # "fused" is -1, not None: a Dropdown shows a None value as an empty box
        heads = [("fused", FUSED)] + [(f"head {h + 1}", h) for h in range(cache.num_heads)]
        return [
            Control("sample", "slider", "sample", min=0, max=n_samples - 1, value=0),
            Control("layer", "slider", "layer", min=1, max=n_layers, value=n_layers),
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
        return self.cache.cls_map(s, st["layer"] - 1, head, st["fusion"])

    def title(self, state: Mapping[str, Any] | None = None) -> str:
        """The view's title: sample, label, prediction and what is shown."""
        st = self.state if state is None else state
        s, view, head = st["sample"], st["view"], st["head"]
        label, pred = int(self.cache.labels[s]), int(self.cache.preds[s])
        what = (
            view
            if view != "CLS attention"
            else (
                f"layer {st['layer']}, "
                + (f"head {head + 1}" if head not in (FUSED, None) else f"{st['fusion']} of heads")
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
