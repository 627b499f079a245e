"""OpenAI image model profiles: what each model accepts (sizes, qualities, options, prompt limit) and costs.

Data for ``openai.py``, kept apart so a price or a new model is a change here only. Prices are estimates
from the published price pages as of ``PRICES_AS_OF``; change one with ``dataclasses.replace`` (see
docs/backends.md). ``validate_size``, ``validate_options`` and ``image_price`` read a profile; all are
pure.

Example:
    >>> image_price(PROFILES["gpt-image-1.5"], 1024, 1024, "low")
    0.009
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import UnsupportedRequestError

__all__ = ["OpenAIModelProfile", "PROFILES", "PRICES_AS_OF", "CURRENT_MODELS", "validate_size",
           "validate_options", "image_price"]

PRICES_AS_OF = "2026-11-22"  # prices below are estimates from the published price pages of that date


@dataclass(frozen=True)
class OpenAIModelProfile:
    """What one OpenAI image model accepts and costs. Change prices with ``dataclasses.replace``."""

    name: str
    family: Literal["gpt-image", "dall-e"]
    sizes: tuple[tuple[int, int], ...] | None  # None: free WxH (multiples of 16, aspect 1:3..3:1, <=3840x2160)
    qualities: tuple[str, ...]
    # Options a spec may set (``request.options``): name -> allowed values (None: checked by hand).
    options: Mapping[str, tuple[Any, ...] | None]
    max_n: int = 1
    max_prompt_chars: int = 32000
    returns_revised_prompt: bool = False
    # "b64_json" for DALL·E (never a URL that expires); None: the model always answers b64 and rejects
    # the parameter (GPT-image).
    response_format: str | None = None
    # USD per image by ("WxH", quality); free-size models use ``price_per_mpx`` (per 1024x1024 area).
    prices: Mapping[tuple[str, str], float] = field(default_factory=dict)
    price_per_mpx: Mapping[str, float] = field(default_factory=dict)
    # quality priced when the spec does not set one ("auto" is priced as the most expensive: an upper bound)
    default_price_quality: str = "high"
    seconds_per_image: float = 20.0
    retired: bool = False
    retired_note: str = ""
    # Gone from api.openai.com but still served by compatible servers (and the test stand-in).
    legacy: bool = False


_GPT_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
_GPT_QUALITIES = ("low", "medium", "high", "auto")
_GPT_OPTIONS: Mapping[str, tuple[Any, ...] | None] = {
    "quality": _GPT_QUALITIES,
    "background": ("transparent", "opaque", "auto"),
    "output_format": ("png", "jpeg", "webp"),
    "output_compression": None,  # int 0..100, jpeg/webp only
    "moderation": ("low", "auto"),
}


def _square_tall_wide(square: float, other: float) -> dict[str, float]:
    return {"1024x1024": square, "1536x1024": other, "1024x1536": other}


def _gpt_prices(low: tuple[float, float], medium: tuple[float, float],
                high: tuple[float, float]) -> dict[tuple[str, str], float]:
    prices: dict[tuple[str, str], float] = {}
    for quality, (square, other) in (("low", low), ("medium", medium), ("high", high)):
        for size, price in _square_tall_wide(square, other).items():
            prices[(size, quality)] = price
    return prices


PROFILES: dict[str, OpenAIModelProfile] = {
    "gpt-image-1.5": OpenAIModelProfile(
        "gpt-image-1.5", "gpt-image", _GPT_SIZES, _GPT_QUALITIES, _GPT_OPTIONS, max_n=10,
        prices=_gpt_prices(low=(0.009, 0.013), medium=(0.034, 0.05), high=(0.133, 0.2)),
        seconds_per_image=25.0),
    "gpt-image-1-mini": OpenAIModelProfile(
        "gpt-image-1-mini", "gpt-image", _GPT_SIZES, _GPT_QUALITIES, _GPT_OPTIONS, max_n=10,
        prices=_gpt_prices(low=(0.005, 0.006), medium=(0.011, 0.015), high=(0.036, 0.052)),
        seconds_per_image=12.0),
    "gpt-image-2": OpenAIModelProfile(
        "gpt-image-2", "gpt-image", None, _GPT_QUALITIES, _GPT_OPTIONS, max_n=10,
        price_per_mpx={"low": 0.01, "medium": 0.04, "high": 0.16}, seconds_per_image=30.0),
    # Legacy profiles.
    "dall-e-3": OpenAIModelProfile(
        "dall-e-3", "dall-e", ((1024, 1024), (1792, 1024), (1024, 1792)), ("standard", "hd"),
        {"quality": ("standard", "hd"), "style": ("vivid", "natural")}, max_n=1, max_prompt_chars=4000,
        returns_revised_prompt=True, response_format="b64_json",
        prices={("1024x1024", "standard"): 0.04, ("1792x1024", "standard"): 0.08,
                ("1024x1792", "standard"): 0.08, ("1024x1024", "hd"): 0.08, ("1792x1024", "hd"): 0.12,
                ("1024x1792", "hd"): 0.12},
        default_price_quality="standard", seconds_per_image=15.0, legacy=True,
        retired_note="retired from api.openai.com on 2026-05-12"),
    "dall-e-2": OpenAIModelProfile(
        "dall-e-2", "dall-e", ((256, 256), (512, 512), (1024, 1024)), ("standard",), {}, max_n=10,
        max_prompt_chars=1000, response_format="b64_json",
        prices={("256x256", "standard"): 0.016, ("512x512", "standard"): 0.018,
                ("1024x1024", "standard"): 0.02},
        default_price_quality="standard", seconds_per_image=8.0, retired=True,
        retired_note="retired on 2026-05-12"),
    "gpt-image-1": OpenAIModelProfile(
        "gpt-image-1", "gpt-image", _GPT_SIZES, _GPT_QUALITIES, _GPT_OPTIONS, max_n=10,
        prices=_gpt_prices(low=(0.011, 0.016), medium=(0.042, 0.063), high=(0.167, 0.25)),
        retired=True, retired_note="shut down on 2026-10-23"),
}
CURRENT_MODELS = tuple(name for name, p in PROFILES.items() if not p.retired and not p.legacy)


def validate_size(profile: OpenAIModelProfile, width: int, height: int) -> None:
    """Check that ``profile`` can make ``width`` x ``height`` images (its sizes, or the free-size rules)."""
    if profile.sizes is not None:
        if (width, height) not in profile.sizes:
            allowed = ", ".join(f"{w}x{h}" for w, h in profile.sizes)
            raise UnsupportedRequestError(
                f"openai model '{profile.name}' cannot make {width}x{height} images; allowed sizes: {allowed}")
        return
    problems = []
    if width <= 0 or height <= 0 or width % 16 or height % 16:
        problems.append("width and height must be positive multiples of 16")
    elif not 1 / 3 <= width / height <= 3:
        problems.append("the aspect ratio must be between 1:3 and 3:1")
    if max(width, height) > 3840 or min(width, height) > 2160:
        problems.append("the largest size is 3840x2160")
    if problems:
        raise UnsupportedRequestError(
            f"openai model '{profile.name}' cannot make {width}x{height} images: {'; '.join(problems)} "
            f"(any WxH with multiples of 16, aspect 1:3 to 3:1, at most 3840x2160)")


def validate_options(profile: OpenAIModelProfile, options: dict[str, Any]) -> None:
    """Check ``request.options`` against ``profile`` (``n`` and ``response_format`` belong to the backend)."""
    for key, value in options.items():
        if key == "n":
            raise UnsupportedRequestError(
                f"openai: option 'n' is not supported: each request is one image (model "
                f"'{profile.name}' allows n up to {profile.max_n}); ask for more seeds/replicates instead")
        if key == "response_format":
            raise UnsupportedRequestError(
                "openai: option 'response_format' is set by the backend (images are always fetched as "
                "base64 and validated); remove it from the spec")
        if key not in profile.options:
            allowed = ", ".join(sorted(profile.options)) or "none"
            raise UnsupportedRequestError(
                f"openai model '{profile.name}' has no option '{key}'; options it takes: {allowed}")
        allowed_values = profile.options[key]
        if key == "output_compression":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise UnsupportedRequestError(
                    f"openai: output_compression must be an integer 0..100, got {value!r}")
            if options.get("output_format", "png") not in ("jpeg", "webp"):
                raise UnsupportedRequestError(
                    "openai: output_compression needs output_format jpeg or webp "
                    f"(got output_format {options.get('output_format', 'png')!r})")
        elif allowed_values is not None and value not in allowed_values:
            raise UnsupportedRequestError(
                f"openai model '{profile.name}' does not take {key}={value!r}; allowed values: "
                f"{', '.join(map(str, allowed_values))}")
    if options.get("background") == "transparent" and options.get("output_format", "png") == "jpeg":
        raise UnsupportedRequestError(
            "openai: background 'transparent' needs output_format png or webp, not jpeg")


def image_price(profile: OpenAIModelProfile, width: int, height: int, quality: str) -> float:
    """Estimated USD for one image; an unknown quality or size is priced at the most expensive (an upper
    bound)."""
    if quality == "auto":
        quality = "high"  # auto may pick any quality: price the most expensive (an upper bound)
    if profile.price_per_mpx:
        rate = profile.price_per_mpx.get(quality, max(profile.price_per_mpx.values()))
        return round(rate * width * height / (1024 * 1024), 6)
    size = f"{width}x{height}"
    price = profile.prices.get((size, quality))
    if price is None:  # unknown combination: the most expensive price for that size (upper bound)
        candidates = [p for (s, _), p in profile.prices.items() if s == size] or list(profile.prices.values())
        price = max(candidates) if candidates else 0.0
    return price
