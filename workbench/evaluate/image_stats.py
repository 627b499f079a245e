"""Cheap statistics of an image, computed on every image run (numpy only, no model).

- ``image.brightness``: mean luma (ITU-R BT.601 weights, as PIL's "L"), 0 (black) to 1 (white).
- ``image.contrast``: RMS contrast, the standard deviation of luma, 0 to 0.5.
- ``image.colourfulness``: Hasler and Süsstrunk's M = σ_rgyb + 0.3·μ_rgyb over rg = R−G and
  yb = (R+G)/2 − B, on the 0–255 scale of their paper (0: grey; ~15 slightly, ~60 quite, >110 extremely).
- ``image.sharpness``: the variance of the 4-neighbour Laplacian of luma (0–255 scale, interior pixels):
  the classic blur measure, low for blurry or flat images.
- ``image.clipped``: the fraction of pixels that are pure black or pure white (luma < 1 or > 254 of 255):
  crushed shadows and blown highlights.
- ``image.blank``: 1 when the image is flat (luma varies by less than ``BLANK_CONTRAST`` of the range:
  a black NaN image, a filtered one, a solid fill), else 0.

    >>> from PIL import Image
    >>> stats = image_statistics(Image.new("RGB", (8, 8), (255, 255, 255)))
    >>> stats["image.brightness"], stats["image.clipped"], stats["image.blank"]
    (1.0, 1.0, 1.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..tracking.schema import IMAGE_STAT_PREFIX

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["IMAGE_STATS", "BLANK_CONTRAST", "image_statistics", "luma"]

# The metric names, in the order a report lists them.
IMAGE_STATS = tuple(IMAGE_STAT_PREFIX + name for name in
                    ("brightness", "contrast", "colourfulness", "sharpness", "clipped", "blank"))
BLANK_CONTRAST = 2.0 / 255.0  # an RMS contrast below two grey levels: nothing to see
_BT601 = np.array([0.299, 0.587, 0.114])


def luma(rgb: np.ndarray) -> np.ndarray:
    """Luma (0–255, float) of an H×W×3 array of 0–255 values."""
    return np.asarray(rgb, dtype=np.float64) @ _BT601


def _laplacian_variance(y: np.ndarray) -> float:
    if y.shape[0] < 3 or y.shape[1] < 3:
        return 0.0
    lap = (y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:]) - 4.0 * y[1:-1, 1:-1]
    return float(lap.var())


def _colourfulness(rgb: np.ndarray) -> float:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    spread = np.sqrt(rg.std() ** 2 + yb.std() ** 2)
    centre = np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(spread + 0.3 * centre)


def image_statistics(image: Image.Image) -> dict[str, float]:
    """Every statistic of ``IMAGE_STATS`` for one image (any PIL mode; alpha is ignored).

    Example:
        >>> from PIL import Image
        >>> round(image_statistics(Image.new("RGB", (4, 4), (128, 128, 128)))["image.brightness"], 4)
        0.502
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    y = luma(rgb)
    contrast = float(y.std()) / 255.0
    values = {
        "brightness": float(y.mean()) / 255.0,
        "contrast": contrast,
        "colourfulness": _colourfulness(rgb),
        "sharpness": _laplacian_variance(y),
        "clipped": float(((y < 1.0) | (y > 254.0)).mean()),
        "blank": 1.0 if contrast < BLANK_CONTRAST else 0.0,
    }
    return {IMAGE_STAT_PREFIX + name: value for name, value in values.items()}
