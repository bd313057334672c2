"""Family adapters of vizkit.models.vlm: Gemma 3 (pooled square, pan-and-scan crops + thumbnail),
PaliGemma (prefix square grid) and Mistral 3 (Pixtral row breaks over the spatially merged grid).

Each folder is a tiny random model saved with the family's own model and processor classes
(tests/helpers/vlm_folders_more.py), loaded with ``load_vlm``; prompts come from the processor's chat
template with non-square (3:4, 1:2) images. Expected grids are computed here from the processor's
outputs (``image_sizes``, the image processor's ``num_crops``) and the config, or by hand, never
through the adapters; the models' own ``get_image_features`` and forward pass check the folders.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T
import vlm_folders_more as VM
from PIL import Image

from vizkit.errors import InputError
from vizkit.models.vlm import IMAGE, MOSAIC, SPECIAL, TEXT, THUMBNAIL, family_for, load_vlm

BUILDERS = {
    "gemma3": VM.save_random_gemma3,
    "gemma3_pas": lambda d: VM.save_random_gemma3(d, pan_and_scan=True),
    "paligemma": VM.save_random_paligemma,
    "mistral3": VM.save_random_mistral3,
}


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    """``vlm(name)``: the loaded folder of ``BUILDERS[name]`` (built once per module)."""
    root, cache = tmp_path_factory.mktemp("vlm_families_gm"), {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_vlm(BUILDERS[name](root / name))
        return cache[name]

    return get


def _image(h: int, w: int, seed: int = 0, gradient: str | None = None) -> Image.Image:
    """Random pixels; ``gradient`` "y" / "x": the red channel grows down / to the right (to tell crops apart)."""
    x = np.random.default_rng(seed).integers(0, 64, (h, w, 3)).astype(np.float64)
    if gradient:
        ramp = np.linspace(0, 190, h if gradient == "y" else w)
        x[..., 0] += ramp[:, None] if gradient == "y" else ramp[None, :]
    return Image.fromarray(x.astype(np.uint8))


def _inputs(v, images, **kw) -> dict:
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": "What colour is the star?"}]
    prompt = v.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    return dict(v.processor(text=[prompt], images=images, return_tensors="pt", **kw))


def _ids(inputs) -> np.ndarray:
    return inputs["input_ids"][0].numpy()


def _check_cover(pm, ids, image_id):
    """Every IMAGE position is an image token and sits in exactly one grid (mosaic or thumbnail), and
    every image token is an IMAGE position; row / col / image / view agree with the grids."""
    image_pos = np.flatnonzero(pm.kind == IMAGE)
    np.testing.assert_array_equal(image_pos, np.flatnonzero(ids == image_id))
    placed = np.concatenate(list(pm.image_positions) + list(pm.thumbnail_positions))
    np.testing.assert_array_equal(np.sort(placed), image_pos)  # placed once each
    for k, ((r, c), pos) in enumerate(zip(pm.grids, pm.image_positions)):
        assert len(pos) == r * c
        np.testing.assert_array_equal(pm.row[pos], np.repeat(np.arange(r), c))
        np.testing.assert_array_equal(pm.col[pos], np.tile(np.arange(c), r))
        assert np.all(pm.image[pos] == k) and np.all(pm.view[pos] == MOSAIC)
    for k, (g, pos) in enumerate(zip(pm.thumbnail_grids, pm.thumbnail_positions)):
        if g is None:
            assert len(pos) == 0
            continue
        assert len(pos) == g[0] * g[1] and np.all(np.diff(pos) > 0)
        np.testing.assert_array_equal(pm.row[pos], np.repeat(np.arange(g[0]), g[1]))
        np.testing.assert_array_equal(pm.col[pos], np.tile(np.arange(g[1]), g[0]))
        assert np.all(pm.view[pos] == THUMBNAIL) and np.all(pm.image[pos] == k) and np.all(pm.tile[pos] == -1)


def _spans(ids, boi, per):
    """Gemma 3: the soft-token positions of each <start_of_image> span, found by hand."""
    return [np.arange(b + 1, b + 1 + per) for b in np.flatnonzero(ids == boi)]


@torch.no_grad()
def _forward(v, inputs, drop=("image_sizes",)):
    """The model runs on the processor's outputs (the folder is consistent) and returns one logit row per position."""
    kw = {k: x for k, x in inputs.items() if k not in drop}
    out = v.model(**kw)
    assert out.logits.shape[1] == inputs["input_ids"].shape[1]
    assert torch.isfinite(out.logits).all()


