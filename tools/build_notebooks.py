"""Write the scenario notebooks from the cell lists below (then execute them with papermill).

    .venv/bin/python tools/build_notebooks.py            # write notebooks/*.ipynb (no outputs)
    .venv/bin/python tools/build_notebooks.py --execute  # and execute them in place (kernel python3)

Notebooks hold orchestration and prose only; everything they call lives in vizkit.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def md(text: str) -> nbf.NotebookNode:
    return nbf.v4.new_markdown_cell(text.strip())


def code(text: str, *tags: str) -> nbf.NotebookNode:
    cell = nbf.v4.new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


NB01 = [
    md("""
# Scenario 1 — what drives a deepfake detector's *real* and *fake* decisions?

Gradient-weighted attention of a CLIP-ViT detector (seed 000): for every transformer block the
attention `A` is weighted by its gradient for the explained class, `Ā = fuse(heads, (∇A ⊙ A)⁺)`,
and the blocks are combined either by Chefer et al.'s relevance propagation (`R ← R + Ā R`,
`aggregation="relevance"`) or by the plain mean of the per-layer maps (`"mean"`, what scripts like
the seed's compute). The **real-class** and the **fake-class** maps come from one forward pass;
every head fusion (mean / max / min) and layer choice (last, last 4, all) is then computed from
the cached attention and gradients.

The default model is the zoo's `face_forgery_detector` (DeepfakeBench's CLIP detector layout,
trained here on real faces with local manipulations whose masks are known), so the last section
can measure how faithful each variant is. Your own detector: `model` = a DeepfakeBench `.pth`
(with `model_config` = its YAML) or a Hugging Face directory. The same on the command line:
`vizkit detector-attention --help`.
"""),
    code("""
import torch
from IPython.display import Image, Markdown, display

import vizkit
from vizkit import render
from vizkit.scenarios import baseline, run_folder, seed_everything
from vizkit.scenarios import clip_detector_attention as cda

_before = baseline(globals())
"""),
    code("""
model: str = "face_forgery_detector"  # the zoo detector, or a weights file (.pth / .safetensors) or a HF directory
model_config: str = ""  # DeepfakeBench detector YAML (resolution, mean, std, class_names)
images: str = ""  # an image or a folder; empty means zoo test faces, fake and real alternating
num_images: int = 6  # how many zoo test faces when images is empty
target_layers: str = "last_4"  # blocks combined in the per-image maps: last, last_4, all, or indices such as -4,-3,-2,-1
head_fusion: str = "mean"  # mean | max | min
aggregation: str = "relevance"  # relevance (Chefer propagation) | mean (plain per-layer mean)
layer_modes: str = "last_layer,last_4_layers,all_layers"  # layer modes compared in the multi-layer figures
faithfulness_samples: int = 100  # held-out fakes and as many reals for the faithfulness table; 0 skips it
output_dir: str = ""  # run folder; empty means a new runs/<timestamp>-01_clip_detector_attention/
overwrite: bool = False  # allow writing into a non-empty output_dir
interactive: bool = True  # show the widget explorer (static figures are always written)
seed: int = 0  # seed for every random source
device: str = "cpu"  # cpu | cuda | auto
""", "parameters"),
    code("""
params = cda.check_notebook_parameters(globals(), _before)  # unknown names or bad values stop here, before any work
seed_everything(seed)
run_dir = run_folder(output_dir or None, "01_clip_detector_attention", overwrite=overwrite)
device_name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
detector = cda.load_detector_model(model, model_config or None, device=device_name)
layers = cda.parse_layers(target_layers)
modes = [m.strip() for m in layer_modes.split(",") if m.strip()]
print("run folder:", run_dir)
"""),
    md("## The detector"),
    code("""
# NBVAL_CHECK_OUTPUT
gradcam = cda.CLIPViTGradCAM(detector.model, layers, head_fusion, aggregation, detector.class_names)
print(f"{type(detector.model).__name__} from {detector.info['source']}: classes {detector.class_names}")
print(f"{len(gradcam.layer_names)} transformer blocks; target layers: {gradcam.target_layers}")
"""),
    md("## Real-class and fake-class maps\nOne forward pass per batch gives both classes' maps; the files use the seed's names."),
    code("""
