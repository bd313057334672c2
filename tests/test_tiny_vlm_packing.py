"""Several questions about one image in one training row (``pack_shared_prefix``): the same
logits, loss and gradients as the questions as separate sequences, for fewer FLOPs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vizkit import zoo
from vizkit.zoo import tiny_vlm, vlm_data
from vizkit.zoo import tiny_vlm_train as T

NEG = torch.finfo(torch.float32).min


def test_hand_built_row():
    # prefix [1, 2]; question A: rest [3] + solution [4]; question B: rest [5, 6] + solution [7, 8]
    ids, mask, pos, lab = T.pack_shared_prefix([[([1, 2, 3], [4]), ([1, 2, 5, 6], [7, 8])], [([1, 2, 9], [10])]],
                                               prefix_len=2, pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 9, 10, 0, 0, 0, 0]]
    assert pos.tolist() == [[0, 1, 2, 3, 2, 3, 4, 5], [0, 1, 2, 3, 0, 0, 0, 0]]
    assert lab.tolist() == [[-100, -100, -100, 4, -100, -100, 7, 8], [-100, -100, -100, 10] + [-100] * 4]
    seen = (mask[:, 0] == 0).int()
    assert mask.shape == (2, 1, 8, 8) and set(mask.unique().tolist()) == {0.0, NEG}
    assert seen[0].tolist() == [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0, 0],  # question B sees the prefix and itself, not question A
        [1, 1, 0, 0, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 1, 1, 0],
        [1, 1, 0, 0, 1, 1, 1, 1],
    ]
    assert seen[1, 3].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert seen[1, 4:].tolist() == torch.eye(8, dtype=torch.int)[4:].tolist()  # padding: itself only


def test_questions_of_another_image_are_refused():
    with pytest.raises(ValueError, match="share their first prefix_len"):
        T.pack_shared_prefix([[([1, 2, 3], [4]), ([1, 9, 5], [7])]], prefix_len=2, pad_id=0)


def test_more_questions_are_deterministic_and_about_the_same_scene():
    s = vlm_data.item("train", 7, masks=False)
    a, b = vlm_data.more_questions(s, 3), vlm_data.more_questions(s, 3)
    assert [q.problem for q in a] == [q.problem for q in b] and len(a) == 3
    assert vlm_data.item("train", 7, masks=False).question == s.question  # the item itself is unchanged
    colours = {o["color"] for o in s.meta["objects"]}
    many = vlm_data.more_questions(s, 40)
    for q in many:
        if q.kind == "count":
            assert int(q.answer) == len(s.meta["objects"]) or q.answer == str(len(s.meta["objects"]))
        if q.kind == "colour":
            assert q.answer in colours
    assert {q.kind for q in many} == set(vlm_data.KINDS)


def test_packed_rows_give_the_logits_loss_and_gradients_of_separate_sequences():
    bundle = zoo.load("tiny_vlm")
    model, tok = bundle.model, bundle.tokenizer
    enc = tiny_vlm.Encoder(tok)
    samples = vlm_data.dataset("train", n=3, start=100, masks=False)
    groups = [[(enc.prompt_ids(s.question), enc.solution_ids(s.meta["solution"]))]
              + [(enc.prompt_ids(q.problem), enc.solution_ids(q.solution)) for q in vlm_data.more_questions(s, 2)]
              for s in samples]
    feats = T.tower_features(model, tiny_vlm.to_pixels(np.stack([s.image for s in samples])))
    prefix_len = tiny_vlm.image_offset(tok) + tiny_vlm.NUM_IMAGE_TOKENS
    params = [p for p in model.model.language_model.parameters()] + list(model.lm_head.parameters())

    def run(ids, att, pos, lab, f):
        model.zero_grad(set_to_none=True)
        out = model(inputs_embeds=T.embeds_from_features(model, ids, f), attention_mask=att, position_ids=pos,
                    labels=lab)
        out.loss.backward()
        keep = lab[:, 1:] != -100  # logits at t predict label t + 1
        return out.loss.detach(), out.logits[:, :-1][keep].detach(), [p.grad.clone() for p in params]

    ids, mask, pos, lab = T.pack_shared_prefix(groups, prefix_len, enc.pad)
    packed = run(ids, mask, pos, lab, feats)
    flat = [pair for g in groups for pair in g]
    sids, satt, slab = enc.batch([p for p, _ in flat], [s for _, s in flat])
    separate = run(sids, satt, None, slab, feats.repeat_interleave(3, 0))
    assert ids.shape[1] < 0.6 * 3 * sids.shape[1]  # a row of three questions: under 60 % of three rows
    torch.testing.assert_close(packed[0], separate[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(packed[1], separate[1], rtol=1e-4, atol=1e-4)
    for gp, gs in zip(packed[2], separate[2]):
        torch.testing.assert_close(gp, gs, rtol=1e-3, atol=1e-6)
    model.zero_grad(set_to_none=True)
