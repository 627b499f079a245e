"""A procedural, deterministic dataset of drawn shapes and its caption grammar.

Each 64×64 RGB image holds one shape (circle, square, triangle or cross) in one of six colours, in one
of two sizes, at one of five positions, on one of four backgrounds. Captions follow a small grammar::

    a large red circle on the left, white background          (style 0: the canonical form)
    large red circle on the left on a white background        (style 1)
    a white background with a large red circle on the left    (style 2)
    a red circle, large, on the left, white background        (style 3)

Shapes are drawn with PIL without anti-aliasing (flat colours), with a little seeded jitter of
position (±2 px) and size (±1 px) so the training set is more than 960 distinct pictures.

``HELD_OUT`` lists (shape, colour, position) triples that ``sample`` never draws: prompts that ask
for them (``held_out_attrs``) measure whether a model composes attributes rather than recalls them.
Attributes are plain dicts with the keys of ``ATTRIBUTES``.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "ATTRIBUTES",
    "BACKGROUNDS",
    "COLOURS",
    "HELD_OUT",
    "NEGATIVE_PROMPT",
    "POSITIONS",
    "POSITION_PHRASES",
    "SHAPES",
    "SIZE",
    "SIZES",
    "STYLES",
    "WORDS",
    "all_attrs",
    "caption",
    "draw",
    "held_out_attrs",
    "is_held_out",
    "parse_prompt",
    "sample",
]

SIZE = 64
# Well separated in RGB, and each far from every background colour (see tests/test_shapes.py).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (40, 60, 220),
    "yellow": (240, 220, 30), "purple": (160, 30, 200), "orange": (255, 128, 0),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245), "black": (15, 15, 15), "gray": (128, 128, 128), "sky blue": (150, 200, 240),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES: dict[str, int] = {"small": 16, "large": 26}  # side of the shape's bounding box, px
POSITIONS: dict[str, tuple[int, int]] = {
    "left": (18, 32), "right": (46, 32), "top": (32, 18), "bottom": (32, 46), "center": (32, 32),
}
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top",
                    "bottom": "at the bottom", "center": "in the center"}
ATTRIBUTES = ("shape", "colour", "size", "position", "background")
POSITION_JITTER = 2
SIZE_JITTER = 1

# (shape, colour, position) triples never drawn in training: one per shape and colour, every position.
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset({
    ("circle", "red", "left"), ("square", "blue", "top"), ("triangle", "green", "right"),
    ("cross", "yellow", "bottom"), ("circle", "purple", "center"), ("square", "orange", "bottom"),
})

STYLES = 4
# The shapes template's negative prompt. Training replaces some captions with "" and some with this,
# so a pipeline's classifier-free guidance reads both as "unconditional".
NEGATIVE_PROMPT = "blurry, noisy"


def caption(attrs: dict[str, Any], style: int = 0) -> str:
    """The caption of ``attrs`` in one of the grammar's ``STYLES`` paraphrases (0 is canonical)."""
    size, colour, shape = attrs["size"], attrs["colour"], attrs["shape"]
    where, bg = POSITION_PHRASES[attrs["position"]], attrs["background"]
    style = style % STYLES
    if style == 0:
        return f"a {size} {colour} {shape} {where}, {bg} background"
    if style == 1:
        return f"{size} {colour} {shape} {where} on a {bg} background"
    if style == 2:
        return f"a {bg} background with a {size} {colour} {shape} {where}"
    return f"a {colour} {shape}, {size}, {where}, {bg} background"


def _words() -> list[str]:
    words: set[str] = set()
    for attrs in all_attrs():
        for style in range(STYLES):
            words.update(re.findall(r"[a-z]+", caption(attrs, style)))
    words.update(re.findall(r"[a-z]+", NEGATIVE_PROMPT))
    return sorted(words)


def all_attrs() -> list[dict[str, Any]]:
    """Every combination of attribute values (4 × 6 × 2 × 5 × 4 = 960), in a fixed order."""
    return [dict(zip(ATTRIBUTES, combo, strict=True))
            for combo in itertools.product(SHAPES, COLOURS, SIZES, POSITIONS, BACKGROUNDS)]


def is_held_out(attrs: dict[str, Any]) -> bool:
    return (attrs["shape"], attrs["colour"], attrs["position"]) in HELD_OUT


