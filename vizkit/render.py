"""Rendering helpers: images, heatmaps, overlays, figures, token strips and videos.

Conventions
-----------
* Images are always RGB (never BGR), returned as float32 ``H x W x 3`` in ``[0, 1]``
  unless stated otherwise.
* Heatmaps are 2-D ``H x W`` arrays (numpy or torch); torch tensors are accepted
  everywhere without this module importing torch.
* Files are written atomically: into a hidden temporary file next to the target,
  then moved into place with :func:`os.replace` (:mod:`vizkit.io`).

Colour scheme (one for the whole suite)
---------------------------------------
* Relevance / attention maps: :data:`RELEVANCE_CMAP` (``"inferno"``: perceptually uniform,
  colour-blind safe, black = low, pale yellow = high). In an overlay the map's own value sets
  each pixel's opacity (:func:`overlay`), so low-relevance areas keep the image's true colours.
* Signed maps (a difference such as fake - real): :data:`SIGNED_CMAP` (``"RdBu_r"``) with a
  scale symmetric about 0, so 0 is the map's white centre (:func:`show_signed`).
* Ground truth (a manipulation mask, a named object): a :data:`OUTLINE_COLOR` contour
  (:func:`draw_outline`).
* Every drawn map carries a colorbar whose label states its scale.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import imageio.v2 as imageio
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from PIL import Image

from .io import atomic_path

# Fonts for CJK class texts (seed 003's users label classes in Chinese): when a CJK font is
# installed (e.g. Debian's fonts-noto-cjk or fonts-wqy-microhei), matplotlib falls back to it
# for glyphs DejaVu Sans lacks; without one, such labels render as boxes.
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Source Han Sans SC",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "AR PL UMing CN",
)


def use_cjk_fallback() -> list[str]:
    """Add the installed CJK fonts to matplotlib's fallback list; returns the fonts added."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    found = [name for name in CJK_FONTS if name in installed]
    if found:
        family = list(matplotlib.rcParams["font.family"])
        base = family if family != ["sans-serif"] else ["DejaVu Sans"]
        matplotlib.rcParams["font.family"] = base + [f for f in found if f not in base]
    return found


use_cjk_fallback()

RELEVANCE_CMAP = "inferno"
"""Colormap of every relevance / attention map (perceptually uniform, colour-blind safe)."""
SIGNED_CMAP = "RdBu_r"
"""Diverging colormap of signed maps (differences), always drawn with a scale centred at 0."""
OUTLINE_COLOR = "cyan"
"""Colour of ground-truth outlines: visible on every part of :data:`RELEVANCE_CMAP`."""
OVERLAY_ALPHA = 0.6
"""Default maximum opacity of an overlay (reached where the normalised map is 1)."""
MIN_SAVED_SIDE = 224
"""Short side (pixels) below which saved overlays are upsampled (:func:`save_overlay`)."""

__all__ = [
    "MIN_SAVED_SIDE",
    "OUTLINE_COLOR",
    "OVERLAY_ALPHA",
    "Panel",
    "RELEVANCE_CMAP",
    "SIGNED_CMAP",
    "bar_chart",
    "colorize",
    "combined_map",
    "display_crop",
    "display_image",
    "draw_outline",
    "figure_grid",
    "figure_to_array",
    "normalize_map",
    "outline_panels",
    "outline_pixels",
    "overlay",
    "overlay_to_save",
    "panel_axes",
    "render_token_strip",
    "save_figure",
    "save_image",
    "save_overlay",
    "shared_colorbar",
    "show_heatmap",
    "show_overlay",
    "show_signed",
    "to_numpy_image",
    "token_colors",
    "write_video",
]

PanelKind = Literal["overlay", "heatmap", "image"]


# --------------------------------------------------------------------------- arrays


