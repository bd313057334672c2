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
# # Scenario 5 — a VLM's per-token attention over text and image, as a video
#
# While a vision-language model writes its answer, where does it look? For every answer token this
# notebook shows the attention row of the step that produced it — over the earlier text and over
# each image's patch grid — and renders the rows into an mp4 that starts at a phrase such as
# "Based on the following requirements" (seed 004: a Reason-RFT user with a Qwen2-VL model).
#
# The rows are captured on the fly during `generate` (KV cache on): only the decoder layers asked
# for, only the new query row per step; those layers alone switch, for the call, to an attention
# function that computes the eager softmax row and then runs the layer's own kernel, so the answer
# is the same as without capture. Each position is placed by the model family's adapter: text,
# a special marker, or image *k*'s patch (r, c) — tiles stitched back into one picture, a global
# thumbnail view on its own (docs/howto/vlm-families.md: LLaVA, LLaVA-NeXT / OneVision, Qwen2/2.5/3-VL,
# Idefics3 / SmolVLM, Gemma 3, PaliGemma, Mistral 3, InternVL).
#
# The default model is the zoo's `tiny_vlm` (a Hugging Face `LlavaForConditionalGeneration`
# trained here on shape scenes, one decoder head supervised to look at the asked-about object),
# on its sample benchmark; `model_path` takes a local folder of any family above.
# The same flags exist on the command line: `vizkit vlm-video --help`.
# Layers, heads and answer tokens are numbered 0-based everywhere in this notebook ("layer 1" is
# `model.layers[1]`, the second decoder layer).

# %% [markdown]
# ## What you will learn
#
# - how to read one attention row of a decoder: which share of it goes to the image, the prompt, special
#   markers and the answer written so far, and where on the image it lands;
# - why the choice of head matters: the mean over heads dilutes the one head that looks at the object, and
#   how to choose a head from a measured number (attention mass on the ground-truth object) against chance;
# - what attention sinks are, and why a high attention weight is not a reason — relevance beside attention.
#
# ## What you need to know first
#
# - scaled dot-product attention and softmax; a decoder-only language model generating one token at a time;
# - how a vision-language model turns an image into a grid of patch tokens inside the prompt (notebook 02 shows
#   the same grid for a ViT);
# - the pointing game (does a map's peak fall on the object?) from notebooks 01 and 03.

# %% [markdown]
# ### Method in brief: attention over tokens
#
# At generation step $t$ each head $h$ of a decoder layer compares the query of the last position with
# the keys of every earlier position $k$ and normalises:
#
# $$a^{(h)}_{t,k} = \mathrm{softmax}_k\!\left(\frac{q^{(h)}_t \cdot k^{(h)}_k}{\sqrt{d}}\right), \qquad \sum_{k<t} a^{(h)}_{t,k} = 1 .$$
#
# The video shows one row $a_{t,\cdot}$ per answer token. Heads are shown one at a time or fused:
# mean $\bar a = \frac{1}{H}\sum_h a^{(h)}$ (still sums to 1) or max $\max_h a^{(h)}$ (does not: it is
# renormalised before any share is read). The **share** of a set $S$ of positions (image patches, prompt
# text, special markers, earlier answer tokens) is $m_S = \sum_{k \in S} a_{t,k} / \sum_{k<t} a_{t,k}$; the
# **object mass** is the share of the attention over the image that falls on the asked-about object,
# $\sum_p \tilde a_p\, c_p$ with $\tilde a$ the row renormalised over the patches and $c_p$ the fraction of
# patch $p$ the object's mask covers. Uniform attention scores the object's area fraction: that is the
# chance level printed beside every such number.
#
# **Intuition.** A row is where the model *read from* to write the next token: a head that has learned to find
# the named object puts its weight on that object's patches.
#
# **When it fails.**
# - *Attention is not explanation* ([Jain & Wallace, 2019](https://arxiv.org/abs/1902.10186);
#   [Wiegreffe & Pinter, 2019](https://arxiv.org/abs/1908.04626)): a head can look at a patch and ignore what
#   it finds. Below, for the answer word, layer 1's attention puts 0.449 of its row on the image, but relevance
#   (which weighs attention by its effect on the logit) puts only 0.096 there.
# - *Sinks* ([Xiao et al., 2023](https://arxiv.org/abs/2309.17453)): the first token and a few patches take a
#   large share of every row whatever the token — here 0.306 of each layer 1 row on average.
# - *Averaging heads dilutes*: over the 132 held-out questions, layer 1's supervised head 0 puts 0.489 of its
#   image attention on the object, the mean over heads 0.318 (chance 0.052, the object's share of the image). The video therefore shows,
#   per layer, the head view with the most object mass (`heads = "auto"`), chosen on held-out questions, not
#   on this sample.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image as ShowImage
from IPython.display import Markdown, Video, display

