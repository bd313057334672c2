"""Real faces that ship inside installed packages, and local face manipulations with masks.

Faces (all offline):

- ``skimage.data.lfw_subset()`` images 0-99: 25x25 grey, roughly aligned faces (images
  100-199 of that set are non-faces and are never used);
- ``skimage.data.astronaut()`` and matplotlib's ``grace_hopper.jpg``: portraits cropped to
  the LFW framing (eyes at ~36 % of the height, mouth at ~74 %), turned grey and brought to
  LFW's resolution so that every face comes from the same domain.

The faces are split by image into ``train`` / ``val`` / ``test`` (:data:`SPLIT_SIZES`), so a
held-out face is never seen in training, neither as a target nor as a swap donor.

A sample is an aligned face upsampled to :data:`IMAGE_SIZE`, tinted with a random skin tone
(so that colour edits mean something), jittered (shift/scale/rotation) and given sensor
grain. A fake gets ONE local edit of a facial region (:data:`REGIONS`: boxes relative to the
aligned face, jittered and moved with the face) blended in with a Gaussian-feathered alpha;
see :data:`MANIPULATIONS`. Both classes then get the same photometric augmentation (flip,
brightness/contrast, noise, mild JPEG). The mask of a fake is the edited region
(alpha >= 0.5); a real face's mask is all False.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .common import Sample

IMAGE_SIZE = 64
SPLITS = ("train", "val", "test")
SPLIT_SIZES = {"train": 70, "val": 15, "test": 15}  # LFW faces per split
EXTRA_FACES = {"astronaut": "train", "grace_hopper": "test"}  # the two portraits

# region boxes (centre x, centre y, width, height) on the aligned 64x64 face
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left_eye": (20.5, 23.0, 17.0, 12.0),
    "right_eye": (43.5, 23.0, 17.0, 12.0),
    "nose": (32.0, 34.0, 14.0, 16.0),
    "mouth": (32.0, 47.0, 26.0, 13.0),
    "left_cheek": (16.0, 39.0, 13.0, 15.0),
    "right_cheek": (48.0, 39.0, 13.0, 15.0),
    "forehead": (32.0, 11.0, 26.0, 10.0),
}
# swap: the region of another face of the same split, generated at a lower resolution and
# with a lighting mismatch; color: a colour cast; blur; sharpen (unsharp mask); blocking:
# pixelation or heavy JPEG of the region
MANIPULATIONS = ("swap", "color", "blur", "sharpen", "blocking")

# multiplicative RGB skin tones for the grey faces (light to dark)
_SKIN_TONES = np.array(
    [
        [1.00, 0.86, 0.76],
        [1.00, 0.83, 0.70],
        [0.98, 0.80, 0.66],
        [0.95, 0.76, 0.60],
        [0.90, 0.70, 0.55],
        [0.82, 0.62, 0.48],
        [0.72, 0.53, 0.40],
        [0.62, 0.45, 0.34],
    ]
)
# colour casts of the colour manipulation (per-channel gains before scaling by the amount)
_CASTS = {
    "red": (1.0, -0.35, -0.45),
    "yellow": (0.5, 0.35, -1.0),
    "green": (-0.6, 0.8, -0.3),
    "blue": (-0.6, -0.1, 0.9),
    "magenta": (0.6, -0.8, 0.5),
}


@dataclass(frozen=True)
class Face:
    """One source face: ``id``, the split it belongs to, and the aligned grey image
    (float32 HxW in [0, 1]; LFW faces are 25x25, the portraits 64x64)."""

    id: str
    split: str
    image: np.ndarray


def _portraits() -> dict[str, np.ndarray]:
    import matplotlib.image as mpimg
    import skimage.data
    from matplotlib import cbook

    astronaut = skimage.data.astronaut()[61:174, 168:281]
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grace = mpimg.imread(f, format="jpg")[109:335, 150:376]
    out = {}
    for name, img in (("astronaut", astronaut), ("grace_hopper", grace)):
        grey = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
        out[name] = cv2.resize(grey, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return out


@lru_cache(maxsize=1)
def faces() -> tuple[Face, ...]:
    """All faces (LFW 0-99 and the two portraits) with their split; a fixed permutation of
    the LFW indices assigns 70 / 15 / 15 faces to train / val / test."""
    import skimage.data

    lfw = skimage.data.lfw_subset()[:100].astype(np.float32)  # 100-199 are non-faces
    order = np.random.default_rng(20240611).permutation(100)
    out: list[Face] = []
    start = 0
    for split in SPLITS:
        for i in sorted(order[start : start + SPLIT_SIZES[split]].tolist()):
            out.append(Face(f"lfw-{i:03d}", split, lfw[i]))
        start += SPLIT_SIZES[split]
    for name, img in _portraits().items():
        out.append(Face(name, EXTRA_FACES[name], img))
    return tuple(out)


def split_faces(split: str) -> list[Face]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    return [f for f in faces() if f.split == split]


# --------------------------------------------------------------------------------------
# rendering a real face
# --------------------------------------------------------------------------------------
def render_face(rng: np.random.Generator, face: Face) -> np.ndarray:
    """The aligned face as float32 ``64x64x3`` in [0, 255]: upsampled and tinted (no grain)."""
    s = IMAGE_SIZE
    grey = face.image
    if grey.shape[0] > 40:  # the portraits: bring them to LFW's resolution (~25 px) first
        low = int(rng.integers(22, 36))
        grey = cv2.resize(grey, (low, low), interpolation=cv2.INTER_AREA)
    grey = cv2.resize(grey, (s, s), interpolation=cv2.INTER_CUBIC)
    tone = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.95, 1.05, 3)
    img = grey[..., None] * (tone * rng.uniform(0.9, 1.15) * 255.0)[None, None]
    return np.clip(img, 0, 255).astype(np.float32)


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """A small similarity transform (rotation +-6 deg, scale 0.93-1.07, shift +-3 px), 2x3."""
    s = IMAGE_SIZE
    m = cv2.getRotationMatrix2D((s / 2 - 0.5, s / 2 - 0.5), rng.uniform(-6, 6), rng.uniform(0.93, 1.07))
    m[:, 2] += rng.uniform(-3, 3, 2)
    return m


def warp(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    s = IMAGE_SIZE
    return cv2.warpAffine(np.ascontiguousarray(img), m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def add_grain(rng: np.random.Generator, img: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Sensor-like grain (mostly luminance) at the model resolution."""
    s = IMAGE_SIZE
    sigma = rng.uniform(2.5, 5.5) if sigma is None else sigma
    z = rng.standard_normal((s, s, 4), dtype=np.float32)
    return np.clip(img + sigma * (z[..., :1] + 0.3 * z[..., 1:]), 0, 255).astype(np.float32)


