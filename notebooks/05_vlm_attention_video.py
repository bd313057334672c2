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
# Attention shows where a layer looked, not what made the model say a word. For one answer token
# (`explain_token`) the notebook also computes its *relevance* — each layer's attention weighted by
# the gradient of that token's logit, chained over the layers (Chefer et al. 2021) — and shows it
# beside the attention.
#
# The default model is the zoo's `tiny_vlm` (a Hugging Face `LlavaForConditionalGeneration`
# trained here on shape scenes, one decoder head supervised to look at the asked-about object),
# on its sample benchmark; `model_path` takes a local folder of any family above.
# The same flags exist on the command line: `vizkit vlm-video --help`.

# %%
from pathlib import Path

import numpy as np
from IPython.display import Image as ShowImage
from IPython.display import Markdown, Video, display

from vizkit import render
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
heads: str = "mean"  # mean, max, or a head index (int)
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

# %%
params = va.check_notebook_parameters(globals(), _before)  # unknown names or bad values stop here
seed_everything(seed)
if benchmark_json:
    json_path, images_root = Path(benchmark_json), image_dir or None
else:
    json_path, images_root = va.default_benchmark()
sample, images, notes = va.load_sample(json_path, images_root, sample_idx, max_image_num)  # bad input stops here
viz = va.AttentionVisualizer(model_path or None, max_image_num=max_image_num)
for note in notes:
    print("note:", note)
print(f"model: {viz.vlm.name} ({viz.vlm.model_type}, {viz.vlm.num_layers} decoder layers x {viz.vlm.num_heads} heads)")
print("problem:", sample["problem"])
fig = render.figure_grid(
    [[render.Panel(image=np.asarray(im), title=f"image {k}", kind="image") for k, im in enumerate(images)]],
    figsize=(2.8 * len(images), 2.8),
)
display(fig)

# %% [markdown]
# ## The video
#
# Generate (or teacher-force) the answer with the rows of the chosen layers captured, then write one video per layer, a contact sheet, `attention.npz` and `report.md` into the run folder.

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
run, trace = viz.last["folder"], viz.last["trace"]
print(f"answer ({trace.num_answer_tokens} tokens): {trace.text.strip()}")
print(f"video from token {trace.start}: {len(trace.frame_tokens)} frames per layer, layers {sorted(trace.rows)}")

# %% tags=["nbval-ignore-output"]
print("run folder:", run)
if interactive:
    display(Video(mp4, embed=True, width=800))
else:
    display(Markdown(f"[the video]({mp4})"))

# %% [markdown]
# ## Contact sheet
#
# Evenly spaced frames of the first layer's video: the text so far (red = low, green = high attention of the current token, blue = the current token) and each image's patch grid.

# %%
first = sorted(trace.rows)[0]
display(ShowImage(filename=str(run / f"contact_sheet_layer{first}.png")))

# %% [markdown]
# ## Where the answer looks, token by token
#
# The share of each row on the image tokens, the prompt text and the earlier answer tokens, and the entropy of its distribution over the image patches.

# %%
# NBVAL_CHECK_OUTPUT
shares = viz.last["shares"]
display(ShowImage(filename=str(run / "attention_shares.png")))
print(shares.groupby("layer")[["image", "question", "special", "answer", "image_entropy"]].mean().round(3).to_string())

# %% [markdown]
# ## Attention sinks
# Some positions take a large share of every row whatever the token is — the first token, a few image patches. A sink here is position 0 plus the prompt positions whose received attention (averaged over the answer rows and heads) is an outlier, above Q3 + 3 IQR. With `sinks = "mask"` the video hides them and shows the rest of the distribution.
#
# An outlier rule cannot tell a sink from a real look-up: when the answer keeps returning to the asked-about object, those patches are outliers too. Read the list with the image: a sink sits on the same few positions whatever the question; a look-up moves with it.

# %%
# NBVAL_CHECK_OUTPUT
for layer in sorted(trace.rows):
    where = ", ".join(f"{int(t)} ({trace.pmap.label(int(t))})" for t in trace.sinks(layer))
    share = trace.sink_share(layer)
    print(f"layer {layer}: sinks {where}; share of each row on them: mean {share.mean():.3f}, max {share.max():.3f}")

# %% [markdown]
# ## Why this word? Relevance beside attention
#
# The video shows attention: how one layer's query row spreads over the earlier positions. A high
# weight is not a reason — a head can look at a patch and ignore what it finds. *Relevance* asks the
# model: the score is the logit of the chosen answer token where it was predicted; every decoder
# layer's attention is multiplied by the gradient of that score with respect to it, negative
# contributions dropped (∂s/∂A ⊙ A, heads averaged), and the layers are chained from the first to the
# last (R ← R + Ā R, Chefer et al. 2021). Left: the image; middle: the attention of the first video
# layer for that token; right: its relevance. Each panel is scaled to its own maximum; the titles give
# each map's share on the image positions, and the list below names the positions that mattered most.
#
# Read the two together. Here the explained token is the last word of the answer, the object's name.
# Attention puts about half its weight on the image; relevance, inside the image, lands on the same
# object, but most of it goes to earlier *text*: by the time the model writes "Answer: triangle" it
# repeats its own earlier words, and the image mattered earlier, when it first named the object. The
# attention map alone would have told you the image decided this word. Try `explain_token = "triangle"`
# (the first mention) or another word of the answer.

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
# ## Ground truth (tiny_vlm)
#
# How often the answer token's attention over the image peaks inside the mask of the object the question names, per decoder layer and head, over held-out questions — next to a random pixel. Layer 1, head 0 was trained with attention supervision; the other heads were not.

# %%
# NBVAL_CHECK_OUTPUT
gt = viz.last["ground_truth"]
if gt is not None:
    table, info = gt
    print(f"{info['questions']} questions; random pixel: {info['random_pixel']:.3f}")
    print(table.round(3).to_string(index=False))
else:
    print("ground-truth table skipped (tiny_vlm only, ground_truth_questions > 0)")

# %% [markdown]
# ## Explore
#
# Move the token slider, switch the layer and the head: both panels are redrawn from the captured rows (no model runs).

# %% tags=["nbval-ignore-output"]
if interactive:
    explorer = va.VLMAttentionExplorer(trace, head=heads if heads in ("mean", "max") else int(heads), sinks=sinks)
    display(explorer.widget)

# %% tags=["nbval-ignore-output"]
print("report:", run / "report.md")
for p in sorted(run.iterdir()):
    print("  ", p.name)
