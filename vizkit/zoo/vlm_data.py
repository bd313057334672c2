"""Visual questions about synthetic shape scenes, for the zoo's ``tiny_vlm``; and a reader for
benchmarks in the same JSON format.

Scenes come from :func:`vizkit.zoo.shapes.render_scene` (48 x 48, 1-3 shapes). Every scene
gets one question of four kinds (answers are one word):

=========  =================================  ===================================
kind       problem                            answer
=========  =================================  ===================================
colour     What colour is the star?           a colour (``red``, ``green``, ...)
count      How many shapes are there?         a number (``1``, ``2``, ``3``)
shape      What shape is the red object?      a shape (``circle``, ``square``, ...)
exists     Is there a blue circle?            ``yes`` / ``no``
=========  =================================  ===================================

The reasoning of an ``exists`` question first names the colours of the scene's objects of
the asked shape ("The circle is red.", "The circles are red and blue.", "There is no
circle."), then decides ("There is no blue circle. Answer: no").

The ``solution`` is a short reasoning that begins with "Based on the following requirements"
and ends with "Answer: <answer>", e.g. "Based on the following requirements, I look for the
star. The star is red. Answer: red". A question names exactly one object when it names one
(the star is the only star, the red object the only red one), and that object's mask is
``Sample.mask``; count questions and "no" answers have no such object (``mask`` is None).

Benchmark format (one JSON list; image paths relative to the JSON's folder)::

    [{"id": "test-00000", "image": ["images/test-00000.png"], "problem": "What colour is the star?",
      "solution": "Based on the following requirements, ... Answer: red", "answer": "red"}, ...]

:func:`load_benchmark` reads one; :func:`write_benchmark` writes one.

Splits are disjoint random streams: item ``i`` of split ``s`` is drawn from
``np.random.default_rng([SEED, split_id, i])``, so any slice can be regenerated alone and a
held-out scene is never a training scene.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import VizkitError
from ..io import write_text
from . import shapes
from .common import Sample

SEED = 4004
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
#: how many samples ``dataset(split)`` returns by default (``n=`` asks for more or fewer)
DEFAULT_SIZES = {"train": 2000, "val": 300, "test": 500}
#: the four kinds of questions tiny_vlm answers
KINDS: tuple[str, ...] = ("colour", "count", "shape", "exists")
IMAGE_SIZE = 48
#: how every reasoning (solution) begins: seed 004's start phrase
PREFIX = "Based on the following requirements"
BENCHMARK_KEYS = ("id", "image", "problem", "solution", "answer")


@dataclass
class Question:
    """One generated question about a scene: its kind, the problem text, the reasoning and the answer."""

    kind: str
    problem: str
    solution: str
    answer: str
    target: int | None  # index of the object the question is about, if any


def _unique_object(rng: np.random.Generator, objects: list[shapes.ShapeObject], attr: str) -> int | None:
    """Index of a random object whose ``attr`` ("shape" / "color") no other object shares."""
    values = [getattr(o, attr) for o in objects]
    unique = [i for i, v in enumerate(values) if values.count(v) == 1]
    return int(rng.choice(unique)) if unique else None


#: kind -> (the attribute that names the object, problem, reasoning after the prefix, answer attribute)
_ATTRIBUTE_QUESTIONS = {
    "colour": (
        "shape",
        "What colour is the {shape}?",
        "I look for the {shape}. The {shape} is {color}. Answer: {color}",
        "color",
    ),
    "shape": (
        "color",
        "What shape is the {color} object?",
        "I look for the {color} object. The {color} object is a {shape}. Answer: {shape}",
        "shape",
    ),
}


def _attribute_question(rng: np.random.Generator, objects: list[shapes.ShapeObject], kind: str) -> Question | None:
    """A colour / shape question about an object named by its unique shape / colour (None if none is unique)."""
    key, problem, reasoning, answer_attr = _ATTRIBUTE_QUESTIONS[kind]
    i = _unique_object(rng, objects, key)
    if i is None:
        return None
    words = {"shape": objects[i].shape, "color": objects[i].color}
    return Question(kind, problem.format(**words), f"{PREFIX}, {reasoning.format(**words)}", words[answer_attr], i)


def _count_question(rng: np.random.Generator, objects: list[shapes.ShapeObject]) -> Question:
    n = len(objects)
    there = "There is 1 shape" if n == 1 else f"There are {n} shapes"
    return Question(
        "count", "How many shapes are there?", f"{PREFIX}, I count the shapes. {there}. Answer: {n}", str(n), None
    )


def _exists_question(rng: np.random.Generator, objects: list[shapes.ShapeObject]) -> Question:
    present = {(o.color, o.shape) for o in objects}
    if rng.random() < 0.5:
        i = int(rng.integers(len(objects)))
        colour, shape, target = objects[i].color, objects[i].shape, i
    else:  # a hard negative when possible: shares the colour or the shape of an object in the scene
        absent = [(c, s) for c in shapes.COLORS for s in shapes.SHAPES if (c, s) not in present]
        hard = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
        pool = hard if hard and rng.random() < 0.8 else absent
        colour, shape = pool[int(rng.integers(len(pool)))]
        target = None
    name = f"{colour} {shape}"
    # the reasoning first names the colours of every object of the asked shape, then decides
    seen = {o.color for o in objects if o.shape == shape}
    seen_colours = [c for c in shapes.COLORS if c in seen]
    if not seen_colours:
        look = f"There is no {shape}."
    elif len(seen_colours) == 1:
        look = f"The {shape} is {seen_colours[0]}."
    else:
        look = f"The {shape}s are {' and '.join(seen_colours)}."
    if target is not None:
        body, answer = f"There is {shapes.with_article(name)}", "yes"
    else:
        body, answer = f"There is no {name}", "no"
    return Question(
        "exists",
        f"Is there {shapes.with_article(name)}?",
        f"{PREFIX}, I look for {shapes.with_article(name)}. {look} {body}. Answer: {answer}",
        answer,
        target,
    )


def make_question(rng: np.random.Generator, objects: list[shapes.ShapeObject], kind: str | None = None) -> Question:
    """A question about the scene of ``objects`` (``kind`` random when None; colour/shape
    questions fall back to another kind when no object has a unique shape/colour)."""
    order = [kind] if kind else []
    order += [k for k in rng.permutation(KINDS).tolist() if k not in order]
    for k in order:
        if k in _ATTRIBUTE_QUESTIONS:
            q = _attribute_question(rng, objects, k)
        elif k == "count":
            q = _count_question(rng, objects)
        elif k == "exists":
            q = _exists_question(rng, objects)
        else:
            raise VizkitError(f"unknown question kind {k!r}: choose one of {', '.join(KINDS)}")
        if q is not None:
            return q
    raise AssertionError("unreachable: count questions always exist")


def item(split: str, index: int, masks: bool = True) -> Sample:
    """Item ``index`` of ``split`` (deterministic, independent of every other item)."""
    if split not in SPLIT_IDS:
        raise VizkitError(f"unknown split {split!r}: choose one of {', '.join(SPLIT_IDS)}")
    rng = np.random.default_rng([SEED, SPLIT_IDS[split], int(index)])
    image, objects = shapes.render_scene(rng, size=IMAGE_SIZE)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    q = make_question(rng, objects, kind)
    obj_masks = [o.mask for o in objects] if masks else []
    mask = objects[q.target].mask if (masks and q.target is not None) else None
    return Sample(
        image=image,
        label=KINDS.index(q.kind),
        mask=mask,
        masks=obj_masks,
        caption=shapes.caption(objects),
        question=q.problem,
        answer=q.answer,
        meta={
            "id": f"{split}-{index:05d}",
            "split": split,
            "index": int(index),
            "kind": q.kind,
            "solution": q.solution,
            "target": q.target,
            "objects": [
                {"shape": o.shape, "color": o.color, "center": list(o.center), "radius": o.radius} for o in objects
            ],
        },
    )


def dataset(split: str, n: int | None = None, start: int = 0, masks: bool = True) -> list[Sample]:
    """Samples ``start .. start+n-1`` of ``split`` (``n`` defaults to ``DEFAULT_SIZES[split]``).

    ``Sample.label`` is the index of the question kind in :data:`KINDS`; ``meta`` holds the
    ``solution``, ``kind``, ``target`` (index into ``masks``) and the scene's objects.
    """
    if split not in SPLIT_IDS:
        raise VizkitError(f"unknown split {split!r}: choose one of {', '.join(SPLIT_IDS)}")
    n = DEFAULT_SIZES[split] if n is None else int(n)
    return [item(split, i, masks) for i in range(start, start + n)]


# --------------------------------------------------------------------------------------
# answers
# --------------------------------------------------------------------------------------
_ANSWER = re.compile(r"answer\s*:\s*(.*)", re.IGNORECASE | re.DOTALL)


def normalize_answer(text: str) -> str:
    """Lower case, first word, punctuation stripped: " Red." -> "red"."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return words[0] if words else ""


