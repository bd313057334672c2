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
# # Scenario 4 — CLIP image–text Grad-CAM
#
# Which regions of an image make a CLIP model match a text? Given class texts (a list, or a JSON
# file `{"name": "description"}` whose names label the bars and whose descriptions are encoded),
# this notebook explains the target text — the one you name, or the most similar one — with any
# vizkit CAM method on the image encoder, at an automatically chosen layer (ResNet / ConvNeXt:
# last stage; EfficientNet: last convolutional block; ViT: the last block read at its input; any
# other encoder: the last module with a spatial output). The explained score is the image–text
# similarity (logit scale × cosine), or its softmax probability over the texts when
# `probability` is true.
#
# The default model is the zoo's `shapes_clip` (an open_clip CLIP with a small hybrid ViT image
# tower — a convolutional stem, then transformer blocks over an 8 × 8 token grid — trained here on
# coloured-shape scenes with ground-truth masks; `shapes_clip_cnn` is its ResNet twin), so the maps
# can be scored: the last section measures, per CAM method, whether the map finds the named object
# on held-out scenes, whether the model agrees with it (ROAD, confidence change) and whether it
# depends on the learnt weights at all (randomisation), each beside its chance level.
# The same flags exist on the command line: `vizkit clip-gradcam --help`.
#
# ## What you will learn
# - how CLIP scores an image against a text, and how Grad-CAM and six relatives turn that score into a map;
# - why a text the model rejects (p = 0.000) can still get a bright map, and how one colour scale for all texts shows it;
# - how to check a map three ways — against the object's mask, against the model (ROAD), against a model with
#   random weights — each beside the score of a map that knows nothing, and that the three checks disagree;
# - why EigenCAM lands *below* chance here.
#
# ## What you need to know first
# - PyTorch tensors, and what a layer's activations look like (channels × positions; a ViT's tokens on a grid);
# - cosine similarity, softmax, and a gradient as "how much the score moves when this value moves";
# - layers are counted from 0 here: "layer 2" is the third transformer block, module `visual.trunk.blocks.2`.

# %%
from pathlib import Path

import torch
from IPython.display import Image as ShowImage
from IPython.display import Markdown, display
from PIL import Image

import vizkit
from vizkit import render, zoo
from vizkit.scenarios import baseline, image_files, run_folder, seed_everything
from vizkit.scenarios import clip_text_gradcam as cg

_before = baseline(globals())

# %% tags=["parameters"]
model: str = (
    "shapes_clip"  # zoo model (shapes_clip, shapes_clip_cnn), an open_clip name with model_path, or a HF CLIP directory
)
model_path: str = ""  # weights file for an open_clip name or a custom two-tower model
image_path: str = ""  # an image or a folder of images; empty means held-out shapes scenes from the zoo
class_texts: list = []  # class texts; empty means every colour and shape prompt of the zoo scenes
class_texts_file: str = ""  # JSON file mapping names to descriptions (instead of class_texts)
target_text_idx: int = -1  # index of the text to explain; -1 means the most similar text
method: str = "gradcam"  # gradcam, gradcam++, xgradcam, hirescam, layercam, eigencam or scorecam
target_layer: str = "auto"  # layer name, or auto
probability: bool = False  # explain the softmax probability instead of the similarity
image_encoder: str = ""  # custom two-tower model: timm or torchvision backbone name
text_encoder: str = ""  # custom two-tower model: local Hugging Face text encoder directory
embed_dim: int = 512  # custom two-tower model: embedding size
img_size: int = 224  # custom two-tower model: input size
num_scenes: int = 100  # held-out scenes for the localisation table (zoo models only; 0 skips the table)
road_scenes: int = 24  # the first scenes of those scored by ROAD and confidence change
randomisation_scenes: int = 8  # the first scenes of those in the randomisation test (0 skips it)
table_methods: str = "gradcam,gradcam++,xgradcam,hirescam,layercam,eigencam,scorecam"  # methods in the table
output_dir: str = ""  # run folder; empty means a new runs/<timestamp>-04_clip_text_gradcam/
overwrite: bool = False  # allow writing into a non-empty output_dir
interactive: bool = True  # show the widget explorer (static figures are always written)
seed: int = 0  # seed for every random source
device: str = "cpu"  # cpu, cuda or auto

