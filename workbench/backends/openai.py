"""OpenAI images backend: ``client.images.generate`` through the official ``openai`` SDK.

Model profiles are data (``PROFILES``, in ``openai_models.py``): sizes, qualities, options, prompt limit,
whether the model returns a ``revised_prompt``, and an estimated price per image. A request a model cannot
take fails in ``validate`` (plan time), naming the allowed values. The API has no seed: every image is
flagged ``seed_not_controlled`` and replicates are independent draws.

Retries belong to the runner: the SDK client is built with ``max_retries=0`` and every SDK error is mapped
at this boundary (``raise ... from``) into ``workbench.errors``. Responses are checked here because the SDK
does not check them: HTML, an empty body or cut-off JSON become a ``TransientBackendError``; no ``data``,
bad base64 or a non-image a FAILED result (``InvalidResponse: ...``, with the request id). A model the
server does not have (404 ``model_not_found``, a retired model) raises the fatal ``ModelNotFoundError``:
the sweep stops instead of failing every image one call at a time. The key comes only from ``OPENAI_API_KEY`` (the SDK also reads
``OPENAI_ORG_ID``/``OPENAI_PROJECT_ID``) and never appears in a message.

Example:
    >>> backend = OpenAIBackend(base_url="http://127.0.0.1:9/v1")
    >>> backend.estimate_cost(GenerationRequest(backend="openai", model="gpt-image-1.5", prompt="a fox",
    ...                                         width=1024, height=1024, options={"quality": "low"}))
    0.009
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

from ..errors import (
    AuthenticationError,
    BackendError,
    MissingDependencyError,
    ModelNotFoundError,
    QuotaError,
    RateLimitError,
    TransientBackendError,
    UnsupportedRequestError,
)
from ..prompt_diff import diff_prompts
from ..types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult
from .base import Backend, Capabilities
from .openai_models import (
    CURRENT_MODELS,
    PRICES_AS_OF,
    PROFILES,
    OpenAIModelProfile,
    image_price,
    validate_options,
    validate_size,
)

__all__ = ["OpenAIBackend", "OpenAIModelProfile", "PROFILES", "PRICES_AS_OF", "CURRENT_MODELS",
           "DEFAULT_BASE_URL", "ModelNotFoundError"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The codes of a safety block (DALL·E; GPT-image). Other ``image_generation_user_error``s are not blocks.
_SAFETY_CODES = {"content_policy_violation", "moderation_blocked"}
# A retired or unknown model: the status is not confirmed for every case, the wording is.
_NO_MODEL = re.compile(r"\bmodel\b.*\b(does not exist|not found|deprecated|retired|shut down)\b",
                       re.IGNORECASE)


_SECRET = re.compile(r"\b(sk-[A-Za-z0-9_\-*.]{3,}|r8_[A-Za-z0-9]{3,})")


def _redact(text: str, secret: str | None = None) -> str:
    """Remove anything that looks like a key (and the key itself) from server-provided text."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return _SECRET.sub("[redacted]", text)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), else None."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            try:
                return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
            except (TypeError, ValueError):
                return None
    return None


def _image_format(pil_format: str | None) -> str | None:
    return {"PNG": "png", "WEBP": "webp", "JPEG": "jpeg", "MPO": "jpeg"}.get(pil_format or "")


