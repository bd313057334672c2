"""Family adapters of vizkit.models.vlm: Idefics3, SmolVLM (tiles + global image) and InternVL (dynamic
tiles + thumbnail).

Each folder is a tiny random model saved with the family's own model and processor classes
(tests/helpers/vlm_folders_more.py), loaded with ``load_vlm``; prompts come from the processor's chat
template with non-square images (3:4 tall, 1:2 tall, 2:1 wide) and a small one that is not tiled.
Expected grids are computed here from the image processors' own counting helpers, the config, or by
hand, never through the adapters. The model-level tests replace the vision tower's output by codes
naming each patch (tile, patch row, patch col) and the projector by a pass-through of those codes,
run the model's own forward, and read back from the language model's ``inputs_embeds`` which patch
landed on each position: the map must name the same tile and cell.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vlm_folders_more as VM
from PIL import Image

from vizkit.errors import InputError
from vizkit.models.vlm import IMAGE, MOSAIC, SPECIAL, TEXT, THUMBNAIL, family_for, load_vlm

BUILDERS = {"idefics3": VM.save_random_idefics3, "smolvlm": VM.save_random_smolvlm, "internvl": VM.save_random_internvl}
TALL, HALF, WIDE, SMALL = (64, 48), (96, 48), (48, 96), (16, 16)  # (height, width): 3:4, 1:2, 2:1, square


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    """``vlm(name)``: the loaded folder of ``BUILDERS[name]`` (built once per module)."""
    root, cache = tmp_path_factory.mktemp("vlm_families_more"), {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_vlm(BUILDERS[name](root / name))
        return cache[name]

    return get


def _image(h: int, w: int, seed: int = 0, smooth: bool = False) -> Image.Image:
    if smooth:  # gradients: any misplaced tile shows when the tiles are stitched back
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        arr = np.stack([x, y, np.sin(6 * x) * np.cos(5 * y) * 0.5 + 0.5], -1) * 255
        return Image.fromarray(arr.astype(np.uint8))
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _inputs(v, images, **kw) -> dict:
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": "What colour is the star?"}]
    prompt = v.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    out = dict(v.processor(text=[prompt], images=images, return_tensors="pt", **kw))
    return out


def _sizes(images) -> torch.Tensor:
    return torch.tensor([[im.height, im.width] for im in images])


def _ids(inputs) -> np.ndarray:
    return inputs["input_ids"][0].numpy()


def _tok(v, text: str) -> int:
    return v.tokenizer.convert_tokens_to_ids(text)


def _check_cover(pm, ids, image_id, grids, thumbs):
    """Grids as expected; every image token placed in exactly one grid cell; cells row-major."""
    assert pm.grids == grids and pm.thumbnail_grids == thumbs
    image_pos = np.flatnonzero(pm.kind == IMAGE)
    placed = np.concatenate(list(pm.image_positions) + list(pm.thumbnail_positions))
    assert len(placed) == len(np.unique(placed))  # no position in two cells
    np.testing.assert_array_equal(np.sort(placed), image_pos)
    np.testing.assert_array_equal(image_pos, np.flatnonzero(ids == image_id))  # every image token, nothing else
    for k, ((r, c), pos) in enumerate(zip(grids, pm.image_positions)):
        np.testing.assert_array_equal(pm.row[pos], np.repeat(np.arange(r), c))
        np.testing.assert_array_equal(pm.col[pos], np.tile(np.arange(c), r))
        assert np.all(pm.image[pos] == k) and np.all(pm.view[pos] == MOSAIC)
    for k, (g, pos) in enumerate(zip(thumbs, pm.thumbnail_positions)):
        if g is None:
            assert len(pos) == 0
            continue
        assert np.all(pm.view[pos] == THUMBNAIL) and np.all(pm.image[pos] == k) and np.all(pm.tile[pos] == -1)
        assert np.all(np.diff(pos) == 1)  # the thumbnail is one contiguous run, row-major
        np.testing.assert_array_equal(pm.row[pos], np.repeat(np.arange(g[0]), g[1]))
        np.testing.assert_array_equal(pm.col[pos], np.tile(np.arange(g[1]), g[0]))


def _check_tile(pm, first: int, k: int, r: int, c: int, cols: int, s: int):
    """Tile (r, c) of image k: its s*s tokens from ``first`` fill cells (r*s.., c*s..) row by row."""
    for j in range(s * s):
        p = first + j
        assert (pm.image[p], pm.view[p], pm.tile[p]) == (k, MOSAIC, r * cols + c), (p, j)
        assert (pm.row[p], pm.col[p]) == (r * s + j // s, c * s + j % s), (p, j)


def _generates(v, inputs, **extra):
    """``model.generate`` (load_vlm's attention implementation) runs on the inputs; ``extra``: what only
    the adapter reads (InternVL's original_sizes)."""
    out = v.model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    pm = v.position_map({**inputs, **extra}, prompt_len=inputs["input_ids"].shape[1])
    assert len(pm.extend(out.shape[1])) == out.shape[1]


class _Codes(torch.nn.Module):
    """Stands in for a projector: each output token carries, in its first channels, the first 3
    channels (the codes) of each of the patches the pixel shuffle concatenated into it."""

    def __init__(self, vision_hidden: int, text_hidden: int):
        super().__init__()
        self.d, self.h = vision_hidden, text_hidden

    def forward(self, x):
        codes = x.reshape(*x.shape[:-1], -1, self.d)[..., :3].flatten(-2)
        return torch.nn.functional.pad(codes, (0, self.h - codes.shape[-1]))


@torch.no_grad()
def _landed(v, tower, projector_owner, projector_attr, language_model, inputs, cls: bool) -> np.ndarray:
    """``[T, groups, 3]``: the (tile index in pixel_values, patch row, patch col) of the tower patches
    whose features the model's own forward put on each position (garbage on text positions)."""
    cfg = v.model.config
    grid = cfg.vision_config.image_size
    grid = (grid[0] if isinstance(grid, list) else grid) // (
        cfg.vision_config.patch_size[0]
        if isinstance(cfg.vision_config.patch_size, list)
        else cfg.vision_config.patch_size
    )

    def codes(module, args, kwargs, out):
        n, t, d = out.last_hidden_state.shape
        q = torch.arange(grid * grid)
        fake = torch.zeros(n, t, d)
        fake[:, t - grid * grid :, 0] = torch.arange(n, dtype=torch.float)[:, None]
        fake[:, t - grid * grid :, 1], fake[:, t - grid * grid :, 2] = (q // grid).float(), (q % grid).float()
        if cls:
            assert t == grid * grid + 1
            fake[:, 0] = -1
        out.last_hidden_state = fake
        return out

    seen = {}
    setattr(projector_owner, projector_attr, _Codes(cfg.vision_config.hidden_size, cfg.text_config.hidden_size))
    h1 = tower.register_forward_hook(codes, with_kwargs=True)
    h2 = language_model.register_forward_pre_hook(lambda m, a, kw: seen.update(e=kw["inputs_embeds"]), with_kwargs=True)
    try:
        v.model(**inputs)
    finally:
        h1.remove()
        h2.remove()
    e = seen["e"][0].numpy()
    return e[:, : (e.shape[1] // 3) * 3].reshape(e.shape[0], -1, 3)


# ------------------------------------------------------------------------------------------------
# Idefics3 / SmolVLM
# ------------------------------------------------------------------------------------------------
def _idefics_expected(v, sizes):
    """(rows, cols) of each image from the image processor's own counting helper, and s."""
    cfg, ip = v.model.config, v.processor.image_processor
    s = cfg.vision_config.image_size // cfg.vision_config.patch_size // cfg.scale_factor
    assert v.processor.image_seq_len == s * s
    return [tuple(ip.get_number_of_image_patches(h, w)[1:]) for h, w in sizes], s


@pytest.mark.parametrize("name", ["idefics3", "smolvlm"])
def test_idefics_tiles_stitched_into_a_mosaic_and_global_thumbnail(vlm, name):
    v = vlm(name)
    assert type(v.model).__name__ == family_for(name).model_class
    assert type(v.processor).__name__ == {"idefics3": "Idefics3Processor", "smolvlm": "SmolVLMProcessor"}[name]
    assert v.decoder_layers is v.model.model.text_model.layers and (v.num_layers, v.num_heads) == (2, 4)
    images = [_image(*TALL), _image(*HALF, 1), _image(*WIDE, 2)]
    inputs = _inputs(v, images)
    ids, img = _ids(inputs), v.model.config.image_token_id
    tiles, s = _idefics_expected(v, [TALL, HALF, WIDE])
    assert (tiles, s) == ([(3, 3), (3, 2), (2, 3)], 4)  # by hand: longest edge 96, tiles of 32; pixel shuffle 2
    assert inputs["pixel_values"].shape[1] == sum(r * c + 1 for r, c in tiles)
    pm = v.position_map(inputs)
    _check_cover(pm, ids, img, [(r * s, c * s) for r, c in tiles], [(s, s)] * 3)

    fake, glob = _tok(v, "<fake_token_around_image>"), _tok(v, "<global-img>")
    globals_ = np.flatnonzero(ids == glob)
    for k, (rows, cols) in enumerate(tiles):
        lo = globals_[k - 1] if k else 0  # image k's block: after image k-1's global image, up to its own
        for r in range(rows):
            for c in range(cols):
                hits = np.flatnonzero(ids[lo : globals_[k]] == _tok(v, f"<row_{r + 1}_col_{c + 1}>"))
                assert len(hits) == 1
                m = lo + hits[0]
                assert ids[m - 1] == fake and pm.kind[m] == SPECIAL and pm.kind[m - 1] == SPECIAL
                _check_tile(pm, m + 1, k, r, c, cols, s)
        g = globals_[k]
        assert pm.kind[g] == SPECIAL and pm.kind[g - 1] == SPECIAL and pm.kind[g + 1 + s * s] == SPECIAL
        assert [pm.label(t) for t in (g + 1, g + s, g + s + 1, g + s * s)] == [
            f"image {k} thumbnail (0, 0)",
            f"image {k} thumbnail (0, {s - 1})",
            f"image {k} thumbnail (1, 0)",
            f"image {k} thumbnail ({s - 1}, {s - 1})",
        ]
    # image 1, 1:2 tall: 3 rows x 2 cols of tiles; the last tile (row 3, col 2) ends at the mosaic's corner
    m = globals_[0] + np.flatnonzero(ids[globals_[0] : globals_[1]] == _tok(v, "<row_3_col_2>"))[0]
    assert [pm.label(t) for t in (m + 1, m + s * s)] == ["image 1 tile 5 (8, 4)", "image 1 tile 5 (11, 7)"]
    # every marker is special; inside an image block only the row-break newlines are special besides them
    markers = np.isin(ids, [fake, glob] + [_tok(v, f"<row_{r}_col_{c}>") for r in range(1, 4) for c in range(1, 4)])
    assert np.all(pm.kind[markers] == SPECIAL)
    first, last = np.flatnonzero(ids == fake)[0], np.flatnonzero(ids == fake)[-1]
    inside = np.arange(first, last + 1)
    rest = inside[~markers[inside] & (ids[inside] != img)]
    assert np.all(pm.kind[rest] == SPECIAL)
    assert all(v.tokenizer.decode([int(ids[t])]).strip() == "" for t in rest)  # the processor's "\n"s
    outside = np.r_[np.arange(first), np.arange(last + 1, len(ids))]
    assert np.all(pm.kind[outside] == TEXT)
    _generates(v, inputs)


def test_smolvlm_unsplit_images_are_the_global_image_only(vlm):
    v = vlm("smolvlm")
    images = [_image(*SMALL), _image(*HALF, 1)]
    inputs = _inputs(v, images, do_image_splitting=False)
    ids, img = _ids(inputs), v.model.config.image_token_id
    assert inputs["pixel_values"].shape[1] == 2 and int((ids == img).sum()) == 2 * 16
    pm = v.position_map(inputs)
    _check_cover(pm, ids, img, [(4, 4), (4, 4)], [None, None])
    for k in (0, 1):
        g = np.flatnonzero(ids == _tok(v, "<global-img>"))[k]
        assert [pm.label(t) for t in (g + 1, g + 4, g + 5, g + 16)] == [
            f"image {k} (0, 0)",
            f"image {k} (0, 3)",
            f"image {k} (1, 0)",
            f"image {k} (3, 3)",
        ]
        assert np.all(pm.tile[g + 1 : g + 17] == 0)
    assert int((pm.kind == SPECIAL).sum()) == 2 * 3  # <fake><global-img> ... <fake> per image
    _generates(v, inputs)


@pytest.mark.parametrize("name", ["idefics3", "smolvlm"])
def test_idefics_map_matches_where_the_model_puts_each_patch(vlm, name):
    """Through the model's own forward: each image position receives the pixel-shuffled patches of the
    tile and cell the map names (the pixel shuffle is row-major; tiles in pixel_values order)."""
    v = vlm(name)
    fresh = load_vlm(v.path)  # its projector is replaced below
    images = [_image(*HALF, smooth=True), _image(*WIDE, smooth=True)]
    inputs = _inputs(fresh, images)
    pm = fresh.position_map(inputs)
    m = fresh.model.model
    landed = _landed(fresh, m.vision_model, m.connector, "modality_projection", m.text_model, inputs, cls=False)
    cfg = fresh.model.config
    scale, s = cfg.scale_factor, 4
    offsets = np.cumsum([0] + [(g[0] // s) * (g[1] // s) + 1 for g in pm.grids])
    for p in np.flatnonzero(pm.kind == IMAGE):
        k = pm.image[p]
        thumb = pm.view[p] == THUMBNAIL
        ntiles = (pm.grids[k][0] // s) * (pm.grids[k][1] // s)
        want_tile = offsets[k] + (ntiles if thumb else pm.tile[p])
        t, py, px = landed[p, : scale * scale].T
        assert np.all(t == want_tile), (p, t, want_tile)
        assert set(py // scale) == {pm.row[p] % s} and set(px // scale) == {pm.col[p] % s}, p
    # and the tiles sit where the map puts them in the picture: stitched by the map they rebuild the
    # image the global thumbnail shows; stitched transposed they do not
    pv = inputs["pixel_values"][0]
    for k, (gr, gc) in enumerate(pm.grids):
        rows, cols = gr // s, gc // s
        canvas = torch.zeros(3, rows * 32, cols * 32)
        swapped = torch.zeros(3, cols * 32, rows * 32)
        for r in range(rows):
            for c in range(cols):
                tile = int(pm.tile[pm.image_positions[k][(r * s) * gc + c * s]])
                canvas[:, r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32] = pv[offsets[k] + tile]
                rr, cc = divmod(r * cols + c, rows)  # the same tiles laid out on the transposed grid
                swapped[:, rr * 32 : (rr + 1) * 32, cc * 32 : (cc + 1) * 32] = pv[offsets[k] + tile]
        glob = pv[offsets[k] + rows * cols]
        small = lambda x: torch.nn.functional.interpolate(x[None], (32, 32), mode="area")[0]  # noqa: E731
        good, bad = (small(canvas) - glob).abs().mean(), (small(swapped) - glob).abs().mean()
        assert good < 0.1 < bad, (k, float(good), float(bad))


def test_idefics_refuses_prompts_that_do_not_match(vlm):
    v = vlm("idefics3")
    inputs = _inputs(v, [_image(*HALF)])
    ids, img = _ids(inputs), v.model.config.image_token_id
    g = np.flatnonzero(ids == _tok(v, "<global-img>"))[0]
    with pytest.raises(InputError, match=r"<row_3_col_2> at position \d+ is not followed by its image's global image"):
        v.position_map(dict(inputs, input_ids=torch.as_tensor(ids[: g - 1])[None]))
    with pytest.raises(InputError, match="a run of 15 <image> tokens at position .*not one tile of 16"):
        v.position_map(dict(inputs, input_ids=torch.as_tensor(np.delete(ids, g + 3))[None]))
    with pytest.raises(InputError, match=r"need 7 tile\(s\) but pixel_values holds 6"):
        v.position_map(
            dict(
                inputs,
                pixel_values=inputs["pixel_values"][:, :6],
                pixel_attention_mask=inputs["pixel_attention_mask"][:, :6],
            )
        )
    with pytest.raises(InputError, match="pass the model's processor"):
        family_for("idefics3").position_map(v.model.config, inputs)
    swapped = ids.copy()  # tiles in column-major order: not the processor's layout
    a, b = np.flatnonzero(ids == _tok(v, "<row_1_col_2>"))[0], np.flatnonzero(ids == _tok(v, "<row_2_col_1>"))[0]
    swapped[a], swapped[b] = ids[b], ids[a]
    with pytest.raises(InputError, match="not <row_1_col_1> .. <row_3_col_2> in row-major order"):
        v.position_map(dict(inputs, input_ids=torch.as_tensor(swapped)[None]))
    assert int((ids == img).sum()) == 7 * 16


# ------------------------------------------------------------------------------------------------
# InternVL
# ------------------------------------------------------------------------------------------------
def test_internvl_tiles_from_the_original_size_and_thumbnail_last(vlm):
    v = vlm("internvl")
    assert type(v.processor).__name__ == "InternVLProcessor"
    assert v.decoder_layers is v.model.model.language_model.layers and (v.num_layers, v.num_heads) == (2, 4)
    images = [_image(*TALL), _image(*HALF, 1), _image(*WIDE, 2), _image(*SMALL, 3)]
    inputs = _inputs(v, images)
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}  # no num_patches, no sizes
    inputs["original_sizes"] = _sizes(images)
    ids, cfg = _ids(inputs), v.model.config
    ip = v.processor.image_processor
    s = int(cfg.vision_config.image_size[0] / cfg.vision_config.patch_size[0] * cfg.downsample_ratio)
    assert s * s == v.processor.image_seq_length == 16
    patches = [ip.get_number_of_image_patches(h, w) for h, w in (TALL, HALF, WIDE, SMALL)]
    assert patches == [7, 3, 3, 1] and inputs["pixel_values"].shape[0] == sum(patches)
    tiles = [(3, 2), (2, 1), (1, 2), None]  # by hand: the closest aspect ratio of at most 6 tiles (rows, cols)
    grids = [(r * s, c * s) if t else (s, s) for t in tiles for r, c in [t or (1, 1)]]
    assert grids == [(12, 8), (8, 4), (4, 8), (4, 4)]
    pm = v.position_map(inputs)
    _check_cover(pm, ids, cfg.image_token_id, grids, [(s, s), (s, s), (s, s), None])
    starts, ends = np.flatnonzero(ids == _tok(v, "<img>")), np.flatnonzero(ids == _tok(v, "</img>"))
    for k, t in enumerate(tiles):
        a = starts[k] + 1
        assert pm.kind[starts[k]] == SPECIAL and pm.kind[ends[k]] == SPECIAL
        if t is None:
            assert [pm.label(p) for p in (a, a + 3, a + 4, a + 15)] == [
                f"image {k} (0, 0)",
                f"image {k} (0, 3)",
                f"image {k} (1, 0)",
                f"image {k} (3, 3)",
            ]
            continue
        rows, cols = t
        for r in range(rows):
            for c in range(cols):
                _check_tile(pm, a + (r * cols + c) * s * s, k, r, c, cols, s)
        thumb = np.arange(a + rows * cols * s * s, ends[k])
        np.testing.assert_array_equal(thumb, pm.thumbnail_positions[k])
    assert int((pm.kind == SPECIAL).sum()) == 2 * 4
    assert np.all(pm.kind[: starts[0]] == TEXT) and np.all(pm.kind[ends[-1] + 1 :] == TEXT)
    sizes = inputs.pop("original_sizes")
    _generates(v, inputs, original_sizes=sizes)


def test_internvl_map_matches_where_the_model_puts_each_patch(vlm):
    v = vlm("internvl")
    fresh = load_vlm(v.path)
    images = [_image(*TALL, smooth=True), _image(*WIDE, smooth=True)]
    inputs = _inputs(fresh, images)
    pm = fresh.position_map(dict(inputs, original_sizes=_sizes(images)))
    m = fresh.model.model
    landed = _landed(fresh, m.vision_tower, m, "multi_modal_projector", m.language_model, inputs, cls=True)
    s, scale = 4, 2  # downsample_ratio 0.5: 2 x 2 patches per token
    offsets = np.cumsum([0] + [(g[0] // s) * (g[1] // s) + 1 for g in pm.grids])
    for p in np.flatnonzero(pm.kind == IMAGE):
        k = pm.image[p]
        ntiles = (pm.grids[k][0] // s) * (pm.grids[k][1] // s)
        want_tile = offsets[k] + (ntiles if pm.view[p] == THUMBNAIL else pm.tile[p])
        t, py, px = landed[p, : scale * scale].T
        assert np.all(t == want_tile), (p, t, want_tile)
        assert set(py // scale) == {pm.row[p] % s} and set(px // scale) == {pm.col[p] % s}, p
    pv = inputs["pixel_values"]
    for k, (gr, gc) in enumerate(pm.grids):
        rows, cols = gr // s, gc // s
        canvas = torch.zeros(3, rows * 32, cols * 32)
        for r in range(rows):
            for c in range(cols):
                tile = int(pm.tile[pm.image_positions[k][(r * s) * gc + c * s]])
                canvas[:, r * 32 : (r + 1) * 32, c * 32 : (c + 1) * 32] = pv[offsets[k] + tile]
        glob = pv[offsets[k] + rows * cols]
        transposed = torch.nn.functional.interpolate(canvas.transpose(1, 2)[None], (32, 32), mode="area")[0]
        good = (torch.nn.functional.interpolate(canvas[None], (32, 32), mode="area")[0] - glob).abs().mean()
        assert good < 0.1 < (transposed - glob).abs().mean(), (k, float(good))


def test_internvl_refuses_what_it_cannot_place(vlm):
    v = vlm("internvl")
    images = [_image(*TALL), _image(*SMALL, 1)]
    inputs = _inputs(v, images)
    ids = _ids(inputs)
    with pytest.raises(InputError, match=r"a tile count does not fix the tile grid; pass each image's original"):
        v.position_map(inputs)  # 6 tiles: 1x6, 2x3, 3x2 or 6x1
    sized = dict(inputs, original_sizes=_sizes(images))
    v.position_map(sized)
    with pytest.raises(InputError, match=r"original size 16 x 16 .* gives 1 x 1 tiles, but the prompt holds 6 tiles"):
        v.position_map(dict(sized, original_sizes=torch.tensor([[16, 16], [16, 16]])))
    with pytest.raises(InputError, match=r"2 image span\(s\) but the inputs' original sizes list 1"):
        v.position_map(dict(sized, original_sizes=_sizes(images[:1])))
    end = np.flatnonzero(ids == _tok(v, "</img>"))[0]
    with pytest.raises(InputError, match="is not closed by </img>: the prompt is cut"):
        v.position_map(dict(sized, input_ids=torch.as_tensor(ids[: end - 5])[None]))
    with pytest.raises(InputError, match="111 <IMG_CONTEXT> tokens are not a whole number of tiles of 4 x 4"):
        v.position_map(dict(sized, input_ids=torch.as_tensor(np.delete(ids, end - 1))[None]))
    with pytest.raises(InputError, match=r"hold 8 tile\(s\) \(\[7, 1\]\) but pixel_values holds 7"):
        v.position_map(dict(sized, pixel_values=inputs["pixel_values"][:7]))
    with pytest.raises(InputError, match="only 'default'"):
        cfg = type(v.model.config).from_dict(v.model.config.to_dict())
        cfg.vision_feature_select_strategy = "full"
        family_for("internvl").check(cfg)
