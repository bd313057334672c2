"""What is explained: a target maps the model's output to one score per image, ``[B]``.

Any callable ``output -> Tensor[B]`` is a target. The classes here also know how to
:meth:`Target.take` rows, which lets Score-CAM batch masked copies of different images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .errors import TargetError

TargetFn = Callable[[Any], torch.Tensor]
TargetSpec = None | int | Sequence[int] | torch.Tensor | TargetFn


def output_tensor(output: Any, *names: str) -> torch.Tensor:
    """The main tensor of a model output: a tensor, an attribute/key in ``names`` (default
    ``logits``), or the first tensor of a tuple/list/ModelOutput."""
    names = names or ("logits",)
    if isinstance(output, torch.Tensor):
        return output
    for n in names:
        value = output.get(n) if isinstance(output, dict) else getattr(output, n, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for v in output:
            if isinstance(v, torch.Tensor):
                return v
    raise TargetError(f"cannot find a {'/'.join(names)} tensor in a model output of type {type(output).__name__}")


def describe_output(output: Any, depth: int = 0) -> str:
    """A short description of a model output: its type and the shapes of its tensors."""
    if isinstance(output, torch.Tensor):
        return f"Tensor{list(output.shape)}"
    if depth > 1:
        return type(output).__name__
    if isinstance(output, dict) or (hasattr(output, "keys") and hasattr(output, "__getitem__")):
        items = [f"{k}: {describe_output(output[k], depth + 1)}" for k in list(output.keys())[:6]]
        more = ", ..." if len(output.keys()) > 6 else ""
        return f"{type(output).__name__}({', '.join(items)}{more})"
    if isinstance(output, (tuple, list)):
        items = [describe_output(v, depth + 1) for v in output[:6]]
        return f"{type(output).__name__} of {len(output)} ({', '.join(items)}{', ...' if len(output) > 6 else ''})"
    return type(output).__name__


def predicted_class_logits(output: Any, batch_size: int) -> torch.Tensor:
    """The ``[B, classes]`` logits ``targets=None`` picks the predicted class from: the output
    itself when it is such a tensor, else its ``logits`` (attribute or key). Anything else
    (embeddings, a tuple, a dict or ModelOutput without logits) raises :class:`TargetError`
    saying what the model returned and how to name the score."""
    logits = (
        output
        if isinstance(output, torch.Tensor)
        else (output.get("logits") if isinstance(output, dict) else getattr(output, "logits", None))
    )
    if isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[0] == batch_size:
        return logits
    raise TargetError(
        f"targets=None explains the predicted class, which needs class logits [B={batch_size}, classes] (a tensor "
        f"or an output with .logits), but the model returned {describe_output(output)}; pass a callable target "
        f'that returns one score per image, e.g. targets=lambda out: out["score"] (or '
        f"lambda out: out[0][:, 3], or vizkit.targets.ImageTextSimilarity for embeddings)"
    )


class Target:
    """Base class: ``__call__(output) -> [B]`` and ``take(rows)`` for a batch of other rows."""

    def __call__(self, output: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def take(self, rows: torch.Tensor) -> "Target":
        """The target for a batch whose row ``i`` belongs to original image ``rows[i]``."""
        raise NotImplementedError


class ClassLogit(Target):
    """The logit of a class per image: ``classes`` is an int or ``[B]`` indices."""

    def __init__(self, classes: int | Sequence[int] | torch.Tensor):
        self.classes = torch.as_tensor(classes, dtype=torch.long)

    def _select(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.ndim != 2:
            raise TargetError(f"expected class scores [B, classes], got shape {tuple(scores.shape)}")
        idx = self.classes.to(scores.device)
        if idx.ndim == 0:
            idx = idx.expand(scores.shape[0])
        if idx.shape[0] != scores.shape[0]:
            raise TargetError(f"{idx.shape[0]} target classes for a batch of {scores.shape[0]} images")
        bad = (idx < 0) | (idx >= scores.shape[1])
        if bad.any():
            raise TargetError(
                f"target class {int(idx[bad][0])} is out of range: the model has {scores.shape[1]} classes "
                f"(valid 0..{scores.shape[1] - 1})"
            )
        return scores.gather(1, idx[:, None])[:, 0]

    def _logits(self, output: Any) -> torch.Tensor:
        scores = output_tensor(output)
        if scores.ndim != 2:
            raise TargetError(
                f"class targets need class logits [B, classes], but the model returned {describe_output(output)}; "
                f'pass a callable target that returns one score per image, e.g. targets=lambda out: out["score"]'
            )
        return scores

    def __call__(self, output: Any) -> torch.Tensor:
        return self._select(self._logits(output))

    def take(self, rows: torch.Tensor) -> "ClassLogit":
        return type(self)(self.classes if self.classes.ndim == 0 else self.classes[rows.cpu()])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.classes.tolist()})"


class ClassProbability(ClassLogit):
    """The softmax probability of a class per image."""

    def __call__(self, output: Any) -> torch.Tensor:
        return self._select(self._logits(output).softmax(-1))


class ImageTextSimilarity(Target):
    """CLIP score of image ``b`` against text ``text_index[b]``: ``logit_scale * cos(image, text)``.

    ``text_features`` is ``[T, D]`` (normalised or not); the model output is the image
    embedding ``[B, D]`` (or an output holding ``image_embeds``). With ``probability=True``
    the score is the softmax over all T texts instead. ``text_index=None`` explains each
    image's most similar text, chosen from the first output the target sees (the explained
    forward pass itself, so no extra pass is needed) and kept for later calls.
    After the first call, ``observed`` holds that output's ``[B, T]`` logits and ``index``
    the ``[B]`` (or scalar) text indices.
    """

    def __init__(
        self,
        text_features: torch.Tensor,
        text_index: int | Sequence[int] | torch.Tensor | None,
        logit_scale: float | torch.Tensor = 100.0,
        probability: bool = False,
    ):
        if text_features.ndim != 2:
            raise TargetError(f"text features must be [T, D] (one row per text), got {tuple(text_features.shape)}")
        self.text = F.normalize(text_features.detach().float(), dim=-1)
        self.index: torch.Tensor | None = None
        if text_index is not None:
            self.index = torch.as_tensor(text_index, dtype=torch.long)
            if ((self.index < 0) | (self.index >= self.text.shape[0])).any():
                raise TargetError(f"text index {self.index.tolist()} is out of range for {self.text.shape[0]} texts")
        self.scale = float(logit_scale)
        self.probability = probability
        self.observed: torch.Tensor | None = None

    def logits(self, output: Any) -> torch.Tensor:
        """``[B, T]`` image-text logits."""
        image = F.normalize(output_tensor(output, "image_embeds", "pooler_output").float(), dim=-1)
        return self.scale * image @ self.text.to(image.device).T

    def __call__(self, output: Any) -> torch.Tensor:
        logits = self.logits(output)
        if self.observed is None:
            self.observed = logits.detach()
        if self.index is None:
            self.index = logits.detach().argmax(-1).cpu()
        if self.probability:
            logits = logits.softmax(-1)
        idx = self.index.to(logits.device)
        if idx.ndim == 0:
            idx = idx.expand(logits.shape[0])
        if idx.shape[0] != logits.shape[0]:
            raise TargetError(f"{idx.shape[0]} text indices for a batch of {logits.shape[0]} images")
        return logits.gather(1, idx[:, None])[:, 0]

    def take(self, rows: torch.Tensor) -> "ImageTextSimilarity":
        if self.index is None:
            raise TargetError(
                "the most similar text is chosen on the first call: call the target on the full batch "
                "before taking rows"
            )
        index = self.index if self.index.ndim == 0 else self.index[rows.cpu()]
        t = ImageTextSimilarity.__new__(ImageTextSimilarity)
        t.text, t.index, t.scale, t.probability, t.observed = self.text, index, self.scale, self.probability, None
        return t


class _Callable(Target):
    """A plain user callable; ``take`` is not available (Score-CAM then batches per channel)."""

    def __init__(self, fn: TargetFn):
        self.fn = fn

    def __call__(self, output: Any) -> torch.Tensor:
        scores = self.fn(output)
        if not isinstance(scores, torch.Tensor) or scores.ndim != 1:
            raise TargetError(
                f"a target callable must return one score per image, a [B] tensor; got "
                f"{type(scores).__name__} {tuple(getattr(scores, 'shape', ()))}"
            )
        return scores


def as_target(targets: TargetSpec, batch_size: int, output: Any = None) -> Target:
    """Normalise a targets argument for a batch of ``batch_size`` images.

    ``None`` -> the predicted class (needs ``output``); an int -> that class for every image;
    a list / 1-D tensor of ints -> one class per image (its length must equal the batch,
    never silently truncated); a callable -> itself.
    """
    if isinstance(targets, Target):
        return targets
    if targets is None:
        if output is None:
            raise TargetError("targets=None needs the model output to pick the predicted class")
        return ClassLogit(predicted_class_logits(output, batch_size).argmax(-1).detach().cpu())
    if isinstance(targets, bool):
        raise TargetError("targets must be an int, a list of ints, a callable or None, not a bool")
    if isinstance(targets, int):
        return ClassLogit(targets)
    if isinstance(targets, torch.Tensor) and targets.ndim == 0:
        return ClassLogit(int(targets))
    if callable(targets) and not isinstance(targets, (list, tuple, torch.Tensor)):
        return _Callable(targets)
    if isinstance(targets, (list, tuple, torch.Tensor)):
        values = torch.as_tensor(targets)
        if values.ndim != 1 or values.dtype.is_floating_point:
            raise TargetError(f"targets must be a flat list of class indices, got {targets!r}")
        if len(values) != batch_size:
            raise TargetError(
                f"{len(values)} targets for a batch of {batch_size} images: give one class per image "
                "(or a single int for all)"
            )
        return ClassLogit(values.long())
    raise TargetError(
        f"targets of type {type(targets).__name__} are not supported: use an int, a list of ints or a callable"
    )


#: what a real/fake detector's explanation can explain (:func:`real_fake_targets`)
REAL_FAKE_TARGETS = ("predicted", "fake", "real", "label")


def real_fake_targets(target: str, labels: torch.Tensor, fake_index: int = 1) -> None | int | torch.Tensor:
    """The targets argument of :func:`vizkit.cam` for a two-class real/fake detector whose fake
    class is ``fake_index``: ``"predicted"`` -> None (each image's predicted class), ``"fake"``
    -> ``fake_index``, ``"real"`` -> the other class, ``"label"`` -> per image ``[B]`` the class
    of its true label (``labels`` ``[B]``, 1 = fake). Anything else raises :class:`TargetError`."""
    if target not in REAL_FAKE_TARGETS:
        raise TargetError(f"target {target!r}: choose one of {', '.join(REAL_FAKE_TARGETS)}")
    if target == "predicted":
        return None
    if target == "fake":
        return fake_index
    if target == "real":
        return 1 - fake_index
    return torch.where(labels == 1, fake_index, 1 - fake_index)
