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
# # Scenario 1 — what drives a deepfake detector's *real* and *fake* decisions?
#
# Gradient-weighted attention of a CLIP-ViT detector (seed 000): for every transformer block the
# attention `A` is weighted by its gradient for the explained class, `Ā = fuse(heads, (∇A ⊙ A)⁺)`,
# and the blocks are combined either by Chefer et al.'s relevance propagation (`R ← R + Ā R`,
# `aggregation="relevance"`) or by the plain mean of the per-layer maps (`"mean"`, what scripts like
# the seed's compute). The **real-class** and the **fake-class** maps come from one forward pass;
# every head fusion (mean / max / min) and layer choice (last, last 4, all) is then computed from
# the cached attention and gradients.
#
# The default model is the zoo's `face_forgery_detector` (DeepfakeBench's CLIP detector layout,
# trained here on real faces with local manipulations whose masks are known), so the last section
# can measure how faithful each variant is. Your own detector: `model` = a DeepfakeBench `.pth`
# (with `model_config` = its YAML) or a Hugging Face directory. The same on the command line:
# `vizkit detector-attention --help`.
#
# Layers are numbered from 0 (0-based): "layer 0" is the block nearest the input, "layer 3" the last
# block of this 4-block detector.

# %% [markdown]
# ## What you will learn
# - how gradient-weighted attention turns a transformer's attention into a map of what drove *one*
#   class's score, and how the choice of head fusion (mean / max / min) and of layers changes it;
# - how to check a map against ground truth (pointing game, energy inside the manipulation mask) and
#   against the model itself (ROAD, the weight-randomisation test), always beside the chance level;
# - why the metrics can disagree, and how the notebook's default variant is chosen from the numbers.
#
# ## What you need to know first
# - a vision transformer: the image is cut into patches, a CLS token attends to them in every block,
#   each block has several attention heads;
# - gradients of a class score with respect to an intermediate tensor (what `loss.backward()` computes);
# - a binary classifier's softmax probability, here p(fake).

# %% [markdown]
# ### Method in brief: gradient-weighted attention (Chefer et al., 2021)
# For block $b$ with attention $A_b \in \mathbb{R}^{h \times n \times n}$ ($h$ heads, $n$ tokens) and
# the explained class score $y_c$, keep only the attention that *raises* the score and fuse the heads:
#
# $$\bar A_b = \operatorname{fuse}_{\text{heads}}\Big( \big(\tfrac{\partial y_c}{\partial A_b} \odot A_b\big)^{+} \Big), \qquad
# R \leftarrow R + \bar A_b R \quad (R = I \text{ at the first block}).$$
#
# The map is the CLS row of $R$ over the patches (`aggregation="relevance"`), or the mean of the
# per-block CLS rows of $\bar A_b$ (`"mean"`). **Intuition:** attention says where a token looks; the
# gradient says whether looking there helps the class; their positive product keeps the looks that help.
# **When it fails:** attention is not explanation — a head can attend everywhere and matter little, and
# the clamp $(\cdot)^+$ throws away the evidence *against* a class. Measured here: with heads fused by
# `min`, layer 0's fake-class map is zero everywhere for about a fifth of the held-out fakes and the
# real-class map for about half of them (one head with no positive contribution zeroes a patch; exercise 1), and the maps of the last four blocks keep a Spearman
# correlation above 0.5 with those of a model whose last blocks are random (table below).
# [Chefer, Gur & Wolf, ICCV 2021](https://arxiv.org/abs/2103.15679).

# %% [markdown]
# ### Method in brief: attention rollout (Abnar & Zuidema, 2020)
# Rollout multiplies the head-averaged attention of the blocks, with the residual connection added:
#
# $$\tilde A_b = \tfrac12 \big(I + \operatorname{mean}_{\text{heads}} A_b\big), \qquad
# R = \tilde A_L \tilde A_{L-1} \cdots \tilde A_1 .$$
#
# Chefer's relevance update $R \leftarrow R + \bar A_b R$ is rollout with the gradient-weighted
# $\bar A_b$ in place of the raw attention. **Intuition:** information flows through every block, so
# follow it through all of them. **When it fails:** rollout is class-agnostic — the real and the fake
# map would be the same picture; that is why this notebook weights by the gradient.
# [Abnar & Zuidema, ACL 2020](https://arxiv.org/abs/2005.00928).