def _as_array(x: Any) -> np.ndarray:
    """Torch tensor (any device, grad or not) or array-like -> numpy array."""
    if hasattr(x, "detach"):  # torch.Tensor, duck-typed so torch is not imported here
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:  # float16 / bfloat16
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _as_heatmap(heatmap: Any) -> np.ndarray:
    arr = _as_array(heatmap)
    if arr.ndim != 2:
        raise ValueError(f"heatmap must be 2-D [H, W], got shape {arr.shape}")
    return arr


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8 (rounded); uint8 passes through."""
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def normalize_map(heatmap: Any) -> np.ndarray:
    """Min-max scale an array of any shape to float32 in [0, 1].

    A constant (or all non-finite) map gives zeros; NaN -> 0, +inf -> 1, -inf -> 0.
    """
    arr = _as_array(heatmap).astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, np.float32)
    lo, hi = arr[finite].min(), arr[finite].max()
    if hi <= lo:
        return np.zeros(arr.shape, np.float32)
    out = np.nan_to_num((arr - lo) / (hi - lo), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def combined_map(layer_maps: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Per-layer raw maps combined as :func:`vizkit.cam` does: each normalised and resized, the
    mean normalised again: ``[size, size]`` in [0, 1]."""
    ups = [cv2.resize(normalize_map(m), (size, size), interpolation=cv2.INTER_LINEAR) for m in layer_maps]
    return normalize_map(np.mean(ups, 0))


def display_crop(image: Image.Image, size: int) -> np.ndarray:
    """The region a CLIP-style preprocessing sees, for display: short side resized to ``size``,
    centre crop; HxWx3 float in [0, 1]."""
    w, h = image.size
    scale = size / min(w, h)
    im = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0


def display_image(image: np.ndarray, size: int, min_size: int = 224) -> np.ndarray:
    """The image as a model of input ``size`` sees it (resized), upscaled to ``min_size`` when
    smaller, for legibility."""
    im = cv2.resize(np.asarray(image, np.uint8), (size, size), interpolation=cv2.INTER_AREA)
    if size < min_size:
        im = cv2.resize(im, (min_size, min_size), interpolation=cv2.INTER_CUBIC)
    return im


def to_numpy_image(image: Any) -> np.ndarray:
    """Convert an image to float32 ``H x W x 3`` RGB in ``[0, 1]`` (always a new array).

    Accepts:
      * torch tensor ``[C, H, W]``, ``[1, C, H, W]`` or ``[H, W]`` (channel-first),
      * numpy ``H x W`` or ``H x W x C`` (channel-last),
      * PIL image (any mode).

    ``C`` may be 1 (grey, replicated), 3 (RGB) or 4 (RGBA). uint8 / uint16 data is
    divided by 255 / 65535; bool becomes 0/1; any other data is used as-is if it
    lies in [0, 1] and is min-max scaled (over all colour channels together)
    otherwise. RGBA is composited over **black** (``rgb * alpha``), so fully
    transparent pixels become black.
    """
    if isinstance(image, Image.Image):
        mode = image.mode
        if not (mode in ("1", "L", "RGB", "RGBA", "I", "F") or mode.startswith("I;16")):
            has_alpha = "A" in mode or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        arr = np.asarray(image)
    else:
        is_tensor = hasattr(image, "detach")
        arr = _as_array(image)
        if is_tensor:
            if arr.ndim == 4 and arr.shape[0] == 1:
                arr = arr[0]
            if arr.ndim == 3:
                arr = np.moveaxis(arr, 0, -1)

    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "expected an image [H, W] or [H, W, C] (numpy/PIL) or [C, H, W] (torch) "
            f"with C in (1, 3, 4); got shape {arr.shape}"
        )

    img = arr.astype(np.float32)
    if arr.dtype.kind == "u" and arr.dtype.itemsize <= 2:
        img /= np.iinfo(arr.dtype).max
    rgb = img[..., :3] if arr.shape[-1] >= 3 else np.repeat(img, 3, axis=-1)
    if not (np.isfinite(rgb).all() and rgb.min() >= 0.0 and rgb.max() <= 1.0):
        rgb = normalize_map(rgb)
    if arr.shape[-1] == 4:
        rgb = rgb * np.clip(np.nan_to_num(img[..., 3:]), 0.0, 1.0)
    return np.ascontiguousarray(rgb, dtype=np.float32)


