"""The helpers the API backends share (workbench/backends/_http.py): one implementation each."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from PIL import Image

from workbench.backends._http import (
    RequestFailed,
    base_url,
    decode_image,
    float_setting,
    host_of,
    missing_secret_error,
    redact,
    retry_after_seconds,
    secret_from_env,
)
from workbench.errors import AuthenticationError


def encoded(fmt: str, size: tuple[int, int] = (8, 6)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 40)).save(out, format=fmt)
    return out.getvalue()


def test_redact_removes_the_key_and_anything_that_looks_like_one() -> None:
    text = "key sk-proj-abc_DEF-123 and token r8_Abc123 and mine: hunter2hunter2"
    out = redact(text, "hunter2hunter2")
    assert out == "key [redacted] and token [redacted] and mine: [redacted]"
    assert redact("no secrets here, sk- or r8_ alone") == "no secrets here, sk- or r8_ alone"
    assert redact("sk-abc", None) == "[redacted]" and redact("", "x") == ""


def test_retry_after_from_milliseconds_seconds_a_date_or_the_detail() -> None:
    assert retry_after_seconds({"retry-after-ms": "2500", "retry-after": "9"}) == 2.5  # ms wins
    assert retry_after_seconds({"retry-after-ms": "soon", "retry-after": "3"}) == 3.0  # a bad ms is skipped
    assert retry_after_seconds({"retry-after": "-4"}) == 0.0
    later = format_datetime(datetime.fromtimestamp(time.time() + 30, tz=UTC), usegmt=True)
    assert 25 < retry_after_seconds({"retry-after": later}) <= 30
    naive = format_datetime(datetime.fromtimestamp(time.time() + 30, tz=UTC).replace(tzinfo=None))
    assert "-0000" in naive and 25 < retry_after_seconds({"retry-after": naive}) <= 30  # UTC, not local time
    assert retry_after_seconds(None, "Request was throttled. Your rate limit resets in ~12s.") == 12.0
    assert retry_after_seconds({"retry-after": "whenever"}, "resets in ~1.5 s") == 1.5
    for unusable in ({}, {"retry-after": "whenever"}, {"retry-after": "inf"}, {"retry-after-ms": "nan"}):
        assert retry_after_seconds(unusable) is None, unusable


def test_decode_image_checks_what_the_sdks_do_not() -> None:
    for fmt, name in (("PNG", "png"), ("WEBP", "webp"), ("JPEG", "jpeg")):
        image, got = decode_image(encoded(fmt))
        assert got == name and image.size == (8, 6)
    with pytest.raises(ValueError, match=r"not an image: 15 bytes starting b'<html>"):
        decode_image(b"<html>oops</ht>")
    with pytest.raises(ValueError, match="does not decode"):
        decode_image(encoded("PNG", (64, 64))[:-40])
    with pytest.raises(ValueError, match="unexpected image format 'GIF'; expected PNG, WebP or JPEG"):
        decode_image(encoded("GIF"))


def test_base_url_and_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOME_BASE_URL", raising=False)
    assert base_url(None, "SOME_BASE_URL", "https://api.example.com/v1/") == "https://api.example.com/v1"
    monkeypatch.setenv("SOME_BASE_URL", "http://127.0.0.1:8000/v1/")
    assert base_url(None, "SOME_BASE_URL", "https://api.example.com") == "http://127.0.0.1:8000/v1"
    assert base_url("http://localhost:1", "SOME_BASE_URL", "https://api.example.com") == "http://localhost:1"
    monkeypatch.setenv("SOME_BASE_URL", "")
    assert base_url(None, "SOME_BASE_URL", "https://api.example.com") == "https://api.example.com"
    assert host_of("http://127.0.0.1:8000/v1") == "127.0.0.1:8000"
    assert host_of("api.example.com") == "api.example.com"  # no scheme: the whole text


def test_keys_come_from_the_environment_and_a_missing_one_says_where(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOME_API_KEY", raising=False)
    assert secret_from_env("SOME_API_KEY") is None
    monkeypatch.setenv("SOME_API_KEY", "")
    assert secret_from_env("SOME_API_KEY") is None
    monkeypatch.setenv("SOME_API_KEY", "sk-1")
    assert secret_from_env("SOME_API_KEY") == "sk-1"
    error = missing_secret_error("some", "SOME_API_KEY", "API token")
    assert isinstance(error, AuthenticationError) and error.fatal
    assert str(error) == ("some: no API token: set the SOME_API_KEY environment variable (tokens are read "
                          "from the environment only, never from specs or files)")


def test_float_setting_names_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOME_TIMEOUT_S", raising=False)
    assert float_setting(None, "SOME_TIMEOUT_S", 120) == 120.0
    monkeypatch.setenv("SOME_TIMEOUT_S", "2.5")
    assert float_setting(None, "SOME_TIMEOUT_S", 120) == 2.5
    assert float_setting(7, "SOME_TIMEOUT_S", 120) == 7.0  # the constructor's value wins
    monkeypatch.setenv("SOME_TIMEOUT_S", "2 minutes")
    with pytest.raises(ValueError, match="SOME_TIMEOUT_S='2 minutes' is not a number of seconds"):
        float_setting(None, "SOME_TIMEOUT_S", 120)


def test_request_failed_carries_what_the_result_needs() -> None:
    failed = RequestFailed("blocked", status="BLOCKED", error_type="ContentPolicyError", request_id="req_1")
    assert (failed.reason, failed.status, failed.error_type, failed.request_id) == (
        "blocked", "BLOCKED", "ContentPolicyError", "req_1")
    assert (RequestFailed("x").status, RequestFailed("x").error_type) == ("FAILED", "BackendError")
