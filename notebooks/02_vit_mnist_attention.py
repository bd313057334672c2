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
# # Scenario 2 — ViT attention on handwritten digits
#
# Where does a Vision Transformer look when it reads a digit? This notebook captures the
# **CLS → patch attention** of every layer and head of a small ViT (seed 001's configuration:
# 28×28 input, 7×7 patches, 128-d, 4 heads, 6 layers) trained on the real MNIST, and shows:
#
# 1. per sample, the CLS attention of every layer (top: raw, bottom: overlay; red high, blue low),
# 2. every head of a chosen layer,
# 3. the layer evolution, and attention rollout next to the raw last-layer attention,
# 4. statistics over the samples per layer and head (max, mean, entropy, mean attention distance),
# 5. a markdown report whose observations are computed from the numbers,
# 6. an interactive explorer (sample × layer × head × head fusion) that redraws from cached attention.
#
# Run it headless with papermill, e.g.
# `papermill -k python3 notebooks/02_vit_mnist_attention.ipynb out.ipynb -p num_samples 3 -p layers 0,5 -p interactive False`.
# `papermill --help-notebook notebooks/02_vit_mnist_attention.ipynb` lists the parameters.
# Everything this notebook writes goes into one run folder (printed below).

# %%
import torch
from IPython.display import Image, Markdown, display

from vizkit.scenarios import baseline, run_folder, seed_everything
from vizkit.scenarios import vit_mnist_attention as vma

_before = baseline(globals())

# %% tags=["parameters"]
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

# %%
params = vma.check_notebook_parameters(globals(), _before)  # unknown names or bad values stop here, before any work
seed_everything(seed)
torch.use_deterministic_algorithms(True, warn_only=True)
run_dir = run_folder(output_dir or None, "02_vit_mnist_attention", overwrite=overwrite)
device_name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
visualizer = vma.AttentionVisualizer(
    model if model != "mnist_vit" else None,
    config=model_config or None,
    device=device_name,
    output_dir=run_dir,
    head_fusion=head_fusion,
)
print("run folder:", run_dir)

# %% [markdown]
# ## The model
# The zoo model by default; its accuracy is measured here on the 10,000 MNIST test images.

# %%
# NBVAL_CHECK_OUTPUT
net = visualizer.load_optimal_model()
print(f"{type(net).__name__}: {sum(p.numel() for p in net.parameters()):,} parameters")
print(f"test accuracy: {visualizer.test_accuracy():.2%}")

# %% [markdown]
# ## Samples and their attention
# One batched forward pass captures the attention of every chosen layer for all samples; every figure and the explorer below read from that cache.

# %%
# NBVAL_CHECK_OUTPUT
samples = visualizer.get_test_samples(num_samples, selection, indices)
cache = visualizer.analyze(samples, layers=vma.parse_index_list(layers, ("all",)))
print("test-set indices:", visualizer.sample_indices)
print("labels:     ", cache.labels.tolist())
print("predictions:", cache.preds.tolist())
print("layers:", cache.layers, "| grid:", cache.attn.grid, "| prefix tokens:", cache.attn.prefix_tokens)

# %%
head_list = None if str(heads).strip().lower() == "all" else vma.parse_index_list(heads)
figures = []
for i, (image, label) in enumerate(samples):
    figures.append(visualizer.visualize_attention_patterns(image, label, i))
    figures.append(visualizer.analyze_attention_heads(image, label, i, layer=head_layer, heads=head_list))
    figures.append(visualizer.create_layer_comparison(image, label, i))
for path in figures[:3]:  # the first sample here; all samples are in the run folder
    display(Image(filename=str(path)))

# %% [markdown]
# ## Statistics per layer and head

# %%
# NBVAL_CHECK_OUTPUT
figures.append(visualizer.create_attention_statistics())
statistics = visualizer.statistics()
per_layer = vma.layer_summary(statistics)
print("mean entropy of the CLS row per layer (nats):", per_layer["entropy"].round(2).tolist())
print("mean attention distance per layer (patches):", per_layer["distance"].round(2).tolist())

# %%
# NBVAL_CHECK_OUTPUT
display(Image(filename=str(figures[-1])))
per_layer.round(4)

# %% [markdown]
# ## Report
# The observations are sentences generated from the statistics above.

# %%
# NBVAL_CHECK_OUTPUT
from vizkit import stats

notes = vma.observations(statistics, cache, head_fusion)
report = vma.write_report(
    run_dir,
    params,
    visualizer.model_info,
    visualizer.test_accuracy(),
    float((cache.preds == cache.labels).float().mean()),
    statistics,
    stats.summarize(statistics),
    notes,
    figures,
    visualizer.sample_indices,
    cache,
)
display(Markdown("\n".join(f"- {n}" for n in notes)))
print("report:", report.relative_to(run_dir.parent))  # in the run folder printed above

# %% [markdown]
# ## Explore
# Move the sliders: the maps are redrawn from the cached attention, without another forward pass.

# %% tags=["nbval-ignore-output"]
if interactive:
    explorer = vma.AttentionExplorer(cache, head_fusion=head_fusion)
    display(explorer)

# %% tags=["nbval-ignore-output"]
print("outputs:")
for path in sorted(run_dir.iterdir()):
    print("  ", path.name)
