"""vizkit.scenarios.vlm_report.shares_plot: which layer and head each line shows; shares of 0 and 1 stay visible."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from vizkit.scenarios.vlm_report import shares_figure, shares_plot  # noqa: E402


def _frames() -> pd.DataFrame:
    rows = []
    for token in range(4):
        rows.append({"layer": 1, "head": "head 0", "token": token, "image": 1.0, "prompt": 0.0, "answer": 0.0})
        rows.append({"layer": 2, "head": "mean over heads", "token": token, "image": 0.5, "prompt": 0.3, "answer": 0.2})
    return pd.DataFrame(rows).assign(special=0.0, image_entropy=[1.2, 3.4] * 4)


def test_shares_plot_names_layer_and_head_and_keeps_0_and_1_inside_the_frame(tmp_path):
    fig = shares_plot(_frames())
    try:
        top, bottom = fig.axes
        labels = [t.get_text() for t in top.get_legend().get_texts()]
        assert {"image", "prompt", "answer", "layer 1, head 0", "layer 2, mean over heads"} <= set(labels)
        views = ["layer 1, head 0", "layer 2, mean over heads"]
        assert [t.get_text() for t in bottom.get_legend().get_texts()] == views
        low, high = top.get_ylim()
        assert low < 0 and high > 1  # the head-0 lines at exactly 1 (image) and 0 (prompt) are not hidden by the frame
        image_1 = [ln for ln in top.lines if len(ln.get_ydata()) == 4 and np.all(ln.get_ydata() == 1.0)]
        assert len(image_1) == 1
        # the legends sit outside the axes (to their right), not over the lines
        fig.canvas.draw()
        for ax in (top, bottom):
            box = ax.get_legend().get_window_extent()
            assert box.x0 >= ax.get_window_extent().x1
    finally:
        plt.close(fig)
    assert shares_figure(_frames(), tmp_path / "shares.png").is_file()
