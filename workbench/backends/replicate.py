"""Replicate backend: predictions through the official ``replicate`` SDK, under our own deadline.

Models are ``owner/name`` (official models, the model route; default ``black-forest-labs/flux-schnell``)
or ``owner/name:VERSION`` (the version route). Known models have a profile (``PROFILES``, in
``replicate_models.py`` with the input mapping) that maps our parameters to the model's inputs and checks
them at plan time; any other model gets ``prompt`` and ``seed``, and its other inputs pass through from
``request.options`` verbatim.

One request is one prediction: ``client.predictions.create`` / ``client.models.predictions.create`` (with
``Prefer: wait``), then polling with our own deadline (``deadline_s``); past it the prediction is canceled
and the request FAILS. Where the SDK falls short we use its underlying ``httpx`` client (``client._client``)
and read JSON as plain dicts:

- a create without ``wait`` gets our timeout from an httpx request hook (the SDK sends it with none);
  the same hook bounds every create by what is left of the deadline and sends ``Cancel-After``;
- the create answer is kept by an httpx response hook, so a status the SDK's model rejects (``aborted``)
  still gives the prediction id, and a 429's ``Retry-After`` header is not lost with ``ReplicateError``;
- polls and cancels, so a status is a string (the SDK's model raises on ``aborted``) and a 503 on a poll
  is retried inside the deadline (the SDK's own retry transport is mounted over, so it never sleeps
  past our deadline);
- downloads, at once (outputs are deleted after an hour): ``data:`` URIs, ``https:`` and ``http:``
  strings and ``FileOutput`` objects are all accepted, and the token is sent only to Replicate's hosts.

The create is a POST: the SDK never retries it and neither do we here. The runner retries a
``TransientBackendError`` from a create, which can pay twice when the first create did start a
prediction (see docs/backends.md); ``Cancel-After`` at least stops such an orphan at the deadline.

Every outcome, failures included, keeps the prediction id, model version, logs (``notes["logs"]``) and
Replicate's timings (``metrics["predict_time_s"]``, ``metrics["total_time_s"]``).

Example:
    >>> backend = ReplicateBackend(base_url="http://127.0.0.1:9")
    >>> backend.estimate_cost(GenerationRequest(backend="replicate", model=DEFAULT_MODEL, prompt="a fox",
    ...                                         seed=1, width=1024, height=1024, steps=4))
    0.003
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from importlib import metadata
from typing import Any, NoReturn
from urllib.parse import unquote_to_bytes, urlsplit

from ..errors import (
    AuthenticationError,
    BackendError,
    MissingDependencyError,
    QuotaError,
    RateLimitError,
    TransientBackendError,
    UnsupportedRequestError,
)
from ..types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult
from .base import Backend, Capabilities
from .replicate_models import (
    DEFAULT_MODEL,
    FLUX_ASPECT_RATIOS,
    GENERIC_PROFILE,
    PRICES_AS_OF,
    PROFILES,
    ReplicateModelProfile,
    aspect_ratio_value,
    build_input,
    nearest_aspect_ratio,
    parse_model_ref,
    validate_options,
)

__all__ = ["ReplicateBackend", "ReplicateModelProfile", "PROFILES", "DEFAULT_MODEL", "DEFAULT_BASE_URL",
           "PRICES_AS_OF", "FLUX_ASPECT_RATIOS", "parse_model_ref", "nearest_aspect_ratio"]

DEFAULT_BASE_URL = "https://api.replicate.com"
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
_SAFETY = re.compile(r"nsfw|safety|content policy|sensitive|flagged", re.IGNORECASE)
_SEED_LOG = re.compile(r"Using seed:\s*(-?\d+)")
_TRUSTED_HOST_SUFFIXES = ("replicate.delivery", "replicate.com")
_LOG_LIMIT = 2000


def retry_after_seconds(headers: Mapping[str, str] | None, detail: str | None = None) -> float | None:
    """Seconds from ``Retry-After`` (seconds or HTTP date), else from "resets in ~30s" in ``detail``."""
    value = (headers or {}).get("retry-after")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            try:
                return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
            except (TypeError, ValueError):
                pass
    if detail:
        match = re.search(r"~\s*(\d+(?:\.\d+)?)\s*s", detail)
        if match:
            return float(match.group(1))
    return None


def _redact(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "[redacted]")
    return re.sub(r"\br8_[A-Za-z0-9]{3,}", "[redacted]", text)


def _decode_image(data: bytes) -> tuple[Any, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError as exc:
        raise ValueError(f"not an image: {len(data)} bytes starting {data[:16]!r}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"the image does not decode ({len(data)} bytes): {exc}") from exc
    fmt = {"PNG": "png", "WEBP": "webp", "JPEG": "jpeg", "MPO": "jpeg"}.get(image.format or "")
    if fmt is None:
        raise ValueError(f"unexpected image format {image.format!r}; expected PNG, WebP or JPEG")
    return image, fmt


class _Failed(Exception):
    """Internal: this request FAILED/BLOCKED (turned into a ``GenerationFailure``)."""

    def __init__(self, reason: str, *, status: str = "FAILED", error_type: str = "BackendError") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.error_type = error_type


class ReplicateBackend(Backend):
    """Images from Replicate predictions.

    Args:
        base_url: API root without ``/v1``; default ``$REPLICATE_BASE_URL``, else ``https://api.replicate.com``.
        timeout_s: per-HTTP-call timeout; default ``$WORKBENCH_REPLICATE_TIMEOUT_S``, else 120 s.
        deadline_s: total time for one prediction (create, wait, polls) before it is canceled; default
            ``$WORKBENCH_REPLICATE_DEADLINE_S``, else 300 s. A request may override it with option ``deadline_s``.
        poll_interval_s: time between polls; default ``$REPLICATE_POLL_INTERVAL``, else 0.5 s.
        prefer_wait_s: seconds the create may hold for a finished prediction (``Prefer: wait=N``, 1..60;
            0: no wait, poll from the start); default 10.
        concurrency: predictions in flight at once (read by the runner); default 4.
        profiles: extra or replacement model profiles, merged over ``PROFILES``.

    Request options for flux models: ``aspect_ratio``, ``megapixels``, ``output_format``, ``output_quality``,
    ``go_fast``, ``disable_safety_checker``; for unknown models any input name passes through.
    """

    name = "replicate"

    def __init__(self, *, base_url: str | None = None, timeout_s: float | None = None,
                 deadline_s: float | None = None, poll_interval_s: float | None = None, prefer_wait_s: int = 10,
                 concurrency: int = 4, profiles: Mapping[str, ReplicateModelProfile] | None = None) -> None:
        self._base_url = base_url
        self.timeout_s = float(timeout_s if timeout_s is not None
                               else os.environ.get("WORKBENCH_REPLICATE_TIMEOUT_S") or 120.0)
        self.deadline_s = float(deadline_s if deadline_s is not None
                                else os.environ.get("WORKBENCH_REPLICATE_DEADLINE_S") or 300.0)
        self.poll_interval_s = float(poll_interval_s if poll_interval_s is not None
                                     else os.environ.get("REPLICATE_POLL_INTERVAL") or 0.5)
        if not 0 <= prefer_wait_s <= 60:
            raise ValueError(f"prefer_wait_s must be 0..60 seconds, got {prefer_wait_s}")
        self.prefer_wait_s = int(prefer_wait_s)
        self.concurrency = concurrency
        self.profiles: dict[str, ReplicateModelProfile] = {**PROFILES, **(profiles or {})}
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str, float], Any] = {}
        self._plain: Any = None
        self._local = threading.local()

    # configuration ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return (self._base_url or os.environ.get("REPLICATE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc or self.base_url

    @staticmethod
    def _token() -> str | None:
        return os.environ.get("REPLICATE_API_TOKEN") or None

    @staticmethod
    def _missing_token_message() -> str:
        return ("replicate: no API token: set the REPLICATE_API_TOKEN environment variable (tokens are read "
                "from the environment only, never from specs or files)")

    def _profile(self, model: str) -> tuple[ReplicateModelProfile, str, str | None]:
        name, version = parse_model_ref(model)
        return self.profiles.get(name, GENERIC_PROFILE), name, version

    def _client(self) -> Any:
        try:
            import httpx
            import replicate
        except ImportError as exc:
            raise MissingDependencyError("replicate", "replicate") from exc
        token = self._token()
        if token is None:
            raise AuthenticationError(self._missing_token_message())
        cache_key = (token, self.base_url, self.timeout_s)
        with self._lock:
            client = self._clients.get(cache_key)
            if client is None:
                timeout = httpx.Timeout(self.timeout_s, connect=min(5.0, self.timeout_s))
                # The mount takes every request away from the SDK's RetryTransport (up to 10 attempts with
                # sleeps): polls are retried by us, inside the deadline.
                client = replicate.Client(api_token=token, base_url=self.base_url, timeout=timeout,
                                          mounts={"all://": httpx.HTTPTransport()},
                                          event_hooks={"request": [self._bound_request],
                                                       "response": [self._keep_create_answer]})
                _ = client._client  # build the httpx client now, under the lock
                self._clients[cache_key] = client
            if self._plain is None:
                self._plain = httpx.Client(timeout=self.timeout_s, follow_redirects=True)
            return client

    def _bound_request(self, request: Any) -> None:
        """httpx request hook: the SDK sends a create without ``wait`` with ``timeout=None`` (no timeout at
        all); give such requests ours. A create is also bounded by what is left of this thread's deadline
        and carries ``Cancel-After``, so Replicate stops the prediction even if this process dies."""
        timeout = dict(request.extensions.get("timeout") or {})
        if timeout.get("read") is None:
            timeout = {"connect": min(5.0, self.timeout_s), "read": self.timeout_s,
                       "write": self.timeout_s, "pool": self.timeout_s}
        deadline = getattr(self._local, "create_deadline", None)
        if deadline is not None and request.method == "POST" and request.url.path.endswith("/predictions"):
            remaining = max(deadline - time.monotonic(), 0.05)
            timeout = {k: min(v, remaining) if v is not None else remaining for k, v in timeout.items()}
            self._local.create_timeout = timeout["read"]
            request.headers["Cancel-After"] = self._local.cancel_after
        request.extensions["timeout"] = timeout

    def _keep_create_answer(self, response: Any) -> None:
        """httpx response hook: keep this thread's last create answer, as JSON the SDK may fail to parse."""
        request = response.request
        if request.method == "POST" and request.url.path.endswith("/predictions"):
            response.read()
            self._local.create_answer = response

    # contract ----------------------------------------------------------------------------------------
    def capabilities(self, model: str) -> Capabilities:
        try:
            profile, _, _ = self._profile(model)
        except UnsupportedRequestError:
            profile = GENERIC_PROFILE
        return Capabilities(
            seeds=profile.seed_input is not None, max_batch=1,
            negative_prompt=profile.negative_prompt_input is not None,
            guidance=profile.guidance_input is not None, steps=profile.steps_input is not None,
            schedulers=bool(profile.schedulers), revised_prompt=False, sizes=None,
            size_multiple=8 if profile.sizing == "width_height" else 1, concurrency=self.concurrency,
            seconds_per_image=profile.seconds_per_image)

    def validate(self, request: GenerationRequest) -> None:
        profile, name, version = self._profile(request.model)
        if not profile.official and version is None:
            raise UnsupportedRequestError(
                f"replicate model '{name}' is not an official model: give its version, "
                f"'{name}:VERSION' (the version id is on the model's API page)")
        if not request.prompt.strip():
            raise UnsupportedRequestError("replicate: the prompt is empty")
        if request.width <= 0 or request.height <= 0:
            raise UnsupportedRequestError(f"replicate: bad size {request.width}x{request.height}")
        if request.scheduler:
            if not profile.schedulers:
                raise UnsupportedRequestError(
                    f"replicate model '{name}' has no choice of scheduler; remove "
                    f"'scheduler: {request.scheduler}' from the spec")
            if request.scheduler not in profile.schedulers:
                raise UnsupportedRequestError(
                    f"replicate model '{name}' has no scheduler '{request.scheduler}'; allowed: "
                    f"{', '.join(profile.schedulers)}")
        if profile.steps_input and profile.steps_range:
            low, high = profile.steps_range
            if not low <= request.steps <= high:
                raise UnsupportedRequestError(
                    f"replicate model '{name}' takes steps {low}..{high}, got {request.steps}; set steps in the spec")
        if profile.guidance_input and profile.guidance_range:
            low_g, high_g = profile.guidance_range
            if not low_g <= request.guidance <= high_g:
                raise UnsupportedRequestError(
                    f"replicate model '{name}' takes guidance {low_g:g}..{high_g:g}, got {request.guidance:g}")
        if profile.sizing == "width_height":
            low_s, high_s = profile.size_range
            if (request.width % 8 or request.height % 8 or not low_s <= request.width <= high_s
                    or not low_s <= request.height <= high_s):
                raise UnsupportedRequestError(
                    f"replicate model '{name}' takes width and height {low_s}..{high_s} in multiples of 8, "
                    f"got {request.width}x{request.height}")
        validate_options(profile, name, dict(request.options))

    def uncontrolled(self, request: GenerationRequest) -> dict[str, str]:
        out = super().uncontrolled(request)
        profile, _, _ = self._profile(request.model)
        if request.seed is None:
            out["seed"] = "no seed given: the model picks one (recorded from its logs when it says)"
        elif request.options.get("go_fast") is True:
            out["seed"] = "go_fast=true runs fp8 kernels that are not deterministic even with a fixed seed"
        if profile.sizing == "aspect_ratio":
            if "aspect_ratio" in request.options:
                out["size"] = (f"set by aspect_ratio {request.options['aspect_ratio']} and megapixels; "
                               f"{request.width}x{request.height} is not sent")
            else:
                sent = nearest_aspect_ratio(request.width, request.height, profile.aspect_ratios)
                if abs(aspect_ratio_value(sent) - request.width / request.height) > 1e-3:
                    out["size"] = (f"the model takes aspect ratios only: {request.width}x{request.height} is sent "
                                   f"as the nearest, {sent}")
                else:
                    out["size"] = f"sent as aspect_ratio {sent}; the model picks the exact pixel size"
        elif profile.sizing == "none":
            out["size"] = "not sent: the model's size inputs are unknown (set them in options)"
        if not profile.known:
            for field_name in ("steps", "guidance"):
                out[field_name] = "not sent: the model's inputs are unknown (set them in options)"
        return out

    def estimate_cost(self, request: GenerationRequest) -> float:
        try:
            profile, _, _ = self._profile(request.model)
        except UnsupportedRequestError:
            return 0.0
        return profile.price_per_image or 0.0

    def preflight(self, models: set[str]) -> None:
        try:
            import replicate  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("replicate", "replicate") from exc
        if self._token() is None:
            raise AuthenticationError(self._missing_token_message())
        for model in sorted(models):
            parse_model_ref(model)

    def environment(self, model: str) -> dict[str, Any]:
        try:
            sdk_version = metadata.version("replicate")
        except metadata.PackageNotFoundError:
            sdk_version = None
        try:
            _, name, version = self._profile(model)
        except UnsupportedRequestError:
            name, version = model, None
        env: dict[str, Any] = {"backend": self.name, "model": name, "sdk": "replicate",
                               "sdk_version": sdk_version, "api_host": self.host, "api": "predictions"}
        if version:
            env["model_version"] = version
        return env

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            plain, self._plain = self._plain, None
        for client in clients:
            client._client.close()
        if plain is not None:
            plain.close()

    # inputs --------------------------------------------------------------------------------------------
    def build_input(self, request: GenerationRequest) -> tuple[dict[str, Any], dict[str, str]]:
        """The model input for ``request`` and notes on how parameters were mapped (see ``build_input`` in
        ``replicate_models.py``)."""
        profile, _, _ = self._profile(request.model)
        return build_input(profile, request)

    # generation ----------------------------------------------------------------------------------------
    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [self._generate_one(request) for request in batch]

    def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        profile, name, version = self._profile(request.model)
        client = self._client()
        inputs, notes = self.build_input(request)
        notes["input"] = json.dumps(inputs, sort_keys=True)
        deadline_s = float(request.options.get("deadline_s", self.deadline_s))
        env = self.environment(request.model)
        start = time.monotonic()
        deadline = start + deadline_s
        ids: dict[str, str] = {}
        seen: dict[str, Any] = {}  # the latest prediction JSON: recorded whatever the outcome
        try:
            prediction = seen["prediction"] = self._create(client, name, version, inputs, deadline)
            ids["prediction_id"] = str(prediction.get("id"))
            prediction = self._wait(client, prediction, deadline, deadline_s, notes, seen)
            metrics = self._record(prediction, ids, notes, env)
            return self._finish(request, profile, prediction, client, ids, notes, env, start, metrics)
        except _Failed as failed:
            metrics = self._record(seen["prediction"], ids, notes, env) if "prediction" in seen else {}
            return GenerationFailure(request=request, reason=failed.reason, status=failed.status,  # type: ignore[arg-type]
                                     error_type=failed.error_type, backend_ids=dict(ids), notes=notes,
                                     metrics=metrics, latency_s=time.monotonic() - start, environment=env)

    def _create(self, client: Any, name: str, version: str | None, inputs: dict[str, Any],
                deadline: float) -> dict[str, Any]:
        self._local.create_answer = None
        remaining = deadline - time.monotonic()
        # Prefer: wait=N holds the answer up to N s: leave half a second of the deadline for it to arrive.
        wait: int | bool = False
        if self.prefer_wait_s and remaining >= 1.5:
            wait = max(1, min(self.prefer_wait_s, int(remaining - 0.5)))
        # Replicate's own deadline (at least 5 s), a little after ours so that ours decides first: a
        # prediction this process can no longer cancel (killed, or a create that timed out) still stops.
        self._local.cancel_after = f"{max(5, math.ceil(remaining) + 2)}s"
        self._local.create_deadline = deadline
        self._local.create_timeout = None
        try:
            return self._create_call(client, name, version, inputs, wait)
        finally:
            self._local.create_deadline = None

    def _create_call(self, client: Any, name: str, version: str | None, inputs: dict[str, Any],
                     wait: int | bool) -> dict[str, Any]:
        import httpx
        from replicate.exceptions import ReplicateError

        try:
            if version:
                prediction = client.predictions.create(version=version, input=inputs, wait=wait)
            else:  # (``client.predictions.create(model=...)`` drops ``wait`` in SDK 1.0.7; this keeps it)
                prediction = client.models.predictions.create(model=name, input=inputs, wait=wait)
        except ReplicateError as exc:  # the error drops the headers: take Retry-After from the kept answer
            answer = getattr(self._local, "create_answer", None)
            self._raise_api_error(exc.status or 0, exc.title, exc.detail,
                                  answer.headers if answer is not None else None, exc, creating=True)
        except httpx.TimeoutException as exc:
            bound = getattr(self._local, "create_timeout", None) or self.timeout_s
            raise TransientBackendError(
                f"replicate: creating the prediction on {self.host} timed out after {bound:.3g} s (the timeout "
                "or what was left of the deadline); a prediction may have started anyway (and be charged; "
                "Cancel-After stops it)") from exc
        except httpx.TransportError as exc:
            raise TransientBackendError(
                f"replicate: could not reach {self.host} to create the prediction ({type(exc).__name__}); "
                "check the network and REPLICATE_BASE_URL") from exc
        except ValueError as exc:
            answer = getattr(self._local, "create_answer", None)
            not_json = answer is not None and self._kept_create_answer() is None
            if type(exc).__name__ != "ValidationError" and not_json:
                # A 2xx that is not JSON (an empty body, a proxy page): we never saw the prediction's id.
                raise TransientBackendError(
                    f"replicate: {self.host} answered the create with HTTP {answer.status_code} and "
                    f"{len(answer.content)} bytes that are not a prediction "
                    f"({'an empty body' if not answer.content else 'not JSON'}); a prediction may have "
                    "started anyway") from exc
            if type(exc).__name__ != "ValidationError":
                raise BackendError(f"replicate: {_redact(str(exc), self._token())}") from exc
            # The SDK's Prediction model rejects statuses it does not know (``aborted``): read the answer
            # it could not parse, kept by the response hook, as a plain dict.
            data = self._kept_create_answer()
            if data is not None and data.get("id"):
                return data
            given = re.search(r"given=([A-Za-z_]+)", str(exc))
            raise _Failed(f"the prediction ended with status '{given.group(1) if given else 'unknown'}' when it "
                          "was created (the SDK cannot parse that status)", error_type="InvalidResponseError"
                          ) from exc
        # The answer as sent (the SDK's model drops fields such as ``data_removed``).
        data = self._kept_create_answer()
        if data is not None and data.get("id") == prediction.id:
            return data
        return prediction.dict()  # type: ignore[no-any-return]

    def _kept_create_answer(self) -> dict[str, Any] | None:
        """This thread's last create answer (kept by ``_keep_create_answer``) as a JSON object, else None."""
        answer = getattr(self._local, "create_answer", None)
        try:
            data = answer.json() if answer is not None else None
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _raise_api_error(self, status: int, title: str | None, detail: str | None,
                         headers: Mapping[str, str] | None, exc: Exception | None, *,
                         creating: bool) -> NoReturn:
        """Map a Replicate error answer to our tree (raises always; ``_Failed`` for this request only)."""
        text = _redact(" - ".join(t for t in (title, detail) if t) or f"HTTP {status}", self._token())
        where = f"HTTP {status}"
        if status in (401, 403):
            raise AuthenticationError(
                f"replicate refused the API token ({where}); set a valid REPLICATE_API_TOKEN") from exc
        if status == 402:
            raise QuotaError(f"replicate: out of credit ({where}: {text}); add credit in the billing settings"
                             ) from exc
        if status == 429:
            raise RateLimitError(f"replicate rate limit ({where}): {text}",
                                 retry_after=retry_after_seconds(headers, detail)) from exc
        if status >= 500 or status == 408 or status == 0:
            suffix = "; a prediction may have started anyway" if creating and status in (0, 504) else ""
            raise TransientBackendError(f"replicate server error ({where}): {text}{suffix}",
                                        retry_after=retry_after_seconds(headers, detail)) from exc
        raise _Failed(f"replicate rejected the request ({where}): {text.strip()}", error_type="UnsupportedRequestError")

    def _http(self, client: Any, method: str, path: str) -> tuple[int, dict[str, Any] | None, Mapping[str, str]]:
        """A raw API call through the SDK's httpx client; JSON is read as a plain dict."""
        response = client._client.request(method, path)
        try:
            data = response.json()
        except ValueError:
            data = None
        return response.status_code, data if isinstance(data, dict) else None, response.headers

    def _wait(self, client: Any, prediction: dict[str, Any], deadline: float, deadline_s: float,
              notes: dict[str, str], seen: dict[str, Any]) -> dict[str, Any]:
        """Poll until the prediction ends; past the deadline, cancel it and fail. ``seen["prediction"]``
        follows the latest answer."""
        import httpx

        pid = str(prediction.get("id"))
        transient = 0
        delay = self.poll_interval_s
        while str(prediction.get("status")) not in TERMINAL:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                canceled = self._cancel(client, pid)
                raise _Failed(f"deadline exceeded after {deadline_s:g} s (status "
                              f"'{prediction.get('status')}'): prediction {pid} "
                              f"{'canceled' if canceled else 'cancel requested but not confirmed'}",
                              error_type="DeadlineExceeded")
            time.sleep(min(delay, remaining))
            try:
                status, data, headers = self._http(client, "GET", f"/v1/predictions/{pid}")
            except httpx.TransportError as exc:
                transient += 1
                notes["poll_errors"] = f"{transient} (last: {type(exc).__name__})"
                delay = min(self.poll_interval_s * 2 ** transient, 10.0)
                continue
            if status == 200 and data is not None:
                prediction, delay = data, self.poll_interval_s
                seen["prediction"] = prediction
                continue
            if status in (401, 403):
                self._raise_api_error(status, None, None, headers, None, creating=False)
            if status == 404:
                raise _Failed(f"prediction {pid} is gone (HTTP 404 on poll)", error_type="InvalidResponseError")
            transient += 1  # 429, 5xx, an HTML or non-JSON answer: keep polling inside the deadline
            notes["poll_errors"] = f"{transient} (last: HTTP {status})"
            after = retry_after_seconds(headers) or 0.0
            delay = max(min(self.poll_interval_s * 2 ** transient, 10.0), after)
        return prediction

    def _cancel(self, client: Any, pid: str) -> bool:
        import httpx

        try:
            status, data, _ = self._http(client, "POST", f"/v1/predictions/{pid}/cancel")
        except httpx.HTTPError:
            return False
        return status == 200 and bool(data) and data.get("status") in ("canceled", "succeeded", "failed")

    def _record(self, prediction: Mapping[str, Any], ids: dict[str, str], notes: dict[str, str],
                env: dict[str, Any]) -> dict[str, float]:
        """Copy what Replicate said about the prediction (version, seed, logs, times) into ids, notes and env;
        returns its timings as metrics."""
        version = prediction.get("version")
        if version:
            ids["model_version"] = str(version)
            if version != "hidden":
                env["model_version"] = str(version)
        if prediction.get("model"):
            ids["model"] = str(prediction["model"])
        logs = _redact(str(prediction.get("logs") or ""), self._token())
        seeds = _SEED_LOG.findall(logs)
        if seeds:
            ids["seed"] = seeds[-1]
        if logs:
            notes["logs"] = logs if len(logs) <= _LOG_LIMIT else "[...]\n" + logs[-_LOG_LIMIT:]
        reported = prediction.get("metrics") or {}
        metrics: dict[str, float] = {}
        if isinstance(reported, dict):
            for key in ("predict_time", "total_time"):
                try:
                    metrics[f"{key}_s"] = float(reported[key])
                except (KeyError, TypeError, ValueError):
                    continue
        if "predict_time_s" in metrics:
            notes["predict_time_s"] = f"{metrics['predict_time_s']:.3f}"
        return metrics

    def _finish(self, request: GenerationRequest, profile: ReplicateModelProfile, prediction: Mapping[str, Any],
                client: Any, ids: dict[str, str], notes: dict[str, str], env: dict[str, Any],
                start: float, metrics: Mapping[str, float]) -> GenerationResult:
        status = str(prediction.get("status"))
        pid = ids.get("prediction_id", "?")
        if status == "failed":
            error = _redact(str(prediction.get("error") or "no error message"), self._token())
            if _SAFETY.search(error):
                raise _Failed(f"blocked by the model's safety checker: {error}", status="BLOCKED",
                              error_type="ContentPolicyError")
            raise _Failed(f"prediction {pid} failed: {error}", error_type="PredictionFailed")
        if status == "canceled":
            raise _Failed(f"prediction {pid} was canceled before it finished (not by this run)",
                          error_type="PredictionCanceled")
        if status == "aborted":
            raise _Failed(f"prediction {pid} was aborted by Replicate before it started or finished "
                          "(status 'aborted')", error_type="PredictionAborted")
        if status != "succeeded":
            raise _Failed(f"prediction {pid} ended with unknown status {status!r}", error_type="InvalidResponseError")
        output = prediction.get("output")
        if isinstance(output, list | tuple):
            outputs = list(output)
        elif output is None:
            outputs = []
        else:
            outputs = [output]
        if not outputs:
            removed = " (data_removed: outputs are deleted an hour after the prediction)" if prediction.get(
                "data_removed") else ""
            raise _Failed(f"InvalidResponse: prediction {pid} succeeded but holds no output{removed}",
                          error_type="InvalidResponseError")
        if len(outputs) > 1:
            notes["outputs"] = f"{len(outputs)} outputs; the first was kept"
        payload = self._download(client, outputs[0], pid)
        try:
            image, fmt = _decode_image(payload)
        except ValueError as exc:
            raise _Failed(f"InvalidResponse: output of prediction {pid}: {exc}", error_type="InvalidResponseError"
                          ) from exc
        flags: set[str] = set()
        if request.seed is None:
            flags.add("seed_not_controlled")
            if "seed" in ids:
                notes["seed"] = f"no seed was given; the model used seed {ids['seed']} (from its logs)"
        elif "seed" in ids and ids["seed"] != str(request.seed):
            flags.add("seed_mismatch")
            notes["seed"] = f"asked seed {request.seed}; the model's logs say {ids['seed']}"
        if json.loads(notes["input"]).get("go_fast") is True:
            flags.add("nondeterministic")
            notes["nondeterministic"] = ("go_fast=true: fp8 kernels are not deterministic even with a fixed seed; "
                                         "the image may not reproduce exactly")
        if image.size != (request.width, request.height):
            got = f"asked {request.width}x{request.height}, got {image.size[0]}x{image.size[1]}"
            asked_ratio, got_ratio = request.width / request.height, image.size[0] / image.size[1]
            if profile.sizing == "aspect_ratio" and abs(math.log(got_ratio / asked_ratio)) < 0.03:
                notes["size"] = f"{got} (the model sets pixels from aspect_ratio and megapixels)"
            else:
                flags.add("size_mismatch")
                notes["size_mismatch"] = got
        return GeneratedImage(request=request, image=image, backend_ids=dict(ids),
                              latency_s=time.monotonic() - start, cost_usd=profile.price_per_image,
                              flags=frozenset(flags), notes=notes, environment=env, metrics=dict(metrics),
                              original_bytes=payload, original_format=fmt)

    def _download(self, client: Any, output: Any, pid: str) -> bytes:
        """Bytes of one output: a ``data:`` URI, an ``http(s)`` URL string, or a ``FileOutput``."""
        import httpx

        url = getattr(output, "url", output)
        if not isinstance(url, str):
            raise _Failed(f"InvalidResponse: output of prediction {pid} is {type(output).__name__}, not a URL",
                          error_type="InvalidResponseError")
        if url.startswith("data:"):
            header, _, encoded = url.partition(",")
            try:
                if header.endswith(";base64"):
                    return base64.b64decode(encoded, validate=True)
                return unquote_to_bytes(encoded)
            except (binascii.Error, ValueError) as exc:
                raise _Failed(f"InvalidResponse: output of prediction {pid} is a data: URI with bad base64",
                              error_type="InvalidResponseError") from exc
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise _Failed(f"InvalidResponse: output of prediction {pid} has an unsupported URL scheme "
                          f"'{parts.scheme}'", error_type="InvalidResponseError")
        host = parts.hostname or ""
        trusted = parts.netloc == self.host or any(host == s or host.endswith("." + s)
                                                   for s in _TRUSTED_HOST_SUFFIXES)
        last_error = ""
        for attempt in range(3):
            try:
                if trusted:  # the token goes to Replicate's own hosts only
                    response = client._client.get(url)
                    if response.is_redirect and response.headers.get("location"):
                        response = self._plain.get(response.headers["location"])
                else:
                    response = self._plain.get(url)
            except httpx.HTTPError as exc:
                last_error = type(exc).__name__
                time.sleep(0.2 * 2 ** attempt)
                continue
            if response.status_code == 200:
                return response.content
            if response.status_code in (401, 403):
                raise _Failed(f"output of prediction {pid} could not be downloaded (HTTP {response.status_code}: "
                              "the file host refused the token)", error_type="AuthenticationError")
            if response.status_code in (404, 410):
                raise _Failed(f"output of prediction {pid} has expired or was deleted (HTTP {response.status_code})",
                              error_type="InvalidResponseError")
            last_error = f"HTTP {response.status_code}"
            time.sleep(0.2 * 2 ** attempt)
        raise _Failed(f"output of prediction {pid} could not be downloaded after 3 tries ({last_error})",
                      error_type="TransientBackendError")