from vizkit import render, widgets
from vizkit.scenarios import baseline, seed_everything
from vizkit.scenarios import vlm_attention_video as va

_before = baseline(globals())

# %% tags=["parameters"]
model_path: str = ""  # a local VLM folder of a supported family (docs: VLM families); empty: the zoo's tiny_vlm
benchmark_json: str = ""  # JSON list of {image, problem, solution}; empty means tiny_vlm's sample benchmark
image_dir: str = ""  # folder the image paths are relative to; empty means the JSON's folder
sample_idx: int = 1  # which sample
layer_idx: int = -1  # decoder layer; -1 means the seed's 20, or the last layer of a smaller model
layers: list = [1, 2]  # several decoder layers (one video each); empty means [layer_idx]
start_phrase: str = (
    "Based on the following requirements"  # the video starts where this phrase begins; empty means the first token
)
heads: str = "auto"  # auto (per layer, the head view with the most object mass, tiny_vlm), mean, max or a head index
max_image_num: int = 2  # use at most this many images per sample
max_new_tokens: int = 64  # generation length
mode: str = "generate"  # generate, or solution (teacher-force the sample's reference solution)
fps: int = 4  # video frames per second
sinks: str = "keep"  # keep the attention sinks in the video, or mask them (rows renormalised over the rest)
ground_truth_questions: int = 200  # tiny_vlm: test items drawn for the layer x head table (0 skips it)
explain_token: str = (
    "-1"  # answer token to explain by relevance, an index (negative from the end) or a word; empty skips it
)
relevance_layers: list = []  # decoder layers the relevance runs over; empty means all
output_dir: str = ""  # run folder; empty means a new runs/<timestamp>-vlm-video/
overwrite: bool = False  # allow writing into a non-empty output_dir
interactive: bool = True  # embed the video and show the widget explorer (files are always written)
seed: int = 0  # seed for every random source

# %% [markdown]
# ## The sample
#
# The image(s) and the question. For a tiny_vlm sample whose question names one object, the object's
# ground-truth mask is shown beside the image (it is what the object mass below is measured against).

# %%
params = va.check_notebook_parameters(globals(), _before)  # unknown names or bad values stop here
seed_everything(seed)
if benchmark_json:
    json_path, images_root = Path(benchmark_json), image_dir or None
else:
    json_path, images_root = va.default_benchmark()
sample, images, notes = va.load_sample(json_path, images_root, sample_idx, max_image_num)  # bad input stops here
viz = va.AttentionVisualizer(model_path or None, max_image_num=max_image_num)
mask = va.sample_object_mask(sample) if model_path == "" else None
for note in notes:
    print("note:", note)
print(f"model: {viz.vlm.name} ({viz.vlm.model_type}, {viz.vlm.num_layers} decoder layers x {viz.vlm.num_heads} heads)")
print("problem:", sample["problem"])
panels = [render.Panel(image=np.asarray(im), title=f"image {k}", kind="image") for k, im in enumerate(images)]
if mask is not None:
    object_only = np.asarray(images[0]) * mask[..., None]
    panels.append(render.Panel(image=object_only, title=f"asked-about object ({mask.mean():.1%})", kind="image"))
    print(f"the object covers {mask.mean():.3f} of image 0: uniform attention's object mass (chance)")
fig = render.figure_grid([panels], figsize=(2.8 * len(panels), 2.8))
display(ShowImage(data=widgets.frame_png(render.figure_to_array(fig))))  # a PNG, also under the Agg backend
plt.close(fig)

# %% [markdown]
# ## The video
#
# Generate (or teacher-force) the answer with the rows of the chosen layers captured, then write one video per
# layer, a contact sheet, `attention.npz` and `report.md` into the run folder. With `heads = "auto"` the line
# below the answer says which head view each layer's video shows, and why.

# %%
# NBVAL_CHECK_OUTPUT
mp4 = viz.create_attention_visualization_for_sample(
    sample,
    images,
    layer_idx=None if layer_idx < 0 else layer_idx,
    start_phrase=start_phrase,
    layers=layers or None,
    heads=heads,
    max_new_tokens=max_new_tokens,
    mode=mode,
    output_dir=output_dir or None,
    overwrite=overwrite,
    fps=fps,
    ground_truth=ground_truth_questions if ground_truth_questions > 0 else False,
    sinks=sinks,
    explain_token=explain_token or None,
    relevance_layers=relevance_layers or None,
)
run, trace, shown_heads = viz.last["folder"], viz.last["trace"], viz.last["heads"]
print(f"answer ({trace.num_answer_tokens} tokens): {trace.text.strip()}")
print(f"video from token {trace.start}: {len(trace.frame_tokens)} frames per layer, layers {sorted(trace.rows)}")
print("head view per layer:", {f"layer {i}": va.head_label(h) for i, h in shown_heads.items()})

