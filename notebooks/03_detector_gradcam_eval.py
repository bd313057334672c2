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
# default the fake logit) down to the earliest layer. The default model is the zoo's
# `face_forgery_detector` on its held-out faces, whose fakes have manipulation masks: the
# localisation table shows which layer and method point at the manipulated region, and how often a
# map that knows nothing would (the chance level). The run is resumable (chunk files in the run
# folder) and the explorer at the end reads the saved run instead of recomputing. The same on the
# command line: `vizkit evaluate --help`, `vizkit detector-gradcam --help`.

# %% [markdown]
# ## What you will learn
# - How to read a detector's scores: the fake probability p(fake), the 0.5 threshold, and what AUC,
#   EER, AP and accuracy measure — each beside the number a coin would reach.
# - What Grad-CAM and Grad-CAM++ compute at a transformer layer, and why the same method gives a map
#   that finds the manipulation at one layer and one that is worse than random at another.
# - How to check a map against ground truth (pointing game, energy in the mask), against the model
#   (ROAD) and against the model's weights (the randomisation test) — and that these checks can
#   disagree.
#
# ## What you need to know first
# - A ViT: the image cut into patches, one token per patch plus a CLS token, a stack of blocks
#   (attention + MLP, each with a LayerNorm). Layers are numbered **from 0** (0-based) in every
#   table and figure here: "layer 3" is the input of the fourth block.
# - Gradients of a score with respect to an activation (one `backward`), and the softmax.
# - A binary classifier's confusion matrix (true/false positives and negatives).

# %% [markdown]
# ### Method in brief: Grad-CAM
# For a layer with activations $A^k$ (channel $k$, at each patch position $(i, j)$) and the explained
# score $y^c$ (the logit of class $c$, here "fake"), each channel is weighted by its mean gradient and
# the weighted sum is rectified:
# $$\alpha_k^c = \frac{1}{Z}\sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}}, \qquad
# L^c_{\text{Grad-CAM}} = \mathrm{ReLU}\Big(\sum_k \alpha_k^c A^k\Big).$$
# **Intuition:** channels whose increase would raise the fake score count positively, and the map
# shows where those channels are active. **When it fails:** the map is only as good as the layer. A
# detector that reads only the CLS token gives the *last* block's patch outputs zero gradient (no
# patch token of it reaches the score), so vizkit's defaults are block *inputs*; early blocks mix
# little and the ReLU keeps only positive evidence: below, layers 0–1 put no more of their energy in
# the manipulated region than a constant map would (about the mask's 6.6 % area) and layer 2 less
# (its pointing game is 0 %, below chance), while layer 3 finds the region in 93 % of the fakes. A map that is
# zero everywhere (all evidence negative) is shown without colour and labelled "all zero".
# [Selvaraju et al., 2017](https://arxiv.org/abs/1610.02391).

# %% [markdown]
# ### Method in brief: Grad-CAM++
# Grad-CAM++ replaces the mean gradient by a weighted mean that favours positions where the gradient
# is positive, with weights from the second and third derivatives (for an exponential score):
# $$\alpha_{ij}^{kc} = \frac{(\partial y^c / \partial A^k_{ij})^2}{2(\partial y^c / \partial A^k_{ij})^2
# + \sum_{a,b} A^k_{ab}\,(\partial y^c / \partial A^k_{ij})^3}, \qquad
# w_k^c = \sum_{i,j} \alpha_{ij}^{kc}\,\mathrm{ReLU}\Big(\frac{\partial y^c}{\partial A^k_{ij}}\Big).$$
# **Intuition:** several separate regions of evidence each get their share, instead of the largest
# one dominating. **When it fails:** the derivation assumes non-negative activations (post-ReLU
# CNN features); a transformer's LayerNorm outputs are signed, so the denominator can be small or
# negative and the weights lose their meaning — here Grad-CAM++ points at the manipulation less
# often than Grad-CAM at the best layer (58 % against 93 %).
# [Chattopadhay et al., 2018](https://arxiv.org/abs/1710.11063).

# %% [markdown]
# ### Method in brief: pointing game and energy in the mask (and their chance level)
# Pointing game: 1 if the map's maximum lies in the manipulated region $M$, averaged over the fakes;
# energy: $\sum_{p \in M} L_p / \sum_p L_p$. A map that knows nothing (its maximum on a uniformly
# random pixel, or a constant map) scores the mask's share of the image, $|M| / (HW)$ — the faces'
# masks cover about 6.6 % — so every table below has a row *random map* and flags scores at or below it.
# **When it fails:** the pointing game reads one pixel, so a map with one lucky peak scores as well as a
# sharp one; energy favours maps that spread over a large mask. Papers: the pointing game,
# [Zhang et al., 2018](https://arxiv.org/abs/1608.00507); energy in the mask,
# [Wang et al., 2020](https://arxiv.org/abs/1910.01279).

