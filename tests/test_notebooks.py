"""The scenario notebooks run headless through papermill with non-default parameters."""

import papermill as pm
import pytest
from papermill_run import NOTEBOOKS, run


def test_02_with_non_default_parameters(tmp_path):
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    run_dir = tmp_path / "run"
    nb = run(
        "02_vit_mnist_attention",
        tmp_path,
        num_samples=3,
        layers="0,3,5",
        heads="0,2",
        head_layer=1,
        head_fusion="max",
        interactive=False,
        output_dir=str(run_dir),
    )
    names = sorted(p.name for p in run_dir.iterdir())
    expected = sorted(
        [
            f"{kind}_sample_{i}.png"
            for kind in ("attention_pattern", "attention_heads", "layer_comparison")
            for i in range(3)
        ]
        + ["attention_statistics.png", "attention_analysis_report.md"]
    )
    assert names == expected
    report = (run_dir / "attention_analysis_report.md").read_text()
    assert "| num_samples | 3 |" in report and "| layers | '0,3,5' |" in report and "| head_fusion | 'max' |" in report
    for layer in ("blocks.0", "blocks.3", "blocks.5"):
        assert f"| {layer} |" in report
    assert "| blocks.1 |" not in report
    assert "test accuracy (10,000 MNIST test images): **9" in report  # >= 90 %
    assert "![attention pattern sample 2](attention_pattern_sample_2.png)" in report
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "layers: ['blocks.0', 'blocks.3', 'blocks.5']" in outputs
    assert "AttentionExplorer" not in outputs and "VBox" not in outputs  # interactive=False: no widgets
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before  # nothing written beside the notebook


def test_02_rejects_an_unknown_parameter_before_any_work(tmp_path):
    with pytest.raises(
        pm.PapermillExecutionError, match=r"unknown parameter 'num_sample' \(did you mean num_samples\?\)"
    ):
        run("02_vit_mnist_attention", tmp_path, num_sample=3, output_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