# %%
params = cg.check_notebook_parameters(globals(), _before)  # unknown names or bad values stop here
seed_everything(seed)
run_dir = run_folder(output_dir or None, "04_clip_text_gradcam", overwrite=overwrite)
device_name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
adapter = cg.load_clip_model(
    model,
    model_path or None,
    image_encoder=image_encoder or None,
    text_encoder=text_encoder or None,
    embed_dim=embed_dim,
    img_size=img_size,
    device=device_name,
)
zoo_model = adapter.name.startswith("zoo:")
zoo_texts = zoo.load(adapter.name[4:]).class_names if zoo_model else None  # every prompt the zoo scenes use
test_scenes = zoo.dataset(adapter.name[4:] if zoo_model else "shapes_clip", "test")  # held-out scenes with masks
if class_texts or class_texts_file:
    names, texts = cg.load_class_texts(class_texts or None, class_texts_file or None)
else:
    names = texts = zoo_texts
    if texts is None:
        raise ValueError("give class_texts or class_texts_file for a model outside the zoo")
if image_path:
    paths = image_files([image_path])
    images = [cg.load_image(p) for p in paths]
    outlines = [[None] * len(texts) for _ in images]  # no ground truth for your own images
else:  # held-out scenes with two or three shapes; each text's object outlined where the scene has it
    scenes = [s for s in test_scenes if len(s.masks) > 1][:4]
    paths = [f"scene_{i}.png" for i in range(len(scenes))]
    images = [Image.fromarray(s.image) for s in scenes]
    outlines = [cg.text_masks(s, texts) for s in scenes]
target = None if target_text_idx < 0 else target_text_idx
print("run folder:", run_dir)

# %% [markdown]
# ### Method in brief: CLIP similarity as the explained score
# An image encoder $f$ and a text encoder $g$ map into one space; the score of text $t$ for image $x$ is the scaled
# cosine, and the probabilities are its softmax over the $T$ class texts:
#
# $$s_t(x) = \tau\,\frac{f(x)\cdot g(t)}{\lVert f(x)\rVert\,\lVert g(t)\rVert}, \qquad
# p_t(x) = \frac{e^{s_t(x)}}{\sum_{u=1}^{T} e^{s_u(x)}}$$
#
# ($\tau$ is the learnt logit scale). **Intuition:** explaining $s_t$ asks "what in the image looks like this
# text?", whatever the other texts are; explaining $p_t$ asks "what makes this text win over the others?".
# **When it fails:** $s_t$ is not a probability. A text that shares a colour or a shape with an object has a high
# similarity even when the model rejects it: in scene 0 below, "a red square" (p = 0.006) gets the strongest
# similarity map of all 24 texts, and "a blue circle" (p = 0.000) a map as bright as the target's; explained by
# $p_t$, both fall to almost nothing (exercise 1). Paper: [Radford et al., 2021](https://arxiv.org/abs/2103.00020).
#
# ### Method in brief: Grad-CAM
# $A^k$ is channel $k$ of the explained layer's activations over positions $(i, j)$ (for a ViT, its tokens laid out
# on their 8 × 8 grid); $Z$ is the number of positions:
#
# $$\alpha_k = \frac{1}{Z}\sum_{i,j}\frac{\partial s_t}{\partial A^k_{ij}}, \qquad
# L = \mathrm{ReLU}\Big(\sum_k \alpha_k A^k\Big)$$
#
# then upsampled to the image and scaled to [0, 1]. **Intuition:** a channel counts as much as the score rises
# when it rises, on average; the map is where the counted channels are active. **When it fails:** at a CLS-pooled
# ViT's last block *output* only the CLS token reaches the score, so the patch tokens' gradient is zero and the map
# is empty — which is why `auto` reads the last block at its *input*; the map is as coarse as the layer (8 × 8
# here); and scaling each map to its own maximum hides how strong the evidence is (hence one shared scale in the
# all-texts figure). Measured below: Grad-CAM's peak is inside the named object in 98 % of 100 held-out scenes,
# against 5 % for a random pixel. Paper: [Selvaraju et al., 2017](https://arxiv.org/abs/1610.02391).

