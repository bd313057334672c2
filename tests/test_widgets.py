"""vizkit.widgets.HeatmapPane: the PNGs a redraw sends to the page hold the map's colours."""
import cv2
import matplotlib
import numpy as np

from vizkit import render
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


def test_describe_controls_names_what_the_browser_moves():
    import ipywidgets as W

    controls = [W.IntSlider(description="layer"), W.Dropdown(options=["a"], description="head"),
                W.ToggleButtons(options=["x", "y"], description="class")]
    assert describe_controls(controls) == [("layer", "slider"), ("head", "dropdown"), ("class", "toggle")]
