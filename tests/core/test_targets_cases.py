""":mod:`vizkit.targets` on hand-computed cases: the CLIP image-text score (similarity, probability,
the most similar text chosen on the first call, taking rows), class probabilities, the description
of model outputs that error messages quote, and how every kind of ``targets`` argument is read."""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch

from vizkit.errors import TargetError
from vizkit.targets import (
    ClassLogit,
    ClassProbability,
    ImageTextSimilarity,
    Target,
    as_target,
    describe_output,
    output_tensor,
    predicted_class_logits,
)

# three texts in 2-D: along x, along y, and the diagonal (not normalised: the target normalises them)
TEXT = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
# two images: one along x, one at 30 degrees from x (not normalised either)
IMAGE = torch.tensor([[5.0, 0.0], [math.sqrt(3), 1.0]])


def _cos() -> torch.Tensor:
    """``[2, 3]`` cosines of IMAGE against TEXT, by hand."""
    s = math.sqrt(0.5)
    return torch.tensor([[1.0, 0.0, s], [math.sqrt(3) / 2, 0.5, (math.sqrt(3) / 2 + 0.5) * s]])


def test_image_text_similarity_by_hand():
    t = ImageTextSimilarity(TEXT, [2, 1], logit_scale=10.0)
    assert torch.allclose(t.logits(IMAGE), 10 * _cos(), atol=1e-6)
    assert torch.allclose(t(IMAGE), 10 * torch.stack([_cos()[0, 2], _cos()[1, 1]]), atol=1e-6)
    assert torch.allclose(t.observed, 10 * _cos(), atol=1e-6)  # the first call's logits are kept
    # the default scale is CLIP's 100, the default score the similarity (not the probability)
    assert torch.allclose(ImageTextSimilarity(TEXT, 0)(IMAGE), 100 * _cos()[:, 0], atol=1e-4)


def test_image_text_probability_is_the_softmax_over_the_texts():
    t = ImageTextSimilarity(TEXT, torch.tensor([0, 2]), logit_scale=3.0, probability=True)
    p = (3 * _cos()).softmax(-1)
    assert torch.allclose(t(IMAGE), torch.stack([p[0, 0], p[1, 2]]), atol=1e-6)


def test_image_text_similarity_reads_named_embeddings():
    t = ImageTextSimilarity(TEXT, 1, logit_scale=1.0)
    want = _cos()[:, 1]
    assert torch.allclose(t({"last_hidden_state": torch.ones(2, 5, 2), "image_embeds": IMAGE}), want, atol=1e-6)
    assert torch.allclose(t({"last_hidden_state": torch.ones(2, 5, 2), "pooler_output": IMAGE}), want, atol=1e-6)


def test_image_text_similarity_chooses_the_most_similar_text_once():
    t = ImageTextSimilarity(TEXT, None, logit_scale=1.0)
    assert t.index is None and t.observed is None
    first = t(IMAGE)
    # image 0 is along text 0; image 1 (30 degrees) is closest to the diagonal (15 degrees away)
    assert t.index.tolist() == [0, 2]
    assert torch.allclose(first, torch.stack([_cos()[0, 0], _cos()[1, 2]]), atol=1e-6)
    # later calls (e.g. on masked images) keep the texts and the first observed logits
    swapped = IMAGE.flip(0)
    assert torch.allclose(t(swapped), torch.stack([_cos()[1, 0], _cos()[0, 2]]), atol=1e-6)
    assert torch.allclose(t.observed, _cos(), atol=1e-6)


def test_image_text_similarity_take_rows():
    t = ImageTextSimilarity(TEXT, [1, 2], logit_scale=2.0, probability=True)
    t(IMAGE)
    sub = t.take(torch.tensor([1, 1, 0]))
    assert isinstance(sub, ImageTextSimilarity) and sub.observed is None
    assert sub.index.tolist() == [2, 2, 1] and sub.scale == 2.0 and sub.probability is True
    p = (2 * _cos()).softmax(-1)
    assert torch.allclose(sub(IMAGE[[1, 1, 0]]), torch.stack([p[1, 2], p[1, 2], p[0, 1]]), atol=1e-6)
    one = ImageTextSimilarity(TEXT, 2, logit_scale=2.0).take(torch.tensor([0, 1, 1]))
    assert one.index.ndim == 0 and int(one.index) == 2
    with pytest.raises(TargetError, match="call the target on the full batch before taking rows"):
        ImageTextSimilarity(TEXT, None).take(torch.tensor([0]))


@pytest.mark.parametrize("index", [-1, 3, [0, 3]])
def test_image_text_index_out_of_range(index):
    with pytest.raises(TargetError, match="out of range for 3 texts"):
        ImageTextSimilarity(TEXT, index)