# %% [markdown]
# ### Method in brief: head fusion
# $\operatorname{fuse} \in \{\text{mean}, \max, \min\}$ over the $h$ heads of
# $(\partial y_c / \partial A \odot A)^+$. **Intuition:** `mean` is the heads' consensus, `max` keeps a patch if any head
# uses it, `min` only if every head does. **When it fails:** `min` is zero wherever one head contributes
# nothing (the all-zero maps above); `max` lets one noisy head dominate. On a 4-block model the layer
# modes `last_4_layers` and `all_layers` select the same blocks, and with one block the two aggregations
# coincide: the table computes this and shows such variants once. The mean over heads is what
# [Abnar & Zuidema, 2020](https://arxiv.org/abs/2005.00928) and [Chefer et al., 2021](https://arxiv.org/abs/2103.15679)
# use; max and min are the common variants people try next.

# %% [markdown]
# ### Method in brief: ROAD (Rong et al., 2022)
# Remove the fraction $q$ of pixels the map ranks highest (MoRF) or lowest (LeRF), fill them by noisy
# linear interpolation from their neighbours, and record the change of the class probability:
#
# $$\text{MoRF} = \frac{1}{|Q|}\sum_{q \in Q} \big(p_c(\tilde x^{\text{MoRF}}_q) - p_c(x)\big), \qquad
# \text{combined} = \tfrac12(\text{LeRF} - \text{MoRF}).$$
#
# **Intuition:** if the map is right, removing its top pixels should lower $p_c$ and removing its bottom
# pixels should not; the interpolation leaves no sharp hole the model could read. **When it fails:** a
# removed region can still look like a manipulation to a forgery detector; here every variant's ROAD
# is at or below that of random maps (table below), so ROAD cannot rank them on this model.
# [Rong et al., ICML 2022](https://arxiv.org/abs/2202.00449).

# %% [markdown]
# ### Method in brief: the randomisation test (Adebayo et al., 2018)
# Re-initialise the last blocks' weights, recompute the maps for the same images and compare them with
# the trained model's by Spearman's rank correlation $\rho$ of the pixels:
#
# $$\rho = \operatorname{corr}\big(\operatorname{rank}(M_{\text{trained}}), \operatorname{rank}(M_{\text{random}})\big).$$
#
# $\rho \approx 0$: the map changed completely, so it depends on what the model learnt (it passes);
# $\rho \approx 1$: the map is unchanged, it shows the input, not the model. **When it fails:** only the
# re-initialised blocks are tested; a map built from earlier blocks (here `last_4_layers`) keeps
# their structure and keeps $\rho > 0.5$.
# [Adebayo et al., NeurIPS 2018](https://arxiv.org/abs/1810.03292).

# %%
import torch
from IPython.display import Image, Markdown, display

from vizkit.scenarios import baseline, run_folder, seed_everything
from vizkit.scenarios import clip_detector_attention as cda

_before = baseline(globals())

