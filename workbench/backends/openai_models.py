"""OpenAI image model profiles: what each model accepts (sizes, qualities, options, prompt limit), what it costs,
and when it shuts down.

Data for ``openai.py``, kept apart so a price or a new model is a change here only. The list of model names
is the installed SDK's (``openai_catalogue.sdk_models``); a profile adds what the SDK does not say. Sources,
each checked on the date given:

- prices: OpenAI's image generation guide, "Calculating costs" (``PRICE_SOURCE``, ``PRICES_AS_OF``), per image
  by size and quality. gpt-image-2 is priced for its three listed sizes only, and there a non-square image
  costs less than a square one (fewer output tokens); any other size is priced as unknown, not by area;
- sizes: the same guide, "Size and quality options": gpt-image-2 takes any WxH with both edges multiples of 16,
  the long edge at most 3840, long:short at most 3:1 and 655,360 to 8,294,400 pixels in all (a pixel budget,
  not an edge cap: 2880x2880 fits, 640x640 does not); the SDK's ``size`` docstring gives the same rule for
  gpt-image-2 and its snapshot;
- shutdown dates: OpenAI's deprecations page (``SHUTDOWN_SOURCE``) and the SDK's ``ImageModel`` docstring.

Change a price with ``dataclasses.replace`` (see docs/backends.md). All functions here are pure.

Example:
    >>> image_price(PROFILES["gpt-image-2"], 1536, 1024, "low"), image_price(PROFILES["gpt-image-2"], 1024, 1024, "low")
    (0.005, 0.006)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from ..errors import UnsupportedRequestError
from .openai_catalogue import RASTER_FORMATS, sdk_models, sdk_parameter_values, sdk_parameters

__all__ = ["OpenAIModelProfile", "PROFILES", "current_models", "today_utc", "PRICES_AS_OF", "PRICE_SOURCE", "SHUTDOWN_SOURCE", "validate_size",
           "validate_options", "validate_unprofiled", "image_price", "backend_option_error", "check_compression", "MIN_PIXELS", "MAX_PIXELS", "MAX_EDGE"]

PRICES_AS_OF = "2026-07-27"
PRICE_SOURCE = ("https://developers.openai.com/api/docs/guides/image-generation#calculating-costs "
                "(per-image output prices), as published on 2026-07-27")
SHUTDOWN_SOURCE = "https://developers.openai.com/api/docs/deprecations (checked 2026-12-02)"
# gpt-image-2's size rule (image generation guide, "Size and quality options").
MIN_PIXELS, MAX_PIXELS, MAX_EDGE = 655_360, 8_294_400, 3840


@dataclass(frozen=True)
class OpenAIModelProfile:
    """What one OpenAI image model accepts and costs, and when it shuts down. Change prices with
    ``dataclasses.replace``."""

    name: str
    family: Literal["gpt-image", "dall-e"]
    sizes: tuple[tuple[int, int], ...] | None  # None: free WxH under gpt-image-2's pixel budget
    qualities: tuple[str, ...]
    # Options a spec may set (``request.options``): name -> allowed values (None: checked by hand).
    options: Mapping[str, tuple[Any, ...] | None]
    max_n: int = 1
    max_prompt_chars: int = 32000
    returns_revised_prompt: bool = False
    # "b64_json" for DALL·E (never a URL that expires); None: the model always answers b64 and rejects
    # the parameter (GPT-image).
    response_format: str | None = None
    # USD per image by ("WxH", quality); a size or quality not in the table is priced as unknown.
    prices: Mapping[tuple[str, str], float] = field(default_factory=dict)
    price_per_mpx: Mapping[str, float] = field(default_factory=dict)  # for custom profiles priced by area
    # quality priced when the spec does not set one ("auto" is priced as the most expensive: an upper bound)
    default_price_quality: str = "high"
    seconds_per_image: float = 20.0
    shutdown: date | None = None  # on api.openai.com; None: none announced
    replacement: str = ""  # OpenAI's recommended replacement, where it names one
    # Gone from api.openai.com but still served by compatible servers (and the test stand-in).
    legacy: bool = False
    note: str = ""

    def shut_down(self, on: date) -> bool:
        return self.shutdown is not None and on >= self.shutdown


_GPT_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
_GPT_QUALITIES = ("low", "medium", "high", "auto")
_GPT_OPTIONS: Mapping[str, tuple[Any, ...] | None] = {
    "quality": _GPT_QUALITIES,
    "background": ("transparent", "opaque", "auto"),
    "output_format": ("png", "jpeg", "webp"),
    "output_compression": None,  # int 0..100, jpeg/webp only
    "moderation": ("low", "auto"),
}
_IMAGE_1_5_SHUTDOWN = date(2026, 12, 1)  # deprecations page: notice 2026-06-02
_IMAGE_1_5_REPLACEMENT = "gpt-image-2.6-sunburst or gpt-image-2.6-flare"


def _per_size(low: tuple[float, float], medium: tuple[float, float],
              high: tuple[float, float]) -> dict[tuple[str, str], float]:
    """The guide's table: (square 1024x1024, portrait/landscape 1024x1536 and 1536x1024) per quality."""
    prices: dict[tuple[str, str], float] = {}
    for quality, (square, other) in (("low", low), ("medium", medium), ("high", high)):
        prices.update({("1024x1024", quality): square, ("1536x1024", quality): other, ("1024x1536", quality): other})
    return prices


