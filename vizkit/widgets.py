"""Presentation of the scenario explorers: the :class:`Explorer` base they extend and the panes it draws in.

An explorer declares its controls once (``CONTROLS``: ``(label, kind)`` pairs that the scenario registry and
the browser test read without building anything) and, per instance, their options and defaults
(:meth:`Explorer.control_specs`). The base builds the ipywidgets controls, observes them, and on every change
calls the subclass's :meth:`Explorer.render` with the controls' state (``{label: value}``) once; the view it
returns (a :class:`HeatmapView` -- a map beside its overlay -- or a :class:`FrameView`) is drawn in place
(:meth:`Explorer.draw`). Expensive parts of a view are computed once per key (:meth:`Explorer.cached`): moving a
control back never reruns a model. Without ipywidgets, or with ``interactive=False``, the controls are plain
:class:`StaticControl` objects (same labels, options and values) and the explorer displays
:meth:`Explorer.static`: the PNGs the widget would show, with their captions.

Scenario-specific explorers live in :mod:`vizkit.scenarios`; ipywidgets is imported only when one is built.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Literal, TypeVar

import cv2
import numpy as np

from . import render

__all__ = [
    "Explorer",
    "Control",
    "StaticControl",
    "HeatmapView",
    "FrameView",
    "StaticView",
    "HeatmapPane",
    "heatmap_pngs",
    "colorbar_html",
    "view_colorbar",
    "frame_png",
    "ipywidgets_module",
    "describe_controls",
]

Kind = Literal["slider", "dropdown", "toggle"]
KINDS: tuple[str, ...] = ("slider", "dropdown", "toggle")
T = TypeVar("T")


def ipywidgets_module() -> Any | None:
    """The ``ipywidgets`` module, or None when it is not installed (explorers then fall back to static views)."""
    try:
        import ipywidgets
    except ImportError:
        return None
    return ipywidgets


# ---------------------------------------------------------------- views and their PNGs
@dataclass
class HeatmapView:
    """A ``[h, w]`` map beside its overlay on ``image`` (anything :mod:`vizkit.render` reads), with titles.

    ``diverging``: a signed map, drawn with a diverging colormap centred at 0 (the overlay shows its magnitude).
    """

    heat: np.ndarray
    image: Any
    map_title: str = "map"
    overlay_title: str = "overlay"
    suptitle: str | None = None
    diverging: bool = False

    def __post_init__(self) -> None:
        self.heat = np.asarray(self.heat, dtype=np.float32)

    @property
    def drawn(self) -> np.ndarray:
        """The map on screen (float32)."""
        return self.heat

    def captions(self) -> tuple[str, str]:
        """The map's title with its value range, and the overlay's title."""
        return f"{self.map_title} ({float(self.heat.min()):.3g} .. {float(self.heat.max()):.3g})", self.overlay_title


@dataclass
class FrameView:
    """A finished RGB frame ``[H, W, 3]`` uint8, shown as one image."""

    frame: np.ndarray
    title: str = ""

    @property
    def drawn(self) -> np.ndarray:
        """The frame on screen."""
        return self.frame


View = HeatmapView | FrameView


def _panel(heat: np.ndarray, diverging: bool, cmap: str, size: int) -> np.ndarray:
    """``[h, w]`` -> RGB uint8 at the panel size (nearest-neighbour: one block per cell)."""
    if diverging:
        bound = float(np.abs(heat).max()) or 1.0
        unit = (heat / bound + 1.0) / 2.0
    else:
        lo, hi = float(heat.min()), float(heat.max())
        unit = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    rgb = _lut(render.SIGNED_CMAP if diverging else cmap)[np.clip((unit * 255).round(), 0, 255).astype(np.intp)]
    h, w = heat.shape
    scale = max(1, size // max(h, w))
    return cv2.resize(rgb, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)


def heatmap_pngs(view: HeatmapView, cmap: str = render.RELEVANCE_CMAP, size: int = 325) -> tuple[bytes, bytes]:
    """The map panel (colormap lookup, one block per cell, about ``size`` pixels wide) and the overlay
    (:func:`vizkit.render.overlay`, shrunk to ``size`` when larger) as PNG bytes: what :class:`HeatmapPane`
    sends to the page and :meth:`Explorer.static` returns."""
    heat = view.heat
    blended = render.overlay(view.image, np.abs(heat) if view.diverging else heat, cmap=cmap)
    over = cv2.cvtColor((blended * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    side = size / max(over.shape[:2])
    if side < 1:
        over = cv2.resize(
            over, (round(over.shape[1] * side), round(over.shape[0] * side)), interpolation=cv2.INTER_AREA
        )
    panel = cv2.cvtColor(_panel(heat, view.diverging, cmap, size), cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", panel)[1].tobytes(), cv2.imencode(".png", over)[1].tobytes()


def frame_png(frame: np.ndarray) -> bytes:
    """An RGB uint8 frame as PNG bytes."""
    return cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))[1].tobytes()


@lru_cache(maxsize=16)
def _lut(cmap: str) -> np.ndarray:
    """``[256, 3]`` uint8 RGB lookup table of a matplotlib colormap."""
    import matplotlib

    return (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def colorbar_html(cmap: str, lo: float, hi: float, width: int = 90) -> str:
    """A horizontal colorbar as HTML: ``lo``, a CSS gradient through ``cmap`` (9 stops), ``hi``."""
    stops = ", ".join("#{:02x}{:02x}{:02x}".format(*c) for c in _lut(cmap)[np.linspace(0, 255, 9).round().astype(int)])
    bar = (
        f'<span style="display:inline-block;width:{width}px;height:10px;vertical-align:middle;'
        f'background:linear-gradient(to right, {stops})"></span>'
    )
    return f"<small>{lo:.3g}</small> {bar} <small>{hi:.3g}</small>"


def view_colorbar(view: HeatmapView, cmap: str = render.RELEVANCE_CMAP) -> str:
    """The map panel's scale as HTML (:func:`colorbar_html`): ``cmap`` from the map's min to its max, the
    signed colormap symmetric about 0 for a diverging view, or a sentence for a constant map (which has no
    scale: "the map is 0 everywhere")."""
    lo, hi = float(view.heat.min()), float(view.heat.max())
    if hi == lo:
        return f"<small>the map is {lo:.3g} everywhere</small>"
    if view.diverging:
        bound = max(abs(lo), abs(hi)) or 1.0
        return colorbar_html(render.SIGNED_CMAP, -bound, bound)
    return colorbar_html(cmap, lo, hi)


@dataclass
class StaticView:
    """An explorer's current view without widgets: the PNGs the widget shows (``pngs``), one caption each, the
    view's ``title`` and the ``drawn`` array. Displays as HTML in a notebook; :meth:`markdown` embeds the same
    PNGs in Markdown (for a report)."""

    pngs: tuple[bytes, ...]
    captions: tuple[str, ...]
    title: str
    drawn: np.ndarray | None
    colorbar: str = ""  # HTML under the first panel: its scale (:func:`view_colorbar`), as the widget shows it

    @staticmethod
    def _uri(png: bytes) -> str:
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

    def _repr_html_(self) -> str:
        bars = [self.colorbar] + [""] * (len(self.pngs) - 1)
        panels = "".join(
            f'<figure style="margin:0 8px"><figcaption><b>{html.escape(c)}</b></figcaption>'
            f'<img src="{self._uri(p)}">{"<br>" + bar if bar else ""}</figure>'
            for p, c, bar in zip(self.pngs, self.captions, bars)
        )
        return f'<div><small>{html.escape(self.title)}</small><div style="display:flex">{panels}</div></div>'

    def markdown(self) -> str:
        """The title, then each PNG as an inline image with its caption as alt text."""
        images = "\n\n".join(f"![{c}]({self._uri(p)})" for p, c in zip(self.pngs, self.captions))
        return f"**{self.title}**\n\n{images}\n" if self.title else f"{images}\n"


# ---------------------------------------------------------------- the heatmap pane
class HeatmapPane:
    """The raw map (left) and its overlay on the image (right) as two ``ipywidgets.Image``
    PNGs with their titles, in one box (:attr:`output`).

    A redraw colours the map with a colormap lookup table, blends the overlay with
    :func:`vizkit.render.overlay` and PNG-encodes both with OpenCV (:func:`heatmap_pngs`): a few milliseconds,
    and the browser swaps two small images (no matplotlib figure is rendered per move). ``drawn``
    holds the ``[h, w]`` map on screen; ``draws`` counts redraws; ``png`` holds the two PNGs.
    """

    def __init__(self, figsize: tuple[float, float] = (6.5, 3.2), cmap: str = render.RELEVANCE_CMAP, size: int = 0):
        import ipywidgets as W

        self.cmap = cmap
        self.size = int(size or figsize[0] * 100 / 2)  # each panel's width in pixels
        self.suptitle = W.HTML()
        self.map_title, self.overlay_title = W.HTML(), W.HTML()
        self.map_image = W.Image(format="png", width=self.size)
        self.overlay_image = W.Image(format="png", width=self.size)
        self.output = W.VBox(
            [
                self.suptitle,
                W.HBox([W.VBox([self.map_title, self.map_image]), W.VBox([self.overlay_title, self.overlay_image])]),
            ]
        )
        self.drawn: np.ndarray | None = None
        self.draws = 0
        self.png: tuple[bytes, bytes] = (b"", b"")

    def draw(
        self,
        heat: Any,
        image: Any,
        *,
        map_title: str = "map",
        overlay_title: str = "overlay",
        suptitle: str | None = None,
        diverging: bool = False,
    ) -> None:
        """Show ``heat`` ``[h, w]`` and its overlay on ``image`` (anything :mod:`vizkit.render` reads).

        ``diverging``: a signed map, drawn with a diverging colormap centred at 0 (the overlay
        shows its magnitude).
        """
        self.show(HeatmapView(heat, image, map_title, overlay_title, suptitle, diverging))

    def show(self, view: HeatmapView) -> None:
        """Show a :class:`HeatmapView` (what :meth:`draw` builds from its arguments)."""
        png_map, png_over = heatmap_pngs(view, self.cmap, self.size)
        lo, hi = float(view.heat.min()), float(view.heat.max())
        bar = view_colorbar(view, self.cmap)
        self.map_title.value = f"<b>{html.escape(view.map_title)}</b> <small>({lo:.3g} .. {hi:.3g})</small><br>{bar}"
        self.overlay_title.value = (
            f"<b>{html.escape(view.overlay_title)}</b><br><small>opacity \u221d map value</small>"
        )
        if view.suptitle is not None:
            self.suptitle.value = f"<small>{html.escape(view.suptitle)}</small>"
        with self.map_image.hold_sync(), self.overlay_image.hold_sync():
            self.map_image.value, self.overlay_image.value = png_map, png_over
        self.png = (png_map, png_over)
        self.drawn = view.heat
        self.draws += 1


# ---------------------------------------------------------------- controls
@dataclass(frozen=True)
class Control:
    """One control of an explorer instance: ``label`` and ``kind`` as its class's ``CONTROLS`` declares them,
    ``attr`` the explorer attribute that holds it, a slider's integer ``min`` .. ``max``, a dropdown's or
    toggle's ``options`` (values, or ``(text, value)`` pairs), and the initial ``value`` (None: ``min``, or the
    first option)."""

    label: str
    kind: Kind
    attr: str
    options: Sequence[Any] = ()
    value: Any = None
    min: int = 0
    max: int = 0

    def values(self) -> list[Any]:
        """The values a dropdown or toggle can take (the second item of ``(text, value)`` options)."""
        return [o[1] if isinstance(o, tuple) else o for o in self.options]

    def initial(self) -> Any:
        """The value the control starts at."""
        if self.value is not None:
            return self.value
        if self.kind == "slider":
            return self.min
        values = self.values()
        return values[0] if values else None

    def widget(self, W: Any, description_width: str | None = None) -> Any:
        """The ipywidgets control (``W`` is the ipywidgets module): IntSlider, Dropdown or ToggleButtons."""
        style = {"style": {"description_width": description_width}} if description_width else {}
        if self.kind == "slider":
            return W.IntSlider(self.initial(), self.min, self.max, description=self.label, **style)
        value = {} if self.value is None else {"value": self.value}
        cls = W.Dropdown if self.kind == "dropdown" else W.ToggleButtons
        return cls(options=list(self.options), description=self.label, **value, **style)


class StaticControl:
    """A control without ipywidgets: the widget's ``description``, ``kind``, ``options``, ``min`` / ``max``
    and ``value``. Setting ``value`` checks it like the widget would (a slider clamps, a dropdown or toggle
    takes one of its options) and calls the ``observe`` handlers, so an explorer redraws the same way."""

    def __init__(self, spec: Control) -> None:
        self.description, self.kind = spec.label, spec.kind
        self.options: tuple[Any, ...] = tuple(spec.options)
        self.min, self.max = spec.min, spec.max
        self._value = spec.initial()
        self._handlers: list[Callable[[dict[str, Any]], None]] = []

    @property
    def value(self) -> Any:
        """The current value."""
        return self._value

    @value.setter
    def value(self, new: Any) -> None:
        if self.kind == "slider":
            new = min(max(int(new), self.min), self.max)
        elif new not in [o[1] if isinstance(o, tuple) else o for o in self.options]:
            raise ValueError(f"{self.description}: {new!r} is not one of the options")
        old, self._value = self._value, new
        if new != old:
            for handler in list(self._handlers):
                handler({"name": "value", "old": old, "new": new, "owner": self})

    def observe(self, handler: Callable[[dict[str, Any]], None], names: str = "value") -> None:
        """Call ``handler(change)`` when the value changes (``names`` must be ``"value"``)."""
        if names != "value":
            raise ValueError(f"a static control only reports 'value', not {names!r}")
        self._handlers.append(handler)

    def __repr__(self) -> str:
        return f"StaticControl({self.description!r}, {self.kind}, value={self._value!r})"


def describe_controls(controls: Iterable[Any]) -> list[tuple[str, str]]:
    """``(label, kind)`` of each control as a person sees it in the page: kind ``slider``,
    ``dropdown`` or ``toggle`` (what the browser test moves)."""
    kinds = {
        "IntSlider": "slider",
        "FloatSlider": "slider",
        "SelectionSlider": "slider",
        "Dropdown": "dropdown",
        "ToggleButtons": "toggle",
    }
    out = []
    for c in controls:
        kind = c.kind if isinstance(c, StaticControl) else kinds.get(type(c).__name__)
        if kind is None:
            raise TypeError(f"no browser-test kind for a {type(c).__name__} control")
        out.append((c.description, kind))
    return out


# ---------------------------------------------------------------- the explorer base
class Explorer:
    """The protocol every scenario explorer follows; a subclass declares and renders, the base does the rest.

    A subclass sets ``CONTROLS`` (``(label, kind)`` pairs, kind one of slider / dropdown / toggle: read from
    the class by :mod:`vizkit.scenarios.registry` and the browser test), optionally ``LAYOUT`` (rows of labels;
    a one-label row is placed as is, longer rows in an HBox; default: one row) and ``DESCRIPTION_WIDTH``, and
    ``VIEW`` (:class:`HeatmapView`, shown in a :class:`HeatmapPane`, or :class:`FrameView`, one image). Its
    ``__init__`` stores its data, then calls ``super().__init__(...)``, which

    * builds the controls from :meth:`control_specs` (checked against ``CONTROLS``) as ipywidgets, or as
      :class:`StaticControl` objects when ``interactive`` is false or ipywidgets is missing, each stored in
      :attr:`controls` (in ``CONTROLS`` order) and as the attribute its spec names;
    * lays them out above the view in :attr:`widget` (None without widgets);
    * redraws once now and once per control change (a change that moves other controls in :meth:`on_change`
      still redraws once).

    :meth:`redraw` calls :meth:`render` with :attr:`state` and passes the view to :meth:`draw`; :attr:`drawn`
    holds the drawn array, :attr:`draws` counts redraws, :meth:`cached` keeps what a view needs per key, and
    :meth:`static` is the current view as PNGs (what a notebook shows without widgets).

    Example::

        class Shades(Explorer):
            CONTROLS = (("shade", "slider"),)
            VIEW = FrameView

            def control_specs(self):
                return [Control("shade", "slider", "shade", min=0, max=255)]

            def render(self, state):
                return FrameView(np.full((32, 32, 3), state["shade"], np.uint8), f"shade {state['shade']}")

        Shades()  # in a notebook: the slider above the image, redrawn as it moves
        Shades(interactive=False).static()  # the same PNG, no widgets
    """

    CONTROLS: ClassVar[tuple[tuple[str, str], ...]] = ()
    LAYOUT: ClassVar[tuple[tuple[str, ...], ...] | None] = None
    DESCRIPTION_WIDTH: ClassVar[str | None] = None
    VIEW: ClassVar[type] = HeatmapView

    def __init__(
        self, *, interactive: bool = True, cmap: str = render.RELEVANCE_CMAP, figsize: tuple[float, float] = (6.5, 3.2)
    ) -> None:
        specs = list(self.control_specs())
        declared = [(c.label, c.kind) for c in specs]
        if declared != [tuple(c) for c in self.CONTROLS]:
            raise TypeError(
                f"{type(self).__name__}: control_specs() gives {declared}, but CONTROLS declares {list(self.CONTROLS)}"
            )
        layout = self.LAYOUT or (tuple(label for label, _ in self.CONTROLS),)
        if sorted(label for row in layout for label in row) != sorted(label for label, _ in self.CONTROLS):
            raise TypeError(f"{type(self).__name__}: LAYOUT {layout} must place each control once")
        W = ipywidgets_module() if interactive else None
        self.interactive = W is not None
        self.cmap, self.panel_size = cmap, int(figsize[0] * 100 / 2)
        self.view_cache: dict[Hashable, Any] = {}
        self.last_view: View | None = None
        self.drawn: np.ndarray | None = None
        self.draws = 0
        self._changing = False
        self.controls: tuple[Any, ...] = tuple(
            spec.widget(W, self.DESCRIPTION_WIDTH) if W is not None else StaticControl(spec) for spec in specs
        )
        for spec, control in zip(specs, self.controls):
            if hasattr(self, spec.attr):
                raise TypeError(f"{type(self).__name__}: control {spec.label!r} would replace .{spec.attr}")
            setattr(self, spec.attr, control)
        self.pane: HeatmapPane | None = None
        self.output: Any = None
        self.widget: Any = None
        if W is not None:
            if self.VIEW is HeatmapView:
                self.pane = HeatmapPane(figsize=figsize, cmap=cmap)
                self.output = self.pane.output
            else:
                self.output = W.Image(format="png")
            by_label = dict(zip((label for label, _ in self.CONTROLS), self.controls))
            rows = [by_label[row[0]] if len(row) == 1 else W.HBox([by_label[label] for label in row]) for row in layout]
            self.widget = W.VBox([*rows, self.output])
        for control in self.controls:
            control.observe(lambda change, label=control.description: self._changed(label), names="value")
        self.redraw()

    # --- what a subclass provides
    def control_specs(self) -> Sequence[Control]:
        """This instance's controls (options and defaults from its data), in ``CONTROLS`` order."""
        raise NotImplementedError

    def render(self, state: Mapping[str, Any]) -> View | None:
        """The view of ``state`` (``{label: value}``); None when there is nothing to show (no redraw)."""
        raise NotImplementedError

    def on_change(self, label: str) -> None:
        """Called when control ``label`` changed, before the redraw; may move other controls (they do not
        redraw on their own). Default: nothing."""

    # --- the protocol
    @property
    def state(self) -> dict[str, Any]:
        """The controls' values by label."""
        return {c.description: c.value for c in self.controls}

    def control(self, label: str) -> Any:
        """The control labelled ``label`` (a widget or a :class:`StaticControl`)."""
        for c in self.controls:
            if c.description == label:
                return c
        raise KeyError(f"{type(self).__name__} has no control {label!r}: {', '.join(self.state)}")

    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()`` the first time ``key`` is asked for, the stored result after that."""
        if key not in self.view_cache:
            self.view_cache[key] = compute()
        return self.view_cache[key]

    def _changed(self, label: str) -> None:
        if self._changing:  # moved by on_change: the redraw below covers it
            return
        self._changing = True
        try:
            self.on_change(label)
        finally:
            self._changing = False
        self.redraw()

    def redraw(self) -> None:
        """Render the current state and draw it (in the widget, when there is one)."""
        view = self.render(self.state)
        if view is None:
            return
        self.last_view = view
        if self.widget is not None:
            self.draw(view)
        self.drawn = view.drawn
        self.draws += 1

    def draw(self, view: View) -> None:
        """Show ``view`` in the widget: a :class:`HeatmapView` in the pane, a :class:`FrameView` as the image."""
        if isinstance(view, HeatmapView):
            if self.pane is None:
                raise TypeError(f"{type(self).__name__} renders a HeatmapView but declares VIEW = {self.VIEW}")
            self.pane.show(view)
        else:
            self.output.value = frame_png(view.frame)

    def static(self) -> StaticView:
        """The current view as the widget shows it, without widgets: its PNGs and captions."""
        view = self.last_view
        if view is None:
            return StaticView((), (), "nothing to show", None)
        if isinstance(view, HeatmapView):
            return StaticView(
                heatmap_pngs(view, self.cmap, self.panel_size),
                view.captions(),
                view.suptitle or "",
                view.drawn,
                view_colorbar(view, self.cmap),
            )
        return StaticView((frame_png(view.frame),), (view.title,), view.title, view.drawn)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget if self.widget is not None else self.static())
