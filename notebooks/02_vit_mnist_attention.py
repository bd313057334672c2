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
# 28×28 input, 7×7 patches on a 4×4 grid, 128-d, 4 heads, 6 layers) trained on the real MNIST, and shows:
#
# 1. per sample, the CLS attention of every layer (top: the 4×4 map, bottom: overlaid on the digit),
# 2. every head of a chosen layer,
# 3. the layer evolution, and attention rollout and gradient-weighted attention next to the raw last layer,
# 4. statistics over the first 1,000 test images per layer and head (largest weight, entropy, two
#    distances), each beside its value for **uniform attention** — the chance level,
# 5. a markdown report whose observations are computed from the numbers,
# 6. an interactive explorer (sample × layer × head × head fusion) that redraws from cached attention.
#
# **Layers and heads are numbered from 0 (0-based)**: "layer 4" is the module `blocks.4`, the fifth block;
# "head 0" is the first head. Every figure, table, sentence and slider here uses this convention.
#
# Run it headless with papermill, e.g.
# `papermill -k python3 notebooks/02_vit_mnist_attention.ipynb out.ipynb -p num_samples 3 -p layers 0,5 -p interactive False`.
# `papermill --help-notebook notebooks/02_vit_mnist_attention.ipynb` lists the parameters.
# Everything this notebook writes goes into one run folder (printed below).

# %% [markdown]
# ## What you will learn
# - how to read a ViT's CLS attention as a 4×4 map over the digit, per layer and per head, and how rollout
#   and gradient-weighted attention combine the layers;
# - three numbers that summarise an attention row — its largest weight, its entropy and its spatial spread
#   (mean attention distance) — and why each needs its **chance level** (uniform attention) beside it;
# - why a concentrated attention map is not yet an explanation: a head can put 99 % of its weight on the
#   same patch for every digit.
#
# ## What you need to know first
# - the Transformer's scaled dot-product attention, $\mathrm{softmax}(QK^\top/\sqrt{d})V$, and that a ViT cuts
#   the image into patches and prepends a learnable CLS token whose final state is classified;
# - entropy of a discrete distribution and the Euclidean distance on a grid;
# - Python and matplotlib; no GPU is needed (the model has 805,130 parameters).

# %%
import torch
from IPython.display import Image, Markdown, display

from vizkit import metrics
from vizkit.scenarios import baseline, run_folder, seed_everything
from vizkit.scenarios import vit_mnist_attention as vma

_before = baseline(globals())

# %% tags=["parameters"]
model: str = "mnist_vit"  # mnist_vit (the zoo model) or the path of your own ViT checkpoint (.pth / .safetensors)
model_config: str = ""  # with a checkpoint path: JSON file with seed 001's config (img_size, patch_size, ...)
num_samples: int = 8  # how many test digits to analyse
statistics_images: int = 1000  # the statistics are over the first N test images (1..10000)
selection: str = "one_per_class"  # one_per_class | indices | misclassified_first
indices: list = []  # MNIST test-set indices, used when selection is indices
layers: str = "all"  # blocks to capture (0-based): all, last_4, or indices such as 0,2,5
heads: str = "all"  # heads shown in the per-head figures (0-based): all, or indices such as 0,2
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
# ### Method in brief: CLS attention maps
# In layer $\ell$ and head $h$, the CLS token's query $q_0$ is compared with the keys $k_j$ of all
# $N = 17$ tokens (CLS + 16 patches); the softmax of the scores is the **CLS row** of the attention matrix:
#
# $$A^{(\ell,h)}_{0j} = \frac{\exp\left(q_0 \cdot k_j / \sqrt{d}\right)}{\sum_{j'=0}^{N-1} \exp\left(q_0 \cdot k_{j'} / \sqrt{d}\right)},
# \qquad \sum_{j} A^{(\ell,h)}_{0j} = 1 .$$
#
# Its 16 patch entries, laid back on the 4×4 grid, are the map drawn below (heads fused by their mean, max
# or min). **Intuition:** the CLS token's new state is a weighted average of the values of the tokens it
# attends to, so a large weight says which patch's *value vector* the CLS token copies in this layer.
# In the figures below the top row shows the raw weights (each panel with its own colour bar) and the overlays
# are per-panel min-max scaled: compare shapes within a panel, and read values off the colour bars, not colours
# across panels.
#
# **When it fails.** Attention is not explanation ([Jain & Wallace, 2019](https://arxiv.org/abs/1902.10186);
# [Wiegreffe & Pinter, 2019](https://arxiv.org/abs/1908.04626)): the weight says nothing about how large
# or how useful the copied value is, and after the first layer a patch token already mixes information
# from other patches. Measured here: layer 0 head 2 puts 99.6 % of its CLS weight on the same patch
# (row 2, column 1) for all of the first 1,000 test images — the most concentrated head is a fixed
# position, not a reading of the digit. The ViT itself: [Dosovitskiy et al., 2021](https://arxiv.org/abs/2010.11929).

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
# The three figures of the first sample: its CLS attention per layer (heads fused), each head of the last
# layer, and — in the last figure's second row — the raw last layer beside two ways of combining the layers.
#
# ### Method in brief: attention rollout
# A token's state after a block is its input (the residual path) plus what attention brought in, so
# [Abnar & Zuidema (2020)](https://arxiv.org/abs/2005.00928) model each layer as
# $\tilde A^{(\ell)} = \tfrac12\left(\bar A^{(\ell)} + I\right)$, with $\bar A^{(\ell)}$ the heads fused
# and every row renormalised to sum to 1, and multiply the layers:
#
# $$R = \tilde A^{(L-1)} \, \tilde A^{(L-2)} \cdots \tilde A^{(0)}, \qquad \text{map}_k = R_{0,\,k} \ \ (k = \text{patch}).$$
#
# **Intuition:** how much of the CLS token's final state flows, through all layers, from each input patch,
# if information mixed only linearly along attention. **When it fails:** the residual weight ½ is a guess,
# the MLPs and the values are ignored, and the map is the same whichever class you ask about. Here rollout
# and the raw last layer agree only moderately (the report gives the correlation, about 0.5).
#
# ### Method in brief: gradient-weighted attention
# [Chefer et al. (2021)](https://arxiv.org/abs/2103.15679) keep only the attention that raises the score
# $y_c$ of the predicted class: per layer $\bar A^{(\ell)} = \mathbb{E}_h\big[(\partial y_c / \partial A^{(\ell,h)} \odot A^{(\ell,h)})^{+}\big]$,
# accumulated as $R \leftarrow R + \bar A^{(\ell)} R$ from $R = I$; the map is the CLS row of $R$.
# **Intuition:** attention weighted by how much it matters for this class. **When it fails:** a gradient
# is local (one infinitesimal step), and where the class score does not depend on a layer's attention the
# map is zero there.