_GPT_IMAGE_2 = OpenAIModelProfile(
    "gpt-image-2", "gpt-image", None, _GPT_QUALITIES, _GPT_OPTIONS, max_n=10,
    prices=_per_size(low=(0.006, 0.005), medium=(0.053, 0.041), high=(0.211, 0.165)), seconds_per_image=30.0)

PROFILES: dict[str, OpenAIModelProfile] = {
    "gpt-image-2": _GPT_IMAGE_2,
    # The SDK gives the snapshot the same size rule; the guide prices "GPT Image 2", snapshot and alias alike.
    "gpt-image-2-2026-04-21": dataclasses.replace(_GPT_IMAGE_2, name="gpt-image-2-2026-04-21",
                                                  note="the dated snapshot of gpt-image-2"),
    "gpt-image-1.5": OpenAIModelProfile(
        "gpt-image-1.5", "gpt-image", _GPT_SIZES, _GPT_QUALITIES, _GPT_OPTIONS, max_n=10,
        prices=_per_size(low=(0.009, 0.013), medium=(0.034, 0.05), high=(0.133, 0.2)), seconds_per_image=25.0,
        shutdown=_IMAGE_1_5_SHUTDOWN, replacement=_IMAGE_1_5_REPLACEMENT, legacy=True),
    "gpt-image-1-mini": OpenAIModelProfile(
        "gpt-image-1-mini", "gpt-image", _GPT_SIZES, _GPT_QUALITIES, _GPT_OPTIONS, max_n=10,
        prices=_per_size(low=(0.005, 0.006), medium=(0.011, 0.015), high=(0.036, 0.052)), seconds_per_image=12.0,
        shutdown=_IMAGE_1_5_SHUTDOWN, replacement=_IMAGE_1_5_REPLACEMENT, legacy=True),
    # Not in the guide's price table: its cost is unknown.
    "chatgpt-image-latest": OpenAIModelProfile(
        "chatgpt-image-latest", "gpt-image", _GPT_SIZES, _GPT_QUALITIES, _GPT_OPTIONS, max_n=10,
        shutdown=_IMAGE_1_5_SHUTDOWN, replacement=_IMAGE_1_5_REPLACEMENT, legacy=True),
    # Shut down, kept so old specs get a clear message (and dall-e-3 runs against compatible servers).
    "gpt-image-1": OpenAIModelProfile(
        "gpt-image-1", "gpt-image", _GPT_SIZES, _GPT_QUALITIES, _GPT_OPTIONS, max_n=10,
        prices=_per_size(low=(0.011, 0.016), medium=(0.042, 0.063), high=(0.167, 0.25)),
        shutdown=date(2026, 10, 23), replacement="gpt-image-2.5-sunburst or gpt-image-2.5-flare"),
    "dall-e-3": OpenAIModelProfile(
        "dall-e-3", "dall-e", ((1024, 1024), (1792, 1024), (1024, 1792)), ("standard", "hd"),
        {"quality": ("standard", "hd"), "style": ("vivid", "natural")}, max_n=1, max_prompt_chars=4000,
        returns_revised_prompt=True, response_format="b64_json",
        prices={("1024x1024", "standard"): 0.04, ("1792x1024", "standard"): 0.08,
                ("1024x1792", "standard"): 0.08, ("1024x1024", "hd"): 0.08, ("1792x1024", "hd"): 0.12,
                ("1024x1792", "hd"): 0.12},
        default_price_quality="standard", seconds_per_image=15.0, shutdown=date(2026, 5, 12),
        replacement="a GPT image model", legacy=True),
    "dall-e-2": OpenAIModelProfile(
        "dall-e-2", "dall-e", ((256, 256), (512, 512), (1024, 1024)), ("standard",), {}, max_n=10,
        max_prompt_chars=1000, response_format="b64_json",
        prices={("256x256", "standard"): 0.016, ("512x512", "standard"): 0.018,
                ("1024x1024", "standard"): 0.02},
        default_price_quality="standard", seconds_per_image=8.0, shutdown=date(2026, 5, 12),
        replacement="a GPT image model"),
}


