"""Family adapters of vizkit.models.vlm: LLaVA (CLIP default / full, Pixtral tower), Qwen2-VL,
Qwen2.5-VL, Qwen3-VL, LLaVA-NeXT, LLaVA-OneVision.

Each folder is a tiny random model saved with the family's own model and processor classes
(tests/helpers/vlm_folders.py), loaded with ``load_vlm``; prompts come from the processor's chat template
with non-square (3:4, 1:2) images. Expected grids are computed here from the processor's outputs
(``image_sizes``, ``image_grid_thw``) and the config, or by hand, never through the adapters.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import transformers as T
import vlm_folders as VF
from PIL import Image
from transformers.image_processing_utils import select_best_resolution

from vizkit.errors import InputError
from vizkit.models.vlm import IMAGE, MOSAIC, SPECIAL, TEXT, THUMBNAIL, family_for, load_vlm

BUILDERS = {
    "llava": VF.save_random_llava,
    "llava_full": lambda d: VF.save_random_llava(d, strategy="full"),
    "llava_pixtral": VF.save_random_llava_pixtral,
    "qwen2_vl": VF.save_random_qwen2_vl,
    "qwen2_5_vl": VF.save_random_qwen2_5_vl,
    "qwen3_vl": VF.save_random_qwen3_vl,
    "llava_next": VF.save_random_llava_next,
    "llava_onevision": VF.save_random_llava_onevision,
    "llava_onevision_max1": lambda d: VF.save_random_llava_onevision(d, aspect_ratio="anyres_max_1"),
}


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    """``vlm(name)``: the loaded folder of ``BUILDERS[name]`` (built once per module)."""
    root, cache = tmp_path_factory.mktemp("vlm_families"), {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_vlm(BUILDERS[name](root / name))
        return cache[name]

    return get


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _inputs(v, images, nested: bool = False) -> dict:
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": "What colour is the star?"}]
    prompt = v.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    out = v.processor(text=[prompt], images=[images] if nested else images, return_tensors="pt")
    return dict(out)


def _ids(inputs) -> np.ndarray:
    return inputs["input_ids"][0].numpy()


def _first(ids: np.ndarray, token: int, k: int = 0) -> int:
    """Position of the first token of the ``k``-th run of ``token``."""
    where = np.flatnonzero(ids == token)
    starts = where[np.r_[True, np.diff(where) != 1]]
    return int(starts[k])


def _check_cover(pm, ids, image_id, grids, thumbs=None):
    """Shared assertions: grids as expected, IMAGE positions == the placed image tokens, row-major order."""
    assert pm.grids == grids
    thumbs = thumbs or [None] * len(grids)
    assert pm.thumbnail_grids == thumbs
    image_pos = np.flatnonzero(pm.kind == IMAGE)
    placed = np.sort(np.concatenate(list(pm.image_positions) + list(pm.thumbnail_positions)))
    np.testing.assert_array_equal(placed, image_pos)  # each IMAGE position in exactly one grid
    assert np.all(ids[image_pos] == image_id)
    expected = sum(r * c for r, c in grids) + sum(r * c for r, c in (t for t in thumbs if t))
    assert len(image_pos) == expected
    for k, ((r, c), pos) in enumerate(zip(grids, pm.image_positions)):
        assert np.all(np.diff(pos) > 0)  # row-major order = prompt order
        np.testing.assert_array_equal(pm.row[pos], np.repeat(np.arange(r), c))
        np.testing.assert_array_equal(pm.col[pos], np.tile(np.arange(c), r))
        assert np.all(pm.image[pos] == k) and np.all(pm.view[pos] == MOSAIC)
    for k, (g, pos) in enumerate(zip(thumbs, pm.thumbnail_positions)):
        assert len(pos) == (g[0] * g[1] if g is not None else 0)  # a thumbnail's cells, none without one
        assert np.all(pm.view[pos] == THUMBNAIL) and np.all(pm.image[pos] == k) and np.all(pm.tile[pos] == -1)


def _generates(v, inputs):
    out = v.model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4 or out.shape[1] > inputs["input_ids"].shape[1]
    pm = v.position_map(inputs, prompt_len=inputs["input_ids"].shape[1])
    assert len(pm.extend(out.shape[1])) == out.shape[1]


# ------------------------------------------------------------------------------------------------
# LLaVA
# ------------------------------------------------------------------------------------------------
def test_llava_default_grid_from_the_tower(vlm):
    v = vlm("llava")
    assert type(v.model).__name__ == "LlavaForConditionalGeneration" and type(v.processor).__name__ == "LlavaProcessor"
    inputs = _inputs(v, [_image(64, 48)])  # 3:4, centre-cropped to the tower's 48 x 48
    ids, img = _ids(inputs), v.model.config.image_token_id
    pm = v.position_map(inputs)
    vc = v.model.config.vision_config
    side = vc.image_size // vc.patch_size
    assert (side, int((ids == img).sum())) == (6, 36)
    _check_cover(pm, ids, img, [(side, side)])
    a = _first(ids, img)
    assert [pm.label(t) for t in (a - 1, a, a + 5, a + 6, a + 35, a + 36)] == [
        "text",
        "image 0 (0, 0)",
        "image 0 (0, 5)",
        "image 0 (1, 0)",
        "image 0 (5, 5)",
        "text",
    ]
    assert not np.any(pm.kind == SPECIAL)
    _generates(v, inputs)


def test_llava_full_strategy_keeps_cls_as_a_special_position(vlm):
    v = vlm("llava_full")
    inputs = _inputs(v, [_image(64, 48), _image(48, 64, 1)])
    ids, img = _ids(inputs), v.model.config.image_token_id
    assert int((ids == img).sum()) == 2 * 37  # CLS + 6 x 6 per image, one run ("<image>\n<image>\n")
    pm = v.position_map(inputs)
    _check_cover(pm, ids, img, [(6, 6), (6, 6)])
    for k in (0, 1):
        a = _first(ids, img, k)
        assert pm.kind[a] == SPECIAL and pm.image[a] == -1  # the CLS token: not a patch
        assert [pm.label(t) for t in (a + 1, a + 6, a + 7, a + 36)] == [
            f"image {k} (0, 0)",
            f"image {k} (0, 5)",
            f"image {k} (1, 0)",
            f"image {k} (5, 5)",
        ]
    assert int((pm.kind == SPECIAL).sum()) == 2
    _generates(v, inputs)


def test_llava_pixtral_rows_breaks_and_end(vlm):
    v = vlm("llava_pixtral")
    assert type(v.processor).__name__ == "PixtralProcessor" and v.model.config.vision_config.model_type == "pixtral"
    inputs = _inputs(v, [_image(64, 48), _image(32, 64, 1)])
    ids, img = _ids(inputs), v.model.config.image_token_id
    brk, end = v.tokenizer.convert_tokens_to_ids(["[IMG_BREAK]", "[IMG_END]"])
    patch = v.model.config.vision_config.patch_size
    sizes = inputs["image_sizes"].tolist()
    assert sizes == [[64, 48], [32, 64]]
    grids = [(h // patch, w // patch) for h, w in sizes]
    assert grids == [(8, 6), (4, 8)]  # by hand: 64/8 x 48/8, 32/8 x 64/8
    pm = v.position_map(inputs)
    _check_cover(pm, ids, img, grids)
    a = _first(ids, img)
    assert ids[a + 6] == brk and pm.kind[a + 6] == SPECIAL
    assert [pm.label(t) for t in (a, a + 5, a + 7, a + 8 * 7 - 2)] == [
        "image 0 (0, 0)",
        "image 0 (0, 5)",
        "image 0 (1, 0)",
        "image 0 (7, 5)",
    ]
    assert ids[a + 8 * 7 - 1] == end and pm.kind[a + 8 * 7 - 1] == SPECIAL
    b = a + 8 * 7  # the second image follows at once
    assert [pm.label(t) for t in (b, b + 7, b + 9, b + 4 * 9 - 2)] == [
        "image 1 (0, 0)",
        "image 1 (0, 7)",
        "image 1 (1, 0)",
        "image 1 (3, 7)",
    ]
    specials = np.flatnonzero(pm.kind == SPECIAL)
    np.testing.assert_array_equal(specials, np.flatnonzero(np.isin(ids, [brk, end])))
    assert len(specials) == 8 + 4
    _generates(v, inputs)
    # a prompt whose rows do not match image_sizes is refused, not drawn as a strip
    bad = dict(inputs, input_ids=torch.as_tensor(np.delete(ids, a + 3))[None])
    with pytest.raises(InputError, match="Pixtral image 0"):
        v.position_map(bad)


def test_llava_refuses_what_it_cannot_place():
    fam = family_for("llava")
    text = T.LlamaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(InputError, match="pixtral tower .*'default' drops a real patch"):
        fam.check(
            T.LlavaConfig(
                text_config=text, vision_config=T.PixtralVisionConfig(), vision_feature_select_strategy="default"
            )
        )
    with pytest.raises(InputError, match="siglip_vision_model tower"):
        fam.check(
            T.LlavaConfig(
                text_config=text, vision_config=T.SiglipVisionConfig(), vision_feature_select_strategy="default"
            )
        )
    cfg = T.LlavaConfig(
        text_config=text,
        vision_config=T.CLIPVisionConfig(image_size=48, patch_size=8),
        image_token_index=5,
        vision_feature_select_strategy="default",
    )
    with pytest.raises(InputError, match="not a whole number of images of 36 tokens"):
        fam.position_map(cfg, {"input_ids": [1, *[5] * 37, 2]})


# ------------------------------------------------------------------------------------------------
# Qwen2-VL, Qwen2.5-VL, Qwen3-VL
# ------------------------------------------------------------------------------------------------
def _qwen_expected(v, inputs):
    merge = v.model.config.vision_config.spatial_merge_size
    return [(h // merge, w // merge) for t, h, w in inputs["image_grid_thw"].tolist()]


@pytest.mark.parametrize(
    "name,size,thw",
    [("qwen2_vl", (84, 112), [1, 6, 8]), ("qwen2_5_vl", (84, 112), [1, 6, 8]), ("qwen3_vl", (96, 128), [1, 6, 8])],
)
def test_qwen_one_image_grid_from_image_grid_thw(vlm, name, size, thw):
    v = vlm(name)
    inputs = _inputs(v, [_image(*size)])  # 3:4
    assert inputs["image_grid_thw"].tolist() == [thw]
    ids, cfg = _ids(inputs), v.model.config
    pm = v.position_map(inputs)
    assert _qwen_expected(v, inputs) == [(3, 4)]
    _check_cover(pm, ids, cfg.image_token_id, [(3, 4)])
    a = _first(ids, cfg.image_token_id)
    assert ids[a - 1] == cfg.vision_start_token_id and pm.kind[a - 1] == SPECIAL
    assert ids[a + 12] == cfg.vision_end_token_id and pm.kind[a + 12] == SPECIAL
    assert [pm.label(t) for t in (a, a + 3, a + 4, a + 11)] == [
        "image 0 (0, 0)",
        "image 0 (0, 3)",
        "image 0 (1, 0)",
        "image 0 (2, 3)",
    ]
    assert int((pm.kind == IMAGE).sum()) == int(inputs["mm_token_type_ids"].sum())  # the processor's image tokens
    _generates(v, inputs)


def test_qwen_row_col_are_where_the_processor_cut_the_patches(vlm):
    """Each merged token's 2x2 patches in pixel_values (processor order) come from image cells
    (2 row + a, 2 col + b) of the map's (row, col): the grid is row-major, not transposed."""
    v = vlm("qwen2_vl")
    image = _image(84, 112)  # a multiple of 28 on both sides: no resampling
    inputs = _inputs(v, [image])
    pm = v.position_map(inputs)
    ip = v.processor.image_processor
    x = (np.asarray(image, np.float32) / 255 - np.asarray(ip.image_mean)) / np.asarray(ip.image_std)
    cells = x[..., 0].reshape(6, 14, 8, 14).transpose(0, 2, 1, 3).reshape(48, 14 * 14)  # channel 0 per 14x14 cell
    got = inputs["pixel_values"].numpy().reshape(48, 3, 2, 14 * 14)[:, 0, 0]  # channel 0, first temporal copy
    nearest = np.argmin(((got[:, None] - cells[None]) ** 2).sum(-1), axis=1)  # which cell each patch came from
    pos = pm.image_positions[0]
    for j, p in enumerate(pos):
        for i, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            assert nearest[4 * j + i] == (2 * pm.row[p] + a) * 8 + 2 * pm.col[p] + b