# --------------------------------------------------------------------------------------
# manipulations
# --------------------------------------------------------------------------------------
def region_alpha(
    rng: np.random.Generator, region: str, pose: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A jittered elliptic region of the aligned face, moved by ``pose`` (2x3) when given:
    ``(hard 0/1 float32 mask, feathered alpha)``, both 64x64."""
    cx, cy, w, h = REGIONS[region]
    cx, cy = cx + rng.uniform(-2.5, 2.5), cy + rng.uniform(-2.0, 2.0)
    scale = rng.uniform(0.85, 1.25)
    w, h = w * scale * rng.uniform(0.92, 1.08), h * scale * rng.uniform(0.92, 1.08)
    angle = 0.0
    if pose is not None:
        cx, cy = pose @ np.array([cx, cy, 1.0])
        k = float(np.hypot(pose[0, 0], pose[0, 1]))
        w, h = w * k, h * k
        angle = float(np.degrees(np.arctan2(pose[1, 0], pose[0, 0])))
    hard = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    cv2.ellipse(
        hard,
        (int(round(cx * 16)), int(round(cy * 16))),
        (int(round(w * 8)), int(round(h * 8))),
        angle,
        0,
        360,
        1,
        -1,
        cv2.LINE_8,
        shift=4,
    )
    hard = hard.astype(np.float32)
    alpha = cv2.GaussianBlur(hard, (0, 0), rng.uniform(1.0, 2.2))
    # feathered: >= 0.5 on the ellipse, fading to 0 just outside it
    alpha = np.clip(alpha * 1.6, 0, 1)
    return hard, alpha


def _blend(img: np.ndarray, edited: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return img * (1 - alpha[..., None]) + edited * alpha[..., None]


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32)


def _bbox(hard: np.ndarray, pad: int) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(hard)
    s = IMAGE_SIZE
    return max(0, ys.min() - pad), min(s, ys.max() + 1 + pad), max(0, xs.min() - pad), min(s, xs.max() + 1 + pad)


def manipulate(
    rng: np.random.Generator,
    img: np.ndarray,
    kind: str,
    region: str,
    source: np.ndarray | None = None,
    pose: np.ndarray | None = None,
    strength: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Edit ``region`` of the face ``img`` (float 64x64x3; aligned, then moved by ``pose``).

    ``source`` (another face in the same pose) is required for ``"swap"``. ``strength`` > 1
    exaggerates the edit (a training curriculum starts there); the data sets use 1. Returns
    ``(edited image, mask bool 64x64, details)``.
    """
    k = float(strength)
    hard, alpha = region_alpha(rng, region, pose)
    details: dict = {}
    if kind == "swap":
        if source is None:
            raise ValueError("a swap needs a source face")
        dx, dy = rng.uniform(-1.5, 1.5, 2)
        src = warp(source, np.float32([[1, 0, dx], [0, 1, dy]]))
        # generated at a lower resolution (no camera grain), with a lighting mismatch
        f = 1 + rng.uniform(1.0, 2.0) * k
        low = max(8, int(round(IMAGE_SIZE / f)))
        src = cv2.resize(
            cv2.resize(src, (low, low), interpolation=cv2.INTER_AREA),
            (IMAGE_SIZE, IMAGE_SIZE),
            interpolation=cv2.INTER_LINEAR,
        )
        details["source_downscale"] = round(float(f), 2)
        src = src * (1 + rng.uniform(-0.2, 0.2) * k) + rng.uniform(-15, 15) * k
        out = _blend(img, src, alpha)
    elif kind == "color":
        name = list(_CASTS)[rng.integers(len(_CASTS))]
        amount = rng.uniform(0.15, 0.3) * k
        gains = np.maximum(1.0 + amount * np.array(_CASTS[name], np.float32), 0.2)
        edited = img * gains[None, None] + rng.uniform(-6, 6)
        out = _blend(img, edited, alpha)
        details.update(cast=name, amount=round(float(amount), 3))
    elif kind == "blur":
        sigma = rng.uniform(1.5, 3.0) * k
        out = _blend(img, cv2.GaussianBlur(img, (0, 0), sigma), alpha)
        details["sigma"] = round(float(sigma), 2)
    elif kind == "sharpen":
        amount, sigma = rng.uniform(2.0, 4.0) * k, rng.uniform(0.8, 1.4)
        edited = img + amount * (img - cv2.GaussianBlur(img, (0, 0), sigma))
        out = _blend(img, edited, alpha)
        details.update(amount=round(float(amount), 2), sigma=round(float(sigma), 2))
    elif kind == "blocking":
        if rng.random() < 0.5:
            block = int(min(10, round(rng.uniform(3.5, 6.5) * k)))
            y0, y1, x0, x1 = _bbox(hard, block)
            crop = img[y0:y1, x0:x1]
            h, w = crop.shape[:2]
            small = cv2.resize(crop, (max(1, w // block), max(1, h // block)), interpolation=cv2.INTER_AREA)
            edited = img.copy()
            edited[y0:y1, x0:x1] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
            details.update(style="pixelate", block=block)
        else:
            q = max(1, int(round(rng.uniform(1.5, 8.5) / k)))
            edited = _jpeg(img, q)
            details.update(style="jpeg", quality=q)
        out = _blend(img, edited, alpha)
    else:
        raise ValueError(f"unknown manipulation {kind!r}: choose one of {', '.join(MANIPULATIONS)}")
    return np.clip(out, 0, 255).astype(np.float32), alpha >= 0.5, details


# --------------------------------------------------------------------------------------
# photometric augmentation (both classes)
# --------------------------------------------------------------------------------------
def finish(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Flip, brightness/contrast, noise and a mild JPEG; returns ``(uint8 image, mask, details)``.

    The geometric jitter (shift/scale/rotation) happens before the manipulation (see
    :func:`make_sample`), so resampling never smooths a manipulation's traces away.
    """
    flip = bool(rng.random() < 0.5)
    if flip:
        img, mask = img[:, ::-1], mask[:, ::-1]
    contrast, bright = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
    img = (img - 128) * contrast + 128 + bright
    if rng.random() < 0.3:
        img = img + rng.uniform(0.5, 2.0) * rng.standard_normal(img.shape, dtype=np.float32)
    details: dict = {"flip": flip}
    if rng.random() < 0.4:
        q = int(rng.integers(80, 97))
        img = _jpeg(img, q)
        details["jpeg"] = q
    return np.clip(np.round(img), 0, 255).astype(np.uint8), np.ascontiguousarray(mask), details


# --------------------------------------------------------------------------------------
# samples
# --------------------------------------------------------------------------------------
def make_sample(
    rng: np.random.Generator,
    split: str,
    fake: bool,
    kind: str | None = None,
    region: str | None = None,
    strength: float = 1.0,
) -> Sample:
    """One real or fake sample of ``split``'s faces (swap donors come from the same split)."""
    pool = split_faces(split)
    target = pool[rng.integers(len(pool))]
    pose = random_pose(rng)
    img = add_grain(rng, warp(render_face(rng, target), pose))
    meta: dict = {"face_id": target.id, "split": split}
    if fake:
        kind = kind or MANIPULATIONS[rng.integers(len(MANIPULATIONS))]
        region = region or list(REGIONS)[rng.integers(len(REGIONS))]
        source = None
        if kind == "swap":
            others = [f for f in pool if f.id != target.id]
            donor = others[rng.integers(len(others))]
            source = add_grain(rng, warp(render_face(rng, donor), pose))
            meta["source_face_id"] = donor.id
        img, mask, details = manipulate(rng, img, kind, region, source, pose, strength)
        meta.update(manipulation=kind, region=region, **details)
    else:
        mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
        meta.update(manipulation="none", region=None)
    out, out_mask, aug = finish(rng, img, mask)
    meta.update(aug)
    return Sample(image=out, label=int(fake), mask=out_mask, meta=meta)


_SPLIT_SEEDS = {"train": 1000, "val": 2000, "test": 3000}


def make_samples(split: str, n: int, seed: int = 0, strength: float = 1.0) -> list[Sample]:
    """``n`` samples (even index real, odd fake: balanced) of ``split``; manipulation kinds
    cycle so every kind is equally frequent. Deterministic for ``(split, n, seed)``; sample
    ``i`` depends only on ``(split, seed, i)``."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([_SPLIT_SEEDS[split], seed, i])
        fake = i % 2 == 1
        kind = MANIPULATIONS[(i // 2) % len(MANIPULATIONS)] if fake else None
        out.append(make_sample(rng, split, fake, kind=kind, strength=strength))
        out[-1].meta["index"] = i
    return out