# %% [markdown]
# ## Statistics per layer and head
# Eight digits are too few for statistics: the numbers below are over the first `statistics_images`
# test images (any digit), from one more forward pass without gradients. Every statistic is shown beside its
# value for **uniform attention** (every token weighted $1/17$): a head at that level is not looking anywhere
# in particular.
#
# ### Method in brief: entropy of the CLS row
# $$H = -\sum_{j=0}^{N-1} A_{0j} \log A_{0j} \quad \text{(nats)}, \qquad 0 \le H \le \log N = \log 17 = 2.833 .$$
#
# **Intuition:** $e^{H}$ is the "effective number" of tokens read: 0 nats is one token, 2.833 nats all 17
# equally ($\log 16 = 2.773$ if the CLS token itself is left out). **When it fails:** entropy says how
# concentrated the row is, not *where*: the fixed-patch head above has the lowest entropy (0.02 nats) and
# tells nothing about the digit. And a handful of images can fake a trend: over the 8 digits shown above, the
# Spearman correlation between layer number and mean entropy is −0.77 ("sharper with depth"); over the first
# 8 test images it is −0.03 (exercise 3), over 1,000 images −0.14 — no trend.

# %% [markdown]
# ### Method in brief: mean attention distance, and the CLS-row distance
# [Dosovitskiy et al. (2021)](https://arxiv.org/abs/2010.11929) (Fig. 7) measure how far a head looks:
# for every **patch query** $q$, the attention-weighted distance to the patches it reads, averaged over queries,
#
# $$D_{\text{patch}} = \frac{1}{P} \sum_{q=1}^{P} \sum_{k=1}^{P} A'_{qk} \, \lVert x_q - x_k \rVert ,$$
#
# with $x$ the grid position (in patches), $P = 16$ and $A'$ the patch block of $A$ with rows renormalised.
# The CLS token has no grid position, so this number is **not** about the CLS maps shown above. For them
# we use the **CLS-row distance**: the distance between two patches drawn independently from the CLS row,
#
# $$D_{\text{CLS}} = \sum_{k=1}^{P} \sum_{l=1}^{P} p_k \, p_l \, \lVert x_k - x_l \rVert, \qquad p_k = \frac{A_{0k}}{\sum_{k'} A_{0k'}} ,$$
#
# 0 when the CLS token reads one patch. For uniform attention both equal the mean distance between two
# cells of the 4×4 grid, **2.008 patches** (`vizkit.metrics.chance.uniform_attention_distance`; the largest
# possible distance is $3\sqrt2 = 4.24$). **When it fails:** a distance at or above 2.008 does not mean a
# head "looks globally" — uniform attention scores it too, so such heads are flagged "at chance" below; and
# on a 4×4 grid the whole range is small, so differences of a few hundredths are noise.