# NBVAL_CHECK_OUTPUT
inputs, names, samples = cda.notebook_images(images, num_images, seed)
results, failures = cda.analyze_images(detector, inputs, run_dir, layers, head_fusion, aggregation,
                                       multi_layer=True, stems=names)
for r in results:
    print(f"{r.stem:>9}: predicted {r.class_names[r.predicted]:<4} p(fake) = {r.probs[detector.fake_index]:.3f}, "
          f"top-20 % IoU {r.numbers['top20_iou']:.2f}")
for name, err in failures:
    print("skipped", name, err)
"""),
    code("""
first = results[0]
for key in ("real_attention", "fake_attention", "comparison"):
    display(Image(filename=str(first.files[key])))
display(Markdown(f"**{first.stem}**: {first.sentence}"))
"""),
    md("## Layer modes\nThe last layer alone, the last four, and all layers, for the real and the fake class."),
    code("""
display(Image(filename=str(first.files["layers"])))
"""),
    md("## Faithfulness on held-out faces\nEvery head fusion × layer mode × aggregation, scored against the manipulation masks of held-out fakes (pointing game, energy in the mask, deletion AUC), the spread of the maps (entropy) and a weight-randomisation sanity check."),
    code("""
# NBVAL_CHECK_OUTPUT
table, notes = None, []
if faithfulness_samples:
    from vizkit import zoo

    held_out = zoo.dataset("face_forgery_detector", "test")
    fakes = [s for s in held_out if s.label == 1][:faithfulness_samples]
    reals = [s for s in held_out if s.label == 0][:faithfulness_samples]
    table = cda.faithfulness_table(detector, fakes, reals, layer_modes=modes)
    notes = cda.faithfulness_observations(table)
    print(table[["head_fusion", "layer_mode", "aggregation", "pointing", "energy_in_mask", "deletion_auc"]]
          .round(3).to_string(index=False))
"""),
    code("""
if table is not None:
    display(Markdown("\\n".join(f"- {n}" for n in notes)))
    display(table.round(3))
"""),
    md("## Report"),
    code("""
figures = [results[0].files[k] for k in ("comparison", "layers")]
report = cda.write_attention_report(run_dir, params, detector, results, table, notes, failures, figures)
print("report:", report)
"""),
    md("## Explore\nMove the controls: the maps are recomputed from the cached attention and gradients, without another forward or backward pass."),
    code("""
if interactive:
    x = torch.stack([detector.preprocess(im) for im in inputs[:8]])
    cached = gradcam.explain(x)
    explorer = cda.DetectorAttentionExplorer(cached, [r.image for r in results[:8]], names[:8],
                                             detector.real_index, detector.fake_index)
    display(explorer)
""", "nbval-ignore-output"),
    code("""
print("outputs:")
for p in sorted(run_dir.iterdir()):
    print("  ", p.name)
""", "nbval-ignore-output"),
]

NB02 = [
    md("""
# Scenario 2 — ViT attention on handwritten digits

Where does a Vision Transformer look when it reads a digit? This notebook captures the
**CLS → patch attention** of every layer and head of a small ViT (seed 001's configuration:
28×28 input, 7×7 patches, 128-d, 4 heads, 6 layers) trained on the real MNIST, and shows:

1. per sample, the CLS attention of every layer (top: raw, bottom: overlay; red high, blue low),
2. every head of a chosen layer,
3. the layer evolution, and attention rollout next to the raw last-layer attention,
4. statistics over the samples per layer and head (max, mean, entropy, mean attention distance),
5. a markdown report whose observations are computed from the numbers,
6. an interactive explorer (sample × layer × head × head fusion) that redraws from cached attention.

Run it headless with papermill, e.g.
`papermill -k python3 notebooks/02_vit_mnist_attention.ipynb out.ipynb -p num_samples 3 -p layers 0,5 -p interactive False`.
`papermill --help-notebook notebooks/02_vit_mnist_attention.ipynb` lists the parameters.
Everything this notebook writes goes into one run folder (printed below).
"""),
    code("""
import torch
from IPython.display import Image, Markdown, display

import vizkit
from vizkit.scenarios import baseline, run_folder, seed_everything
from vizkit.scenarios import vit_mnist_attention as vma

