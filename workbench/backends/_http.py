"""Helpers shared by the API backends (openai, replicate): settings and keys from the environment, keys
kept out of messages, ``Retry-After``, image validation, and the per-request failure signal.

One implementation each, so the two backends cannot drift apart. Nothing here imports an SDK.

Example:
    >>> retry_after_seconds({"retry-after-ms": "1500"})
    1.5
    >>> redact("bad key sk-abc123 for r8_xyz789")
    'bad key [redacted] for [redacted]'
"""

from __future__ import annotations

import io
import math
import os
import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from ..errors import MissingSecretError

__all__ = ["RequestFailed", "redact", "retry_after_seconds", "decode_image", "base_url", "host_of",
           "secret_from_env", "missing_secret_error", "float_setting", "CONNECT_TIMEOUT_S"]

# Connecting never needs long; a slow model does. Every API client gets min(this, its timeout).
CONNECT_TIMEOUT_S = 5.0
# OpenAI keys (``sk-...``, ``sk-proj-...``) and Replicate tokens (``r8_...``), wherever a server echoes one.
_SECRET = re.compile(r"\b(sk-[A-Za-z0-9_\-*.]{3,}|r8_[A-Za-z0-9]{3,})")
# Replicate's 429 detail says "... resets in ~30s" when the header is missing.
_RESETS_IN = re.compile(r"~\s*(\d+(?:\.\d+)?)\s*s")
_FORMATS = {"PNG": "png", "WEBP": "webp", "JPEG": "jpeg", "MPO": "jpeg"}  # MPO: a JPEG with extra frames


class RequestFailed(Exception):
    """This request FAILED (or was BLOCKED) and the next one may well work: the backend turns it into a
    ``GenerationFailure``. Internal to the backends; it never leaves ``generate``."""

    def __init__(self, reason: str, *, status: Literal["FAILED", "BLOCKED"] = "FAILED",
                 error_type: str = "BackendError", request_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status: Literal["FAILED", "BLOCKED"] = status
        self.error_type = error_type
        self.request_id = request_id


def redact(text: str, secret: str | None = None) -> str:
    """``text`` (server-provided) without ``secret`` and without anything else that looks like a key."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return _SECRET.sub("[redacted]", text)


def retry_after_seconds(headers: Mapping[str, str] | None, detail: str | None = None) -> float | None:
    """Seconds to wait before retrying, else None.

    From ``retry-after-ms`` (OpenAI), else ``retry-after`` (seconds or an HTTP date), else a "~30s" in
    ``detail`` (Replicate's 429 text). A value that does not parse, or is not finite, is skipped.
    """
    headers = headers or {}
    milliseconds = _finite(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return max(milliseconds / 1000.0, 0.0)
    value = headers.get("retry-after")
    if value:
        seconds = _finite(value)
        if seconds is None:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                if when.tzinfo is None:  # "-0000": UTC by RFC 5322, not local time
                    when = when.replace(tzinfo=UTC)
                seconds = when.timestamp() - time.time()
        if seconds is not None:
            return max(seconds, 0.0)
    match = _RESETS_IN.search(detail) if detail else None
    return float(match.group(1)) if match else None


def _finite(value: str | None) -> float | None:
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def decode_image(data: bytes) -> tuple[Image.Image, str]:
    """Decode and fully load image bytes: ``(image, "png" | "webp" | "jpeg")``, else ``ValueError``.

    The SDKs do not look at the bytes they hand over: an HTML page or a cut-off file fails here.
    """
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError as exc:
        raise ValueError(f"not an image: {len(data)} bytes starting {data[:16]!r}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"the image does not decode ({len(data)} bytes): {exc}") from exc
    fmt = _FORMATS.get(image.format or "")
    if fmt is None:
        raise ValueError(f"unexpected image format {image.format!r}; expected PNG, WebP or JPEG")
    return image, fmt


def base_url(explicit: str | None, variable: str, default: str) -> str:
    """The API root: ``explicit`` (the constructor's), else ``$variable``, else ``default``; no trailing slash."""
    return (explicit or os.environ.get(variable) or default).rstrip("/")


def host_of(url: str) -> str:
    """``host:port`` of an API root, as messages and fingerprints name it."""
    return urlsplit(url).netloc or url


def secret_from_env(variable: str) -> str | None:
    """The key in ``$variable``; None when unset or empty. Keys come from the environment only."""
    return os.environ.get(variable) or None


def missing_secret_error(backend: str, variable: str, noun: str = "API key") -> MissingSecretError:
    """The error for a key that is not set, saying where to set it."""
    return MissingSecretError(
        f"{backend}: no {noun}: set the {variable} environment variable ({noun.split()[-1]}s are read from "
        f"the environment only, never from specs or files)")


def float_setting(value: float | None, variable: str, default: float) -> float:
    """``value`` if given, else ``$variable``, else ``default``; a bad ``$variable`` is named in the error."""
    if value is not None:
        return float(value)
    text = os.environ.get(variable)
    if not text:
        return float(default)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{variable}={text!r} is not a number of seconds; set it to e.g. {default:g} "
                         f"or unset it") from None