# %% [markdown]
# ## Explanations
# Each image toward its target text: the image, the map (with its colour bar: each map is scaled to [0, 1] on its
# own), the overlay and the probability of every text (target highlighted). The cyan line outlines the object the
# target text names, where the scene has one.

# %%
# NBVAL_CHECK_OUTPUT
results, figures = [], []
for path, image, outline in zip(paths, images, outlines):
    res = cg.explain_clip(adapter, [image], names, texts, target, method, target_layer, probability, [str(path)])[0]
    written = cg.save_result(res, run_dir, cg.output_stem(path, None, False), mask=outline[res.target])
    results.append(res)
    figures.append(written["figure"])
print(
    f"model {adapter.name} | method {results[0].method} | {cg.layer_label(results[0].layers[0], with_module=True)}"
    f" | score: image-text {results[0].score}"
)
for res in results:
    t = res.target
    print(f"{Path(res.image_path).name}: target ({res.target_chosen}) {res.names[t]!r} p={res.probs[t]:.2f}")

# %%
display(ShowImage(filename=str(figures[0])))

# %% [markdown]
# ## Every text's map, on one scale
# One batched pass explains the first image toward every class text. All panels share one colour scale: 1 is the
# largest value of any text's map (not of each panel), so a faint panel means weak evidence for that text. Each
# title gives the text's probability p and its map's peak; the table lists them, most probable first.

# %%
# NBVAL_CHECK_OUTPUT
maps, probs, used = cg.text_maps(adapter, images[0], texts, method, target_layer, probability=probability)
score = "probability" if probability else "similarity"
fig = cg.text_maps_figure(
    cg.display_crop(images[0], adapter.image_size),
    names,
    maps,
    probs,
    title=f"{method} toward every text ({score}), {cg.layer_label(used[0])}",
    masks=outlines[0],
)
figures.append(render.save_figure(fig, run_dir / "clip_gradcam_all_texts.png"))
print(cg.text_maps_table(names, maps, probs).round(3).to_string(index=False))

# %%
display(ShowImage(filename=str(figures[-1])))

# %% [markdown] tags=["exercise"]
# **Exercise 1 — similarity or probability?** The maps above explain each text's similarity $s_t$. Call
# `cg.text_maps(...)` again with `probability=True` (each text's $p_t$ instead) and read the peak of the least likely
# text's map on the shared scale (the last row of `cg.text_maps_table`). Why is it so different?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
ranked = cg.text_maps_table(names, *cg.text_maps(adapter, images[0], texts, method, target_layer, probability=True)[:2])
low = ranked.iloc[-1]  # the least likely text
print(f"answer: peak of the least likely text's probability map = {low['peak']:.3f} (p = {low['p']:.3f})")
# The gradient of p_t is p_t times (the gradient of s_t minus the p-weighted gradients of all texts): at p = 0 it is 0.