# %% tags=["parameters"]
model: str = "face_forgery_detector"  # the zoo detector, or a weights file (.pth / .safetensors) or a HF directory
model_config: str = ""  # DeepfakeBench detector YAML (resolution, mean, std, class_names)
images: str = ""  # an image or a folder; empty means zoo test faces, fake and real alternating
num_images: int = 6  # how many zoo test faces when images is empty
# the default variant is the one the faithfulness table's rule picks (see "Which variant?" below)
target_layers: str = "last"  # blocks combined in the per-image maps: last, last_4, all, or indices such as -4,-3,-2,-1
head_fusion: str = "mean"  # mean | max | min
aggregation: str = "relevance"  # relevance (Chefer propagation) | mean (plain per-layer mean)
layer_modes: str = "last_layer,last_4_layers,all_layers"  # layer modes compared in the multi-layer figures
faithfulness_samples: int = 100  # held-out fakes and as many reals for the faithfulness table; 0 skips it
road_samples: int = 8  # fakes scored by ROAD (one sparse solve per image, map and percentile); 0 skips it
output_dir: str = ""  # run folder; empty means a new runs/<timestamp>-01_clip_detector_attention/
overwrite: bool = False  # allow writing into a non-empty output_dir
interactive: bool = True  # show the widget explorer (static figures are always written)
seed: int = 0  # seed for every random source
device: str = "cpu"  # cpu | cuda | auto

# %%
params = cda.check_notebook_parameters(globals(), _before)  # unknown names or bad values stop here, before any work
seed_everything(seed)
run_dir = run_folder(output_dir or None, "01_clip_detector_attention", overwrite=overwrite)
device_name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
detector = cda.load_detector_model(model, model_config or None, device=device_name)
layers = cda.parse_layers(target_layers)
modes = [m.strip() for m in layer_modes.split(",") if m.strip()]
print("run folder:", run_dir)

# %% [markdown]
# ## The detector

# %%
# NBVAL_CHECK_OUTPUT
gradcam = cda.CLIPViTGradCAM(detector.model, layers, head_fusion, aggregation, detector.class_names)
print(f"{type(detector.model).__name__} from {detector.info['source']}: classes {detector.class_names}")
print(f"{len(gradcam.layer_names)} transformer blocks; target layers: {gradcam.target_layers}")

# %% [markdown]
# ## Real-class and fake-class maps
# One forward pass per batch gives both classes' maps; the files use the seed's names.

# %%
# NBVAL_CHECK_OUTPUT
inputs, names, samples = cda.notebook_images(images, num_images, seed)
masks = [s.mask if s is not None and s.label == 1 else None for s in samples]  # outlined in cyan on the figures
results, failures = cda.analyze_images(
    detector, inputs, run_dir, layers, head_fusion, aggregation, multi_layer=True, stems=names, masks=masks
)
for r in results:
    print(
        f"{r.stem:>9}: predicted {r.class_names[r.predicted]:<4} p(fake) = {r.probs[detector.fake_index]:.3f}, "
        f"top-20 % IoU of its real and fake maps {r.numbers['top20_iou']:.2f}"
    )
print(
    f"chance: two random maps' top-20 % regions overlap with IoU {cda.pair_top_iou_chance(results[0].real.shape):.3f}"
)
for name, err in failures:
    print("skipped", name, err)

# %%
first = results[0]
for key in ("real_attention", "fake_attention", "comparison"):
    display(Image(filename=str(first.files[key])))
display(Markdown(f"**{first.stem}**: {first.sentence}"))

# %% [markdown]
# The cyan line is the manipulation mask of the fakes (where the face was altered); real faces have none.
#
# ## Layer modes
# The last layer alone, the last four, and all layers, for the real and the fake class; a mode that
# selects the same blocks as another (on this 4-block model, all layers = the last four) is drawn once
# and named in the title.

# %%
display(Image(filename=str(first.files["layers"])))

# %% [markdown]
# ## Faithfulness on held-out faces
# Every head fusion × layer mode × aggregation, scored against the manipulation masks of held-out fakes
# (pointing game, energy in the mask, deletion AUC), by ROAD, by the spread of the maps (entropy) and by
# the weight-randomisation test. Variants with identical maps get one row. The last row, `chance`, is
# what a map with no information scores; `below_chance` names the metrics a row does not beat.

