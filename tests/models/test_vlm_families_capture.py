"""Scenario 5 on every supported VLM family, each a tiny random folder saved by the family's own
model and processor classes (tests/helpers/vlm_folders.py, tests/helpers/vlm_folders_more.py):

- the generated tokens are identical with and without the capture;
- the captured rows equal eager ``output_attentions`` within 1e-5, at every step, every head;
- every image position the adapter places is one of the processor's image tokens, placed once;
  image tokens that carry no patch (newline features, CLS) are special;
- ``vizkit vlm-video`` writes an mp4 per layer for the folder.

Multi-image prompts on Qwen2-VL and LLaVA-NeXT (and every family that takes two images).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import vlm_folders as VF
import vlm_folders_more as VM
from PIL import Image

from vizkit import cli
from vizkit.models.vlm import IMAGE, family_table, load_vlm, supported
from vizkit.models.vlm.trace import attention_implementations, build_inputs, trace_sample

PROBLEM = "What colour is the star?"

#: family -> (builder, images per prompt)
FAMILIES = {
    "llava": (VF.save_random_llava, 2),
    "llava_pixtral": (VF.save_random_llava_pixtral, 2),
    "qwen2_vl": (VF.save_random_qwen2_vl, 2),
    "qwen2_5_vl": (VF.save_random_qwen2_5_vl, 2),
    "qwen3_vl": (VF.save_random_qwen3_vl, 2),
    "llava_next": (VF.save_random_llava_next, 2),
    "llava_onevision": (VF.save_random_llava_onevision, 1),
    "idefics3": (VM.save_random_idefics3, 2),
    "smolvlm": (VM.save_random_smolvlm, 2),
    "gemma3": (VM.save_random_gemma3, 2),
    "paligemma": (VM.save_random_paligemma, 1),
    "mistral3": (VM.save_random_mistral3, 2),
    "internvl": (VM.save_random_internvl, 2),
}


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    shapes = [(60, 80), (96, 48)]  # 3:4 and 2:1
    return [Image.fromarray(rng.integers(0, 255, (*shapes[k], 3), dtype=np.uint8)) for k in range(n)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm_capture")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = FAMILIES[name][0](root / name)
        return cache[name]

    return get


def test_every_registered_family_is_tested_and_in_the_docs():
    tested = {"llava" if n == "llava_pixtral" else n for n in FAMILIES}
    assert set(supported()) == tested
    # the docs' family table is the adapters' own reads / limits: the docs build writes family_table() into
    # docs/_generated/vlm_families.md, which the page includes (tests/test_docs.py builds it)
    page = (Path(__file__).resolve().parents[2] / "docs" / "howto" / "vlm-families.md").read_text()
    assert "```{include} ../_generated/vlm_families.md" in page and "|" in family_table()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_capture_is_exact_and_changes_nothing(folders, name):
    vlm = load_vlm(folders(name))
    n_images = FAMILIES[name][1]
    images = _images(n_images)
    layers = [0, vlm.num_layers - 1]
    impl = attention_implementations(vlm.model)
    trace = trace_sample(vlm, PROBLEM, images, layers, max_new_tokens=5, start_phrase=None)
    assert attention_implementations(vlm.model) == impl
    inputs, _ = build_inputs(vlm, PROBLEM, images)
    inputs.pop("original_sizes")
    L = inputs["input_ids"].shape[1]
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        plain = vlm.model.generate(**inputs, **kw)[0, L:].tolist()
    n = trace.num_answer_tokens
    assert plain[:n] == trace.input_ids[L:].tolist()
    # the image positions are the processor's image tokens, each placed once, in as many images as given
    pm = trace.pmap
    ids = inputs["input_ids"][0].numpy()
    image_token = (
        vlm.model.config.image_token_id
        if hasattr(vlm.model.config, "image_token_id")
        else vlm.model.config.image_token_index
    )
    # every patch sits on an image-token position; the image tokens that carry no patch (LLaVA-NeXT's
    # newline features, LLaVA 'full''s CLS) are special, never text
    image_pos = np.flatnonzero(pm.kind[:L] == IMAGE)
    assert set(image_pos.tolist()) <= set(np.flatnonzero(ids == image_token).tolist())
    assert np.all(pm.kind[:L][ids == image_token] != 0)
    assert pm.num_images == n_images
    placed = np.concatenate(list(pm.image_positions) + list(pm.thumbnail_positions))
    assert len(placed) == len(set(placed.tolist())) == len(image_pos)
    for k, (r, c) in enumerate(pm.grids):
        assert len(pm.image_positions[k]) == r * c
    # rows = eager output_attentions
    vlm.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = vlm.model.generate(**inputs, **kw, output_attentions=True, return_dict_in_generate=True)
    finally:
        vlm.model.set_attn_implementation(impl[0])
    assert out.sequences[0, L : L + n].tolist() == trace.input_ids[L:].tolist()
    for layer in layers:
        assert trace.rows[layer].shape[:2] == (n, vlm.num_heads)
        for j in range(n):
            ref = out.attentions[j][layer][0, :, -1, :].float().numpy()
            got = trace.rows[layer][j]
            np.testing.assert_allclose(got[:, : ref.shape[-1]], ref, atol=1e-5, rtol=0)
            assert np.all(got[:, ref.shape[-1] :] == 0)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_cli_writes_an_mp4_per_layer(folders, name, tmp_path, capsys):
    images = _images(FAMILIES[name][1])
    for k, im in enumerate(images):
        im.save(tmp_path / f"im{k}.png")
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps(
            [
                {
                    "id": "s0",
                    "image": [f"im{k}.png" for k in range(len(images))],
                    "problem": PROBLEM,
                    "solution": "The star is red.",
                }
            ]
        )
    )
    out = tmp_path / "run"
    code = cli.main(
        [
            "vlm-video",
            "--model_path",
            str(folders(name)),
            "--benchmark_json",
            str(bench),
            "--layers",
            "0",
            "-1",
            "--max_new_tokens",
            "4",
            "--start_phrase",
            "",
            "--output-dir",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    last = load_vlm(folders(name)).num_layers - 1
    for layer in (0, last):
        video = out / f"combined_attention_visualization_layer{layer}.mp4"
        assert video.is_file() and video.read_bytes()[4:8] == b"ftyp"
    with np.load(out / "attention.npz") as z:
        assert len(z["grids"]) == len(images) and set(z["kind"].tolist()) >= {0, 1, 2}