def colorize(heatmap: Any, cmap: str = RELEVANCE_CMAP) -> np.ndarray:
    """Map a 2-D heatmap with values in [0, 1] to float32 ``H x W x 3`` RGB.

    Values are clipped to [0, 1] (not rescaled: call :func:`normalize_map` first
    for raw scores). With the default ``"inferno"``, 0 is black and 1 is pale yellow.
    """
    hm = np.clip(_as_heatmap(heatmap).astype(np.float64), 0.0, 1.0)
    colours = matplotlib.colormaps.get_cmap(cmap)(hm)  # H x W x 4 RGBA, float
    return np.ascontiguousarray(colours[..., :3], dtype=np.float32)


def _unit_map(hm: np.ndarray, vmin: float | None, vmax: float | None) -> np.ndarray:
    """``hm`` on [0, 1]: min-max over the map itself, or ``(hm - vmin) / (vmax - vmin)`` clipped
    when both bounds are given (a scale shared by several panels)."""
    if vmin is None and vmax is None:
        return normalize_map(hm)
    if vmin is None or vmax is None or not vmax > vmin:
        raise ValueError(f"a shared scale needs vmin < vmax, got vmin={vmin}, vmax={vmax}")
    unit = np.nan_to_num((hm.astype(np.float64) - vmin) / (vmax - vmin), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(unit, 0.0, 1.0).astype(np.float32)


def overlay(
    image: Any,
    heatmap: Any,
    alpha: float = OVERLAY_ALPHA,
    cmap: str = RELEVANCE_CMAP,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Blend a colourised heatmap onto an image with a per-pixel opacity set by the map itself.

    With ``v`` the heatmap normalised to [0, 1] and ``c = cmap(v)`` its colour, each pixel is
    ``(1 - alpha * v) * image + alpha * v * c``: where the map is 0 the image keeps its true
    colours, where it is 1 the colour covers it with opacity ``alpha`` (the maximum opacity).

    ``image``: anything :func:`to_numpy_image` accepts (``H x W`` spatial size).
    ``heatmap``: 2-D ``h x w``, resized bilinearly to ``H x W`` if needed, then min-max
    normalised over itself -- or, with ``vmin`` and ``vmax``, scaled as ``(x - vmin) / (vmax - vmin)``
    and clipped (one scale shared by several panels). Returns float32 ``H x W x 3`` in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    hm = _as_heatmap(heatmap).astype(np.float32)
    img = to_numpy_image(image)
    height, width = img.shape[:2]
    if hm.shape != (height, width):
        hm = cv2.resize(hm, (width, height), interpolation=cv2.INTER_LINEAR)
    unit = _unit_map(hm, vmin, vmax)
    opacity = (alpha * unit)[..., None]
    return np.clip((1.0 - opacity) * img + opacity * colorize(unit, cmap), 0.0, 1.0).astype(np.float32)


def outline_pixels(mask: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The one-pixel boundary of a ground-truth ``mask`` ``[h, w]`` (values > 0.5 inside) at ``shape``
    ``(H, W)`` (nearest resize; default the mask's own): bool ``[H, W]``, True on inside pixels
    with a 4-neighbour outside (or on the image border)."""
    m = _as_heatmap(mask).astype(np.float32) > 0.5
    if shape is not None and m.shape != tuple(shape):
        m = cv2.resize(m.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    padded = np.pad(m, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return m & ~interior


# --------------------------------------------------------------------------- axes


def _finish_axes(ax: Axes, title: str | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def _colorbar(ax: Axes | Sequence[Axes], mappable: Any, label: str, **where: Any) -> Any:
    """A colorbar beside ``ax`` (one axes, or several sharing it; ``where``: matplotlib's placement
    options) whose label states the scale."""
    axes = ax if isinstance(ax, Axes) else list(ax)
    fig = axes.figure if isinstance(axes, Axes) else axes[0].figure
    cbar = fig.colorbar(mappable, ax=axes, **({"fraction": 0.046, "pad": 0.04} | where))
    cbar.set_label(label, fontsize="small")
    cbar.ax.tick_params(labelsize="small")
    return cbar


def _scale_label(vmin: float | None, vmax: float | None) -> str:
    shared = vmin is not None or vmax is not None
    return f"value, shared scale {vmin:.3g} .. {vmax:.3g}" if shared else "normalised per panel to [0, 1]"


def draw_outline(
    ax: Axes,
    mask: Any,
    color: str = OUTLINE_COLOR,
    linewidth: float = 1.5,
    shape: tuple[int, int] | None = None,
) -> Any:
    """Outline a ground-truth ``mask`` ``[h, w]`` (bool or 0/1, 1 = inside) on ``ax``: the contour at
    0.5, in pixel coordinates of an image of ``shape`` ``(H, W)`` drawn with ``imshow`` (default the
    mask's own shape; a smaller mask is stretched over the image). The mask is zero-padded so an
    object touching the border is closed. Returns the ``ContourSet``, or None (nothing drawn) when
    ``mask`` is None or empty: a sample without a ground truth.
    """
    if mask is None:
        return None
    m = _as_heatmap(mask).astype(np.float64)
    if not m.any():
        return None
    h, w = m.shape
    H, W = shape if shape is not None else (h, w)
    xs = (np.arange(-1, w + 1) + 0.5) * W / w - 0.5  # pixel centres of the padded mask
    ys = (np.arange(-1, h + 1) + 0.5) * H / h - 0.5
    limits = ax.get_xlim(), ax.get_ylim()
    contours = ax.contour(xs, ys, np.pad(m, 1), levels=[0.5], colors=[color], linewidths=linewidth)
    if ax.images:  # keep the image's extent (the padded grid reaches half a pixel beyond it)
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
    return contours


def outline_panels(fig: Figure, mask: Any) -> Figure:
    """Outline ``mask`` ``[h, w]`` (:func:`draw_outline`) on every image panel of ``fig``, stretched over
    each panel's image; nothing when ``mask`` is None or empty. Returns ``fig``."""
    for ax in panel_axes(fig):
        if ax.images:
            draw_outline(ax, mask, shape=ax.images[0].get_array().shape[:2])
    return fig


def shared_colorbar(
    axes: Sequence[Axes],
    cmap: str = RELEVANCE_CMAP,
    vmin: float | None = None,
    vmax: float | None = None,
    location: str = "bottom",
) -> Any:
    """One colorbar for all ``axes`` (drawn without their own), below them by default: the scale
    ``vmin`` .. ``vmax`` when shared, else [0, 1] labelled "normalised per panel to [0, 1]". Returns it."""
    axes = list(axes)
    norm = Normalize(0.0, 1.0) if vmin is None and vmax is None else Normalize(vmin, vmax)
    ncols = max(1, len({round(ax.get_position().x0, 3) for ax in axes}))
    where = {"location": location, "aspect": 30, "pad": 0.02}
    where["shrink"] = min(0.6, 1.5 / ncols + 0.2) if location in ("bottom", "top") else 0.8
    return _colorbar(axes, ScalarMappable(norm, cmap), _scale_label(vmin, vmax), **where)


def show_heatmap(
    ax: Axes,
    heatmap: Any,
    title: str | None = None,
    cmap: str = RELEVANCE_CMAP,
    colorbar: bool = True,
    mask: Any = None,
    vmin: float | None = None,
    vmax: float | None = None,
    label: str | None = None,
) -> Any:
    """Draw a 2-D heatmap ``[h, w]`` (raw values, colours spanning its min .. max, or ``vmin`` ..
    ``vmax``) on ``ax``, with a colorbar labelled ``label`` (default: "raw value") and the outline
    of ``mask`` (any ``[H, W]``, :func:`draw_outline`) when given. Returns the ``AxesImage``.
    """
    hm = _as_heatmap(heatmap)
    im = ax.imshow(hm, cmap=cmap, vmin=vmin, vmax=vmax)
    if mask is not None:
        draw_outline(ax, mask, shape=hm.shape)
    if colorbar:
        _colorbar(ax, im, label or "raw value")
    _finish_axes(ax, title)
    return im


def show_signed(
    ax: Axes,
    diff: Any,
    title: str | None = None,
    colorbar: bool = True,
    mask: Any = None,
    label: str = "difference (white = 0)",
) -> Any:
    """Draw a signed map ``[h, w]`` (e.g. fake - real) with :data:`SIGNED_CMAP` on a scale symmetric
    about 0 (``-b .. b``, ``b`` the largest magnitude, 1 for an all-zero map), so 0 is the colormap's
    centre; colorbar and ``mask`` outline as in :func:`show_heatmap`. Returns the ``AxesImage``."""
    d = _as_heatmap(diff).astype(np.float64)
    finite = d[np.isfinite(d)]
    bound = float(np.abs(finite).max()) if finite.size else 0.0
    bound = bound if bound > 0 else 1.0
    return show_heatmap(ax, d, title, SIGNED_CMAP, colorbar, mask, -bound, bound, label)


def show_overlay(
    ax: Axes,
    image: Any,
    heatmap: Any,
    title: str | None = None,
    alpha: float = OVERLAY_ALPHA,
    cmap: str = RELEVANCE_CMAP,
    colorbar: bool = True,
    mask: Any = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Any:
    """Draw :func:`overlay` of ``heatmap`` on ``image`` on ``ax``, with a colorbar of the map's scale
    ("normalised per panel to [0, 1]", or the shared ``vmin`` .. ``vmax``) and the outline of the
    ground-truth ``mask`` (any ``[h, w]``, stretched over the image) when given. Returns the ``AxesImage``.
    """
    blended = overlay(image, heatmap, alpha=alpha, cmap=cmap, vmin=vmin, vmax=vmax)
    im = ax.imshow(blended)
    if mask is not None:
        draw_outline(ax, mask, shape=blended.shape[:2])
    if colorbar:
        norm = Normalize(0.0, 1.0) if vmin is None and vmax is None else Normalize(vmin, vmax)
        _colorbar(ax, ScalarMappable(norm, cmap), _scale_label(vmin, vmax))
    _finish_axes(ax, title)
    return im


@dataclass
class Panel:
    """One cell of :func:`figure_grid`.

    ``kind="overlay"`` needs ``image`` and ``heatmap``; ``"heatmap"`` needs
    ``heatmap``; ``"image"`` needs ``image``. ``mask`` (optional ``[h, w]``): a ground-truth
    outline drawn on the panel; ``vmin`` / ``vmax``: a scale shared with other panels
    (default: each map normalised over itself).
    """

    image: Any = None
    heatmap: Any = None
    title: str = ""
    kind: PanelKind = "overlay"
    cmap: str = RELEVANCE_CMAP
    alpha: float = OVERLAY_ALPHA
    mask: Any = None
    vmin: float | None = None
    vmax: float | None = None

    def __post_init__(self) -> None:
        needs = {"overlay": ("image", "heatmap"), "heatmap": ("heatmap",), "image": ("image",)}
        if self.kind not in needs:
            raise ValueError(f"Panel.kind must be one of {sorted(needs)}, got {self.kind!r}")
        missing = [name for name in needs[self.kind] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"Panel(kind={self.kind!r}) needs {' and '.join(missing)}")

    def draw(self, ax: Axes, colorbar: bool = True) -> None:
        """Draw this panel on ``ax`` (with its own colorbar unless ``colorbar`` is False)."""
        if self.kind == "overlay":
            show_overlay(
                ax,
                self.image,
                self.heatmap,
                self.title,
                self.alpha,
                self.cmap,
                colorbar,
                self.mask,
                self.vmin,
                self.vmax,
            )
        elif self.kind == "heatmap":
            show_heatmap(ax, self.heatmap, self.title, self.cmap, colorbar, self.mask, self.vmin, self.vmax)
        else:
            img = to_numpy_image(self.image)
            ax.imshow(img)
            if self.mask is not None:
                draw_outline(ax, self.mask, shape=img.shape[:2])
            _finish_axes(ax, self.title)


def figure_grid(
    panels: Sequence[Sequence[Panel | None]],
    titles: Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
    suptitle: str | None = None,
    colorbar: bool = True,
) -> Figure:
    """Lay out rows x cols of panels in one figure.

    ``panels[r][c]`` is a :class:`Panel` or ``None`` (empty, axis-off cell); short
    rows are padded with empty cells. ``titles`` are optional *row* labels, one
    per row, written vertically at the left of each row. Drawn panels keep their
    frame (ticks off); empty cells have the axis turned off entirely.

    ``colorbar``: the overlay panels share one colorbar below the grid when they share
    a colormap and a scale (each normalised to [0, 1], or one ``vmin`` .. ``vmax``), its label
    stating which; otherwise each map panel gets its own. Heatmap panels (raw values) always get
    their own.
    """
    nrows = len(panels)
    ncols = max((len(row) for row in panels), default=0)
    if nrows == 0 or ncols == 0:
        raise ValueError("figure_grid needs at least one row and one column")
    if titles is not None and len(titles) != nrows:
        raise ValueError(f"got {len(titles)} row titles for {nrows} rows")
    overlays = [p for row in panels for p in row if p is not None and p.kind == "overlay"]
    scales = {(p.cmap, p.vmin, p.vmax) for p in overlays}
    shared = colorbar and len(scales) == 1
    if figsize is None:
        figsize = (3.0 * ncols, 3.0 * nrows + (0.4 if suptitle else 0.0) + (0.6 if shared else 0.0))
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained")
    fig.get_layout_engine().set(h_pad=0.1)  # room between the suptitle, panel titles and rows
    for r in range(nrows):
        for c in range(ncols):
            panel = panels[r][c] if c < len(panels[r]) else None
            if panel is None:
                axes[r, c].axis("off")
            else:
                panel.draw(axes[r, c], colorbar=colorbar and not (shared and panel.kind == "overlay"))
        if titles is not None and titles[r]:
            axes[r, 0].text(
                -0.06,
                0.5,
                titles[r],
                transform=axes[r, 0].transAxes,
                rotation=90,
                ha="right",
                va="center",
                fontsize="large",
            )
    if shared:
        cmap, vmin, vmax = scales.pop()
        shared_colorbar(axes.ravel().tolist(), cmap, vmin, vmax)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def bar_chart(
    ax: Axes,
    labels: Sequence[str],
    values: Sequence[float],
    highlight: int | None = None,
    title: str | None = None,
    xlabel: str = "probability",
    color: str = "tab:blue",
    highlight_color: str = "tab:red",
) -> Any:
    """Horizontal bar chart, first label at the top, values printed at the bar ends.

    Bar ``highlight`` (an index) is drawn in ``highlight_color``. Returns the
    ``BarContainer``.
    """
    values = [float(v) for v in _as_array(values).reshape(-1)]
    if len(labels) != len(values):
        raise ValueError(f"got {len(labels)} labels for {len(values)} values")
    if highlight is not None and not 0 <= highlight < len(values):
        raise ValueError(f"highlight index {highlight} out of range for {len(values)} bars")
    colours = [highlight_color if i == highlight else color for i in range(len(values))]
    positions = np.arange(len(values))
    bars = ax.barh(positions, values, color=colours)
    ax.set_yticks(positions, [str(label) for label in labels])
    ax.invert_yaxis()
    ax.bar_label(bars, fmt="%.3f", padding=3)
    ax.margins(x=0.15)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    return bars


def token_colors(weights: Sequence[float], cmap: str = RELEVANCE_CMAP) -> list[tuple[float, float, float]]:
    """RGB colour per token: weights are min-max normalised, then mapped through ``cmap``."""
    w = normalize_map(_as_array(weights).astype(np.float64).reshape(-1))
    colours = matplotlib.colormaps.get_cmap(cmap)(w.astype(np.float64))
    return [(float(r), float(g), float(b)) for r, g, b, _ in colours]


def render_token_strip(
    ax: Axes,
    tokens: Sequence[str],
    weights: Sequence[float],
    cmap: str = RELEVANCE_CMAP,
    max_per_line: int = 12,
    fontsize: float = 10,
) -> list[Any]:
    """Draw text tokens as boxes coloured by weight (e.g. attention over text tokens).

    Tokens are placed on a fixed grid of ``max_per_line`` columns, wrapping to new
    lines. Returns the list of ``Text`` artists (one per token).
    """
    if len(tokens) != len(weights):
        raise ValueError(f"got {len(tokens)} tokens for {len(weights)} weights")
    if max_per_line < 1:
        raise ValueError(f"max_per_line must be >= 1, got {max_per_line}")
    ax.axis("off")
    nlines = max(1, -(-len(tokens) // max_per_line))
    texts = []
    for i, (token, rgb) in enumerate(zip(tokens, token_colors(weights, cmap))):
        line, col = divmod(i, max_per_line)
        luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        texts.append(
            ax.text(
                (col + 0.5) / max_per_line,
                1.0 - (line + 0.5) / nlines,
                str(token),
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if luminance < 0.5 else "black",
                bbox={"boxstyle": "round,pad=0.3", "facecolor": rgb, "edgecolor": "none"},
            )
        )
    return texts


def panel_axes(fig: Figure) -> list[Axes]:
    """The axes of ``fig`` without its colorbars (the panels, in creation order)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` with Agg and return uint8 ``H x W x 3`` RGB pixels.

    A figure whose canvas is not Agg-based gets an Agg canvas attached.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# --------------------------------------------------------------------------- files


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Atomically save ``fig`` (format from the suffix, PNG if none), then close it."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix[1:].lower() or "png")
    finally:
        plt.close(fig)
    return path


def save_image(image: Any, path: str | os.PathLike[str]) -> Path:
    """Atomically save an image (``H x W x 3`` float in [0, 1] or uint8, or anything
    :func:`to_numpy_image` accepts) as 8-bit RGB; format from the suffix, PNG if none."""
    path = Path(path)
    arr = _to_uint8(to_numpy_image(image))  # uint8 input round-trips exactly
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format=fmt)
    return path


def overlay_to_save(
    image: Any,
    heatmap: Any,
    alpha: float = OVERLAY_ALPHA,
    cmap: str = RELEVANCE_CMAP,
    mask: Any = None,
    min_side: int = MIN_SAVED_SIDE,
) -> np.ndarray:
    """:func:`overlay` of ``heatmap`` ``[h, w]`` on ``image`` with a short side of at least ``min_side``
    pixels: a smaller image is first upsampled (bicubic, aspect kept), the map resized to it
    bilinearly. ``mask`` (optional ``[h', w']``): the ground-truth outline, :data:`OUTLINE_COLOR`
    pixels on its one-pixel boundary (:func:`outline_pixels`) at that size. Float32 ``[H', W', 3]``."""
    img = to_numpy_image(image)
    h, w = img.shape[:2]
    if min(h, w) < min_side:
        scale = min_side / min(h, w)
        size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))
        img = np.clip(cv2.resize(img, size, interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
    out = overlay(img, heatmap, alpha=alpha, cmap=cmap)
    if mask is not None:
        out[outline_pixels(mask, out.shape[:2])] = to_rgb(OUTLINE_COLOR)
    return out


def save_overlay(
    image: Any,
    heatmap: Any,
    path: str | os.PathLike[str],
    alpha: float = OVERLAY_ALPHA,
    cmap: str = RELEVANCE_CMAP,
    mask: Any = None,
    min_side: int = MIN_SAVED_SIDE,
) -> Path:
    """Atomically save :func:`overlay_to_save` (short side at least ``min_side`` pixels, the
    ``mask`` outline when given) as an 8-bit RGB file. Returns ``path``."""
    return save_image(overlay_to_save(image, heatmap, alpha, cmap, mask, min_side), path)


def write_video(frames: Iterable[Any], path: str | os.PathLike[str], fps: int = 2) -> Path:
    """Atomically write frames (each ``H x W x 3`` float [0, 1] or uint8) as H.264 MP4.

    Uses imageio's ffmpeg backend (libx264, yuv420p). Frames are edge-padded at the
    bottom/right to even height/width; all frames must have the same size. On any
    error (including one raised by ``frames``) the temp file is removed and ``path``
    is left untouched.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    count = 0
    with atomic_path(path) as tmp:
        writer = imageio.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
        try:  # not `with`: imageio's __exit__ skips close() on error, leaking ffmpeg
            shape = None
            for frame in frames:
                img = _to_uint8(to_numpy_image(frame))
                if shape is None:
                    shape = img.shape
                elif img.shape != shape:
                    raise ValueError(f"frame {count} has shape {img.shape}, expected {shape}")
                h, w = img.shape[:2]
                img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                writer.append_data(img)
                count += 1
        finally:
            writer.close()
        if count == 0:
            raise ValueError("write_video needs at least one frame")
    return path