def decode_image(data: bytes) -> tuple[Any, str]:
    """Decode and fully load image bytes with PIL; ``(image, "png"|"webp"|"jpeg")`` or ``ValueError``."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError as exc:
        raise ValueError(f"not an image: {len(data)} bytes starting {data[:16]!r}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"the image does not decode ({len(data)} bytes): {exc}") from exc
    fmt = _image_format(image.format)
    if fmt is None:
        raise ValueError(f"unexpected image format {image.format!r}; expected PNG, WebP or JPEG")
    return image, fmt


class OpenAIBackend(Backend):
    """Images from the OpenAI images API.

    Args:
        base_url: API root including ``/v1``; default ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
        timeout_s: per-call timeout; default ``$WORKBENCH_OPENAI_TIMEOUT_S``, else 120 s.
        concurrency: calls in flight at once (read by the runner); default 4.
        profiles: extra or replacement model profiles, merged over ``PROFILES``.

    Request options (``request.options``), per profile: ``quality``, ``background``, ``output_format``,
    ``output_compression``, ``moderation`` (GPT-image); ``quality``, ``style`` (dall-e-3).
    """

    name = "openai"

    def __init__(self, *, base_url: str | None = None, timeout_s: float | None = None, concurrency: int = 4,
                 profiles: Mapping[str, OpenAIModelProfile] | None = None) -> None:
        self._base_url = base_url
        env_timeout = os.environ.get("WORKBENCH_OPENAI_TIMEOUT_S")
        self.timeout_s = float(timeout_s if timeout_s is not None else env_timeout or 120.0)
        self.concurrency = concurrency
        self.profiles: dict[str, OpenAIModelProfile] = {**PROFILES, **(profiles or {})}
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str, float], Any] = {}
        self._downloader: Any = None

    # configuration ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The API root in use (constructor, else ``$OPENAI_BASE_URL``, else the public API)."""
        return (self._base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc or self.base_url

    @staticmethod
    def _api_key() -> str | None:
        return os.environ.get("OPENAI_API_KEY") or None

    def _profile(self, model: str) -> OpenAIModelProfile:
        profile = self.profiles.get(model)
        if profile is None:
            raise UnsupportedRequestError(
                f"openai: unknown model '{model}'; known models: {', '.join(sorted(self.profiles))} "
                f"(current: {', '.join(CURRENT_MODELS)}); add a profile with OpenAIBackend(profiles=...)")
        return profile

    def _client(self) -> Any:
        try:
            import openai
        except ImportError as exc:
            raise MissingDependencyError("openai", "openai") from exc
        key = self._api_key()
        if key is None:
            raise AuthenticationError(self._missing_key_message())
        cache_key = (key, self.base_url, self.timeout_s)
        with self._lock:
            client = self._clients.get(cache_key)
            if client is None:
                client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0,
                                       timeout=openai.Timeout(self.timeout_s, connect=min(5.0, self.timeout_s)))
                self._clients[cache_key] = client
            return client

    @staticmethod
    def _missing_key_message() -> str:
        return ("openai: no API key: set the OPENAI_API_KEY environment variable (keys are read from the "
                "environment only, never from specs or files)")

    # contract ----------------------------------------------------------------------------------------
    def capabilities(self, model: str) -> Capabilities:
        profile = self.profiles.get(model)
        if profile is None:
            return Capabilities(seeds=False, negative_prompt=False, guidance=False, steps=False,
                                concurrency=self.concurrency, max_batch=1)
        return Capabilities(seeds=False, max_batch=1, negative_prompt=False, guidance=False, steps=False,
                            schedulers=False, revised_prompt=profile.returns_revised_prompt,
                            sizes=profile.sizes, size_multiple=16, concurrency=self.concurrency,
                            seconds_per_image=profile.seconds_per_image)

    def validate(self, request: GenerationRequest) -> None:
        profile = self._profile(request.model)
        if profile.retired:
            raise UnsupportedRequestError(
                f"openai model '{request.model}' was {profile.retired_note or 'retired'}; use one of the "
                f"current models: {', '.join(CURRENT_MODELS)}")
        if profile.legacy and self.host == urlsplit(DEFAULT_BASE_URL).netloc:
            raise UnsupportedRequestError(
                f"openai model '{request.model}' is a legacy profile ({profile.retired_note}); it works only "
                f"against a compatible server (set OPENAI_BASE_URL or base_url=). Current models: "
                f"{', '.join(CURRENT_MODELS)}")
        if len(request.prompt) > profile.max_prompt_chars:
            raise UnsupportedRequestError(
                f"openai model '{request.model}' takes prompts of at most {profile.max_prompt_chars} "
                f"characters; this one has {len(request.prompt)}")
        if not request.prompt.strip():
            raise UnsupportedRequestError("openai: the prompt is empty")
        validate_size(profile, request.width, request.height)
        if request.scheduler:
            raise UnsupportedRequestError(
                f"openai model '{request.model}' has no choice of scheduler; remove "
                f"'scheduler: {request.scheduler}' from the spec")
        validate_options(profile, dict(request.options))

    def uncontrolled(self, request: GenerationRequest) -> dict[str, str]:
        out = super().uncontrolled(request)
        out["seed"] = ("the OpenAI images API has no seed: each image is an independent draw "
                       "(replicates, not seeds)")
        return out

    def estimate_cost(self, request: GenerationRequest) -> float:
        profile = self.profiles.get(request.model)
        if profile is None:
            return 0.0
        quality = request.options.get("quality") or profile.default_price_quality
        return image_price(profile, request.width, request.height, str(quality))

    def preflight(self, models: set[str]) -> None:
        try:
            import openai  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("openai", "openai") from exc
        if self._api_key() is None:
            raise AuthenticationError(self._missing_key_message())
        for model in sorted(models):
            self._profile(model)

    def environment(self, model: str) -> dict[str, Any]:
        try:
            sdk_version = metadata.version("openai")
        except metadata.PackageNotFoundError:
            sdk_version = None
        profile = self.profiles.get(model)
        return {"backend": self.name, "model": model, "sdk": "openai", "sdk_version": sdk_version,
                "api_host": self.host, "api": "images.generate",
                "legacy_profile": bool(profile and profile.legacy), "prices_as_of": PRICES_AS_OF}

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            downloader, self._downloader = self._downloader, None
        for client in clients:
            client.close()
        if downloader is not None:
            downloader.close()

    # generation ----------------------------------------------------------------------------------------
    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [self._generate_one(request) for request in batch]

    def _request_kwargs(self, profile: OpenAIModelProfile, request: GenerationRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": request.model, "prompt": request.prompt,
                                  "size": f"{request.width}x{request.height}", "n": 1}
        for key, value in request.options.items():
            kwargs[key] = value
        if profile.response_format is not None:
            kwargs["response_format"] = profile.response_format
        return kwargs

    def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        profile = self._profile(request.model)
        client = self._client()  # raises MissingDependencyError / AuthenticationError first
        import openai

        kwargs = self._request_kwargs(profile, request)
        env = self.environment(request.model)
        start = time.perf_counter()
        try:
            raw = client.images.with_raw_response.generate(**kwargs)
        except openai.APIStatusError as exc:
            return self._status_error(exc, request, time.perf_counter() - start, env)
        except openai.APITimeoutError as exc:
            raise TransientBackendError(
                f"openai: no answer from {self.host} within {self.timeout_s:g} s (model '{request.model}'); "
                f"raise WORKBENCH_OPENAI_TIMEOUT_S if the model is slow") from exc
        except openai.APIConnectionError as exc:
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection error"
            raise TransientBackendError(
                f"openai: could not reach {self.host} ({cause}); check the network and OPENAI_BASE_URL") from exc
        except openai.OpenAIError as exc:
            raise BackendError(f"openai: {type(exc).__name__}: {_redact(str(exc), self._api_key())}") from exc

        request_id = raw.headers.get("x-request-id") or None
        ids = {"request_id": request_id} if request_id else {}
        content_type = (raw.headers.get("content-type") or "").lower()
        body: bytes = raw.content
        if "html" in content_type or body.lstrip()[:1] == b"<":
            raise TransientBackendError(
                f"openai: {self.host} answered HTML (HTTP {raw.status_code}) instead of JSON, e.g. a proxy or "
                f"gateway page; check OPENAI_BASE_URL", request_id=request_id)
        if not body.strip():
            raise TransientBackendError(
                f"openai: {self.host} answered HTTP {raw.status_code} with an empty body (a proxy or a cut "
                f"connection?)", request_id=request_id)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise TransientBackendError(
                f"openai: the answer from {self.host} is not valid JSON ({len(body)} bytes; cut off?)",
                request_id=request_id) from exc
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:  # a result, not a raise: the run keeps its request id
            return GenerationFailure(
                request=request, status="FAILED", error_type="InvalidResponseError", backend_ids=ids,
                reason=f"InvalidResponse: the answer holds no images ('data' "
                       f"{'missing' if items is None else 'empty'}); request id {request_id}",
                latency_s=time.perf_counter() - start, environment=env)
        item = items[0] if isinstance(items[0], dict) else {}

        try:
            payload = self._payload(item)
            image, fmt = decode_image(payload)
        except ValueError as exc:
            return GenerationFailure(request=request, reason=f"InvalidResponse: {exc}", status="FAILED",
                                     error_type="InvalidResponseError", backend_ids=ids,
                                     latency_s=time.perf_counter() - start, environment=env)
        latency = time.perf_counter() - start

        revised = item.get("revised_prompt") if isinstance(item.get("revised_prompt"), str) else None
        flags = {"seed_not_controlled"}
        notes: dict[str, str] = {"seed": "the OpenAI images API has no seed; this image is an independent "
                                         f"draw (replicate {request.replicate})"}
        if revised is not None:
            diff = diff_prompts(request.prompt, revised)
            notes["prompt_diff"] = diff.to_text()
            notes["prompt_drift"] = f"{diff.drift:.3f}"
            if diff.revised_differs:
                flags.add("prompt_revised")
            if diff.dropped_elements:
                flags.add("dropped_elements")
                notes["dropped_elements"] = "; ".join(diff.dropped)
        if image.size != (request.width, request.height):
            flags.add("size_mismatch")
            notes["size_mismatch"] = (f"asked {request.width}x{request.height}, got "
                                      f"{image.size[0]}x{image.size[1]}")
        quality = data.get("quality") or request.options.get("quality") or profile.default_price_quality
        if data.get("quality"):
            notes["quality"] = str(data["quality"])
        usage = data.get("usage")
        if isinstance(usage, dict):
            notes["usage"] = json.dumps(usage, sort_keys=True)
        if "url" in item and "b64_json" not in item:
            notes["download"] = "the server answered with a URL; the image was downloaded at once"
        cost = image_price(profile, request.width, request.height, str(quality))
        return GeneratedImage(request=request, image=image, revised_prompt=revised, backend_ids=ids,
                              latency_s=latency, cost_usd=cost, flags=frozenset(flags), notes=notes,
                              environment=env, original_bytes=payload, original_format=fmt)

    def _payload(self, item: Mapping[str, Any]) -> bytes:
        b64 = item.get("b64_json")
        if isinstance(b64, str) and b64:
            try:
                return base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"b64_json is not valid base64 ({len(b64)} characters)") from exc
        url = item.get("url")
        if isinstance(url, str) and url:
            return self._download(url)
        raise ValueError("the image item has neither 'b64_json' nor 'url'")

    def _download(self, url: str) -> bytes:
        """Fetch an image URL at once (they expire). The API key is never sent to the file host."""
        import httpx2

        with self._lock:
            if self._downloader is None:
                self._downloader = httpx2.Client(timeout=self.timeout_s, follow_redirects=True)
            downloader = self._downloader
        try:
            response = downloader.get(url)
        except httpx2.TimeoutException as exc:
            raise TransientBackendError(f"openai: downloading the image timed out after {self.timeout_s:g} s"
                                        ) from exc
        except httpx2.HTTPError as exc:
            raise TransientBackendError(f"openai: downloading the image failed ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise ValueError(f"the image URL answered HTTP {response.status_code} (expired?)")
        return response.content

    def _status_error(self, exc: Any, request: GenerationRequest, latency: float,
                      env: Mapping[str, Any]) -> GenerationResult:
        """Map an ``openai.APIStatusError``: raise for whole-call problems, return a result for this request."""
        status = exc.status_code
        request_id = getattr(exc, "request_id", None)
        code = exc.code or ""
        err_type = exc.type or ""
        body = exc.body if isinstance(exc.body, dict) else {}
        message = _redact(str(body.get("message") or ""), self._api_key())
        headers = exc.response.headers if exc.response is not None else {}
        content_type = (headers.get("content-type") or "").lower()
        where = f"HTTP {status}" + (f" {code}" if code else "") + (f", request id {request_id}" if request_id else "")
        ids = {"request_id": request_id} if request_id else {}
        # (403 model_not_found is "no access to the model": the key's problem, handled as auth below.)
        no_model = status == 404 or (code == "model_not_found" and status != 403) or (
            status == 400 and bool(_NO_MODEL.search(message)))
        if no_model:
            raise ModelNotFoundError(
                f"openai: model '{request.model}' is not available on {self.host} ({where}): "
                f"{message or 'not found'}; it may be retired or unknown to this key. Current models: "
                f"{', '.join(CURRENT_MODELS)}; check the spec's model and OPENAI_BASE_URL",
                request_id=request_id) from exc
        if status == 401:
            raise AuthenticationError(
                f"openai refused the API key ({where}); set a valid OPENAI_API_KEY "
                f"(and OPENAI_ORG_ID / OPENAI_PROJECT_ID if you use them)", request_id=request_id) from exc
        if status == 403:
            raise AuthenticationError(
                f"openai denied access to model '{request.model}' ({where}): {message or 'permission denied'}; "
                f"check the key's project and organisation verification", request_id=request_id) from exc
        if status == 429 and (code == "insufficient_quota" or err_type == "insufficient_quota"):
            raise QuotaError(
                f"openai quota exhausted ({where}): add credit or raise the limit in the OpenAI billing "
                f"settings; retrying will not help", request_id=request_id) from exc
        if status == 429:
            after = retry_after_seconds(headers)
            raise RateLimitError(f"openai rate limit ({where}): {message or 'too many requests'}",
                                 retry_after=after, request_id=request_id) from exc
        if status >= 500 or status in (408, 409):
            html = "html" in content_type
            detail = "an HTML error page (gateway or proxy)" if html else (message or "server error")
            if (headers.get("x-should-retry") or "").lower() == "false":
                raise BackendError(f"openai server error ({where}): {detail}; the server asked not to retry",
                                   request_id=request_id) from exc
            raise TransientBackendError(f"openai server error ({where}): {detail}",
                                        retry_after=retry_after_seconds(headers), request_id=request_id) from exc
        if code in _SAFETY_CODES:
            details = body.get("moderation_details")
            stage = details.get("moderation_stage") if isinstance(details, dict) else None
            at = f" at the {stage} stage" if stage else ""  # input: the prompt; output: the image
            return GenerationFailure(request=request, status="BLOCKED", error_type="ContentPolicyError",
                                     reason=f"blocked by OpenAI's safety system{at} ({where}): {message}",
                                     backend_ids=ids, latency_s=latency, environment=env)
        param = f" (parameter '{body.get('param')}')" if body.get("param") else ""
        return GenerationFailure(request=request, status="FAILED", error_type="UnsupportedRequestError",
                                 reason=f"openai rejected the request ({where}){param}: {message}",
                                 backend_ids=ids, latency_s=latency, environment=env)