def test_image_text_index_edges_and_dtype():
    # 0 and T - 1 are valid; an int32 index (e.g. from numpy) is read as the int64 that gather takes
    t = ImageTextSimilarity(TEXT, torch.tensor([0, 2], dtype=torch.int32), logit_scale=1.0)
    assert t.index.dtype == torch.long
    assert torch.allclose(t(IMAGE), torch.stack([_cos()[0, 0], _cos()[1, 2]]), atol=1e-6)
    # text features with more dimensions than texts: the range is over the texts
    wide = torch.eye(2, 5)
    with pytest.raises(TargetError, match="out of range for 2 texts"):
        ImageTextSimilarity(wide, 3)
    with pytest.raises(TargetError, match="3 text indices for a batch of 2 images"):
        ImageTextSimilarity(TEXT, [0, 1, 2])(IMAGE)


def test_image_text_similarity_stays_on_the_embeddings_device():
    t = ImageTextSimilarity(TEXT, [0, 1])
    assert t(IMAGE.to("meta")).device.type == "meta"  # the meta device stands in for a GPU
    chosen = ImageTextSimilarity(TEXT, None)
    chosen(IMAGE)
    assert chosen.index.device.type == "cpu"


def test_class_probability_is_the_softmax_over_classes():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    p = logits.softmax(-1)
    assert torch.allclose(ClassProbability([2, 0])(logits), torch.stack([p[0, 2], p[1, 0]]))
    assert repr(ClassProbability(1)) == "ClassProbability(1)" and repr(ClassLogit([0, 2])) == "ClassLogit([0, 2])"


def test_describe_output():
    t = torch.zeros(2, 3)
    assert describe_output(t) == "Tensor[2, 3]"
    assert describe_output({"a": t, "b": (t, 1)}) == "dict(a: Tensor[2, 3], b: tuple of 2 (Tensor[2, 3], int))"
    # below two levels only the type is named
    assert describe_output({"a": {"b": {"c": t}}}) == "dict(a: dict(b: dict))"
    assert describe_output([[[t]]]) == "list of 1 (list of 1 (list))"
    assert describe_output(OrderedDict(x=t)) == "OrderedDict(x: Tensor[2, 3])"
    assert describe_output(3.5) == "float" and describe_output(None) == "NoneType"
    six = {str(i): i for i in range(6)}
    assert describe_output(six) == "dict(0: int, 1: int, 2: int, 3: int, 4: int, 5: int)"
    assert describe_output({**six, "6": 6}) == "dict(0: int, 1: int, 2: int, 3: int, 4: int, 5: int, ...)"
    assert describe_output(tuple(range(6))) == "tuple of 6 (int, int, int, int, int, int)"
    assert describe_output(tuple(range(7))) == "tuple of 7 (int, int, int, int, int, int, ...)"


class _Mapping:
    """A mapping-like output that is not a dict (e.g. a ModelOutput): keys() and [] only."""

    def __init__(self, **items):
        self._items = items

    def keys(self):
        return self._items.keys()

    def __getitem__(self, key):
        return self._items[key]


def test_describe_output_of_a_mapping_that_is_not_a_dict():
    assert describe_output(_Mapping(score=torch.zeros(4))) == "_Mapping(score: Tensor[4])"


def test_output_tensor_and_predicted_class_logits():
    logits, other = torch.zeros(2, 3), torch.ones(2, 3)
    assert output_tensor({"x": other, "logits": logits}) is logits
    assert output_tensor({"x": 1, "y": other}) is other
    assert output_tensor((1, other)) is other
    assert output_tensor({"emb": other}, "emb") is other
    with pytest.raises(TargetError, match="cannot find a logits tensor in a model output of type str"):
        output_tensor("nothing")
    assert predicted_class_logits({"logits": logits}, 2) is logits
    with pytest.raises(TargetError, match=r"class logits \[B=3, classes\]"):
        predicted_class_logits(logits, 3)


def test_as_target_reads_every_kind_of_argument():
    out = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]])
    assert as_target(None, 2, out).classes.tolist() == [1, 0]  # the predicted classes
    assert as_target(2, 2).classes.tolist() == 2
    assert as_target(torch.tensor(1), 2).classes.tolist() == 1
    assert as_target([2, 0], 2)(out).tolist() == [1.0, 3.0]
    assert as_target(torch.tensor([0, 1]), 2)(out).tolist() == [0.0, 0.0]
    t = ClassLogit(1)
    assert as_target(t, 2) is t
    scores = as_target(lambda o: o[:, 2], 2)
    assert isinstance(scores, Target) and scores(out).tolist() == [1.0, 1.0]
    with pytest.raises(NotImplementedError):
        scores.take(torch.tensor([0]))
    for bad, match in [
        (True, "not a bool"),
        ([0.5, 1.0], "flat list of class indices"),
        ([[0], [1]], "flat list of class indices"),
        ([1, 2, 0], "3 targets for a batch of 2 images"),
        ("cat", "targets of type str are not supported"),
    ]:
        with pytest.raises(TargetError, match=match):
            as_target(bad, 2)
    with pytest.raises(TargetError, match="needs the model output"):
        as_target(None, 2)
    with pytest.raises(TargetError, match=r"must return one score per image, a \[B\] tensor; got Tensor \(2, 3\)"):
        as_target(lambda o: o, 2)(out)