# %% tags=["nbval-ignore-output"]
print("run folder:", run)
if interactive:
    display(Video(mp4, embed=True, width=800))
else:
    display(Markdown(f"[the video]({mp4})"))

# %% [markdown]
# ## Contact sheet
#
# Evenly spaced frames of the first layer's video. Left: the text so far, each earlier token coloured by the
# current token's attention (scaled to the largest weight among the shown text tokens), the current token
# blue. Right: each image's patch grid coloured by the attention over its patches (scaled to the largest
# image weight). The first line names the layer, the head view and the token (0-based); the second gives the
# row's shares on image / prompt / special / earlier answer, which sum to 1.

# %%
first = sorted(trace.rows)[0]
display(ShowImage(filename=str(run / f"contact_sheet_layer{first}.png")))

# %% [markdown]
# ## Where the answer looks, token by token
#
# The share of each row on the image tokens, the prompt text, special markers and the earlier answer tokens
# (they sum to 1), and the entropy of its distribution over the image patches (uniform over the 36 patches of
# tiny_vlm would be ln 36 = 3.58 nats). Each line style is one layer with the head view the video shows for it
# (with `heads = "auto"`, the head the ground-truth table below finds looking at the object).

# %%
# NBVAL_CHECK_OUTPUT
shares = viz.last["shares"]
display(ShowImage(filename=str(run / "attention_shares.png")))
print(shares.groupby(["layer", "head"])[["image", "prompt", "special", "answer", "image_entropy"]].mean().round(3))

# %% [markdown]
# ## Attention sinks
#
# Some positions take a large share of every row whatever the token is — the first token, a few image patches.
# A sink here is position 0 plus the prompt positions whose received attention (averaged over the answer rows
# and heads) is an outlier, above Q3 + 3 IQR. With `sinks = "mask"` the video hides them and shows the rest of
# the distribution.
#
# An outlier rule cannot tell a sink from a real look-up: when the answer keeps returning to the asked-about
# object, those patches are outliers too. Read the list with the image: a sink sits on the same few positions
# whatever the question; a look-up moves with it.

# %%
# NBVAL_CHECK_OUTPUT
for layer in sorted(trace.rows):
    where = ", ".join(f"{int(t)} ({trace.pmap.label(int(t))})" for t in trace.sinks(layer))
    share = trace.sink_share(layer)
    print(f"layer {layer}: sinks {where}; share of each row on them: mean {share.mean():.3f}, max {share.max():.3f}")

# %% [markdown]
# ### Method in brief: relevance of an answer token
#
# Relevance asks the model instead of reading one layer ([Chefer et al., 2021](https://arxiv.org/abs/2103.15679)).
# The score $s$ is the logit of the chosen answer token where it was predicted. For every decoder layer $l$ its
# attention $A^{(l)}$ is weighted by the gradient of $s$, negative contributions dropped and heads averaged, and
# the layers are chained from the first to the last, starting from the identity:
#
# $$\bar A^{(l)} = \mathbb{E}_h\!\left[\left(\frac{\partial s}{\partial A^{(l)}} \odot A^{(l)}\right)^{+}\right], \qquad R \leftarrow R + \bar A^{(l)} R .$$
#
# The row of $R$ at the query is the relevance of every earlier position.
#
# **Intuition.** A position matters when attending to it moved the logit, through every layer, not just when
# one layer looked at it.
#
# **When it fails.** Gradients are local (a saturated logit gives small gradients everywhere); dropping negative
# contributions hides positions that argued against the token; and the rule ignores the MLPs and value vectors
# except through the gradient. Read it as a second opinion beside attention, not as ground truth.

# %% [markdown]
# ## Why this word? Relevance beside attention
#
# Left: the image; middle: the attention of the first video layer for the explained token, averaged over the
# heads (so it can differ from the one head the video shows); right: its relevance. Each panel is scaled to its own maximum; the titles give each map's share on the image positions,
# and the list below names the positions that mattered most.
#
# Read the two together. Here the explained token is the last word of the answer, the object's name.
# Layer 1's attention puts 0.449 of its row on the image; relevance puts 0.096 there, and most of it on earlier
# *text*: by the time the model writes "Answer: triangle" it repeats its own earlier words. The first mention
# ("is a triangle", exercise 3) is no different: relevance gives the image 0.082 of its weight there, while
# attention gives it 0.506. The attention map alone would have told you the image decided this word.
# Relevance is a second opinion, not ground truth: on this sample its largest image share is at a filler word
# (" for", 0.648), where attention's is 0.622.