_before = baseline(globals())
"""),
    code("""
model: str = "mnist_vit"  # mnist_vit (the zoo model) or the path of your own ViT checkpoint (.pth / .safetensors)
model_config: str = ""  # with a checkpoint path: JSON file with seed 001's config (img_size, patch_size, ...)
num_samples: int = 8  # how many test digits to analyse
selection: str = "one_per_class"  # one_per_class | indices | misclassified_first
indices: list = []  # MNIST test-set indices, used when selection is indices
layers: str = "all"  # blocks to capture: all, last_4, or indices such as 0,2,5
heads: str = "all"  # heads shown in the per-head figures: all, or indices such as 0,2
head_layer: int = -1  # the layer whose heads are shown (negative counts from the end)
head_fusion: str = "mean"  # how heads are fused for per-layer maps and rollout: mean | max | min
output_dir: str = ""  # run folder; empty means a new runs/<timestamp>-02_vit_mnist_attention/
overwrite: bool = False  # allow writing into a non-empty output_dir
interactive: bool = True  # show the widget explorer (static figures are always written)
seed: int = 0  # seed for every random source
device: str = "cpu"  # cpu | cuda | auto
""", "parameters"),
    code("""
params = vma.check_notebook_parameters(globals(), _before)  # unknown names or bad values stop here, before any work
seed_everything(seed)
torch.use_deterministic_algorithms(True, warn_only=True)
run_dir = run_folder(output_dir or None, "02_vit_mnist_attention", overwrite=overwrite)
device_name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
visualizer = vma.AttentionVisualizer(model if model != "mnist_vit" else None, config=model_config or None,
                                     device=device_name, output_dir=run_dir, head_fusion=head_fusion)
print("run folder:", run_dir)
"""),
    md("## The model\nThe zoo model by default; its accuracy is measured here on the 10,000 MNIST test images."),
    code("""
# NBVAL_CHECK_OUTPUT
net = visualizer.load_optimal_model()
print(f"{type(net).__name__}: {sum(p.numel() for p in net.parameters()):,} parameters")
print(f"test accuracy: {visualizer.test_accuracy():.2%}")
"""),
    md("## Samples and their attention\nOne batched forward pass captures the attention of every chosen layer for all samples; every figure and the explorer below read from that cache."),
    code("""
# NBVAL_CHECK_OUTPUT
samples = visualizer.get_test_samples(num_samples, selection, indices)
cache = visualizer.analyze(samples, layers=vma.parse_index_list(layers, ("all",)))
print("test-set indices:", visualizer.sample_indices)
print("labels:     ", cache.labels.tolist())
print("predictions:", cache.preds.tolist())
print("layers:", cache.layers, "| grid:", cache.attn.grid, "| prefix tokens:", cache.attn.prefix_tokens)
"""),
    code("""
head_list = None if str(heads).strip().lower() == "all" else vma.parse_index_list(heads)
figures = []
for i, (image, label) in enumerate(samples):
    figures.append(visualizer.visualize_attention_patterns(image, label, i))
    figures.append(visualizer.analyze_attention_heads(image, label, i, layer=head_layer, heads=head_list))
    figures.append(visualizer.create_layer_comparison(image, label, i))
for path in figures[:3]:  # the first sample here; all samples are in the run folder
    display(Image(filename=str(path)))
"""),
    md("## Statistics per layer and head"),
    code("""
# NBVAL_CHECK_OUTPUT
figures.append(visualizer.create_attention_statistics())
statistics = visualizer.statistics()
per_layer = vma.layer_summary(statistics)
print("mean entropy of the CLS row per layer (nats):", per_layer["entropy"].round(2).tolist())
print("mean attention distance per layer (patches):", per_layer["distance"].round(2).tolist())
"""),
    code("""
display(Image(filename=str(figures[-1])))
per_layer.round(4)
"""),
    md("## Report\nThe observations are sentences generated from the statistics above."),
    code("""
from vizkit import stats

notes = vma.observations(statistics, cache, head_fusion)
report = vma.write_report(run_dir, params, visualizer.model_info, visualizer.test_accuracy(),
                      float((cache.preds == cache.labels).float().mean()), statistics, stats.summarize(statistics),
                      notes, figures, visualizer.sample_indices, cache)