# %%
# NBVAL_CHECK_OUTPUT
table, notes = None, []
if faithfulness_samples:
    from vizkit import zoo

    held_out = zoo.dataset("face_forgery_detector", "test")
    fakes = [s for s in held_out if s.label == 1][:faithfulness_samples]
    reals = [s for s in held_out if s.label == 0][:faithfulness_samples]
    table = cda.faithfulness_table(detector, fakes, reals, layer_modes=modes, road_samples=road_samples)
    notes = cda.faithfulness_observations(table)
    # the columns that tell the variants apart (the deletion AUC hardly moves here: see the notes)
    columns = ["pointing", "energy_in_mask", "road_combined", "sanity_spearman", "below_chance"]
    shown = cda.table_with_chance(table)
    print(
        shown[["head_fusion", "layer_mode", "aggregation", *[c for c in columns if c in shown]]]
        .round(3)
        .to_string(index=False)
    )

# %%
# NBVAL_CHECK_OUTPUT
if table is not None:
    display(Markdown("\n".join(f"- {n}" for n in notes)))

# %%
if table is not None:
    display(cda.table_with_chance(table).round(3))

# %% [markdown]
# ## Which variant?
# The rule (in `vizkit.scenarios.detector_attention_eval.recommended_variant`): among the variants that
# pass the randomisation test (Spearman < 0.5) and beat chance on pointing and energy, the one with the
# most energy inside the mask. The notebook's defaults (`target_layers`, `head_fusion`) are that variant;
# the cell says so, or says that your parameters differ.

# %%
# NBVAL_CHECK_OUTPUT
if table is not None:
    best, why = cda.recommended_variant(table)
    print(why.replace("**", ""))
    print("this run's maps use:", f"heads {head_fusion}, {target_layers} ->", gradcam.target_layers)

# %% [markdown] tags=["exercise"]
# **Exercise 1.** In the explorer below choose `class` = real, `layers` = layer 0 and `heads` = min: for
# some images the map is zero everywhere, and the explorer says why. On this notebook's images, what
# share of the real-class maps of layer 0 is all zero with heads fused by `min`? Change `"min"` to
# `"mean"` in the answer's call: what happens, and why (see "Method in brief: head fusion")?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
x_all = torch.stack([detector.preprocess(r.image) for r in results])  # the images at the model's size
print(
    f"answer: all-zero share of real-class maps, layer 0, heads min = {cda.zero_map_share(gradcam.explain(x_all), detector.real_index, 0, 'min'):.3f}"
)

# %% [markdown] tags=["exercise"]
# **Exercise 2.** The comparison figures report the IoU of the real and the fake map's top-20 % regions.
# What IoU do two maps with random values reach when the top region is 10 % instead of 20 %
# (`fraction=0.1`) on this 64 x 64 input?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
print(f"answer: top-10 % IoU of two random 64 x 64 maps = {cda.pair_top_iou_chance((64, 64), 0.1):.4f}")

# %% [markdown] tags=["exercise"]
# **Exercise 3.** The pointing game's chance level is the share of the image the mask covers. The
# pointing game can also count a peak within 1 pixel of the mask (`tolerance=1`): what is its chance
# level on the held-out fakes then?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
if table is not None:
    from vizkit import metrics

    print(
        f"answer: pointing chance with tolerance 1 = {float(metrics.pointing_chance(cda.held_out_masks(fakes), 1).mean()):.4f}"
    )

# %% [markdown]
# ## Report

# %%
figures = [results[0].files[k] for k in ("comparison", "layers")]
report = cda.write_attention_report(run_dir, params, detector, results, table, notes, failures, figures)
print("report:", report)

# %% [markdown]
# ## Explore
# Move the controls: the maps are recomputed from the cached attention and gradients, without another forward or backward pass.

# %% tags=["nbval-ignore-output"]
if interactive:
    x = torch.stack([detector.preprocess(im) for im in inputs[:8]])
    cached = gradcam.explain(x)
    explorer = cda.DetectorAttentionExplorer(
        cached, [r.image for r in results[:8]], names[:8], detector.real_index, detector.fake_index
    )
    display(explorer)

# %% tags=["nbval-ignore-output"]
print("outputs:")
for p in sorted(run_dir.iterdir()):
    print("  ", p.name)