# %%
# NBVAL_CHECK_OUTPUT
rel = viz.last["relevance"]
if rel is not None:
    display(ShowImage(filename=str(run / f"relevance_token{rel.token}.png")))
    print(
        f"answer token {rel.token} ({rel.piece.strip()!r}), logit {rel.score:.2f}, relevance over layers {rel.layers}"
    )
    print(
        f"share on image positions: attention (layer {rel.attention_layer}) "
        f"{va.image_share(trace, rel.attention):.3f}, relevance {va.image_share(trace, rel.relevance):.3f}"
    )
    print("most relevant positions:")
    for pos, label, text, value in trace.top_positions(rel.relevance, 5):
        print(f"  {pos:4d}  {label:16s} {text.strip()!r:14s} {value:.4f}")
else:
    print("no token explained (explain_token is empty)")

# %% [markdown]
# ## Ground truth (tiny_vlm): which head looks at the asked-about object?
#
# Over held-out questions that name one object, per decoder layer and head view (each head, the mean and the
# max over heads): how often the answer token's attention over the image peaks inside the object's mask (the
# pointing game, from the answer token's own row and from the step that produced it — what the video shows),
# and the object mass of that step's row. `chance` is what attention without information scores on all three:
# the object's share of the image (a random pixel's hit rate = uniform attention's mass); the last columns flag
# what is at or below it. Layer 1, head 0 was trained with attention supervision; the other heads were not.

# %%
# NBVAL_CHECK_OUTPUT
gt = viz.last["ground_truth"]
if gt is not None:
    table, info = gt
    print(
        f"{info['questions']} questions; chance (random pixel = uniform attention's mass): {info['random_pixel']:.3f}"
    )
    print(table.round(3).to_string(index=False))
    print("chosen for the video (most object mass):", va.choose_heads(table, sorted(trace.rows)))
else:
    print("ground-truth table skipped (tiny_vlm only, ground_truth_questions > 0)")

# %% [markdown]
# ## Explore
#
# Move the token slider, switch the layer and the head: the frame is redrawn from the captured rows (no model
# runs). The dropdowns name layers and heads as the frame's first line does (0-based).

# %% tags=["nbval-ignore-output"]
if interactive:
    explorer = va.VLMAttentionExplorer(trace, head=shown_heads, sinks=sinks)
    display(explorer.widget)

# %% [markdown] tags=["exercise"]
# ## Exercise 1: how much does averaging the heads dilute?
#
# On this sample, the share of layer 1's image attention that lands on the asked-about object when the model
# writes its answer word (the last answer token) is `va.trace_object_mass(trace, 1, 0, mask)[-1]` for head 0.
# Change the head to `"mean"` — what the video showed before `heads = "auto"` — and read the number again.
# How much lower is it, and how far above chance (printed under the image) does each stay?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
if mask is not None:  # tiny_vlm samples whose question names an object
    mean_mass, head0_mass = (
        va.trace_object_mass(trace, 1, "mean", mask)[-1],
        va.trace_object_mass(trace, 1, 0, mask)[-1],
    )
    print(
        f"answer: layer 1 object mass, mean over heads = {mean_mass:.3f} (head 0: {head0_mass:.3f}, chance {mask.mean():.3f})"
    )

# %% [markdown] tags=["exercise"]
# ## Exercise 2: a share that is a share
#
# In the explorer choose layer 1 and "max over heads", and move the slider to the last token. The max over
# heads sums to more than 1 over the row, so the frame renormalises it before reading shares (an earlier
# version printed "image 1.98"). What share of the row does the frame give to the image now?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
print(
    f"answer: image share, layer 1, max over heads, last token = {va.token_shares(trace, 1, 'max')['image'].iloc[-1]:.3f}"
)

# %% [markdown] tags=["exercise"]
# ## Exercise 3: when did the image matter?
#
# Set `explain_token` to the answer word itself (here `"triangle"`): a word names the first answer token that
# starts with it, the first mention ("The yellow object is a triangle"). Rerun: which share of the relevance
# falls on the image positions now, compared with the last word's 0.096 above? Did the image matter more
# when the model first named the object?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
if mask is not None and rel is not None:  # tiny_vlm: the answer word is a real word of the answer
    first_mention = va.answer_relevance(viz.vlm, trace, rel.piece, attention_layer=1)
    share = va.image_share(trace, first_mention.relevance)
    print(
        f"answer: relevance share on the image, answer token {first_mention.token} ({rel.piece.strip()!r}) = {share:.3f}"
    )

# %% tags=["nbval-ignore-output"]
print("report:", run / "report.md")
for p in sorted(run.iterdir()):
    print("  ", p.name)