# %% [markdown]
# ### Method in brief: ROAD
# RemOve And Debias removes the $p$ % most relevant pixels (MoRF) or least relevant (LeRF) and fills
# them by *noisy linear imputation* — each removed pixel the mean of its neighbours, plus a little
# noise — so the removal leaves no shape the model could read. The score change is averaged over
# the percentiles $p$; combined $= (\text{LeRF} - \text{MoRF}) / 2$:
# $$\text{MoRF} = \frac{1}{|P|}\sum_{p \in P} \big(y^c(x_{\setminus \text{top } p}) - y^c(x)\big).$$
# **Intuition:** if the map is faithful, removing its top pixels hurts the score (MoRF low) and
# removing its bottom pixels does not (LeRF high). **When it fails:** it measures the model, not the
# ground truth, and its chance level is not zero (a random map's row shows it); a map can win ROAD
# and lose the pointing game. [Rong et al., 2022](https://arxiv.org/abs/2202.00449).

# %% [markdown]
# ### Method in brief: the randomisation test
# Re-initialise the detector's weights from the top (the classifier head) down to the patch
# embedding, cascading, recompute each map, and compare it with the original by the Spearman rank
# correlation of absolute values,
# $\rho_k = \operatorname{Spearman}(|L|, |L^{(k)}|)$ after randomising the top $k$ blocks. **Intuition:** a map that explains the *model* must change when the
# model is destroyed (Spearman near 0); a map that stays the same (near 1) shows the input's edges,
# not what was learnt. **When it fails:** it says whether a map depends on the weights, not whether
# it is right; and a LayerNorm at its initial values stays the same.
# [Adebayo et al., 2018](https://arxiv.org/abs/1810.03292).

# %%
from pathlib import Path

import torch
from IPython.display import Image, Markdown, display

from vizkit.scenarios import baseline, markdown_table, run_folder, seed_everything
from vizkit.scenarios import detector_gradcam_eval as dge
from vizkit.scenarios import detector_gradcam_tables as tables

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
faithfulness: bool = True  # also ROAD, the confidence change and the randomisation check per layer x method
faithfulness_samples: int = (
    4  # ROAD and the randomisation check on the first N images only (0: all; ROAD is slow on a CPU)
)
road_percentiles: str = "20,50,80"  # the percentiles of pixels ROAD removes and imputes, comma-separated
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
# The test set in chunks of `batch_size` images (rerunning with the same parameters resumes an
# interrupted run); metrics over the whole set, each beside its chance level (a "≤ chance" flag
# when it is no better). The detector outputs two logits; **p(fake)** is the softmax probability of
# the fake class, and it predicts fake when p(fake) > 0.5 (the **threshold**). **AUC**: the
# probability that a random fake gets a higher p(fake) than a random real (threshold-free; 0.5 is a
# coin). **EER**: the error rate at the threshold where reals called fake and fakes called real are
# equally frequent (lower is better; 0.5 is chance). **AP**: the area under the precision-recall
# curve when ranking by p(fake) (chance: the share of fakes). **Accuracy**: the share on the right
# side of 0.5 (chance: the larger class's share).

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
    faithfulness=faithfulness,
    faithfulness_samples=faithfulness_samples,
    road_percentiles=[float(p) for p in road_percentiles.split(",") if p.strip()],
    overwrite=overwrite,
    device=device_name,
)
m = summary.metrics
print(
    f"{m['model']} on {m['dataset']}: {m['samples']} images ({m['real']} real, {m['fake']} fake), "
    f"{m['unreadable']} unreadable"
)
print(tables.metrics_with_chance(m).to_string(index=False))
c = m["confusion"]
print(
    f"confusion (rows true real / fake, columns predicted real / fake): "
    f"{c['true_real_pred_real']} {c['true_real_pred_fake']} / {c['true_fake_pred_real']} {c['true_fake_pred_fake']}"
)

# %% [markdown]
# p(fake) of every image, one histogram per true class; the dashed line is the 0.5 threshold. The
# reals right of it and the fakes left of it are the mistakes.

# %%
display(Image(filename=str(summary.run_dir / "figures" / "score_distribution.png")))

# %% [markdown]
# ## Layers
# The figures and tables call the layers "layer k", the 0-based index of the block in the name;
# this key says which module each is in this detector, and what it reads.