def today_utc() -> date:
    return datetime.now(UTC).date()


def current_models(on: date | None = None,
                   profiles: Mapping[str, OpenAIModelProfile] = PROFILES) -> tuple[str, ...]:
    """The models the installed SDK lists, less those our profiles say are shut down ``on`` (default today,
    UTC); without the SDK, our profiles' models that are not."""
    on = on or today_utc()
    names = sdk_models() or tuple(profiles)
    return tuple(n for n in names if not (n in profiles and profiles[n].shut_down(on)))


def size_problems(width: int, height: int) -> list[str]:
    """What breaks gpt-image-2's size rule for ``width`` x ``height`` (empty: the size is allowed)."""
    problems = []
    if width <= 0 or height <= 0 or width % 16 or height % 16:
        return ["width and height must be positive multiples of 16"]
    if max(width, height) > 3 * min(width, height):
        problems.append("the aspect ratio must be between 1:3 and 3:1")
    if max(width, height) > MAX_EDGE:
        problems.append(f"the long edge must be at most {MAX_EDGE}")
    pixels = width * height
    if not MIN_PIXELS <= pixels <= MAX_PIXELS:
        problems.append(f"{pixels:,} pixels is outside the budget of {MIN_PIXELS:,} to {MAX_PIXELS:,} "
                        f"({'e.g. 1024x640' if pixels < MIN_PIXELS else 'e.g. 3840x2160 or 2880x2880'})")
    return problems


def validate_size(profile: OpenAIModelProfile, width: int, height: int) -> None:
    """Check that ``profile`` can make ``width`` x ``height`` images (its sizes, or gpt-image-2's rule)."""
    if profile.sizes is not None:
        if (width, height) not in profile.sizes:
            allowed = ", ".join(f"{w}x{h}" for w, h in profile.sizes)
            raise UnsupportedRequestError(
                f"openai model '{profile.name}' cannot make {width}x{height} images; allowed sizes: {allowed}")
        return
    problems = size_problems(width, height)
    if problems:
        raise UnsupportedRequestError(
            f"openai model '{profile.name}' cannot make {width}x{height} images: {'; '.join(problems)} (any WxH "
            f"with edges multiples of 16, up to {MAX_EDGE} long, aspect 1:3 to 3:1, {MIN_PIXELS:,} to "
            f"{MAX_PIXELS:,} pixels: 3840x2160 at most)")