def test_predicted_class_logits_reads_a_logits_attribute():
    # an output object that is neither a tensor nor a dict (e.g. a dataclass) with a .logits attribute
    logits = torch.tensor([[0.0, 2.0, 1.0], [4.0, 0.0, 1.0]])
    out = SimpleNamespace(logits=logits, hidden=torch.zeros(2, 5))
    assert predicted_class_logits(out, 2) is logits
    assert as_target(None, 2, out).classes.tolist() == [1, 0]  # argmax of each row
    with pytest.raises(TargetError, match="SimpleNamespace"):
        predicted_class_logits(SimpleNamespace(LOGITS=logits), 2)


def test_image_text_logits_normalise_token_embeddings_along_the_feature_axis():
    # [B=1, N=2, D=2] token embeddings: each token is normalised on its own (the last axis), giving the
    # per-token cosines [1, 2, T]: token 0 = IMAGE[0] (along x), token 1 = IMAGE[1] (30 degrees)
    tokens = IMAGE[None]
    t = ImageTextSimilarity(TEXT, 0, logit_scale=10.0)
    got = t.logits(tokens)
    assert got.shape == (1, 2, 3)
    assert torch.allclose(got[0], 10 * _cos(), atol=1e-6)


def test_image_text_similarity_follows_the_embeddings_to_another_device():
    # fake tensors carry a device without data, so a "cuda" image can be scored on a CPU-only machine;
    # mixing devices in one op raises as it would on a GPU
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        text = torch.randn(3, 4)  # the texts on the CPU
        image = torch.randn(2, 4, device="cuda")
        t = ImageTextSimilarity(text, None)
        assert t.logits(image).device.type == "cuda"  # the texts are moved to the image's device
        score = t(image)
        assert score.device.type == "cuda" and tuple(score.shape) == (2,)
        assert t.index.device.type == "cpu"  # the chosen texts are kept on the CPU and moved for the gather
        rows = t.take(torch.tensor([1, 0, 0]))
        assert rows(torch.randn(3, 4, device="cuda")).device.type == "cuda"


def test_output_tensor_reads_attributes_of_an_output_object():
    logits, emb = torch.zeros(2, 3), torch.ones(2, 4)
    out = SimpleNamespace(emb=emb, logits=logits)  # neither a tensor, a dict nor a tuple
    assert output_tensor(out) is logits
    assert output_tensor(out, "emb") is emb
    assert output_tensor(out, "missing", "emb") is emb  # the first name present wins
    # a class target reads the logits attribute: classes [2, 0] of logits [[0, 1, 2], [3, 4, 5]] -> 2 and 3
    scores = SimpleNamespace(logits=torch.arange(6.0).view(2, 3))
    assert ClassLogit([2, 0])(scores).tolist() == [2.0, 3.0]


def test_class_logit_stores_int64_indices_whatever_it_is_given():
    # int16 indices (e.g. labels stored small): kept as the int64 that gather takes (it refuses int16)
    t = ClassLogit(torch.tensor([2, 0], dtype=torch.int16))
    assert t.classes.dtype == torch.long
    scores = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    assert t(scores).tolist() == [2.0, 3.0]
    assert ClassLogit(torch.tensor(1, dtype=torch.int32)).classes.dtype == torch.long


def test_class_logit_take_rows():
    scores = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
    # per-image classes [2, 0] taken at rows [1, 1, 0] -> classes [0, 0, 2]: scores 0, 3, 8 of the 3 rows
    sub = ClassLogit([2, 0]).take(torch.tensor([1, 1, 0]))
    assert isinstance(sub, ClassLogit) and sub.classes.tolist() == [0, 0, 2]
    assert sub(scores).tolist() == [0.0, 3.0, 8.0]
    # one class for all images stays one class, whatever the rows; ClassProbability keeps its type
    one = ClassProbability(1).take(torch.tensor([0, 0, 1]))
    assert type(one) is ClassProbability and one.classes.ndim == 0 and int(one.classes) == 1


@pytest.mark.parametrize("cls", [3, -1, [0, 3]])
def test_class_logit_out_of_range_is_a_target_error(cls):
    # 3 classes: valid indices are 0, 1, 2; class 3 (= the count) and -1 are out of range (not read from the end)
    with pytest.raises(TargetError, match=r"out of range: the model has 3 classes \(valid 0..2\)"):
        ClassLogit(cls)(torch.zeros(2, 3))


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4)])
def test_image_text_similarity_needs_text_features_t_by_d(shape):
    with pytest.raises(TargetError, match=r"text features must be \[T, D\].*got " + re.escape(str(shape))):
        ImageTextSimilarity(torch.ones(shape), 0)