@torch.no_grad()
def _siglip_patches_are_row_major(tower, pixel_values, patch):
    """The SigLIP tower's patch j is the conv of the pixel patch at (j // P, j % P): row-major, not transposed."""
    emb = tower.embeddings.patch_embedding(pixel_values[:1]).flatten(2).transpose(1, 2)[0]  # as the tower flattens
    conv = tower.embeddings.patch_embedding
    P = pixel_values.shape[-1] // patch
    for j in (1, P, P + 2, P * P - 1):
        i, c = divmod(j, P)
        cut = pixel_values[:1, :, i * patch : (i + 1) * patch, c * patch : (c + 1) * patch]
        want = (conv.weight * cut).sum((1, 2, 3)) + conv.bias
        torch.testing.assert_close(emb[j], want, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Gemma 3
# ------------------------------------------------------------------------------------------------
def test_gemma3_one_pooled_square_per_image(vlm):
    v = vlm("gemma3")
    assert type(v.model).__name__ == "Gemma3ForConditionalGeneration"
    assert type(v.processor).__name__ == "Gemma3Processor"
    cfg = v.model.config
    inputs = _inputs(v, [_image(64, 48), _image(48, 96, 1)])  # 3:4, 1:2: each squashed to the tower's square
    ids = _ids(inputs)
    side = int(round(cfg.mm_tokens_per_image**0.5))
    patches = cfg.vision_config.image_size // cfg.vision_config.patch_size
    assert (side, patches, patches // side) == (4, 12, 3)  # 12 x 12 patches pooled by 3 x 3
    pm = v.position_map(inputs)
    assert pm.grids == [(side, side)] * 2 and pm.thumbnail_grids == [None, None]
    _check_cover(pm, ids, cfg.image_token_id)
    spans = _spans(ids, cfg.boi_token_id, side * side)
    for k, span in enumerate(spans):
        np.testing.assert_array_equal(pm.image_positions[k], span)
        a = span[0]
        assert [pm.label(t) for t in (a, a + 3, a + 4, a + 15)] == [
            f"image {k} (0, 0)",
            f"image {k} (0, 3)",
            f"image {k} (1, 0)",
            f"image {k} (3, 3)",
        ]
        assert ids[a - 1] == cfg.boi_token_id and ids[a + 16] == cfg.eoi_token_id
    np.testing.assert_array_equal(
        np.flatnonzero(pm.kind == SPECIAL), np.flatnonzero(np.isin(ids, [cfg.boi_token_id, cfg.eoi_token_id]))
    )
    assert pm.kind[spans[0][0] - 2] == TEXT  # the processor's "\n\n" around each image is text
    assert int((pm.kind == IMAGE).sum()) == int(inputs["token_type_ids"].sum())  # the processor's image tokens
    feats = v.model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert feats.shape[:2] == (2, 16) and int((pm.kind == IMAGE).sum()) == feats.shape[0] * feats.shape[1]
    _forward(v, inputs)


@torch.no_grad()
def test_gemma3_pooled_tokens_are_row_major_over_the_patch_grid(vlm):
    """Each soft token's feature (the model's get_image_features) is the projected mean of the 3 x 3
    tower patches under the map's (row, col) -- transposing the grid would name other patches."""
    v = vlm("gemma3")
    inputs = _inputs(v, [_image(64, 48)])
    pm = v.position_map(inputs)
    m = v.model.model
    pv = inputs["pixel_values"]
    _siglip_patches_are_row_major(m.vision_tower, pv, v.model.config.vision_config.patch_size)
    feats = m.get_image_features(pixel_values=pv).pooler_output[0]
    hidden = m.vision_tower(pixel_values=pv).last_hidden_state[0].reshape(12, 12, -1)
    proj = m.multi_modal_projector
    for j, p in enumerate(pm.image_positions[0]):  # prompt order == feature order
        r, c = int(pm.row[p]), int(pm.col[p])
        pooled = hidden[3 * r : 3 * r + 3, 3 * c : 3 * c + 3].mean((0, 1))
        want = proj.mm_soft_emb_norm(pooled[None])[0] @ proj.mm_input_projection_weight
        torch.testing.assert_close(feats[j], want, atol=1e-5, rtol=1e-5)


def test_gemma3_pan_and_scan_crops_stitched_with_the_whole_image_as_thumbnail(vlm):
    v = vlm("gemma3_pas")
    cfg = v.model.config
    # 3:4 portrait -> 2 stacked crops; 1:2 landscape -> 2 side-by-side crops; 1:4 -> crops < 256 px: none
    images = [_image(640, 480, 0, "y"), _image(300, 600, 1, "x"), _image(200, 800, 2)]
    pas = VM.GEMMA3_PAN_AND_SCAN
    inputs = _inputs(v, images, **pas)
    assert "num_crops" not in inputs and "image_sizes" not in inputs  # the processor drops / never returns them
    crops = v.processor.image_processor(images, **pas)["num_crops"]  # the image processor's own count
    assert list(crops) == [2, 2, 0]
    ids, s = _ids(inputs), 4
    spans = _spans(ids, cfg.boi_token_id, s * s)
    assert len(spans) == 3 + 4 == inputs["pixel_values"].shape[0]
    with pytest.raises(InputError, match="pan-and-scan .*give the inputs image_sizes"):
        v.position_map(inputs)
    inputs["image_sizes"] = torch.tensor([im.size[::-1] for im in images])  # original (height, width)
    pm = v.position_map(inputs)
    assert pm.grids == [(2 * s, s), (s, 2 * s), (s, s)]  # by hand: 2 x 1 crops, 1 x 2 crops, no crops
    assert pm.thumbnail_grids == [(s, s), (s, s), None]
    _check_cover(pm, ids, cfg.image_token_id)
    # spans in prompt order: image 0 whole, crop 0, crop 1; image 1 whole, crop 0, crop 1; image 2
    np.testing.assert_array_equal(pm.thumbnail_positions[0], spans[0])
    np.testing.assert_array_equal(pm.thumbnail_positions[1], spans[3])
    np.testing.assert_array_equal(pm.image_positions[2], spans[6])
    assert [pm.label(t) for t in (spans[0][0], spans[1][0], spans[1][15], spans[2][0], spans[2][15])] == [
        "image 0 thumbnail (0, 0)",
        "image 0 (0, 0)",
        "image 0 (3, 3)",
        "image 0 tile 1 (4, 0)",
        "image 0 tile 1 (7, 3)",
    ]
    assert [pm.label(t) for t in (spans[4][0], spans[4][4], spans[5][0], spans[5][3], spans[5][4])] == [
        "image 1 (0, 0)",
        "image 1 (1, 0)",
        "image 1 tile 1 (0, 4)",
        "image 1 tile 1 (0, 7)",
        "image 1 tile 1 (1, 4)",
    ]
    # the crops really sit there: image 0's red channel grows downwards, image 1's to the right
    red = inputs["pixel_values"][:, 0].mean((1, 2)).numpy()
    top, bottom = (red[q] for q in (1, 2))
    left, right = (red[q] for q in (4, 5))
    assert bottom > top + 0.3 and right > left + 0.3
    mosaic0 = pm.image_positions[0]
    assert pm.row[spans[2][0]] >= s and np.all(pm.tile[mosaic0] == pm.row[mosaic0] // s)  # lower tile = bottom crop
    mosaic1 = pm.image_positions[1]
    assert np.all(pm.tile[mosaic1] == pm.col[mosaic1] // s)  # right tile = right crop
    np.testing.assert_array_equal(
        np.flatnonzero(pm.kind == SPECIAL), np.flatnonzero(np.isin(ids, [cfg.boi_token_id, cfg.eoi_token_id]))
    )
    feats = v.model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert int((pm.kind == IMAGE).sum()) == feats.shape[0] * feats.shape[1] == 7 * 16
    _forward(v, inputs)


def test_gemma3_saved_pan_and_scan_takes_effect_in_vizkit_prompts(vlm):
    from vizkit.models.vlm.trace import build_inputs, trace_sample

    images = [_image(640, 480, 0, "y"), _image(300, 600, 1, "x")]
    v = vlm("gemma3_pas")
    s, cfg = 4, v.model.config
    # the processor called with its own defaults ignores the saved flag: one span per image
    assert len(_spans(_ids(_inputs(v, images)), cfg.boi_token_id, s * s)) == 2
    inputs, _ = build_inputs(v, "What colour is the star?", images)
    assert len(_spans(_ids(inputs), cfg.boi_token_id, s * s)) == 2 + 4  # the whole images + 2 crops each
    pm = v.position_map(inputs)
    assert pm.grids == [(2 * s, s), (s, 2 * s)] and pm.thumbnail_grids == [(s, s), (s, s)]
    _check_cover(pm, _ids(inputs), cfg.image_token_id)
    # teacher-forced: the 249-token sequence outgrows layer 0's 64-token sliding window, which a generating KV
    # cache would keep alone (trace_sample refuses that); one forward's mask holds the window
    trace = trace_sample(v, "What colour is the star?", images, [0], mode="solution", solution="red", start_phrase=None)
    assert trace.pmap.grids == pm.grids
    # a folder saved without pan-and-scan gets no crops
    plain = vlm("gemma3")
    inputs, _ = build_inputs(plain, "What colour is the star?", images)
    assert len(_spans(_ids(inputs), cfg.boi_token_id, s * s)) == 2
    assert plain.family.processor_kwargs(plain.processor) == {}


def test_gemma3_pan_and_scan_with_other_settings_needs_num_crops(vlm):
    v = vlm("gemma3_pas")
    cfg = v.model.config
    images = [_image(64, 48), _image(48, 96, 1)]  # tiny: only crops of >= 8 px are allowed
    pas = dict(VM.GEMMA3_PAN_AND_SCAN, pan_and_scan_min_crop_size=8)
    inputs = _inputs(v, images, **pas)
    inputs["image_sizes"] = [im.size[::-1] for im in images]
    # the processor's default settings (crops >= 256 px) would cut no crop: the spans do not add up
    with pytest.raises(InputError, match=r"holds 6 <start_of_image> span\(s\) but 2 image\(s\).*num_crops"):
        v.position_map(inputs)
    crops = v.processor.image_processor(images, **pas)["num_crops"]
    assert list(crops) == [2, 2]
    pm = v.position_map(dict(inputs, num_crops=crops))
    assert pm.grids == [(8, 4), (4, 8)] and pm.thumbnail_grids == [(4, 4), (4, 4)]
    _check_cover(pm, _ids(inputs), cfg.image_token_id)
    with pytest.raises(InputError, match="image_sizes"):
        v.position_map({k: x for k, x in inputs.items() if k != "image_sizes"} | {"num_crops": crops})
    # a span that lost a token is refused, not placed as a shorter grid
    ids = _ids(inputs)
    bad = dict(
        inputs,
        input_ids=torch.as_tensor(np.delete(ids, np.flatnonzero(ids == cfg.image_token_id)[5]))[None],
        num_crops=crops,
    )
    with pytest.raises(InputError, match="not followed by 16 image soft tokens"):
        v.position_map(bad)


def test_gemma3_refuses_a_pooling_that_is_not_a_square():
    fam = family_for("gemma3")
    cfg = T.Gemma3Config(
        text_config=T.Gemma3TextConfig(
            vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8
        ),
        vision_config=T.SiglipVisionConfig(image_size=48, patch_size=4),
        mm_tokens_per_image=12,
    )
    with pytest.raises(InputError, match="mm_tokens_per_image 12 .*not a square grid"):
        fam.check(cfg)


# ------------------------------------------------------------------------------------------------
# PaliGemma
# ------------------------------------------------------------------------------------------------
def test_paligemma_image_prefix_then_bos_and_text(vlm):
    v = vlm("paligemma")
    assert type(v.model).__name__ == "PaliGemmaForConditionalGeneration"
    assert type(v.processor).__name__ == "PaliGemmaProcessor"
    cfg, vc = v.model.config, v.model.config.vision_config
    inputs = _inputs(v, [_image(64, 48), _image(48, 96, 1)])
    ids, img = _ids(inputs), cfg.image_token_id
    side = vc.image_size // vc.patch_size
    assert side == 8 and v.processor.image_seq_length == side * side
    assert np.all(ids[:128] == img) and ids[128] == v.tokenizer.bos_token_id  # images, <s>, text, "\n"
    assert v.tokenizer.decode(ids[129:]) == "What colour is the star?\n"
    pm = v.position_map(inputs)
    assert pm.grids == [(8, 8), (8, 8)] and pm.thumbnail_grids == [None, None]
    _check_cover(pm, ids, img)
    assert [pm.label(t) for t in (0, 7, 8, 63, 64, 71, 72, 127, 128)] == [
        "image 0 (0, 0)",
        "image 0 (0, 7)",
        "image 0 (1, 0)",
        "image 0 (7, 7)",
        "image 1 (0, 0)",
        "image 1 (0, 7)",
        "image 1 (1, 0)",
        "image 1 (7, 7)",
        "text",
    ]
    assert not np.any(pm.kind == SPECIAL)
    m = v.model.model
    _siglip_patches_are_row_major(m.vision_tower, inputs["pixel_values"], vc.patch_size)
    feats = m.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert int((pm.kind == IMAGE).sum()) == feats.shape[0] * feats.shape[1] == 2 * 64
    _forward(v, inputs)
    with pytest.raises(InputError, match="not a whole number of images of 64 tokens"):
        v.position_map(dict(inputs, input_ids=torch.as_tensor(ids[1:])[None]))
    with pytest.raises(InputError, match="pixel_values holds 1"):
        v.position_map(dict(inputs, pixel_values=inputs["pixel_values"][:1]))


# ------------------------------------------------------------------------------------------------
# Mistral 3
# ------------------------------------------------------------------------------------------------
def test_mistral3_merged_rows_breaks_and_end(vlm):
    v = vlm("mistral3")
    assert type(v.processor).__name__ == "PixtralProcessor"
    cfg = v.model.config
    inputs = _inputs(v, [_image(64, 48), _image(48, 96, 1)])
    ids, img = _ids(inputs), cfg.image_token_id
    brk, end = v.tokenizer.convert_tokens_to_ids(["[IMG_BREAK]", "[IMG_END]"])
    step = cfg.vision_config.patch_size * cfg.spatial_merge_size
    assert (cfg.vision_config.patch_size, cfg.spatial_merge_size) == (4, 2)
    assert v.processor.patch_size * v.processor.spatial_merge_size == step  # the processor's token step
    sizes = inputs["image_sizes"].tolist()
    assert sizes == [[64, 48], [32, 64]]  # the resized (height, width): longest edge 64
    grids = [(h // step, w // step) for h, w in sizes]
    assert grids == [(8, 6), (4, 8)]  # by hand: 64/8 x 48/8, 32/8 x 64/8 (without the merge: 16 x 12, 8 x 16)
    pm = v.position_map(inputs)
    assert pm.grids == grids and pm.thumbnail_grids == [None, None]
    _check_cover(pm, ids, img)
    for pos in pm.image_positions:
        assert np.all(np.diff(pos) > 0)  # row-major order == prompt order
    a = int(np.flatnonzero(ids == img)[0])
    assert ids[a + 6] == brk and pm.kind[a + 6] == SPECIAL
    assert [pm.label(t) for t in (a, a + 5, a + 7, a + 8 * 7 - 2)] == [
        "image 0 (0, 0)",
        "image 0 (0, 5)",
        "image 0 (1, 0)",
        "image 0 (7, 5)",
    ]
    assert ids[a + 8 * 7 - 1] == end
    b = a + 8 * 7
    assert [pm.label(t) for t in (b, b + 7, b + 9, b + 4 * 9 - 2)] == [
        "image 1 (0, 0)",
        "image 1 (0, 7)",
        "image 1 (1, 0)",
        "image 1 (3, 7)",
    ]
    specials = np.flatnonzero(pm.kind == SPECIAL)
    np.testing.assert_array_equal(specials, np.flatnonzero(np.isin(ids, [brk, end])))
    assert len(specials) == 8 + 4
    with torch.no_grad():
        feats = v.model.model.get_image_features(
            pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"], vision_feature_layer=-1
        ).pooler_output
    assert [len(f) for f in feats] == [len(p) for p in pm.image_positions] == [48, 32]
    _forward(v, inputs, drop=())
    # a row short of one [IMG] is refused, and so is a prompt without image_sizes
    with pytest.raises(InputError, match="Mistral 3 image 0: image_sizes 64 x 48 with patch 4 x 4 and spatial merge 2"):
        v.position_map(dict(inputs, input_ids=torch.as_tensor(np.delete(ids, a + 3))[None]))
    with pytest.raises(InputError, match="image_sizes: the inputs have none"):
        v.position_map({"input_ids": inputs["input_ids"]})


@torch.no_grad()
def test_mistral3_patch_merger_folds_blocks_in_row_major_order(vlm):
    """Feed the model's Mistral3PatchMerger patches labelled by their (row, col) in the tower's
    row-major patch grid: merged token j is the 2 x 2 block at the map's (row, col) of image k."""
    v = vlm("mistral3")
    inputs = _inputs(v, [_image(64, 48), _image(48, 96, 1)])
    pm = v.position_map(inputs)
    merger = v.model.model.multi_modal_projector.patch_merger
    m, patch = merger.spatial_merge_size, merger.patch_size
    d = v.model.config.vision_config.hidden_size
    labelled, seen = [], []
    for h, w in inputs["image_sizes"].tolist():
        r, c = torch.meshgrid(torch.arange(h // patch), torch.arange(w // patch), indexing="ij")
        x = torch.zeros(r.numel(), d)
        x[:, 0], x[:, 1] = r.flatten().float(), c.flatten().float()  # the tower's patch order: row-major
        labelled.append(x)
    hook = merger.merging_layer.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    try:
        merger(torch.cat(labelled), inputs["image_sizes"])
    finally:
        hook.remove()
    merged = seen[0]  # [tokens, d * m * m]: channel-major, kernel offsets inside (unfold)
    at = 0
    for pos in pm.image_positions:
        rows, cols = merged[at : at + len(pos), 0 * m * m], merged[at : at + len(pos), 1 * m * m]  # top-left patch
        np.testing.assert_array_equal(rows.numpy(), m * pm.row[pos])
        np.testing.assert_array_equal(cols.numpy(), m * pm.col[pos])
        at += len(pos)
    assert at == len(merged)


def test_mistral3_refuses_another_tower():
    fam = family_for("mistral3")
    cfg = T.Mistral3Config(vision_config=T.SiglipVisionConfig())
    with pytest.raises(InputError, match="siglip_vision_model vision tower"):
        fam.check(cfg)