display(Markdown("\\n".join(f"- {n}" for n in notes)))
print("report:", report)
"""),
    md("## Explore\nMove the sliders: the maps are redrawn from the cached attention, without another forward pass."),
    code("""
if interactive:
    explorer = vma.AttentionExplorer(cache, head_fusion=head_fusion)
    display(explorer)
""", "nbval-ignore-output"),
    code("""
print("outputs:")
for path in sorted(run_dir.iterdir()):
    print("  ", path.name)
""", "nbval-ignore-output"),
]

NB03 = [
    md("""
# Scenario 3 — Grad-CAM of a deepfake detector, and an evaluation that explains its mistakes

Seed 002: Grad-CAM and Grad-CAM++ on named transformer layers of a CLIP deepfake detector
(`encoder.layers.N`, the Hugging Face names inside the vision model; negative N counts from the
end; `encoder.layers.N.layer_norm1` reads block N's input), compared across layers, and an
**evaluation over a test set**: AUC, accuracy, EER and AP (scikit-learn; video AUC when frames
are grouped by video), every prediction in `predictions.csv`, and Grad-CAM maps with the seed's
file names and metadata for the wrong predictions (or all).

Every layer is explained from one forward pass and one backward from the explained score (by
default the fake logit) down to the earliest layer. The last block's *output* is zero for a
detector that reads only the CLS token, so the default layers are block *inputs*. The default
model is the zoo's `face_forgery_detector` on its held-out faces, whose fakes have manipulation
masks: the localisation table shows which layer and method point at the manipulated region.
The run is resumable (chunk files in the run folder) and the explorer at the end reads the saved
run instead of recomputing. The same on the command line: `vizkit evaluate --help`,
`vizkit detector-gradcam --help`.
"""),
    code("""
from pathlib import Path

import torch
from IPython.display import Image, Markdown, display

from vizkit.scenarios import baseline, markdown_table, run_folder, seed_everything
from vizkit.scenarios import detector_gradcam_eval as dge

_before = baseline(globals())
"""),
    code("""
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
""", "parameters"),
    code("""
params = dge.check_notebook_parameters(globals(), _before)  # unknown names or bad values stop here, before any work
seed_everything(seed)
run_dir = output_dir or run_folder(None, "03_detector_gradcam_eval")
device_name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
layer_names = [n.strip() for n in layers.split(",") if n.strip()] or None
"""),
    md("## Evaluation\nThe test set in chunks of `batch_size` images (rerunning with the same parameters resumes an interrupted run); metrics over the whole set."),
    code("""
# NBVAL_CHECK_OUTPUT
summary = dge.run_evaluation(run_dir, detector_path=detector_path or None, weights_path=weights_path or None,
                             test_dataset=test_dataset, max_samples=max_samples, gradcam_enabled=True,
                             layers=layer_names, method=method,
                             table_methods=[m.strip() for m in table_methods.split(",") if m.strip()], target=target,
                             batch_size=batch_size, gradcam_samples=gradcam_samples,
                             save_all_predictions=save_all_predictions, overwrite=overwrite, device=device_name)
m = summary.metrics
print(f"{m['model']} on {m['dataset']}: {m['samples']} images ({m['real']} real, {m['fake']} fake), "
      f"{m['unreadable']} unreadable")
print(dge.metrics_table(m).to_string(index=False))
c = m["confusion"]
print(f"confusion (rows true real / fake, columns predicted real / fake): "
      f"{c['true_real_pred_real']} {c['true_real_pred_fake']} / {c['true_fake_pred_real']} {c['true_fake_pred_fake']}")
"""),
    code("""
display(Image(filename=str(summary.run_dir / "figures" / "score_distribution.png")))
"""),
    md("## Layers\nWhich module each name maps to in this detector, and what it reads."),
    code("""
# NBVAL_CHECK_OUTPUT
display(Markdown(markdown_table(dge.layer_table(dge.resolve_gradcam_layers(
    dge.load_eval_detector(detector_path or None, weights_path or None).model,
    [li.name for li in summary.layers])), index=False)))
"""),
    md("## Layer comparison\nThe first sample folders (wrong predictions unless `save_all_predictions`): the input, one overlay per layer and the layers combined, the prediction in the title."),
    code("""
# NBVAL_CHECK_OUTPUT
print(summary.samples[["sample", "index", "label", "pred", "prob"]].head(num_compare).round(3).to_string(index=False))
for name in summary.samples["sample"].head(num_compare):
    print((summary.run_dir / name / f"{name}_metadata.txt").read_text())
    display(Image(filename=str(summary.run_dir / name / "gradcam_comparison.png")))
"""),
    md("## The worst mistakes\nThe most confident wrong predictions, each with its layers-combined map."),
    code("""
worst = summary.run_dir / "figures" / "worst_mistakes.png"
if worst.is_file():
    display(Image(filename=str(worst)))
"""),
    md("## Which layer finds the manipulation?\nOn the fakes with masks: the pointing game (the map's maximum inside the manipulated region; tol1 within 1 px) and the share of the map's energy inside it, per layer and method."),
    code("""
# NBVAL_CHECK_OUTPUT
if summary.localization is not None:
    print(summary.localization.round(3).to_string(index=False))
else:
    print("no manipulation masks in this test set")
"""),
    code("""
print("report:", summary.report)
""", "nbval-ignore-output"),
    md("## Explore\nSample × layer × method, or the wrong predictions only: every map is read from the run folder, nothing is recomputed."),
    code("""
if interactive:
    explorer = dge.DetectorGradCAMExplorer(summary.run_dir)
    display(explorer)
""", "nbval-ignore-output"),
    code("""
print("outputs:")
for p in sorted(Path(summary.run_dir).iterdir()):
    print("  ", p.name)
""", "nbval-ignore-output"),
]

NB04 = [
    md("""
# Scenario 4 — CLIP image–text Grad-CAM

Which regions of an image make a CLIP model match a text? Given class texts (a list, or a JSON
file `{"name": "description"}` whose names label the bars and whose descriptions are encoded),
this notebook explains the target text — the one you name, or the most similar one — with any
vizkit CAM method on the image encoder, at an automatically chosen layer (ResNet / ConvNeXt:
last stage; EfficientNet: last convolutional block; ViT: the last block read at its input; any
other encoder: the last module with a spatial output). The explained score is the image–text
similarity (logit scale × cosine), or its softmax probability over the texts when
`probability` is true.

The default model is the zoo's `shapes_clip` (an open_clip CLIP with a small hybrid ViT image
tower — a convolutional stem, then transformer blocks over an 8 × 8 token grid — trained here on
coloured-shape scenes with ground-truth masks; `shapes_clip_cnn` is its ResNet twin), so the maps can be scored: the last section measures, per CAM
method, how often the map's maximum falls inside the named object on held-out scenes.
The same flags exist on the command line: `vizkit clip-gradcam --help`.
"""),
    code("""