# %%
# NBVAL_CHECK_OUTPUT
display(
    Markdown(
        markdown_table(
            tables.layer_key(
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
# The first sample folders (wrong predictions unless `save_all_predictions`): the input, then one
# overlay per layer, each titled with that layer's pointing game over the whole test set; the best
# is marked. Each map is scaled to its own [0, 1]; the cyan line is the manipulated region (fakes
# only). The title gives p(fake), the number `samples.csv` lists.

# %%
# NBVAL_CHECK_OUTPUT
shown = summary.samples[["sample", "index", "label", "pred", "prob"]].rename(columns={"prob": "p(fake)"})
print(shown.head(num_compare).round(3).to_string(index=False))
for name in summary.samples["sample"].head(num_compare):
    print((summary.run_dir / name / f"{name}_metadata.txt").read_text())
    display(Image(filename=str(summary.run_dir / name / "gradcam_comparison.png")))

# %% [markdown]
# ## The worst mistakes
# The most confident wrong predictions. Which map to show is read off this run's own table: the
# layer whose `method` map has the best pointing game (the figure's title says which, and why).

# %%
# NBVAL_CHECK_OUTPUT
chosen = tables.shown_layer(summary.localization, summary.methods[0])
print(
    "shown:",
    "layers combined (no masks)"
    if chosen is None
    else f"{tables.layer_label(chosen[0])}, pointing game {chosen[1]:.2f}",
)
worst = summary.run_dir / "figures" / "worst_mistakes.png"
if worst.is_file():
    display(Image(filename=str(worst)))

# %% [markdown]
# ## Which layer finds the manipulation? Which map is faithful?
# On the fakes with masks: the pointing game (the map's maximum inside the manipulated region; tol1
# within 1 px) and the share of the map's energy inside it; with `faithfulness`, over all images,
# ROAD (MoRF lower, LeRF and combined higher is better), the confidence change of the map-weighted
# image, and the randomisation check (`randomisation_spearman`: 0 = the map changed completely when
# every weight was randomised). The last row is a random map: the chance level. The last column
# names the scores at or below it (within 0.01).

# %%
# NBVAL_CHECK_OUTPUT
if summary.localization is not None:
    scores = tables.score_table(summary.localization, m.get("chance"), m.get("randomisation"))
    print(scores.to_string(index=False))
    print(tables.faithfulness_sentence(scores))
else:
    print("no manipulation masks in this test set")

# %% [markdown]
# **Reading the table.** Layers 0 and 1 put about as much energy in the manipulated region as a
# constant map and layer 2 less, with a pointing game of 0 %: an early layer's Grad-CAM is not
# evidence of where the manipulation is. Layer 3, the last block's input, finds it in 93 % of the
# fakes with Grad-CAM (58 % with Grad-CAM++). ROAD, scored here on the first 4 images only, ranks
# differently: layer 2 wins MoRF and combined, and every map's MoRF is *above* the random map's
# (imputing a map's most relevant pixels raises the fake logit more than imputing random ones), so
# by MoRF no map beats chance. The randomisation Spearman is near 0 wherever it has a value (the
# maps depend on the weights); layer 3 has none (nan): with random weights its map is constant, so
# it has no ranks. The scores disagree — the sentence under the table says which method and layer
# wins by which score; no single "best map" exists.

# %% tags=["nbval-ignore-output"]
print("report:", summary.report)

# %% [markdown] tags=["exercise"]
# ### Exercise 1: which layer would Grad-CAM++ show?
# The worst-mistakes figure shows the layer with this run's best pointing game for `method`
# (Grad-CAM). Call `tables.shown_layer` with `"gradcam++"` instead: which layer would it show, and
# with what pointing game?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
best_pp = tables.shown_layer(summary.localization, "gradcam++")
if best_pp is None:  # a run whose table_methods leave gradcam++ out (or without masks) has no such score
    print("gradcam++ is not in this run's localisation table: add it to table_methods")
else:
    print(f"answer: gradcam++ shows {tables.layer_label(best_pp[0])}, pointing game = {best_pp[1]:.2f}")

# %% [markdown] tags=["exercise"]
# ### Exercise 2: a wider target, a higher chance level
# `pointing_game_tol1` counts a hit within 1 px of the mask, so its chance level is higher. Call
# `dge.run_pointing_chance(summary.run_dir, tolerance)` with a tolerance of 2 px: what would a map
# that knows nothing score?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
print(f"answer: pointing-game chance level with a 2 px tolerance = {dge.run_pointing_chance(summary.run_dir, 2):.3f}")

# %% [markdown] tags=["exercise"]
# ### Exercise 3: moving the threshold
# The detector calls an image fake when p(fake) > 0.5. Lower the threshold to 0.3 with
# `tables.errors_at_threshold(summary.predictions, 0.3)`: how many fakes are still missed, and how
# many reals are now called fake? (AUC does not change: it does not depend on the threshold.)

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
errors = tables.errors_at_threshold(summary.predictions, 0.3)
print(
    f"answer: at threshold 0.3, fakes missed = {errors['fakes missed']}, reals called fake = {errors['reals called fake']}"
)

# %% [markdown]
# ## Explore
# Sample × layer × method, or the wrong predictions only: every map is read from the run folder,
# nothing is recomputed. The layer starts at the one this run's pointing game chooses.

# %% tags=["nbval-ignore-output"]
if interactive:
    explorer = dge.DetectorGradCAMExplorer(summary.run_dir)
    display(explorer)

# %% tags=["nbval-ignore-output"]
print("outputs:")
for p in sorted(Path(summary.run_dir).iterdir()):
    print("  ", p.name)
