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
target_layers: str = (
    "last_4"  # blocks combined in the per-image maps: last, last_4, all, or indices such as -4,-3,-2,-1
)
head_fusion: str = "mean"  # mean | max | min
aggregation: str = "relevance"  # relevance (Chefer propagation) | mean (plain per-layer mean)
layer_modes: str = "last_layer,last_4_layers,all_layers"  # layer modes compared in the multi-layer figures
faithfulness_samples: int = 100  # held-out fakes and as many reals for the faithfulness table; 0 skips it
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
results, failures = cda.analyze_images(
    detector, inputs, run_dir, layers, head_fusion, aggregation, multi_layer=True, stems=names
)
for r in results:
    print(
        f"{r.stem:>9}: predicted {r.class_names[r.predicted]:<4} p(fake) = {r.probs[detector.fake_index]:.3f}, "
        f"top-20 % IoU {r.numbers['top20_iou']:.2f}"
    )
for name, err in failures:
    print("skipped", name, err)

# %%
first = results[0]
for key in ("real_attention", "fake_attention", "comparison"):
    display(Image(filename=str(first.files[key])))
display(Markdown(f"**{first.stem}**: {first.sentence}"))

# %% [markdown]
# ## Layer modes
# The last layer alone, the last four, and all layers, for the real and the fake class.

# %%
display(Image(filename=str(first.files["layers"])))

# %% [markdown]
# ## Faithfulness on held-out faces
# Every head fusion × layer mode × aggregation, scored against the manipulation masks of held-out fakes (pointing game, energy in the mask, deletion AUC), the spread of the maps (entropy) and a weight-randomisation sanity check.

# %%
# NBVAL_CHECK_OUTPUT
table, notes = None, []
if faithfulness_samples:
    from vizkit import zoo

    held_out = zoo.dataset("face_forgery_detector", "test")
    fakes = [s for s in held_out if s.label == 1][:faithfulness_samples]
    reals = [s for s in held_out if s.label == 0][:faithfulness_samples]
    table = cda.faithfulness_table(detector, fakes, reals, layer_modes=modes)
    notes = cda.faithfulness_observations(table)
    # the columns that tell the variants apart (the deletion AUC hardly moves here: see the notes)
    columns = ["pointing", "energy_in_mask", "entropy_real_maps_real", "entropy_fake_maps_fake", "sanity_spearman"]
    print(table[["head_fusion", "layer_mode", "aggregation", *columns]].round(3).to_string(index=False))

# %%
# NBVAL_CHECK_OUTPUT
if table is not None:
    display(Markdown("\n".join(f"- {n}" for n in notes)))

# %%
if table is not None:
    display(table.round(3))

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