# %%
# NBVAL_CHECK_OUTPUT
statistics_cache = visualizer.analyze_statistics(statistics_images, layers=vma.parse_index_list(layers, ("all",)))
figures.append(visualizer.create_attention_statistics())
statistics = visualizer.statistics()
reference = visualizer.reference()  # every statistic under uniform attention: the chance levels
per_layer = vma.layer_summary(statistics, reference)
print(f"statistics over {statistics['sample'].nunique()} test images")
print(
    f"uniform attention (chance): entropy {reference['entropy']:.3f} nats, distance {reference['distance']:.3f} patches"
)
print(
    f"chance function: metrics.uniform_attention_distance(grid) = {metrics.uniform_attention_distance(cache.attn.grid):.3f}"
)
print("mean entropy of the CLS row per layer (nats):", per_layer["entropy"].iloc[:-1].round(2).tolist())
print("mean CLS-row distance per layer (patches):", per_layer["cls_distance"].iloc[:-1].round(2).tolist())
print("mean patch-query distance per layer (patches):", per_layer["distance"].iloc[:-1].round(2).tolist())

# %% [markdown]
# The figure: one box per head (colour) and layer (x), over the images; the dashed line is uniform
# attention. The table: the means per layer, and in its last row the uniform-attention level of each column.

# %%
# NBVAL_CHECK_OUTPUT
display(Image(filename=str(figures[-1])))
per_layer.round(3)

# %% [markdown]
# ### Heads at chance
# Per head, the same means; `flag` marks a head whose distance is within 0.1 patch of the uniform 2.008 or
# above it (`vma.CHANCE_MARGIN`): for it, "most global" means only "no more local than uniform attention".
# Every head's CLS row is far more concentrated than uniform, while the patch queries of several heads are not.

# %%
# NBVAL_CHECK_OUTPUT
per_head = vma.head_table(statistics, reference)
per_head.round(3)

# %% [markdown]
# ## Report
# The observations are sentences generated from the statistics above.

# %%
# NBVAL_CHECK_OUTPUT
notes = vma.observations(statistics, statistics_cache, head_fusion, shown=cache)
report = vma.write_report(
    run_dir,
    params,
    visualizer.model_info,
    visualizer.test_accuracy(),
    float((cache.preds == cache.labels).float().mean()),
    per_layer,
    per_head,
    notes,
    figures,
    visualizer.sample_indices,
    cache,
    statistics_images,
)
display(Markdown("\n".join(f"- {n}" for n in notes)))
print("report:", report.relative_to(run_dir.parent))  # in the run folder printed above

# %% [markdown] tags=["exercise"]
# ### Exercise 1: the chance level of a bigger ViT
# ViT-B/16 on a 224×224 image has a 14×14 patch grid. Change the grid passed to
# `metrics.uniform_attention_distance` in the cell below from `(4, 4)` to `(14, 14)`: above what mean attention
# distance (in patches) is a head of ViT-B/16 no more local than uniform attention?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
print(
    f"answer: uniform attention distance on a 14x14 grid = {metrics.uniform_attention_distance((14, 14)):.3f} patches"
)

# %% [markdown] tags=["exercise"]
# ### Exercise 2: rollout with another head fusion
# Rollout fuses the heads of each layer before multiplying the layers. Call
# `vma.rollout_agreement(statistics_cache, "mean")` with `"max"` instead of `"mean"`: does rollout agree
# more or less with the raw last layer (mean Pearson correlation over the images)?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
print(f"answer: rollout vs raw last layer, heads fused by max = {vma.rollout_agreement(statistics_cache, 'max'):.2f}")

# %% [markdown] tags=["exercise"]
# ### Exercise 3: how many images does a trend need?
# `vma.entropy_trend(statistics)` is the Spearman correlation between layer number and mean CLS-row entropy
# over all the statistics images. Pass `statistics.query("sample < 8")` instead, the first 8 test images
# only: what is the correlation, and would you still trust a "trend with depth" read off 8 digits?

# %% jupyter={"source_hidden": true} tags=["answer"]
# NBVAL_CHECK_OUTPUT
print(
    f"answer: Spearman rho (layer vs entropy), first 8 images = {vma.entropy_trend(statistics.query('sample < 8')):+.2f}"
)

# %% [markdown]
# ## Explore
# Move the sliders: the maps are redrawn from the cached attention, without another forward pass. The layer
# slider is 0-based like everything here.

# %% tags=["nbval-ignore-output"]
if interactive:
    explorer = vma.AttentionExplorer(cache, head_fusion=head_fusion)
    display(explorer)

# %% tags=["nbval-ignore-output"]
print("outputs:")
for path in sorted(run_dir.iterdir()):
    print("  ", path.name)