def check_compression(options: Mapping[str, Any]) -> None:
    value = options["output_compression"]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise UnsupportedRequestError(f"openai: output_compression must be an integer 0..100, got {value!r}")
    if options.get("output_format", "png") not in ("jpeg", "webp"):
        raise UnsupportedRequestError(
            "openai: output_compression needs output_format jpeg or webp "
            f"(got output_format {options.get('output_format', 'png')!r})")


def backend_option_error(key: str, model: str, max_n: int | None) -> UnsupportedRequestError | None:
    """The error for an option the backend sets itself (``n``, ``response_format``...), else None."""
    if key == "n":
        limit = f" (model '{model}' allows n up to {max_n})" if max_n else ""
        return UnsupportedRequestError(f"openai: option 'n' is not supported: each request is one image{limit}; "
                                       f"ask for more seeds/replicates instead")
    if key == "response_format":
        return UnsupportedRequestError(
            "openai: option 'response_format' is set by the backend (images are always fetched as "
            "base64 and validated); remove it from the spec")
    if key in ("model", "prompt", "size", "stream", "partial_images"):
        return UnsupportedRequestError(f"openai: option '{key}' is set by the backend from the request; remove it "
                                       f"from the spec's options")
    return None


def validate_options(profile: OpenAIModelProfile, options: dict[str, Any]) -> None:
    """Check ``request.options`` against ``profile`` (``n`` and ``response_format`` belong to the backend)."""
    for key, value in options.items():
        error = backend_option_error(key, profile.name, profile.max_n)
        if error is not None:
            raise error
        if key not in profile.options:
            allowed = ", ".join(sorted(profile.options)) or "none"
            raise UnsupportedRequestError(
                f"openai model '{profile.name}' has no option '{key}'; options it takes: {allowed}")
        allowed_values = profile.options[key]
        if key == "output_compression":
            check_compression(options)
        elif allowed_values is not None and value not in allowed_values:
            raise UnsupportedRequestError(
                f"openai model '{profile.name}' does not take {key}={value!r}; allowed values: "
                f"{', '.join(map(str, allowed_values))}")
    if options.get("background") == "transparent" and options.get("output_format", "png") == "jpeg":
        raise UnsupportedRequestError(
            "openai: background 'transparent' needs output_format png or webp, not jpeg")


def validate_unprofiled(model: str, width: int, height: int, options: dict[str, Any]) -> None:
    """A model with no profile: its options are checked against what the installed SDK takes."""
    if width <= 0 or height <= 0:
        raise UnsupportedRequestError(f"openai: bad size {width}x{height}")
    names, values = sdk_parameters(), sdk_parameter_values()
    for key, value in options.items():
        error = backend_option_error(key, model, None)
        if error is not None:
            raise error
        if key not in names:
            raise UnsupportedRequestError(
                f"openai: the installed SDK's images.generate has no parameter '{key}' (model '{model}' has no "
                f"workbench profile); parameters: {', '.join(sorted(names))}")
        if key in values and value not in values[key]:
            raise UnsupportedRequestError(f"openai: {key}={value!r} is not a value the installed SDK knows; allowed "
                                          f"values: {', '.join(map(str, values[key]))}")
    fmt = options.get("output_format")
    if fmt is not None and fmt not in RASTER_FORMATS:
        raise UnsupportedRequestError(f"openai: output_format '{fmt}' is not an image the workbench can decode and "
                                      f"store; use one of {', '.join(RASTER_FORMATS)}")
    if "output_compression" in options:
        check_compression(options)


def image_price(profile: OpenAIModelProfile, width: int, height: int, quality: str) -> float | None:
    """Estimated USD for one image, from the profile's table; None where the table has no price for that
    size. ``auto`` (and a quality the table lacks) is priced as the dearest quality for that size: an upper
    bound."""
    if profile.price_per_mpx:
        rate = profile.price_per_mpx.get(quality, max(profile.price_per_mpx.values()))
        return round(rate * width * height / (1024 * 1024), 6)
    size = f"{width}x{height}"
    price = profile.prices.get((size, quality))
    if price is None:
        candidates = [p for (s, _), p in profile.prices.items() if s == size]
        price = max(candidates) if candidates else None
    return price
