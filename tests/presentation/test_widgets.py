"""vizkit.widgets.HeatmapPane: the PNGs a redraw sends to the page hold the map's colours."""

import cv2
import matplotlib
import numpy as np
import torch
from cam_references import clip_reference, hooked_vit_cam, tokens_on
from eager_attention import class_maps, to_input_size

from vizkit import render, widgets
from vizkit.widgets import HeatmapPane, describe_controls


def decode(png: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def expected_colour(cmap: str, unit: float) -> np.ndarray:
    """The colormap at ``unit`` quantised to its 256 levels, as an 8-bit RGB triple."""
    return (np.asarray(matplotlib.colormaps[cmap](round(unit * 255) / 255)[:3]) * 255).round()


def test_map_panel_is_the_colormap_of_the_min_max_scaled_map():
    pane = HeatmapPane(size=200, cmap="viridis")
    heat = np.array([[0.0, 1.0], [2.0, 4.0]], np.float32)
    image = np.full((32, 32, 3), 0.5, np.float32)
    pane.draw(heat, image, map_title="a <map>", suptitle="s")
    panel = decode(pane.png[0])
    assert panel.shape == (200, 200, 3)  # each cell one 100 x 100 block
    for (r, c), v in np.ndenumerate(heat):
        colour = panel[r * 100 + 50, c * 100 + 50]
        assert np.abs(colour - expected_colour("viridis", v / 4.0)).max() <= 1, (r, c)
    # the overlay is vizkit.render.overlay of the same map, at the image's size (smaller than the panel)
    over = decode(pane.png[1])
    np.testing.assert_allclose(over, (render.overlay(image, heat, cmap="viridis") * 255).round(), atol=1)
    assert pane.draws == 1 and np.array_equal(pane.drawn, heat)
    assert "a &lt;map&gt;" in pane.map_title.value and "0 .. 4" in pane.map_title.value


def test_diverging_map_is_centred_at_zero_and_redraws_change_the_bytes():
    pane = HeatmapPane(size=100)
    image = np.zeros((16, 16, 3), np.float32)
    signed = np.array([[-2.0, 0.0], [1.0, 2.0]], np.float32)
    pane.draw(signed, image, diverging=True)
    panel = decode(pane.png[0])
    for (r, c), v in np.ndenumerate(signed):
        assert np.abs(panel[r * 50 + 25, c * 50 + 25] - expected_colour("RdBu_r", (v / 2 + 1) / 2)).max() <= 1
    first = pane.png
    pane.draw(signed[::-1], image, diverging=True)
    assert pane.png[0] != first[0] and pane.map_image.value == pane.png[0]
    pane.draw(np.ones((2, 2)), image)  # a constant map: one colour, no division by zero
    assert len(np.unique(decode(pane.png[0]).reshape(-1, 3), axis=0)) == 1


def test_titles_carry_a_colorbar_of_the_panel_scale():
    from vizkit.widgets import colorbar_html

    pane = HeatmapPane(size=100)
    pane.draw(np.array([[0.0, 0.5], [1.0, 2.0]], np.float32), np.zeros((8, 8, 3), np.float32))
    # inferno by default: its first stop is inferno(0) = #000004, its last inferno(1) = #fcffa4
    assert "linear-gradient(to right, #000004" in pane.map_title.value and "#fcffa4)" in pane.map_title.value
    assert "<small>0</small>" in pane.map_title.value and "<small>2</small>" in pane.map_title.value
    assert "opacity" in pane.overlay_title.value
    pane.draw(np.array([[-0.5, 0.25]], np.float32), np.zeros((8, 8, 3), np.float32), diverging=True)
    assert colorbar_html("RdBu_r", -0.5, 0.5) in pane.map_title.value  # symmetric about 0
    pane.draw(np.zeros((2, 2), np.float32), np.zeros((8, 8, 3), np.float32))
    assert "the map is 0 everywhere" in pane.map_title.value and "gradient" not in pane.map_title.value


def test_describe_controls_names_what_the_browser_moves():
    import ipywidgets as W

    controls = [
        W.IntSlider(description="layer"),
        W.Dropdown(options=["a"], description="head"),
        W.ToggleButtons(options=["x", "y"], description="class"),
    ]
    assert describe_controls(controls) == [("layer", "slider"), ("head", "dropdown"), ("class", "toggle")]


# ---------------------------------------------------------------- the Explorer base, on a tiny subclass
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from vizkit.widgets import Control, Explorer, FrameView, HeatmapView, StaticControl  # noqa: E402


class Tiny(Explorer):
    """A row offset x a scale (the computed part, cached) x a sign (cheap, not cached)."""

    CONTROLS = (("row", "slider"), ("scale", "dropdown"), ("sign", "toggle"))
    LAYOUT = (("row", "scale"), ("sign",))

    def __init__(self, interactive: bool = True):
        self.computed: list[tuple[int, float]] = []
        self.picture = np.linspace(0, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
        super().__init__(interactive=interactive, cmap="viridis", figsize=(4, 2))

    def control_specs(self):
        return [
            Control("row", "slider", "row", min=0, max=2, value=1),
            Control("scale", "dropdown", "scale", [("one", 1.0), ("two", 2.0)]),
            Control("sign", "toggle", "sign", ["+", "-"]),
        ]

    def heat(self, row: int, scale: float) -> np.ndarray:
        self.computed.append((row, scale))
        heat = np.zeros((3, 4), np.float32)
        heat[row] = scale * np.arange(1, 5)
        return heat

    def render(self, state):
        heat = self.cached((state["row"], state["scale"]), lambda: self.heat(state["row"], state["scale"]))
        minus = state["sign"] == "-"
        return HeatmapView(
            -heat if minus else heat,
            self.picture,
            map_title=f"row {state['row']}",
            suptitle=f"x{state['scale']}",
            diverging=minus,
        )


def test_explorer_builds_its_declared_controls_and_layout():
    import ipywidgets as W

    ex = Tiny()
    assert describe_controls(ex.controls) == list(Tiny.CONTROLS)
    assert [type(c) for c in ex.controls] == [W.IntSlider, W.Dropdown, W.ToggleButtons]
    assert (ex.row, ex.scale, ex.sign) == ex.controls
    assert (ex.row.min, ex.row.max) == (0, 2) and ex.scale.label == "one"
    assert ex.state == {"row": 1, "scale": 1.0, "sign": "+"}  # declared value, else min / first option
    top, sign, output = ex.widget.children
    assert list(top.children) == [ex.row, ex.scale] and sign is ex.sign and output is ex.pane.output
    assert ex.draws == 1 and np.array_equal(ex.drawn, ex.heat(1, 1.0)) and ex.pane.draws == 1


def test_explorer_redraws_once_per_change_and_computes_each_key_once():
    ex = Tiny()
    ex.row.value = 2
    ex.scale.value = 2.0
    ex.sign.value = "-"
    assert ex.draws == 4 and ex.pane.draws == 4
    expected = np.zeros((3, 4), np.float32)
    expected[2] = -2.0 * np.arange(1, 5)
    np.testing.assert_array_equal(ex.drawn, expected)
    ex.row.value = 2  # not a change: no redraw
    assert ex.draws == 4
    ex.row.value, ex.scale.value, ex.sign.value = 1, 1.0, "+"  # back to cached combinations
    ex.scale.value = 2.0
    assert ex.draws == 8 and ex.computed == [(1, 1.0), (2, 1.0), (2, 2.0), (1, 2.0)]
    assert set(ex.view_cache) == {(1, 1.0), (2, 1.0), (2, 2.0), (1, 2.0)}
    assert ex.cached((1, 1.0), lambda: pytest.fail("a cache hit must not compute")) is ex.view_cache[(1, 1.0)]


def test_static_fallback_shows_what_the_widget_shows():
    ex, st = Tiny(), Tiny(interactive=False)
    assert st.widget is None and st.pane is None and not st.interactive
    assert all(isinstance(c, StaticControl) for c in st.controls) and st.state == ex.state
    assert describe_controls(st.controls) == list(Tiny.CONTROLS)
    for label, value in (("row", 0), ("sign", "-"), ("scale", 2.0)):
        ex.control(label).value = value
        st.control(label).value = value
        np.testing.assert_array_equal(st.drawn, ex.drawn)
        view = st.static()
        assert view.pngs == ex.pane.png == ex.static().pngs  # the same PNG bytes the page shows
        assert view.title == "x" + str(st.state["scale"])
    assert st.draws == ex.draws == 4
    assert view.captions[0].startswith("row 0 (-8 .. ") and view.captions[1] == "overlay"
    html = view._repr_html_()
    assert html.count("<img") == 2 and "x2.0" in html
    # the map panel's scale under it, as the widget's title shows it (diverging view: symmetric about 0)
    assert view.colorbar == widgets.view_colorbar(st.last_view, st.cmap) and view.colorbar in html
    assert view.colorbar in ex.pane.map_title.value and "linear-gradient" in view.colorbar
    flat = widgets.HeatmapView(np.zeros((2, 2)), np.zeros((2, 2, 3)))
    assert widgets.view_colorbar(flat) == "<small>the map is 0 everywhere</small>"
    import base64

    assert base64.b64encode(view.pngs[1]).decode() in view.markdown()
    st.row.value = 9  # a slider clamps like IntSlider
    assert st.row.value == 2
    with pytest.raises(ValueError, match="not one of the options"):
        st.scale.value = 3.0


def test_on_change_may_move_other_controls_and_still_redraws_once():
    class Linked(Tiny):
        def on_change(self, label):
            if label == "sign":
                self.row.value = 0

    for interactive in (True, False):
        ex = Linked(interactive=interactive)
        ex.sign.value = "-"
        assert ex.draws == 2 and ex.state == {"row": 0, "scale": 1.0, "sign": "-"}, interactive
        assert ex.computed == [(1, 1.0), (0, 1.0)]


def test_controls_must_match_their_declaration():
    class Wrong(Tiny):
        CONTROLS = (("row", "slider"), ("scale", "toggle"), ("sign", "toggle"))

    with pytest.raises(TypeError, match="CONTROLS declares"):
        Wrong()

    class Hidden(Tiny):
        LAYOUT = (("row", "scale"),)

    with pytest.raises(TypeError, match="each control once"):
        Hidden()


def test_frame_views_show_as_one_png():
    class Frames(Explorer):
        CONTROLS = (("shade", "slider"),)
        VIEW = FrameView

        def __init__(self, interactive=True):
            super().__init__(interactive=interactive)

        def control_specs(self):
            return [Control("shade", "slider", "shade", min=0, max=255)]

        def render(self, state):
            return FrameView(np.full((4, 6, 3), state["shade"], np.uint8), f"shade {state['shade']}")

    ex, st = Frames(), Frames(interactive=False)
    ex.shade.value = st.shade.value = 200
    assert decode(ex.output.value)[0, 0].tolist() == [200, 200, 200]
    assert st.static().pngs == (ex.output.value,) and st.static().captions == ("shade 200",)


def test_without_ipywidgets_an_explorer_is_static():
    """ipywidgets made unimportable in a fresh interpreter: the explorer still builds, with static controls."""
    code = """
import sys
sys.modules["ipywidgets"] = None  # `import ipywidgets` now raises ImportError
import numpy as np
from vizkit.widgets import Control, Explorer, HeatmapView, ipywidgets_module

class One(Explorer):
    CONTROLS = (("k", "dropdown"),)
    def __init__(self):
        super().__init__()
    def control_specs(self):
        return [Control("k", "dropdown", "k", [1, 2])]
    def render(self, state):
        return HeatmapView(np.eye(3) * state["k"], np.zeros((6, 6, 3)))

assert ipywidgets_module() is None
ex = One()
ex.k.value = 2
print(ex.widget, type(ex.k).__name__, ex.draws, float(ex.drawn.max()), len(ex.static().pngs))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2]
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "StaticControl", "2", "2.0", "2"]


# ---------------------------------------------------------------- the five scenario explorers
def _other_value(control):
    """A value of ``control`` other than its current one (a slider's far end; the next option)."""
    if describe_controls([control])[0][1] == "slider":
        return control.max if control.value != control.max else control.min
    values = [o[1] if isinstance(o, tuple) else o for o in control.options]
    return next(v for v in values[values.index(control.value) + 1 :] + values if v != control.value)


def _explore(make, **values):
    """Build the explorer with widgets and without; move each declared control away from its default (to
    ``values[label]`` or :func:`_other_value`) and back, in both: one redraw per move, a new map, the first map
    again, and the static explorer shows the widget's pixels. Returns the explorer and the map after each move."""
    ex, st = make(True), make(False)
    assert isinstance(ex, Explorer) and isinstance(st, Explorer) and ex.widget is not None and st.widget is None
    assert describe_controls(ex.controls) == describe_controls(st.controls) == list(type(ex).CONTROLS)
    assert ex.state == st.state and ex.draws == st.draws == 1
    first, moved = ex.drawn.copy(), {}
    for control in ex.controls:
        label, default = control.description, control.value
        for value in (values.get(label, _other_value(control)), default):
            draws = ex.draws
            control.value = value
            st.control(label).value = value
            assert ex.draws == st.draws == draws + 1, label
            assert ex.state == st.state, label
            np.testing.assert_array_equal(st.drawn, ex.drawn)
            assert st.static().pngs == (ex.pane.png if ex.pane is not None else (ex.output.value,)), label
            if value != default:
                assert not np.array_equal(ex.drawn, first), f"moving {label!r} did not change the map"
                moved[label] = ex.drawn.copy()
        np.testing.assert_array_equal(ex.drawn, first)
    return ex, moved


def test_detector_attention_explorer_is_an_explorer():
    import torch

    from vizkit import zoo
    from vizkit.scenarios import clip_detector_attention as cda

    detector = cda.load_detector_model()
    faces = [s.image for s in zoo.dataset("face_forgery_detector", "test")][:3]
    result = cda.CLIPViTGradCAM(detector.model, "all").explain(torch.stack([detector.preprocess(im) for im in faces]))
    first = f"layer 0: {result.layer_names[0]}"  # the zoo detector has 4 blocks: all_layers == last_4_layers
    ex, moved = _explore(lambda on: cda.DetectorAttentionExplorer(result, faces, interactive=on), layers=first)
    # the drawn maps against gradient-weighted attention written out on eager attention (tests/eager_attention.py)
    x = torch.stack([detector.preprocess(im) for im in faces])
    vision, head = detector.model.backbone, detector.model.head
    _, block0 = class_maps(vision, head, x, [1], "mean", "mean", layers=[0])
    np.testing.assert_allclose(moved["layers"], to_input_size(block0[1], 64)[0].numpy(), atol=1e-5)
    _, chefer = class_maps(vision, head, x, [0, 1], "mean", "relevance")
    diff = to_input_size(chefer[1], 64) - to_input_size(chefer[0], 64)
    np.testing.assert_allclose(moved["class"], diff[0].numpy(), atol=1e-5)


def test_vit_attention_explorer_is_an_explorer(tmp_path):
    from vizkit.models import SimpleViT
    from vizkit.scenarios.vit_mnist_attention import AttentionExplorer, AttentionVisualizer

    v = AttentionVisualizer(SimpleViT().eval(), device="cpu", output_dir=tmp_path / "run")
    v.analyze(v.get_test_samples(3))
    ex, moved = _explore(lambda on: AttentionExplorer(v.cache, interactive=on))
    # by hand from the captured attention [S, heads, N, N]: rollout (heads' mean, (A + I) / 2 renormalised,
    # R = A_l R) and the last layer's head-0 CLS row, over the patch grid
    attn = [v.cache.attn.maps[n][0] for n in v.cache.layers]
    n = attn[0].shape[-1]
    side = int(round((n - 1) ** 0.5))
    r = torch.eye(n)
    for a in attn:
        a = (a.mean(0) + torch.eye(n)) / 2
        r = (a / a.sum(-1, keepdim=True)) @ r
    np.testing.assert_allclose(moved["view"], r[0, 1:].reshape(side, side).numpy(), rtol=1e-5)
    np.testing.assert_allclose(moved["head"], attn[-1][0, 0, 1:].reshape(side, side).numpy())


def test_detector_gradcam_explorer_is_an_explorer(tmp_path):
    from vizkit import zoo
    from vizkit.scenarios import detector_gradcam_eval as dge

    # the zoo detector's last block gives sample 0 an all-zero map: end the layers at block 2
    layers = ["encoder.layers.1.layer_norm1", "encoder.layers.2.layer_norm1"]
    dge.run_evaluation(tmp_path / "run", max_samples=20, batch_size=10, gradcam_samples=2, layers=layers)
    ex, moved = _explore(lambda on: dge.DetectorGradCAMExplorer(tmp_path / "run", interactive=on))
    wrong = ex.summary.predictions.loc[~ex.summary.predictions["correct"], "index"].tolist()
    layer = ex.control("layer").value  # the layer the run's pointing game chose (the explorer opens on it)
    assert layer in ex.layer_names
    # the drawn raw maps against Grad-CAM / Grad-CAM++ toward the fake class (the run's default target)
    # from tensors hooked outside vizkit (tests/cam_references.py)
    det = dge.load_eval_detector()
    faces = zoo.dataset("face_forgery_detector", "test")
    for label, method, i in (("show", "gradcam", wrong[0]), ("method", "gradcam++", ex.sample.options[0][1])):
        x = det.preprocess(faces[i].image)[None]
        ref = hooked_vit_cam(det.model, "backbone." + layer, x, [det.class_names.index("fake")], method)[0]
        np.testing.assert_allclose(moved[label], ref, atol=1e-5 * ref.max(), rtol=1e-4)


def test_clip_explorer_is_an_explorer():
    from PIL import Image

    from vizkit import zoo
    from vizkit.scenarios.clip_text_gradcam import ClipExplorer, load_clip_model

    adapter = load_clip_model("shapes_clip")
    image = Image.fromarray(zoo.dataset("shapes_clip", "test")[0].image)
    names = ["a red circle", "a blue square", "a green star"]
    ex, moved = _explore(
        lambda on: ClipExplorer(
            adapter, image, names, names, ["gradcam", "layercam"], ["auto", "visual.trunk.blocks.1"], interactive=on
        )
    )
    # pytorch-grad-cam toward text 0 at the moved-to layer (tests/cam_references.py)
    ref, _ = clip_reference(
        "shapes_clip", np.asarray(image), names, "visual.trunk.blocks.1", "gradcam", tokens_on((8, 8)), 0
    )
    np.testing.assert_allclose(moved["layer"], ref, atol=1e-4)
    assert sorted(ex.cache) == [
        (0, "gradcam", "auto"),
        (0, "gradcam", "visual.trunk.blocks.1"),
        (0, "layercam", "auto"),
        (1, "gradcam", "auto"),
    ]  # one explanation per combination


def test_vlm_attention_explorer_is_an_explorer():
    from vizkit.models.vlm.trace import trace_sample
    from vizkit.scenarios import vlm_attention_video as V

    vlm = V.load_vlm(None)
    json_path, image_dir = V.default_benchmark()
    sample, images, _ = V.load_sample(json_path, image_dir, 0)
    trace = trace_sample(
        vlm, sample["problem"], images, [1, 2], mode="solution", solution=sample["solution"], start_phrase="I count"
    )
    ex, moved = _explore(lambda on: V.VLMAttentionExplorer(trace, interactive=on))
    np.testing.assert_array_equal(moved["token"], V.FrameRenderer(trace, 1, "mean").frame(trace.frame_tokens.stop - 1))
    np.testing.assert_array_equal(moved["head"], V.FrameRenderer(trace, 1, "max").frame(trace.frame_tokens.start))
