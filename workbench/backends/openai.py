"""OpenAI images backend: ``client.images.generate`` through the official ``openai`` SDK.

Model profiles are data (``PROFILES``, in ``openai_models.py``): sizes, qualities, options, prompt limit,
whether the model returns a ``revised_prompt``, an estimated price per image and the shutdown date. A
request a model cannot take fails in ``validate`` (plan time), naming the allowed values. The model names
are the installed SDK's (``openai_catalogue.py``): one it lists and we have no profile for is sent as asked,
its options checked against the SDK's own value lists, and ``warnings`` (shown by ``plan``) says that its
cost and limits are unknown; so does a model that shuts down soon, or is shut down on api.openai.com but
asked of a compatible server. The API has no seed: every image is flagged ``seed_not_controlled`` and
replicates are independent draws.

Retries belong to the runner: the SDK client is built with ``max_retries=0``, and every SDK error is mapped
at one point, ``map_openai_errors`` (``openai_errors.py``), into ``workbench.errors``. Responses are checked
here because the SDK does not check them: HTML, an empty body or cut-off JSON become a
``TransientBackendError``; no ``data``, bad base64 or a non-image a FAILED result (``InvalidResponse: ...``,
with the request id). A revised prompt is reported as ``revised_prompt`` (flags ``prompt_revised``,
``dropped_elements``); tracking writes its difference from the prompt. The key comes only from
``OPENAI_API_KEY`` (the SDK also reads ``OPENAI_ORG_ID``/``OPENAI_PROJECT_ID``) and never appears in a message.

Example:
    >>> backend = OpenAIBackend(base_url="http://127.0.0.1:9/v1")
    >>> backend.estimate_cost(GenerationRequest(backend="openai", model="gpt-image-1.5", prompt="a fox",
    ...                                         width=1024, height=1024, options={"quality": "low"}))
    0.009
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import date
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import MissingDependencyError, ModelNotFoundError, TransientBackendError, UnsupportedRequestError
from ..prompts.diff import diff_prompts
from ..types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult
from ._http import (
    CONNECT_TIMEOUT_S,
    RequestFailed,
    base_url,
    decode_image,
    float_setting,
    host_of,
    missing_secret_error,
    secret_from_env,
)
from .base import Backend, Capabilities
from .openai_catalogue import sdk_models
from .openai_errors import map_openai_errors
from .openai_models import (
    PRICES_AS_OF,
    PROFILES,
    OpenAIModelProfile,
    current_models,
    image_price,
    today_utc,
    validate_options,
    validate_size,
    validate_unprofiled,
)

if TYPE_CHECKING:
    import httpx2
    import openai

__all__ = ["OpenAIBackend", "OpenAIModelProfile", "PROFILES", "PRICES_AS_OF", "current_models",
           "DEFAULT_BASE_URL", "ModelNotFoundError"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIBackend(Backend):
    """Images from the OpenAI images API.

    Args:
        base_url: API root including ``/v1``; default ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
        timeout_s: per-call timeout; default ``$WORKBENCH_OPENAI_TIMEOUT_S``, else 120 s.
        concurrency: calls in flight at once (read by the runner); default 4.
        profiles: extra or replacement model profiles, merged over ``PROFILES``.
        today: the date shutdowns are judged by; default today (UTC).

    Request options (``request.options``), per profile: ``quality``, ``background``, ``output_format``,
    ``output_compression``, ``moderation`` (GPT-image); ``quality``, ``style`` (dall-e-3).
    """

    name = "openai"

    def __init__(self, *, base_url: str | None = None, timeout_s: float | None = None, concurrency: int = 4,
                 profiles: Mapping[str, OpenAIModelProfile] | None = None, today: date | None = None) -> None:
        self._base_url = base_url
        self.today = today
        self.timeout_s = float_setting(timeout_s, "WORKBENCH_OPENAI_TIMEOUT_S", 120.0)
        self.concurrency = concurrency
        self.profiles: dict[str, OpenAIModelProfile] = {**PROFILES, **(profiles or {})}
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str, float], openai.OpenAI] = {}
        self._downloader: httpx2.Client | None = None

    # configuration ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The API root in use (constructor, else ``$OPENAI_BASE_URL``, else the public API)."""
        return base_url(self._base_url, "OPENAI_BASE_URL", DEFAULT_BASE_URL)

    @property
    def host(self) -> str:
        return host_of(self.base_url)

    @staticmethod
    def _api_key() -> str | None:
        return secret_from_env("OPENAI_API_KEY")

    def _today(self) -> date:
        return self.today or today_utc()

    def current_models(self) -> tuple[str, ...]:
        """The models to use now: the SDK's, less those shut down (see ``openai_models.current_models``)."""
        return current_models(self._today(), self.profiles)

    @property
    def _public(self) -> bool:
        return self.host == urlsplit(DEFAULT_BASE_URL).netloc

    def _profile(self, model: str) -> OpenAIModelProfile | None:
        """The model's profile; None for a model the installed SDK lists and no profile describes."""
        profile = self.profiles.get(model)
        if profile is None and model not in sdk_models():
            raise UnsupportedRequestError(
                f"openai: unknown model '{model}': neither the installed openai SDK nor a workbench profile names "
                f"it; current models: {', '.join(self.current_models())}; add a profile with "
                f"OpenAIBackend(profiles=...), or update the openai SDK")
        return profile

    def _client(self) -> openai.OpenAI:
        try:
            import openai
        except ImportError as exc:
            raise MissingDependencyError("openai", "openai") from exc
        key = self._api_key()
        if key is None:
            raise missing_secret_error("openai", "OPENAI_API_KEY")
        cache_key = (key, self.base_url, self.timeout_s)
        with self._lock:
            client = self._clients.get(cache_key)
            if client is None:
                timeout = openai.Timeout(self.timeout_s, connect=min(CONNECT_TIMEOUT_S, self.timeout_s))
                client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout)
                self._clients[cache_key] = client
            return client

    # contract ----------------------------------------------------------------------------------------
    def capabilities(self, model: str) -> Capabilities:
        profile = self.profiles.get(model)
        if profile is None:
            return Capabilities(seeds=False, negative_prompt=False, guidance=False, steps=False,
                                concurrency=self.concurrency, max_batch=1, size_multiple=1)
        return Capabilities(seeds=False, max_batch=1, negative_prompt=False, guidance=False, steps=False,
                            schedulers=False, revised_prompt=profile.returns_revised_prompt,
                            sizes=profile.sizes, size_multiple=16, concurrency=self.concurrency,
                            seconds_per_image=profile.seconds_per_image)

    def validate(self, request: GenerationRequest) -> None:
        profile = self._profile(request.model)
        limit = profile.max_prompt_chars if profile is not None else 32000  # the SDK: "maximum length 32000"
        if len(request.prompt) > limit:
            raise UnsupportedRequestError(
                f"openai model '{request.model}' takes prompts of at most {limit} characters; this one has "
                f"{len(request.prompt)}")
        if not request.prompt.strip():
            raise UnsupportedRequestError("openai: the prompt is empty")
        if request.scheduler:
            raise UnsupportedRequestError(
                f"openai model '{request.model}' has no choice of scheduler; remove "
                f"'scheduler: {request.scheduler}' from the spec")
        if profile is None:
            validate_unprofiled(request.model, request.width, request.height, dict(request.options))
            return
        validate_size(profile, request.width, request.height)
        validate_options(profile, dict(request.options))
        if profile.shut_down(self._today()):
            assert profile.shutdown is not None
            instead = f"use {profile.replacement}; current models: {', '.join(self.current_models())}"
            if not profile.legacy:
                raise UnsupportedRequestError(
                    f"openai model '{request.model}' was shut down (retired) on {profile.shutdown.isoformat()} "
                    f"(OpenAI's deprecations page); {instead}")
            if self._public:
                raise UnsupportedRequestError(
                    f"openai model '{request.model}' is a legacy profile (shut down on api.openai.com on "
                    f"{profile.shutdown.isoformat()}): it works only against a compatible server (set "
                    f"OPENAI_BASE_URL or base_url=); {instead}")

    def warnings(self, request: GenerationRequest) -> list[str]:
        """What the plan should say before this request is sent: no profile, a shutdown, an unknown price."""
        profile = self.profiles.get(request.model)
        if profile is None:
            if request.model not in sdk_models():
                return []
            return [f"openai model '{request.model}' has no workbench profile: its cost and limits (sizes, "
                    f"qualities, options) are unknown; it is sent as asked, checked only against the installed "
                    f"SDK's parameters (add a profile with OpenAIBackend(profiles=...))"]
        out = []
        today = self._today()
        if profile.shutdown is not None and profile.shut_down(today):
            out.append(f"openai model '{request.model}' was shut down on api.openai.com on "
                       f"{profile.shutdown.isoformat()}; sent to {self.host} as asked (a compatible server); "
                       f"on api.openai.com use {profile.replacement}")
        elif profile.shutdown is not None:
            days = (profile.shutdown - today).days
            out.append(f"openai model '{request.model}' shuts down on {profile.shutdown.isoformat()} (in {days} "
                       f"day{'s' if days != 1 else ''}, OpenAI's deprecations page): calls fail after that; use "
                       f"{profile.replacement}")
        if self.estimate_cost(request) is None:
            out.append(f"openai model '{request.model}': no price is published for {request.width}x"
                       f"{request.height} images (prices as of {PRICES_AS_OF}); their cost is unknown")
        return out

    def uncontrolled(self, request: GenerationRequest) -> dict[str, str]:
        out = super().uncontrolled(request)
        out["seed"] = ("the OpenAI images API has no seed: each image is an independent draw "
                       "(replicates, not seeds)")
        return out

    def estimate_cost(self, request: GenerationRequest) -> float | None:
        profile = self.profiles.get(request.model)
        if profile is None:
            return None  # no profile: the cost is unknown
        quality = request.options.get("quality") or profile.default_price_quality
        return image_price(profile, request.width, request.height, str(quality))

    def setup_warnings(self) -> list[str]:
        if self._api_key() is None:
            error = missing_secret_error("openai", "OPENAI_API_KEY")
            return [f"{error}; `workbench run` refuses to start without it"]
        return []

    def preflight(self, models: set[str]) -> None:
        try:
            import openai  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("openai", "openai") from exc
        if self._api_key() is None:
            raise missing_secret_error("openai", "OPENAI_API_KEY")
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

    def _request_kwargs(self, profile: OpenAIModelProfile | None, request: GenerationRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": request.model, "prompt": request.prompt,
                                  "size": f"{request.width}x{request.height}", "n": 1}
        for key, value in request.options.items():
            kwargs[key] = value
        if profile is not None and profile.response_format is not None:
            kwargs["response_format"] = profile.response_format
        return kwargs

    def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        profile = self._profile(request.model)
        client = self._client()  # raises MissingDependencyError / AuthenticationError first
        kwargs = self._request_kwargs(profile, request)
        env = self.environment(request.model)
        start = time.perf_counter()
        request_id: str | None = None
        try:
            with map_openai_errors(request.model, host=self.host, timeout_s=self.timeout_s, key=self._api_key(),
                                   current=self.current_models()):
                answer = client.images.with_raw_response.generate(**kwargs)
            request_id = answer.headers.get("x-request-id") or None
            data, item = self._images_in(answer.http_response, request_id)
            try:
                payload = self._payload(item)
                image, fmt = decode_image(payload)
            except ValueError as exc:
                raise RequestFailed(f"InvalidResponse: {exc}", error_type="InvalidResponseError") from exc
        except RequestFailed as failed:  # a result, not a raise: the run keeps its request id
            request_id = failed.request_id or request_id
            return GenerationFailure(request=request, reason=failed.reason, status=failed.status,
                                     error_type=failed.error_type,
                                     backend_ids={"request_id": request_id} if request_id else {},
                                     latency_s=time.perf_counter() - start, environment=env)
        latency = time.perf_counter() - start
        flags, notes = self._flags_and_notes(request, item, data, image.size)
        cost = None
        if profile is not None:
            quality = data.get("quality") or request.options.get("quality") or profile.default_price_quality
            cost = image_price(profile, request.width, request.height, str(quality))
        return GeneratedImage(request=request, image=image, revised_prompt=self._revised_prompt(item),
                              backend_ids={"request_id": request_id} if request_id else {}, latency_s=latency,
                              cost_usd=cost, flags=frozenset(flags), notes=notes, environment=env,
                              original_bytes=payload, original_format=fmt)

    def _images_in(self, answer: httpx2.Response,
                   request_id: str | None) -> tuple[dict[str, Any], Mapping[str, Any]]:
        """The answer's JSON and its first image item; the SDK checks neither."""
        content_type = (answer.headers.get("content-type") or "").lower()
        body = answer.content
        if "html" in content_type or body.lstrip()[:1] == b"<":
            raise TransientBackendError(
                f"openai: {self.host} answered HTML (HTTP {answer.status_code}) instead of JSON, e.g. a proxy or "
                f"gateway page; check OPENAI_BASE_URL", request_id=request_id)
        if not body.strip():
            raise TransientBackendError(
                f"openai: {self.host} answered HTTP {answer.status_code} with an empty body (a proxy or a cut "
                f"connection?)", request_id=request_id)
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise TransientBackendError(
                f"openai: the answer from {self.host} is not valid JSON ({len(body)} bytes; cut off?)",
                request_id=request_id) from exc
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise RequestFailed(f"InvalidResponse: the answer holds no images ('data' "
                                f"{'missing' if items is None else 'empty'}); request id {request_id}",
                                error_type="InvalidResponseError")
        return data, items[0] if isinstance(items[0], dict) else {}

    @staticmethod
    def _revised_prompt(item: Mapping[str, Any]) -> str | None:
        revised = item.get("revised_prompt")
        return revised if isinstance(revised, str) else None

    def _flags_and_notes(self, request: GenerationRequest, item: Mapping[str, Any], data: Mapping[str, Any],
                         size: tuple[int, int]) -> tuple[set[str], dict[str, str]]:
        """What the answer says beyond the image. The revised prompt's difference from the prompt is
        tracking's to write; here it only decides the flags."""
        flags = {"seed_not_controlled"}
        notes: dict[str, str] = {"seed": "the OpenAI images API has no seed; this image is an independent "
                                         f"draw (replicate {request.replicate})"}
        revised = self._revised_prompt(item)
        if revised is not None:
            diff = diff_prompts(request.prompt, revised)
            if diff.revised_differs:
                flags.add("prompt_revised")
            if diff.dropped_elements:
                flags.add("dropped_elements")
                notes["dropped_elements"] = "; ".join(diff.dropped)
        if size != (request.width, request.height):
            flags.add("size_mismatch")
            notes["size_mismatch"] = f"asked {request.width}x{request.height}, got {size[0]}x{size[1]}"
        if data.get("quality"):
            notes["quality"] = str(data["quality"])
        usage = data.get("usage")
        if isinstance(usage, dict):
            notes["usage"] = json.dumps(usage, sort_keys=True)
        if "url" in item and "b64_json" not in item:
            notes["download"] = "the server answered with a URL; the image was downloaded at once"
        return flags, notes

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
        import httpx2  # the openai SDK's HTTP library, installed with it

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