from pathlib import Path

import numpy as np
import torch
from IPython.display import Image as ShowImage, Markdown, display
from PIL import Image

import vizkit
from vizkit import render, zoo
from vizkit.scenarios import baseline, image_files, run_folder, seed_everything
from vizkit.scenarios import clip_text_gradcam as cg

_before = baseline(globals())
"""),
    code("""
model: str = "shapes_clip"  # zoo model (shapes_clip, shapes_clip_cnn), an open_clip name with model_path, or a HF CLIP directory
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
""", "parameters"),
    code("""
params = cg.check_notebook_parameters(globals(), _before)  # unknown names or bad values stop here
seed_everything(seed)
run_dir = run_folder(output_dir or None, "04_clip_text_gradcam", overwrite=overwrite)
device_name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
adapter = cg.load_clip_model(model, model_path or None, image_encoder=image_encoder or None,
                             text_encoder=text_encoder or None, embed_dim=embed_dim, img_size=img_size, device=device_name)
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
"""),
    md("## Explanations\nEach image toward its target text: the image, the map, the overlay and the probability of every text (target highlighted)."),
    code("""
# NBVAL_CHECK_OUTPUT
results, figures = [], []
for path, image in zip(paths, images):
    res = cg.explain_clip(adapter, [image], names, texts, target, method, target_layer, probability, [str(path)])[0]
    written = cg.save_result(res, run_dir, cg.output_stem(path, None, False))
    results.append(res)
    figures.append(written["figure"])
