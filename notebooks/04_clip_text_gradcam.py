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
# coloured-shape scenes with ground-truth masks; `shapes_clip_cnn` is its ResNet twin), so the maps can be scored: the last section measures, per CAM
# method, how often the map's maximum falls inside the named object on held-out scenes.
# The same flags exist on the command line: `vizkit clip-gradcam --help`.

# %%
from pathlib import Path

import torch
from IPython.display import Image as ShowImage
from IPython.display import display
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
num_scenes: int = 100  # held-out scenes for the pointing-game table (zoo models only; 0 skips it)
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
if class_texts or class_texts_file:
    names, texts = cg.load_class_texts(class_texts or None, class_texts_file or None)
else:
    names = texts = zoo_texts
    if texts is None:
        raise ValueError("give class_texts or class_texts_file for a model outside the zoo")
if image_path:
    paths = image_files([image_path])
    images = [cg.load_image(p) for p in paths]
else:  # held-out scenes with two or three shapes
    scenes = [s for s in zoo.dataset(adapter.name[4:] if zoo_model else "shapes_clip", "test") if len(s.masks) > 1][:4]
    paths = [f"scene_{i}.png" for i in range(len(scenes))]
    images = [Image.fromarray(s.image) for s in scenes]
target = None if target_text_idx < 0 else target_text_idx
print("run folder:", run_dir)

# %% [markdown]
# ## Explanations
# Each image toward its target text: the image, the map, the overlay and the probability of every text (target highlighted).

# %%
# NBVAL_CHECK_OUTPUT
results, figures = [], []
for path, image in zip(paths, images):
    res = cg.explain_clip(adapter, [image], names, texts, target, method, target_layer, probability, [str(path)])[0]
    written = cg.save_result(res, run_dir, cg.output_stem(path, None, False))
    results.append(res)
    figures.append(written["figure"])
print(
    f"model {adapter.name} | method {results[0].method} | layer {results[0].layers[0]} | score: image-text {results[0].score}"
)
for res in results:
    t = res.target
    print(f"{Path(res.image_path).name}: target ({res.target_chosen}) {res.names[t]!r} p={res.probs[t]:.2f}")

# %%
display(ShowImage(filename=str(figures[0])))

# %% [markdown]
# ## Every text's map
# One batched pass explains the first image toward every class text.

# %%
maps, probs, used = cg.text_maps(adapter, images[0], texts, method, target_layer)
fig = cg.text_maps_figure(
    cg.display_crop(images[0], adapter.image_size),
    names,
    maps,
    probs,
    title=f"{method} toward every text, layer {used[0]}",
)
figures.append(render.save_figure(fig, run_dir / "clip_gradcam_all_texts.png"))
display(ShowImage(filename=str(figures[-1])))

# %% [markdown]
# ## Pointing game per CAM method
# On held-out scenes of the zoo's shapes data, the target is the named object's text (from all of the zoo's colour × shape prompts, whatever `class_texts` holds) and the ground truth its mask.

# %%
# NBVAL_CHECK_OUTPUT
table = None
if zoo_model and num_scenes > 0:
    held_out = zoo.dataset(adapter.name[4:], "test")[:num_scenes]
    table = cg.pointing_table(
        adapter, held_out, zoo_texts, [m.strip() for m in table_methods.split(",") if m.strip()], layers=target_layer
    )
    print(table[["method", "scenes", "hits", "pointing_accuracy"]].round(2).to_string(index=False))
else:
    print("pointing game skipped (needs a zoo model with ground-truth masks)")

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