def test_qwen2_vl_two_images(vlm):
    v = vlm("qwen2_vl")
    inputs = _inputs(v, [_image(84, 112), _image(112, 56, 1)])
    assert inputs["image_grid_thw"].tolist() == [[1, 6, 8], [1, 8, 4]]
    ids, img = _ids(inputs), v.model.config.image_token_id
    pm = v.position_map(inputs)
    assert _qwen_expected(v, inputs) == [(3, 4), (4, 2)]
    _check_cover(pm, ids, img, [(3, 4), (4, 2)])
    b = _first(ids, img, 1)
    assert [pm.label(t) for t in (b, b + 1, b + 2, b + 7)] == [
        "image 1 (0, 0)",
        "image 1 (0, 1)",
        "image 1 (1, 0)",
        "image 1 (3, 1)",
    ]
    assert int((pm.kind == SPECIAL).sum()) == 4  # two vision start / end pairs
    _generates(v, inputs)
    with pytest.raises(InputError, match="image_grid_thw lists 1"):
        v.position_map(dict(inputs, image_grid_thw=inputs["image_grid_thw"][:1]))


# ------------------------------------------------------------------------------------------------
# LLaVA-NeXT, LLaVA-OneVision
# ------------------------------------------------------------------------------------------------
def _anyres_expected(v, size):
    """The mosaic (rows, cols) the PROCESSOR's own token count formula implies for an image of ``size``."""
    proc, vc = v.processor, v.model.config.vision_config
    side = vc.image_size // vc.patch_size
    bh, bw = select_best_resolution(list(size), v.model.config.image_grid_pinpoints)
    unpadded, rows = proc._get_unpadded_features(size[0], size[1], side, side, bh // vc.image_size, bw // vc.image_size)
    return (rows, unpadded // rows), side


def test_llava_next_base_then_unpadded_mosaic_with_newlines(vlm):
    v = vlm("llava_next")
    assert type(v.processor).__name__ == "LlavaNextProcessor"
    inputs = _inputs(v, [_image(64, 48), _image(96, 48, 1)])  # 3:4 -> 2 x 2 tiles; 1:2 -> 3 x 2 tiles
    ids, img = _ids(inputs), v.model.config.image_token_id
    assert inputs["image_sizes"].tolist() == [[64, 48], [96, 48]]
    expected = [_anyres_expected(v, s) for s in ((64, 48), (96, 48))]
    assert expected == [((8, 6), 4), ((12, 6), 4)]  # by hand: 8 x 8 and 12 x 8 patches, unpadded to 6 columns
    pm = v.position_map(inputs)
    _check_cover(pm, ids, img, [(8, 6), (12, 6)], [(4, 4), (4, 4)])
    assert int((ids == img).sum()) == (16 + 8 * 7) + (16 + 12 * 7)  # base + rows x (cols + newline)
    a = _first(ids, img)
    assert [pm.label(t) for t in (a, a + 15, a + 16, a + 16 + 3, a + 16 + 7, a + 16 + 4 * 7, a + 16 + 4 * 7 + 5)] == [
        "image 0 thumbnail (0, 0)",
        "image 0 thumbnail (3, 3)",
        "image 0 (0, 0)",
        "image 0 tile 1 (0, 3)",
        "image 0 (1, 0)",
        "image 0 tile 2 (4, 0)",
        "image 0 tile 3 (4, 5)",
    ]
    newlines = [a + 16 + 7 * r + 6 for r in range(8)]
    assert np.all(pm.kind[newlines] == SPECIAL) and np.all(ids[newlines] == img)
    b = _first(ids, img, 1)  # image 1: after image 0's last newline and the template's "\n"
    assert b == a + 16 + 8 * 7 + 1 and pm.kind[b - 1] == TEXT
    assert pm.view[b] == THUMBNAIL and pm.label(b + 16) == "image 1 (0, 0)"
    assert [pm.label(b + 16 + 7 * r + c) for r, c in ((4, 3), (8, 2), (11, 5))] == [
        "image 1 tile 3 (4, 3)",
        "image 1 tile 4 (8, 2)",
        "image 1 tile 5 (11, 5)",
    ]
    assert int((pm.kind == SPECIAL).sum()) == 8 + 12
    _generates(v, inputs)


@torch.no_grad()
def test_llava_next_map_matches_the_models_own_feature_order(vlm):
    """Each image token's feature (the model's get_image_features, in sequence order) is the projected
    tower feature of the base or tile cell the map names, or image_newline where the map says special."""
    v = vlm("llava_next")
    inputs = _inputs(v, [_image(64, 48), _image(96, 48, 1)])
    ids, img = _ids(inputs), v.model.config.image_token_id
    pm = v.position_map(inputs)
    m = v.model.model
    feats = m.get_image_features(pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"]).pooler_output
    where = np.flatnonzero(ids == img)
    side, at = 4, 0
    for k, (tiles, pad_left) in enumerate([(4, 1), (6, 1)]):  # by hand: 2x2 / 3x2 tiles, one padding column cut
        proj = m.multi_modal_projector(
            m.vision_tower(inputs["pixel_values"][k][: 1 + tiles], output_hidden_states=True).hidden_states[-1][:, 1:]
        )
        for j, f in enumerate(feats[k]):
            p = where[at + j]
            if pm.kind[p] == SPECIAL:
                want = m.image_newline
            elif pm.view[p] == THUMBNAIL:
                want = proj[0, pm.row[p] * side + pm.col[p]]
            else:
                want = proj[1 + pm.tile[p], (pm.row[p] % side) * side + (pm.col[p] + pad_left) % side]
            torch.testing.assert_close(f, want, atol=1e-5, rtol=1e-5)
        at += len(feats[k])
    assert at == len(where)


def test_llava_onevision_anyres_and_anyres_max_shrink(vlm):
    v = vlm("llava_onevision")
    inputs = _inputs(v, [_image(64, 48)])
    ids, img = _ids(inputs), v.model.config.image_token_id
    (grid, side) = _anyres_expected(v, (64, 48))
    assert (grid, side) == ((8, 6), 4)
    pm = v.position_map(inputs)
    _check_cover(pm, ids, img, [grid], [(side, side)])
    a = _first(ids, img)
    assert [pm.label(t) for t in (a, a + 16, a + 16 + 7)] == [
        "image 0 thumbnail (0, 0)",
        "image 0 (0, 0)",
        "image 0 (1, 0)",
    ]
    assert pm.kind[a + 16 + 6] == SPECIAL
    _generates(v, inputs)

    w = vlm("llava_onevision_max1")  # anyres_max_1: 8 x 6 cells shrink by sqrt(48 / 16) to 4 x 3
    inputs = _inputs(w, [_image(64, 48)])
    ids = _ids(inputs)
    grid, side = _anyres_expected(w, (64, 48))
    assert grid == (4, 3)
    pm = w.position_map(inputs)
    _check_cover(pm, ids, img, [(4, 3)], [(4, 4)])
    a = _first(ids, img)
    assert [pm.label(t) for t in (a + 16, a + 16 + 2, a + 16 + 4, a + 16 + 3 * 4 + 2)] == [
        "image 0 (0, 0)",
        "image 0 tile 1 (0, 2)",
        "image 0 (1, 0)",
        "image 0 tile 3 (3, 2)",
    ]
    assert int((pm.kind == SPECIAL).sum()) == 4
    _generates(w, inputs)


def test_llava_onevision_several_images_in_one_sample_are_untiled(vlm):
    v = vlm("llava_onevision")
    inputs = _inputs(v, [_image(64, 48), _image(96, 48, 1)], nested=True)
    assert inputs["batch_num_images"].tolist() == [2]
    ids, img = _ids(inputs), v.model.config.image_token_id
    assert int((ids == img).sum()) == 2 * (16 + 1)  # processor: num_image_tokens + one newline each
    pm = v.position_map(inputs)
    _check_cover(pm, ids, img, [(4, 4), (4, 4)])
    a, b = _first(ids, img), _first(ids, img, 1)
    assert b == a + 17 + 1  # base 16 + newline, then the template's "\n"
    assert [pm.label(t) for t in (a, a + 4, a + 15, a + 16, b, b + 15, b + 16)] == [
        "image 0 (0, 0)",
        "image 0 (1, 0)",
        "image 0 (3, 3)",
        "special",
        "image 1 (0, 0)",
        "image 1 (3, 3)",
        "special",
    ]
    _generates(v, inputs)


def test_anyres_refuses_mismatches(vlm):
    v = vlm("llava_next")
    inputs = _inputs(v, [_image(64, 48)])
    ids = _ids(inputs)
    with pytest.raises(InputError, match="need 72"):
        v.position_map(
            dict(inputs, input_ids=torch.as_tensor(np.delete(ids, _first(ids, v.model.config.image_token_id)))[None])
        )
    text = T.LlamaConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(InputError, match="needs vision_feature_select_strategy 'default'"):
        family_for("llava_next").check(
            T.LlavaNextConfig(
                text_config=text, vision_config=T.CLIPVisionConfig(), vision_feature_select_strategy="full"
            )
        )


# ------------------------------------------------------------------------------------------------
# refusal of families without an adapter
# ------------------------------------------------------------------------------------------------
def test_unknown_model_type_is_refused_with_the_supported_list(vlm, tmp_path):
    src = vlm("llava").path
    folder = tmp_path / "instructblip"
    shutil.copytree(src, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="instructblip", architectures=["InstructBlipForConditionalGeneration"])
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError) as err:
        load_vlm(folder)
    msg = str(err.value)
    assert msg.startswith("this is an instructblip model (InstructBlipForConditionalGeneration)")
    assert "supported are" in msg
    for name in (
        "LLaVA (llava)",
        "Qwen2-VL (qwen2_vl)",
        "Qwen2.5-VL (qwen2_5_vl)",
        "Qwen3-VL (qwen3_vl)",
        "LLaVA-NeXT (llava_next)",
        "LLaVA-OneVision (llava_onevision)",
    ):
        assert name in msg
