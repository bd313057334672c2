"""Synthetic scenes of coloured shapes with a ground-truth mask per shape.

Shared by ``shapes_clip`` (captions such as "a red triangle") and ``tiny_vlm`` (questions
about the scene). 1-3 non-overlapping shapes (circle, square, triangle, star) in 6 colours,
at random positions and sizes, on a textured or noisy background. Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 195),
    "orange": (245, 140, 30),
}


@dataclass
class ShapeObject:
    """One drawn shape: its kind, colour name, centre ``(x, y)``, radius in pixels and mask."""

    shape: str
    color: str
    center: tuple[int, int]
    radius: int
    mask: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of the mask, inclusive-exclusive."""
        ys, xs = np.nonzero(self.mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if shape == "square":
        k, radii = 4, [r * 1.0] * 4
        angle += np.pi / 4
    elif shape == "triangle":
        k, radii = 3, [r * 1.15] * 3
    elif shape == "star":
        k, radii = 10, [r * 1.15 if i % 2 == 0 else r * 0.5 for i in range(10)]
    else:
        raise ValueError(shape)
    angles = angle + np.arange(k) * 2 * np.pi / k - np.pi / 2
    pts = np.stack([cx + np.array(radii) * np.cos(angles), cy + np.array(radii) * np.sin(angles)], 1)
    return np.round(pts * 16).astype(np.int32)  # 4 fractional bits for cv2's shift


def _draw(canvas: np.ndarray, shape: str, cx: float, cy: float, r: float, angle: float, color, line) -> None:
    if shape == "circle":
        cv2.circle(canvas, (int(round(cx * 16)), int(round(cy * 16))), int(round(r * 16)), color, -1, line, shift=4)
    else:
        cv2.fillPoly(canvas, [_polygon(shape, cx, cy, r, angle)], color, line, shift=4)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured (smooth noise, stripes, checks) or noisy background, HxWx3 uint8, muted colours."""
    kind = rng.integers(4)
    base = rng.uniform(70, 180) + rng.normal(0, 12, size=3)  # muted: grey with a slight tint
    if kind == 0:  # smooth noise
        low = rng.normal(0, 1, (max(2, size // 8), max(2, size // 8), 3))
        tex = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) * rng.uniform(10, 30)
    elif kind == 1:  # stripes
        yy, xx = np.mgrid[:size, :size]
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
        tex = (
            np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)[..., None]
            * rng.uniform(8, 25)
            * np.ones(3)
        )
    elif kind == 2:  # checks
        cell = int(rng.integers(4, 12))
        yy, xx = np.mgrid[:size, :size]
        tex = (((yy // cell + xx // cell) % 2)[..., None] - 0.5) * rng.uniform(15, 40) * np.ones(3)
    else:  # pixel noise
        tex = np.zeros((size, size, 3))
    img = base + tex + rng.normal(0, rng.uniform(3, 15), (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def render_scene(
    rng: np.random.Generator,
    size: int = 64,
    n_objects: int | tuple[int, int] = (1, 3),
    shapes: tuple[str, ...] = SHAPES,
    colors: tuple[str, ...] = tuple(COLORS),
    distinct: bool = True,
) -> tuple[np.ndarray, list[ShapeObject]]:
    """One scene: ``(image HxWx3 uint8, objects)``. ``n_objects`` is a count or an inclusive range.

    With ``distinct`` no two objects share both shape and colour, so "the red circle" names
    one object. Objects never overlap (their bounding circles are disjoint).
    """
    count = n_objects if isinstance(n_objects, int) else int(rng.integers(n_objects[0], n_objects[1] + 1))
    img = background(rng, size)
    objects: list[ShapeObject] = []
    placed: list[tuple[float, float, float]] = []
    names: set[tuple[str, str]] = set()
    tries = 0
    while len(objects) < count:
        tries += 1
        if tries > 500:
            raise RuntimeError("could not place the shapes; use a larger image or fewer objects")
        shape, color = str(rng.choice(shapes)), str(rng.choice(colors))
        if distinct and (shape, color) in names:
            continue
        r = rng.uniform(0.09, 0.2) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
        if any(np.hypot(cx - x, cy - y) < (r + q) * 1.2 + 1 for x, y, q in placed):
            continue
        angle = rng.uniform(0, 2 * np.pi)
        rgb = np.clip(np.array(COLORS[color]) + rng.normal(0, 12, 3), 0, 255)
        _draw(img, shape, cx, cy, r, angle, tuple(float(c) for c in rgb), cv2.LINE_AA)
        mask = np.zeros((size, size), np.uint8)
        _draw(mask, shape, cx, cy, r, angle, 1, cv2.LINE_8)
        objects.append(ShapeObject(shape, color, (int(round(cx)), int(round(cy))), int(round(r)), mask.astype(bool)))
        placed.append((cx, cy, r))
        names.add((shape, color))
    return img, objects


def with_article(name: str) -> str:
    """ "a red circle", "an orange star"."""
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def caption(objects: list[ShapeObject]) -> str:
    """ "a red triangle", "a red triangle and an orange circle", ..."""
    parts = [with_article(o.name) for o in objects]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def prompts() -> list[str]:
    """Every colour x shape prompt, "a red circle", in a fixed order (colour-major)."""
    return [with_article(f"{c} {s}") for c in COLORS for s in SHAPES]