print(f"model {adapter.name} | method {results[0].method} | layer {results[0].layers[0]} | score: image-text {results[0].score}")
for res in results:
    t = res.target
    print(f"{Path(res.image_path).name}: target ({res.target_chosen}) {res.names[t]!r} p={res.probs[t]:.2f}")
"""),
    code("""
display(ShowImage(filename=str(figures[0])))
"""),
    md("## Every text's map\nOne batched pass explains the first image toward every class text."),
    code("""
maps, probs, used = cg.text_maps(adapter, images[0], texts, method, target_layer)
fig = cg.text_maps_figure(cg.display_crop(images[0], adapter.image_size), names, maps, probs,
                          title=f"{method} toward every text, layer {used[0]}")
figures.append(render.save_figure(fig, run_dir / "clip_gradcam_all_texts.png"))
display(ShowImage(filename=str(figures[-1])))
"""),
    md("## Pointing game per CAM method\nOn held-out scenes of the zoo's shapes data, the target is the named object's text (from all of the zoo's colour × shape prompts, whatever `class_texts` holds) and the ground truth its mask."),
    code("""
# NBVAL_CHECK_OUTPUT
table = None
if zoo_model and num_scenes > 0:
    held_out = zoo.dataset(adapter.name[4:], "test")[:num_scenes]
    table = cg.pointing_table(adapter, held_out, zoo_texts, [m.strip() for m in table_methods.split(",") if m.strip()],
                              layers=target_layer)
    print(table[["method", "scenes", "hits", "pointing_accuracy"]].round(2).to_string(index=False))
else:
    print("pointing game skipped (needs a zoo model with ground-truth masks)")
"""),
    code("""
report = cg.write_clip_report(run_dir, params, adapter, results, figures, table)
print("report:", report)
"""),
    md("## Explore\nSwitch the target text, the method and the layer (a new combination costs one forward and backward pass)."),
    code("""
if interactive:
    explorer = cg.ClipExplorer(adapter, images[0], names, texts, list(vizkit.METHODS),
                            cg.candidate_layers(adapter, images[0]))
    display(explorer)
""", "nbval-ignore-output"),
    code("""
print("outputs:")
for p in sorted(run_dir.iterdir()):
    print("  ", p.name)
""", "nbval-ignore-output"),
]

NB05 = [
    md("""
# Scenario 5 — a VLM's per-token attention over text and image, as a video

While a vision-language model writes its answer, where does it look? For every answer token this
notebook shows the attention row of the step that produced it — over the earlier text and over
each image's patch grid — and renders the rows into an mp4 that starts at a phrase such as
"Based on the following requirements" (seed 004: a Reason-RFT user with a Qwen2-VL model).

The rows are captured on the fly during `generate` (KV cache on): only the decoder layers asked
for, only the new query row per step; those layers alone switch, for the call, to an attention
function that computes the eager softmax row and then runs the layer's own kernel, so the answer
is the same as without capture. Positions are mapped to text / image *k* patch (r, c) /
generated for LLaVA and Qwen2-VL / Qwen2.5-VL (vision spans, `image_grid_thw`, 2×2 merge).

The default model is the zoo's `tiny_vlm` (a Hugging Face `LlavaForConditionalGeneration`
trained here on shape scenes, one decoder head supervised to look at the asked-about object),
on its sample benchmark; `model_path` takes a local LLaVA / Qwen2-VL / Qwen2.5-VL folder.
The same flags exist on the command line: `vizkit vlm-video --help`.
"""),
    code("""
from pathlib import Path

import numpy as np
from IPython.display import Image as ShowImage, Markdown, Video, display

from vizkit import render
from vizkit.scenarios import baseline, seed_everything
from vizkit.scenarios import vlm_attention_video as va

_before = baseline(globals())
"""),
    code("""