def held_out_attrs() -> list[dict[str, Any]]:
    """The held-out prompt set: every combination whose (shape, colour, position) is in ``HELD_OUT``
    (6 triples × 2 sizes × 4 backgrounds = 48), in a fixed order."""
    return [a for a in all_attrs() if is_held_out(a)]


def draw(attrs: dict[str, Any], dx: int = 0, dy: int = 0, dsize: int = 0) -> Image.Image:
    """The image of ``attrs``, the shape moved by (dx, dy) px and grown by ``dsize`` px."""
    image = Image.new("RGB", (SIZE, SIZE), BACKGROUNDS[attrs["background"]])
    pen = ImageDraw.Draw(image)
    pen.fontmode = "1"
    cx, cy = POSITIONS[attrs["position"]]
    cx, cy = cx + dx, cy + dy
    side = SIZES[attrs["size"]] + dsize
    x0, y0 = cx - side // 2, cy - side // 2
    x1, y1 = x0 + side - 1, y0 + side - 1
    fill = COLOURS[attrs["colour"]]
    shape = attrs["shape"]
    if shape == "circle":
        pen.ellipse([x0, y0, x1, y1], fill=fill)
    elif shape == "square":
        pen.rectangle([x0, y0, x1, y1], fill=fill)
    elif shape == "triangle":
        pen.polygon([(x0 + (side - 1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    elif shape == "cross":
        arm = side // 3
        a0 = x0 + (side - arm) // 2
        b0 = y0 + (side - arm) // 2
        pen.rectangle([a0, y0, a0 + arm - 1, y1], fill=fill)
        pen.rectangle([x0, b0, x1, b0 + arm - 1], fill=fill)
    else:
        raise ValueError(f"unknown shape '{shape}'; shapes: {', '.join(SHAPES)}")
    return image


def sample(n: int, seed: int = 0, *, styles: int = STYLES,
           include_held_out: bool = False) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    """``n`` training images (uint8, n×64×64×3), their captions and attributes; same seed, same data.

    Attributes are drawn uniformly, skipping ``HELD_OUT`` triples unless ``include_held_out``;
    caption styles are drawn uniformly from the first ``styles``.
    """
    rng = np.random.default_rng(seed)
    pool = [a for a in all_attrs() if include_held_out or not is_held_out(a)]
    picks = rng.integers(0, len(pool), n)
    style_ids = rng.integers(0, max(1, styles), n)
    jitter = rng.integers(-POSITION_JITTER, POSITION_JITTER + 1, (n, 2))
    grow = rng.integers(-SIZE_JITTER, SIZE_JITTER + 1, n)
    images = np.empty((n, SIZE, SIZE, 3), np.uint8)
    captions, attrs_list = [], []
    for i in range(n):
        attrs = dict(pool[int(picks[i])])
        images[i] = np.asarray(draw(attrs, int(jitter[i, 0]), int(jitter[i, 1]), int(grow[i])))
        captions.append(caption(attrs, int(style_ids[i])))
        attrs_list.append(attrs)
    return images, captions, attrs_list


_BG_RE = re.compile(r"\b(" + "|".join(sorted(BACKGROUNDS, key=len, reverse=True)) + r")\s+background\b")
_SHAPE_RE = re.compile(r"\b(?:(" + "|".join(COLOURS) + r")\s+)?(" + "|".join(SHAPES) + r")s?\b")
_SIZE_RE = re.compile(r"\b(" + "|".join(SIZES) + r")\b")
_POS_RE = re.compile(r"\b(" + "|".join(re.escape(p) for p in POSITION_PHRASES.values()) + r")\b")


def parse_prompt(text: str) -> dict[str, Any] | None:
    """The attributes a prompt asks for (only those it names), or None when it names no shape.

    >>> parse_prompt("a large red circle on the left, white background")["position"]
    'left'
    """
    low = " ".join(text.lower().split())
    shape = _SHAPE_RE.search(low)
    if shape is None:
        return None
    attrs: dict[str, Any] = {"shape": shape.group(2)}
    if shape.group(1):
        attrs["colour"] = shape.group(1)
    bg = _BG_RE.search(low)
    if bg:
        attrs["background"] = bg.group(1)
    size = _SIZE_RE.search(low)
    if size:
        attrs["size"] = size.group(1)
    where = _POS_RE.search(low)
    if where:
        attrs["position"] = {v: k for k, v in POSITION_PHRASES.items()}[where.group(1)]
    return attrs


WORDS: list[str] = _words()
