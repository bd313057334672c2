# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -papermill,-execution
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Scenario 3 — Grad-CAM of a deepfake detector, and an evaluation that explains its mistakes
#
# Seed 002: Grad-CAM and Grad-CAM++ on named transformer layers of a CLIP deepfake detector
# (`encoder.layers.N`, the Hugging Face names inside the vision model; negative N counts from the
# end; `encoder.layers.N.layer_norm1` reads block N's input), compared across layers, and an
# **evaluation over a test set**: AUC, accuracy, EER and AP (scikit-learn; video AUC when frames
# are grouped by video), every prediction in `predictions.csv`, and Grad-CAM maps with the seed's
# file names and metadata for the wrong predictions (or all).
#
# Every layer is explained from one forward pass and one backward from the explained score (by
# default the fake logit) down to the earliest layer. The last block's *output* is zero for a
# detector that reads only the CLS token, so the default layers are block *inputs*. The default
# model is the zoo's `face_forgery_detector` on its held-out faces, whose fakes have manipulation
# masks: the localisation table shows which layer and method point at the manipulated region.
# The run is resumable (chunk files in the run folder) and the explorer at the end reads the saved
# run instead of recomputing. The same on the command line: `vizkit evaluate --help`,
# `vizkit detector-gradcam --help`.

# %%
from pathlib import Path

import torch
from IPython.display import Image, Markdown, display

from vizkit.scenarios import baseline, markdown_table, run_folder, seed_everything
from vizkit.scenarios import detector_gradcam_eval as dge

_before = baseline(globals())

# %% tags=["parameters"]
detector_path: str = ""  # DeepfakeBench detector YAML; empty means the zoo face_forgery_detector
weights_path: str = ""  # the detector weights (.pth) that detector_path describes
test_dataset: str = "zoo:face_forgery"  # zoo:face_forgery, a folder with real/ and fake/, a CSV or JSON list, a DeepfakeBench JSON, or a NAME under dataset_json_folder
max_samples: int = 200  # evaluate the first N images only; 0 means all
layers: str = ""  # comma-separated names such as encoder.layers.23,encoder.layers.20; empty means block inputs (seed blocks or the last four)
method: str = "gradcam"  # gradcam or gradcam++ (the sample folders and the worst mistakes)
table_methods: str = "gradcam,gradcam++"  # methods of the localisation table (sets with masks)
target: str = "fake"  # explained class: fake, predicted, real or label
gradcam_samples: int = 8  # how many wrong predictions get a sample folder
save_all_predictions: bool = False  # sample folders for the first predictions of any kind instead
num_compare: int = 3  # sample folders whose layer comparison is shown here
batch_size: int = 50  # images per chunk (the unit of resumption)
output_dir: str = ""  # run folder; empty means a new runs/<timestamp>-03_detector_gradcam_eval/
overwrite: bool = False  # replace a different run in output_dir
interactive: bool = True  # show the widget explorer (static figures are always written)
seed: int = 0  # seed for every random source
device: str = "cpu"  # cpu, cuda or auto

# %%
params = dge.check_notebook_parameters(globals(), _before)  # unknown names or bad values stop here, before any work
seed_everything(seed)
run_dir = output_dir or run_folder(None, "03_detector_gradcam_eval")
device_name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
layer_names = [n.strip() for n in layers.split(",") if n.strip()] or None

# %% [markdown]
# ## Evaluation
# The test set in chunks of `batch_size` images (rerunning with the same parameters resumes an interrupted run); metrics over the whole set.

# %%
# NBVAL_CHECK_OUTPUT
summary = dge.run_evaluation(
    run_dir,
    detector_path=detector_path or None,
    weights_path=weights_path or None,
    test_dataset=test_dataset,
    max_samples=max_samples,
    gradcam_enabled=True,
    layers=layer_names,
    method=method,
    table_methods=[m.strip() for m in table_methods.split(",") if m.strip()],
    target=target,
    batch_size=batch_size,
    gradcam_samples=gradcam_samples,
    save_all_predictions=save_all_predictions,
    overwrite=overwrite,
    device=device_name,
)
m = summary.metrics
print(
    f"{m['model']} on {m['dataset']}: {m['samples']} images ({m['real']} real, {m['fake']} fake), "
    f"{m['unreadable']} unreadable"
)
print(dge.metrics_table(m).to_string(index=False))
c = m["confusion"]
print(
    f"confusion (rows true real / fake, columns predicted real / fake): "
    f"{c['true_real_pred_real']} {c['true_real_pred_fake']} / {c['true_fake_pred_real']} {c['true_fake_pred_fake']}"
)

# %%
display(Image(filename=str(summary.run_dir / "figures" / "score_distribution.png")))

# %% [markdown]
# ## Layers
# Which module each name maps to in this detector, and what it reads.

# %%
# NBVAL_CHECK_OUTPUT
display(
    Markdown(
        markdown_table(
            dge.layer_table(
                dge.resolve_gradcam_layers(
                    dge.load_eval_detector(detector_path or None, weights_path or None).model,
                    [li.name for li in summary.layers],
                )
            ),
            index=False,
        )
    )
)

# %% [markdown]
# ## Layer comparison
# The first sample folders (wrong predictions unless `save_all_predictions`): the input, one overlay per layer and the layers combined, the prediction in the title.

# %%
# NBVAL_CHECK_OUTPUT
print(summary.samples[["sample", "index", "label", "pred", "prob"]].head(num_compare).round(3).to_string(index=False))
for name in summary.samples["sample"].head(num_compare):
    print((summary.run_dir / name / f"{name}_metadata.txt").read_text())
    display(Image(filename=str(summary.run_dir / name / "gradcam_comparison.png")))

# %% [markdown]
# ## The worst mistakes
# The most confident wrong predictions, each with its layers-combined map.

# %%
worst = summary.run_dir / "figures" / "worst_mistakes.png"
if worst.is_file():
    display(Image(filename=str(worst)))

# %% [markdown]
# ## Which layer finds the manipulation?
# On the fakes with masks: the pointing game (the map's maximum inside the manipulated region; tol1 within 1 px) and the share of the map's energy inside it, per layer and method.

# %%
# NBVAL_CHECK_OUTPUT
if summary.localization is not None:
    print(summary.localization.round(3).to_string(index=False))
else:
    print("no manipulation masks in this test set")

# %% tags=["nbval-ignore-output"]
print("report:", summary.report)

# %% [markdown]
# ## Explore
# Sample × layer × method, or the wrong predictions only: every map is read from the run folder, nothing is recomputed.

# %% tags=["nbval-ignore-output"]
if interactive:
    explorer = dge.DetectorGradCAMExplorer(summary.run_dir)
    display(explorer)

# %% tags=["nbval-ignore-output"]
print("outputs:")
for p in sorted(Path(summary.run_dir).iterdir()):
    print("  ", p.name)