model_path: str = ""  # a local VLM folder of a supported family (README); empty means the zoo's tiny_vlm
benchmark_json: str = ""  # JSON list of {image, problem, solution}; empty means tiny_vlm's sample benchmark
image_dir: str = ""  # folder the image paths are relative to; empty means the JSON's folder
sample_idx: int = 1  # which sample
layer_idx: int = -1  # decoder layer; -1 means the seed's 20, or the last layer of a smaller model
layers: list = [1, 2]  # several decoder layers (one video each); empty means [layer_idx]
start_phrase: str = "Based on the following requirements"  # the video starts where this phrase begins; empty means the first token
heads: str = "mean"  # mean, max, or a head index (int)
max_image_num: int = 2  # use at most this many images per sample
max_new_tokens: int = 64  # generation length
mode: str = "generate"  # generate, or solution (teacher-force the sample's reference solution)
fps: int = 4  # video frames per second
sinks: str = "keep"  # keep the attention sinks in the video, or mask them (rows renormalised over the rest)
ground_truth_questions: int = 200  # tiny_vlm: test items drawn for the layer x head table (0 skips it)
output_dir: str = ""  # run folder; empty means a new runs/<timestamp>-vlm-video/
overwrite: bool = False  # allow writing into a non-empty output_dir
interactive: bool = True  # embed the video and show the widget explorer (files are always written)
seed: int = 0  # seed for every random source
""", "parameters"),
    code("""
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
fig = render.figure_grid([[render.Panel(image=np.asarray(im), title=f"image {k}", kind="image")
                          for k, im in enumerate(images)]], figsize=(2.8 * len(images), 2.8))
display(fig)
"""),
    md("## The video\\nGenerate (or teacher-force) the answer with the rows of the chosen layers captured, then write one video per layer, a contact sheet, `attention.npz` and `report.md` into the run folder."),
    code("""
# NBVAL_CHECK_OUTPUT
mp4 = viz.create_attention_visualization_for_sample(
    sample, images, layer_idx=None if layer_idx < 0 else layer_idx, start_phrase=start_phrase, layers=layers or None,
    heads=heads, max_new_tokens=max_new_tokens, mode=mode, output_dir=output_dir or None, overwrite=overwrite, fps=fps,
    ground_truth=ground_truth_questions if ground_truth_questions > 0 else False, sinks=sinks)
run, trace = viz.last["folder"], viz.last["trace"]
print(f"answer ({trace.num_answer_tokens} tokens): {trace.text.strip()}")
print(f"video from token {trace.start}: {len(trace.frame_tokens)} frames per layer, layers {sorted(trace.rows)}")
"""),
    code("""
print("run folder:", run)
if interactive:
    display(Video(mp4, embed=True, width=800))
else:
    display(Markdown(f"[the video]({mp4})"))
""", "nbval-ignore-output"),
    md("## Contact sheet\\nEvenly spaced frames of the first layer's video: the text so far (red = low, green = high attention of the current token, blue = the current token) and each image's patch grid."),
    code("""
first = sorted(trace.rows)[0]
display(ShowImage(filename=str(run / f"contact_sheet_layer{first}.png")))
"""),
    md("## Where the answer looks, token by token\\nThe share of each row on the image tokens, the prompt text and the earlier answer tokens, and the entropy of its distribution over the image patches."),
    code("""
# NBVAL_CHECK_OUTPUT
shares = viz.last["shares"]
display(ShowImage(filename=str(run / "attention_shares.png")))
print(shares.groupby("layer")[["image", "question", "special", "answer", "image_entropy"]].mean().round(3).to_string())
"""),
    md("## Attention sinks\nSome positions take a large share of every row whatever the token is — the first token, a few image patches. A sink here is position 0 plus the prompt positions whose received attention (averaged over the answer rows and heads) is an outlier, above Q3 + 3 IQR. With `sinks = \"mask\"` the video hides them and shows the rest of the distribution.\n\nAn outlier rule cannot tell a sink from a real look-up: when the answer keeps returning to the asked-about object, those patches are outliers too. Read the list with the image: a sink sits on the same few positions whatever the question; a look-up moves with it."),
    code("""
# NBVAL_CHECK_OUTPUT
for layer in sorted(trace.rows):
    where = ", ".join(f"{int(t)} ({trace.pmap.label(int(t))})" for t in trace.sinks(layer))
    share = trace.sink_share(layer)
    print(f"layer {layer}: sinks {where}; share of each row on them: mean {share.mean():.3f}, max {share.max():.3f}")
"""),
    md("## Ground truth (tiny_vlm)\\nHow often the answer token's attention over the image peaks inside the mask of the object the question names, per decoder layer and head, over held-out questions — next to a random pixel. Layer 1, head 0 was trained with attention supervision; the other heads were not."),
    code("""