# %% [markdown]
# ### Method in brief: Grad-CAM++ and XGrad-CAM
# Both reweight Grad-CAM's channel weight by where the channel is active; with $g = \partial s_t/\partial A^k_{ij}$:
#
# $$\alpha^{++}_k = \sum_{i,j}\frac{g^2}{2g^2 + \sum_{a,b}A^k_{ab}\,g^3}\,\mathrm{ReLU}(g), \qquad
# \alpha^{X}_k = \sum_{i,j}\frac{A^k_{ij}}{\sum_{a,b}A^k_{ab}}\,g$$
#
# **Intuition:** positions where the channel fires count more than an unweighted mean. **When it fails:** both
# assume non-negative activations (a CNN after its ReLU). A transformer block's input is the signed residual
# stream, so $\sum A^k$ can be near 0 or negative and the weights blow up or flip sign: measured below, their peaks
# are inside the named object in 14 % and 22 % of the scenes. Papers: [Chattopadhay et al., 2018](https://arxiv.org/abs/1710.11063),
# [Fu et al., 2020](https://arxiv.org/abs/2008.02312).
#
# ### Method in brief: HiResCAM and LayerCAM
# Keep the gradient at each position instead of averaging it:
#
# $$L^{\text{HiRes}} = \mathrm{ReLU}\Big(\sum_k g^k \odot A^k\Big), \qquad
# L^{\text{Layer}} = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}(g^k) \odot A^k\Big)$$
#
# **Intuition:** a channel can help in one place and hurt in another; the map keeps that. **When it fails:** finer
# maps are also noisier, and LayerCAM drops every negative gradient. Measured below: 93 % and 91 %, a little under
# Grad-CAM. Papers: [Draelos & Carin, 2020](https://arxiv.org/abs/2011.08891),
# [Jiang et al., 2021](https://doi.org/10.1109/TIP.2021.3089943).
#
# ### Method in brief: Score-CAM
# No gradient: each channel, upsampled and scaled to [0, 1], masks the image, and the masked image's score weights
# the channel, $\alpha = \operatorname{softmax}_k\, s_t\big(x \odot \hat A^k\big)$, $L = \mathrm{ReLU}(\sum_k \alpha_k A^k)$.
# **Intuition:** ask the model directly how much each channel's region alone supports the text. **When it fails:**
# it costs one forward pass per channel (hundreds per image): 95 % here, but too slow for the randomisation test,
# which is not run for it. Paper: [Wang et al., 2020](https://arxiv.org/abs/1910.01279).
#
# ### Method in brief: EigenCAM
# The first principal component of the activations: with $A$ the positions × channels matrix centred over the
# positions and $v_1$ its first right singular vector, $L = \mathrm{ReLU}(A v_1)$.
# **Intuition:** the direction in which the layer's activations vary most across the image. **When it fails:** it
# uses neither the gradient nor the text, so every text gets the same map (exercise 2) — it is not
# class-discriminative. On these scenes what varies most is not the named object: measured below, its peak is
# inside the object in 1 % of the scenes, *below* the 5 % of a random pixel. Paper:
# [Muhammad & Yeasin, 2020](https://arxiv.org/abs/2008.00299).

# %% [markdown] tags=["exercise"]
# **Exercise 2 — does the map depend on the text?** Run `cg.text_maps(...)` with `"eigencam"` instead of `method`
# and measure how much the 24 texts' maps differ with `cg.text_map_spread` (the largest difference between two
# texts' maps at any pixel; Grad-CAM's is 1.000 on this image).

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
spread = cg.text_map_spread(cg.text_maps(adapter, images[0], texts, "eigencam", target_layer)[0])
print(f"answer: largest difference between two texts' EigenCAM maps = {spread:.3f}")

