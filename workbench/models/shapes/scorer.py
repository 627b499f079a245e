"""Adherence of an image to a shapes prompt, by pixel checks (numpy and PIL only, no model).

``analyse(image)`` reads what a picture shows:

- background: the median of the 2-px border, named by the nearest background colour; it counts only
  when at least 80% of the border lies within an L1 distance of 60 of that colour (noise fails);
- the object: the largest 4-connected blob of pixels more than 90 (L1) away from the background;
  it counts only when it holds ≥ 70% of those pixels and covers 30 px to half the image;
- colour: the most common nearest-palette colour over the blob's pixels;
- position: the centre of the blob's bounding box, named by the nearest of the five positions;
- size: the longer side of the bounding box, large from 21 px (drawn: small 15–17, large 25–27);
- shape: the nearest prototype in (fill ratio of the bounding box, vertical offset of the blob's
  centroid from the box centre): circle (0.785, 0), square (1, 0), triangle (0.5, +1/6), cross (0.53, 0).

``score(image, prompt_or_attrs)`` compares that with what the prompt asks for (``parse_prompt``):
one bool per attribute the prompt names, plus ``overall``, their mean.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .dataset import ATTRIBUTES, BACKGROUNDS, COLOURS, POSITIONS, SHAPES, parse_prompt

__all__ = ["SHAPE_PROTOTYPES", "analyse", "score", "score_many"]

BORDER = 2
BORDER_TOLERANCE = 60
BORDER_AGREEMENT = 0.8
FOREGROUND = 90
LARGE_FROM = 21
SHAPE_PROTOTYPES = {"circle": (0.785, 0.0), "square": (1.0, 0.0), "triangle": (0.5, 1 / 6), "cross": (0.53, 0.0)}
_OFFSET_WEIGHT = 2.0  # the vertical offset separates triangle from cross; weigh it up
assert set(SHAPE_PROTOTYPES) == set(SHAPES)

_PALETTE = np.array(list(COLOURS.values()), float)
_PALETTE_NAMES = list(COLOURS)
_BG_PALETTE = np.array(list(BACKGROUNDS.values()), float)
_BG_NAMES = list(BACKGROUNDS)


def _array(image: Any) -> np.ndarray:
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=float)
    a = np.asarray(image, dtype=float)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {a.shape}")
    if a.max(initial=0) <= 1.0 and np.issubdtype(np.asarray(image).dtype, np.floating):
        a = a * 255.0  # diffusers' output_type="np" images are floats in [0, 1]
    return a


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (breadth-first; images are small)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, comp = deque([(int(y0), int(x0))]), []
        while queue:
            y, x = queue.popleft()
            comp.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(comp) > len(best):
            best = comp
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best, strict=True)
        out[list(ys), list(xs)] = True
    return out


def analyse(image: Any) -> dict[str, Any]:
    """What the image shows: each attribute's value (None where the check finds none) and diagnostics."""
    a = _array(image)
    h, w, _ = a.shape
    border = np.concatenate([a[:BORDER].reshape(-1, 3), a[-BORDER:].reshape(-1, 3),
                             a[:, :BORDER].reshape(-1, 3), a[:, -BORDER:].reshape(-1, 3)])
    estimate = np.median(border, axis=0)
    k = int(np.abs(_BG_PALETTE - estimate).sum(1).argmin())
    agreement = float((np.abs(border - _BG_PALETTE[k]).sum(1) <= BORDER_TOLERANCE).mean())
    out: dict[str, Any] = dict.fromkeys(ATTRIBUTES)
    out["border_agreement"] = agreement
    if agreement >= BORDER_AGREEMENT:
        out["background"] = _BG_NAMES[k]
        reference = _BG_PALETTE[k]
    else:
        reference = estimate
    mask = np.abs(a - reference).sum(-1) > FOREGROUND
    blob = _largest_component(mask)
    area = int(blob.sum())
    out.update(foreground_px=int(mask.sum()), object_px=area)
    if area < 30 or area > h * w // 2 or area < 0.7 * mask.sum():
        return out
    ys, xs = np.nonzero(blob)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    bh, bw = y1 - y0 + 1, x1 - x0 + 1
    fill = area / float(bh * bw)
    offset = (ys.mean() - (y0 + y1) / 2) / bh
    nearest = np.abs(a[blob][:, None, :] - _PALETTE[None]).sum(-1).argmin(1)
    out["colour"] = _PALETTE_NAMES[int(np.bincount(nearest, minlength=len(_PALETTE)).argmax())]
    cx, cy = (x0 + x1) / 2 * 64 / w, (y0 + y1) / 2 * 64 / h
    out["position"] = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    out["size"] = "large" if max(bh * 64 / h, bw * 64 / w) >= LARGE_FROM else "small"
    out["shape"] = min(SHAPE_PROTOTYPES, key=lambda s: (SHAPE_PROTOTYPES[s][0] - fill) ** 2
                       + (_OFFSET_WEIGHT * (SHAPE_PROTOTYPES[s][1] - offset)) ** 2)
    out.update(fill=fill, offset=float(offset), bbox=(int(x0), int(y0), int(x1), int(y1)))
    return out


def _expected(prompt_or_attrs: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(prompt_or_attrs, str):
        attrs = parse_prompt(prompt_or_attrs)
        if attrs is None:
            raise ValueError(f"the prompt names no shape ({', '.join(SHAPES)}): {prompt_or_attrs!r}")
        return attrs
    return {k: v for k, v in prompt_or_attrs.items() if k in ATTRIBUTES and v is not None}


def score(image: Any, prompt_or_attrs: str | Mapping[str, Any]) -> dict[str, bool | float]:
    """Per attribute the prompt names, whether the image shows it; ``overall`` is their mean."""
    expected = _expected(prompt_or_attrs)
    seen = analyse(image)
    result: dict[str, bool | float] = {k: seen[k] == v for k, v in expected.items()}
    result["overall"] = float(np.mean([result[k] for k in expected])) if expected else 0.0
    return result


def score_many(images: Iterable[Any], prompts: Iterable[str | Mapping[str, Any]]) -> dict[str, float]:
    """Rates over many images: per attribute (over the prompts that name it) and ``overall``."""
    hits: dict[str, list[float]] = {}
    for image, prompt in zip(images, prompts, strict=True):
        for key, value in score(image, prompt).items():
            hits.setdefault(key, []).append(float(value))
    return {key: float(np.mean(values)) for key, values in hits.items()}