def parse_answer(generated: str) -> str:
    """The normalised answer after the last "Answer:" of a generated solution ("" if absent)."""
    found = _ANSWER.findall(generated)
    return normalize_answer(found[-1]) if found else ""


def corpus(
    n_per_kind: int = 400, seed: int = SEED + 1, template: str = "USER: <image>\n{problem} ASSISTANT: {solution}"
) -> list[str]:
    """Texts for training the tokenizer: every problem and solution pattern, each colour /
    shape / number word in every position, laid out by ``template`` (the prompt format)."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for i in range(n_per_kind * len(KINDS)):
        _, objects = _objects_only(rng)
        q = make_question(rng, objects, KINDS[i % len(KINDS)])
        texts.append(template.format(problem=q.problem, solution=q.solution))
    for c in shapes.COLORS:
        for s in shapes.SHAPES:
            texts.append(f"There is {shapes.with_article(f'{c} {s}')}. There is no {c} {s}. Answer: {c} {s}")
    texts += [f"There are {n} shapes. Answer: {n}" for n in range(10)]
    return texts


def _objects_only(rng: np.random.Generator) -> tuple[None, list[shapes.ShapeObject]]:
    """Random object lists (no drawing) for text corpora."""
    count = int(rng.integers(1, 4))
    names: list[tuple[str, str]] = []
    while len(names) < count:
        pair = (str(rng.choice(shapes.SHAPES)), str(rng.choice(list(shapes.COLORS))))
        if pair not in names:
            names.append(pair)
    empty = np.zeros((1, 1), bool)
    return None, [shapes.ShapeObject(s, c, (0, 0), 1, empty) for s, c in names]


# --------------------------------------------------------------------------------------
# benchmark files
# --------------------------------------------------------------------------------------
def write_benchmark(samples: Sequence[Sample], json_path: str | Path, image_subdir: str = "images") -> Path:
    """Write ``samples`` as a benchmark: PNGs in ``<json folder>/<image_subdir>/`` and the JSON list."""
    from PIL import Image

    json_path = Path(json_path)
    image_dir = json_path.parent / image_subdir
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for s in samples:
        sid = s.meta["id"]
        rel = f"{image_subdir}/{sid}.png"
        Image.fromarray(s.image).save(json_path.parent / rel)
        records.append(
            {"id": sid, "image": [rel], "problem": s.question, "solution": s.meta["solution"], "answer": s.answer}
        )
    return write_text(json_path, json.dumps(records, indent=1) + "\n")


def load_benchmark(json_path: str | Path, image_dir: str | Path | None = None) -> list[Sample]:
    """Read a benchmark JSON list of ``{"id", "image", "problem", "solution", "answer"}``.

    ``image`` is a list of paths (a single string is accepted) relative to ``image_dir``
    (default: the JSON's folder). Returns one :class:`Sample` per record: ``image`` is the
    first image (HxWx3 uint8), ``question``/``answer`` the problem and the answer, ``meta``
    holds ``id``, ``solution``, ``images`` (all images) and ``image_paths``. Raises
    :class:`VizkitError` naming the record on a missing file, a missing key or a wrong type.
    """
    from PIL import Image

    json_path = Path(json_path)
    if not json_path.is_file():
        raise VizkitError(f"benchmark file {json_path} does not exist")
    try:
        records = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise VizkitError(f"benchmark file {json_path} is not valid JSON: {err}") from None
    if not isinstance(records, list):
        raise VizkitError(f"benchmark file {json_path} must hold a JSON list of records, got {type(records).__name__}")
    root = Path(image_dir) if image_dir is not None else json_path.parent
    samples = []
    for k, rec in enumerate(records):
        where = f"{json_path}: record {k}"
        if not isinstance(rec, dict):
            raise VizkitError(
                f"{where} must be an object with keys {', '.join(BENCHMARK_KEYS)}, got {type(rec).__name__}"
            )
        missing = [key for key in BENCHMARK_KEYS if key not in rec]
        if missing:
            raise VizkitError(
                f"{where} (id {rec.get('id', '?')!r}) lacks key(s) {', '.join(missing)}; "
                f"expected keys {', '.join(BENCHMARK_KEYS)}, found {', '.join(sorted(rec))}"
            )
        where = f"{where} (id {rec['id']!r})"
        paths = [rec["image"]] if isinstance(rec["image"], str) else rec["image"]
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise VizkitError(f"{where}: 'image' must be a non-empty list of relative paths, got {rec['image']!r}")
        for key in ("problem", "solution", "answer"):
            if not isinstance(rec[key], str):
                raise VizkitError(f"{where}: {key!r} must be a string, got {type(rec[key]).__name__}")
        images = []
        for p in paths:
            full = root / p
            if not full.is_file():
                raise VizkitError(
                    f"{where}: image {p!r} not found at {full}"
                    + ("" if image_dir is not None else " (pass image_dir= if the images live elsewhere)")
                )
            with Image.open(full) as im:
                images.append(np.asarray(im.convert("RGB")).copy())
        samples.append(
            Sample(
                image=images[0],
                question=rec["problem"],
                answer=rec["answer"],
                meta={
                    "id": rec["id"],
                    "solution": rec["solution"],
                    "images": images,
                    "image_paths": [str(root / p) for p in paths],
                },
            )
        )
    return samples


__all__ = [
    "dataset",
    "item",
    "make_question",
    "parse_answer",
    "normalize_answer",
    "corpus",
    "load_benchmark",
    "write_benchmark",
    "KINDS",
    "PREFIX",
    "Question",
]