# NBVAL_CHECK_OUTPUT
gt = viz.last["ground_truth"]
if gt is not None:
    table, info = gt
    print(f"{info['questions']} questions; random pixel: {info['random_pixel']:.3f}")
    print(table.round(3).to_string(index=False))
else:
    print("ground-truth table skipped (tiny_vlm only, ground_truth_questions > 0)")
"""),
    md("## Explore\\nMove the token slider, switch the layer and the head: both panels are redrawn from the captured rows (no model runs)."),
    code("""
if interactive:
    explorer = va.VLMAttentionExplorer(trace, head=heads if heads in ("mean", "max") else int(heads), sinks=sinks)
    display(explorer.widget)
""", "nbval-ignore-output"),
    code("""
print("report:", run / "report.md")
for p in sorted(run.iterdir()):
    print("  ", p.name)
""", "nbval-ignore-output"),
]

NOTEBOOK_CELLS = {"01_clip_detector_attention": NB01, "02_vit_mnist_attention": NB02,
                  "03_detector_gradcam_eval": NB03, "04_clip_text_gradcam": NB04,
                  "05_vlm_attention_video": NB05}


# each notebook's explorer widget: the browser test (tests/ui) reads its controls from the notebook metadata
NOTEBOOK_EXPLORERS = {
    "01_clip_detector_attention": "vizkit.scenarios.clip_detector_attention:DetectorAttentionExplorer",
    "02_vit_mnist_attention": "vizkit.scenarios.vit_mnist_attention:AttentionExplorer",
    "03_detector_gradcam_eval": "vizkit.scenarios.detector_gradcam_eval:DetectorGradCAMExplorer",
    "04_clip_text_gradcam": "vizkit.scenarios.clip_text_gradcam:ClipExplorer",
    "05_vlm_attention_video": "vizkit.scenarios.vlm_attention_video:VLMAttentionExplorer",
}


# parameters the browser test (tests/ui) runs a notebook with, injected after its parameters
# cell as papermill does: the widgets are what it tests, so the long evaluation tables that
# nbval and `make demo` already run in full are made small or skipped
UI_PARAMETERS = {
    "01_clip_detector_attention": {"faithfulness_samples": 0},
    "03_detector_gradcam_eval": {"max_samples": 100, "table_methods": "gradcam"},
    "04_clip_text_gradcam": {"num_scenes": 0},
    "05_vlm_attention_video": {"ground_truth_questions": 0},
}


def vizkit_metadata(name: str) -> dict:
    """``metadata.vizkit``: the explorer class and its controls (label, kind) as declared by the
    class, and the parameters of the browser test (``ui_parameters``)."""
    import importlib

    module, cls = NOTEBOOK_EXPLORERS[name].split(":")
    controls = getattr(importlib.import_module(module), cls).CONTROLS
    return {"explorer": {"class": NOTEBOOK_EXPLORERS[name],
                         "controls": [{"label": label, "kind": kind} for label, kind in controls]},
            "ui_parameters": UI_PARAMETERS.get(name, {})}


def build(name: str) -> Path:
    nb = nbf.v4.new_notebook()
    nb.cells = NOTEBOOK_CELLS[name]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["vizkit"] = vizkit_metadata(name)
    path = NOTEBOOKS / f"{name}.ipynb"
    nbf.write(nb, path)
    return path


def update_metadata(name: str) -> Path:
    """Rewrite only ``metadata.vizkit`` of an executed notebook (outputs kept)."""
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbf.read(path, as_version=4)
    nb.metadata["vizkit"] = vizkit_metadata(name)
    nbf.write(nb, path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(NOTEBOOK_CELLS))
    parser.add_argument("--execute", action="store_true")
    parser.add_argument("--metadata-only", action="store_true", help="only refresh metadata.vizkit, keep the outputs")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.metadata_only:
        for name in args.names:
            print("updated", update_metadata(name))
        return 0
    for name in args.names:
        path = build(name)
        print("wrote", path)
        if args.execute:
            import papermill as pm

            pm.execute_notebook(str(path), str(path), kernel_name="python3", cwd=str(NOTEBOOKS),
                                parameters={"interactive": True})
            print("executed", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