# %% [markdown]
# ## Does the map find the object, and does the model agree?
# On held-out scenes of the zoo's shapes data, the target is the named object's text (from all of the zoo's
# colour × shape prompts, whatever `class_texts` holds) and the ground truth its mask. One row per CAM method, and
# a last row `chance`: what a map that knows nothing scores. `below_chance` names the scores on which a method does
# no better than that row.
#
# ### Method in brief: pointing game, energy in mask, top-20 % IoU — and their chance levels
# With $M$ the mask's pixels, $N$ all pixels and $T_{20}(L)$ the map's top 20 %:
#
# $$\text{hit} = \big[\arg\max L \in M\big], \qquad E = \frac{\sum_{p \in M} L_p}{\sum_p L_p}, \qquad
# \text{IoU}_{20} = \frac{|T_{20}(L) \cap M|}{|T_{20}(L) \cup M|}$$
#
# **Chance:** a random pixel lands in $M$ with probability $|M|/N$ (4.9 % of the image here), a constant map has
# $E = |M|/N$, and a random top region's IoU has an exact hypergeometric expectation
# (`vizkit.metrics.chance`). **When it fails:** these scores reward agreeing with a human's mask, not with the
# model — a model that used the context would be "wrong". Papers: [Zhang et al., 2018](https://arxiv.org/abs/1608.00507)
# (pointing game), [Wang et al., 2020](https://arxiv.org/abs/1910.01279) (energy).
#
# ### Method in brief: ROAD and the confidence change
# ROAD removes the most (MoRF) or least (LeRF) relevant $q$ % of the pixels, fills each with the mean of its
# neighbours (a sparse linear system) plus a little noise, and averages the score change over
# $q \in \{10, \dots, 90\}$:
#
# $$\text{MoRF} = \frac{1}{9}\sum_q \big[s_t(\tilde x_q^{\text{MoRF}}) - s_t(x)\big], \qquad
# \text{combined} = \frac{\text{LeRF} - \text{MoRF}}{2}$$
#
# The confidence drop is $\max(0,\ s_t(x) - s_t(x \odot L))$; the increase, the share of images whose score rises.
# **Intuition:** if the map is right, removing its top pixels hurts and removing its bottom pixels does not; the
# imputation leaves no hole whose shape the model could read. **When it fails:** on small flat-colour scenes,
# removing most of the image hurts whatever the order, so MoRF can favour a map that misses the object: EigenCAM's
# MoRF beats chance below while its pointing is under chance. Papers: [Rong et al., 2022](https://arxiv.org/abs/2202.00449),
# [Chattopadhay et al., 2018](https://arxiv.org/abs/1710.11063) (confidence).
#
# ### Method in brief: the randomisation test
# Re-initialise the image tower's parameterised layers one by one from the output down (a cascade), re-explain
# after each step, and compare with the trained model's map: $\rho = \text{Spearman}(|L_{\text{trained}}|, |L_{\text{random}}|)$
# after the last step. **Intuition:** a map that explains the model must change when the model is destroyed;
# $\rho$ near 0 means it did (that is the ideal, not a chance level), $\rho$ near 1 that the map shows the input,
# not what the model learnt. **When it fails:** a low $\rho$ is necessary, not sufficient — a map can change with
# the weights and still be wrong. Paper: [Adebayo et al., 2018](https://arxiv.org/abs/1810.03292).

# %%
# NBVAL_CHECK_OUTPUT
table = None
if zoo_model and num_scenes > 0:
    held_out = test_scenes[:num_scenes]
    table = cg.faithfulness_table(
        adapter,
        held_out,
        zoo_texts,
        [m.strip() for m in table_methods.split(",") if m.strip()],
        layers=target_layer,
        road_scenes=road_scenes,
        randomisation_scenes=randomisation_scenes,
        seed=seed,
    )
    print(
        f"localisation on {len(held_out)} scenes, ROAD and confidence on the first {min(road_scenes, len(held_out))}, "
        f"randomisation on the first {min(randomisation_scenes, len(held_out))}"
    )
    print(table.drop(columns="module").round(3).to_string(index=False))
    display(Markdown("\n\n".join(cg.table_reading(table)[1:])))
else:
    print("table skipped (needs a zoo model with ground-truth masks)")

# %% [markdown] tags=["exercise"]
# **Exercise 3 — which layer?** Grad-CAM at `auto` reads layer 2 at its input. Score it one block earlier, at layer
# 0's output (`layers="visual.trunk.blocks.0"`), with `cg.pointing_table` on the zoo's `shapes_clip` and the first
# 30 held-out scenes (`test_scenes[:30]`), and compare its pointing accuracy with `auto`'s (0.97 on the same scenes).

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
early = cg.pointing_table(
    cg.load_clip_model("shapes_clip"),
    test_scenes[:30],
    zoo.load("shapes_clip").class_names,
    ["gradcam"],
    layers="visual.trunk.blocks.0",
)
print(f"answer: Grad-CAM pointing accuracy at layer 0 = {early['pointing_accuracy'].iloc[0]:.3f}")

# %%
report = cg.write_clip_report(run_dir, params, adapter, results, figures, table)
print("report:", report)

# %% [markdown]
# ## Explore
# Switch the target text, the method and the layer (a new combination costs one forward and backward pass).

# %% tags=["nbval-ignore-output"]
if interactive:
    explorer = cg.ClipExplorer(
        adapter, images[0], names, texts, list(vizkit.METHODS), cg.candidate_layers(adapter, images[0])
    )
    display(explorer)

# %% tags=["nbval-ignore-output"]
print("outputs:")
for p in sorted(run_dir.iterdir()):
    print("  ", p.name)
