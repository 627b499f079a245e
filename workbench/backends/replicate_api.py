"""One Replicate prediction through the official ``replicate`` SDK: create, poll, cancel, download, under
our own deadline, with its errors mapped at one point (``map_replicate_errors``).

A ``Prediction`` is one request's call. Its state (deadline, the answers seen so far, poll errors) is one
object, ``PredictionState``, read for every outcome, failures included. Each prediction gets its own SDK
client whose httpx hooks are bound to that state; all of them share one pooled transport
(``Connections``), so connections are still kept alive across predictions. Where the SDK falls short we
use its underlying ``httpx`` client (``client._client``) and read JSON as plain dicts:

- a create without ``wait`` gets our timeout from the request hook (the SDK sends it with none); the same
  hook bounds every create by what is left of the deadline and sends ``Cancel-After``;
- the create answer is kept by the response hook, so a status the SDK's model rejects (``aborted``) still
  gives the prediction id, and a 429's ``Retry-After`` header is not lost with ``ReplicateError``;
- polls and cancels, so a status is a string (the SDK's model raises on ``aborted``) and a 503 on a poll
  is retried inside the deadline (the SDK's own retry transport is mounted over, so it never sleeps
  past our deadline);
- downloads, at once (outputs are deleted after an hour): ``data:`` URIs, ``https:`` and ``http:``
  strings and ``FileOutput`` objects are all accepted, and the token is sent only to Replicate's hosts.

The create is a POST: the SDK never retries it and neither do we here (see ``replicate.py``).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlsplit

from ..errors import AuthenticationError, BackendError, QuotaError, RateLimitError, TransientBackendError
from ._http import CONNECT_TIMEOUT_S, RequestFailed, redact, retry_after_seconds

if TYPE_CHECKING:
    import httpx
    import replicate

__all__ = ["ApiSettings", "Connections", "Prediction", "PredictionState", "map_replicate_errors", "api_error",
           "TERMINAL"]

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
_TRUSTED_HOST_SUFFIXES = ("replicate.delivery", "replicate.com")
_MAX_POLL_DELAY_S = 10.0
_DOWNLOAD_TRIES = 3


@dataclass(frozen=True)
class ApiSettings:
    """Where and how to call Replicate; read when a prediction starts (the token may change between runs)."""

    token: str
    base_url: str
    host: str
    timeout_s: float  # per HTTP call
    poll_interval_s: float
    prefer_wait_s: int  # 0: no ``Prefer: wait``, poll from the start


@dataclass
class PredictionState:
    """Everything one prediction has shown so far; kept whatever the outcome."""

    deadline: float  # ``time.monotonic()`` past which it is canceled
    deadline_s: float
    cancel_after: str = ""  # Replicate's own deadline, sent on the create
    create_timeout: float | None = None  # the read timeout the create went out with
    create_answer: httpx.Response | None = None  # the create's answer as sent, kept by the response hook
    latest: dict[str, Any] | None = None  # the latest prediction JSON: the create's, then each poll's
    poll_errors: int = 0
    last_poll_error: str = ""

    @property
    def prediction_id(self) -> str:
        return str(self.latest.get("id")) if self.latest else "?"

    def kept_create_json(self) -> dict[str, Any] | None:
        """The create answer as a JSON object, else None (no answer, or not JSON)."""
        try:
            data = self.create_answer.json() if self.create_answer is not None else None
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


class Connections:
    """What every prediction of one backend shares: one pooled transport to the API, and one plain client
    for file hosts that must not see the token. Thread-safe; ``close`` ends both."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._transport: httpx.HTTPTransport | None = None
        self._plain: httpx.Client | None = None

    def get(self) -> tuple[httpx.HTTPTransport, httpx.Client]:
        import httpx  # installed with the replicate extra; the caller has checked

        with self._lock:
            if self._transport is None:
                self._transport = httpx.HTTPTransport()
            if self._plain is None:
                self._plain = httpx.Client(timeout=self.timeout_s, follow_redirects=True)
            return self._transport, self._plain

    def close(self) -> None:
        with self._lock:
            transport, self._transport = self._transport, None
            plain, self._plain = self._plain, None
        if transport is not None:
            transport.close()
        if plain is not None:
            plain.close()


def api_error(status: int, title: str | None, detail: str | None, headers: Mapping[str, str] | None,
              token: str | None, *, creating: bool) -> BackendError | RequestFailed:
    """The error for one of Replicate's error answers: a ``BackendError`` for whole-call problems,
    ``RequestFailed`` for this request's (a 4xx the server refused the input with)."""
    text = redact(" - ".join(t for t in (title, detail) if t) or f"HTTP {status}", token)
    where = f"HTTP {status}"
    if status in (401, 403):
        return AuthenticationError(f"replicate refused the API token ({where}); set a valid REPLICATE_API_TOKEN")
    if status == 402:
        return QuotaError(f"replicate: out of credit ({where}: {text}); add credit in the billing settings")
    if status == 429:
        return RateLimitError(f"replicate rate limit ({where}): {text}",
                              retry_after=retry_after_seconds(headers, detail))
    if status >= 500 or status == 408 or status == 0:
        suffix = "; a prediction may have started anyway" if creating and status in (0, 504) else ""
        return TransientBackendError(f"replicate server error ({where}): {text}{suffix}",
                                     retry_after=retry_after_seconds(headers, detail))
    return RequestFailed(f"replicate rejected the request ({where}): {text.strip()}",
                         error_type="UnsupportedRequestError")


@contextmanager
def map_replicate_errors(settings: ApiSettings, state: PredictionState) -> Iterator[None]:
    """Around every call into the ``replicate`` SDK (the create: polls, cancels and downloads use its
    httpx client directly): its errors leave as ``workbench.errors`` (or ``RequestFailed``), with the
    SDK's error as the cause."""
    import httpx
    from replicate.exceptions import ReplicateError

    try:
        yield
    except ReplicateError as exc:  # the error drops the headers: take Retry-After from the kept answer
        headers = state.create_answer.headers if state.create_answer is not None else None
        raise api_error(exc.status or 0, exc.title, exc.detail, headers, settings.token, creating=True) from exc
    except httpx.TimeoutException as exc:
        bound = state.create_timeout or settings.timeout_s
        raise TransientBackendError(
            f"replicate: creating the prediction on {settings.host} timed out after {bound:.3g} s (the timeout "
            "or what was left of the deadline); a prediction may have started anyway (and be charged; "
            "Cancel-After stops it)") from exc
    except httpx.TransportError as exc:
        raise TransientBackendError(
            f"replicate: could not reach {settings.host} to create the prediction ({type(exc).__name__}); "
            "check the network and REPLICATE_BASE_URL") from exc
    except ValueError as exc:  # the SDK could not read the answer
        answer = state.create_answer
        if answer is not None and state.kept_create_json() is None:
            # A 2xx that is not JSON (an empty body, a proxy page): we never saw the prediction's id.
            raise TransientBackendError(
                f"replicate: {settings.host} answered the create with HTTP {answer.status_code} and "
                f"{len(answer.content)} bytes that are not a prediction "
                f"({'an empty body' if not answer.content else 'not JSON'}); a prediction may have "
                "started anyway") from exc
        raise BackendError(f"replicate: {redact(str(exc), settings.token)}") from exc


def _is_sdk_validation_error(exc: ValueError) -> bool:
    # The SDK's models are pydantic (v1 API today); matching the name keeps this true across its versions.
    return type(exc).__name__ == "ValidationError"


class Prediction:
    """One request's prediction: ``create``, then ``wait``; ``download`` an output. Raises
    ``workbench.errors`` for whole-call problems and ``RequestFailed`` for this request's."""

    def __init__(self, settings: ApiSettings, connections: Connections, *, deadline: float,
                 deadline_s: float) -> None:
        import httpx
        import replicate

        self.settings = settings
        self.state = PredictionState(deadline=deadline, deadline_s=deadline_s)
        transport, self._plain = connections.get()
        timeout = httpx.Timeout(settings.timeout_s, connect=min(CONNECT_TIMEOUT_S, settings.timeout_s))
        # The shared transport keeps connections alive across predictions; mounted for every URL, it also
        # takes every request away from the SDK's RetryTransport (up to 10 attempts with sleeps): polls
        # are retried by us, inside the deadline.
        self.client: replicate.Client = replicate.Client(
            api_token=settings.token, base_url=settings.base_url, timeout=timeout, transport=transport,
            mounts={"all://": transport},
            event_hooks={"request": [self._bound_request], "response": [self._keep_create_answer]})

    # httpx hooks ---------------------------------------------------------------------------------------
    @staticmethod
    def _is_create(request: httpx.Request) -> bool:
        return request.method == "POST" and request.url.path.endswith("/predictions")

    def _bound_request(self, request: httpx.Request) -> None:
        """The SDK sends a create without ``wait`` with ``timeout=None`` (no timeout at all): give such
        requests ours. A create is also bounded by what is left of the deadline and carries
        ``Cancel-After``, so Replicate stops the prediction even if this process dies."""
        timeout = dict(request.extensions.get("timeout") or {})
        if timeout.get("read") is None:
            timeout = {"connect": min(CONNECT_TIMEOUT_S, self.settings.timeout_s), "read": self.settings.timeout_s,
                       "write": self.settings.timeout_s, "pool": self.settings.timeout_s}
        if self._is_create(request):
            remaining = max(self.state.deadline - time.monotonic(), 0.05)
            timeout = {k: min(v, remaining) if v is not None else remaining for k, v in timeout.items()}
            self.state.create_timeout = timeout["read"]
            request.headers["Cancel-After"] = self.state.cancel_after
        request.extensions["timeout"] = timeout

    def _keep_create_answer(self, response: httpx.Response) -> None:
        """Keep the create answer as sent: the SDK may fail to parse it, and its errors drop the headers."""
        if self._is_create(response.request):
            response.read()
            self.state.create_answer = response

    # lifecycle -----------------------------------------------------------------------------------------
    def create(self, name: str, version: str | None, inputs: dict[str, Any]) -> dict[str, Any]:
        """Start the prediction (waiting up to ``prefer_wait_s`` for it to finish); its JSON as sent."""
        remaining = self.state.deadline - time.monotonic()
        # Prefer: wait=N holds the answer up to N s: leave half a second of the deadline for it to arrive.
        wait: int | bool = False
        if self.settings.prefer_wait_s and remaining >= 1.5:
            wait = max(1, min(self.settings.prefer_wait_s, int(remaining - 0.5)))
        # Replicate's own deadline (at least 5 s), a little after ours so that ours decides first: a
        # prediction this process can no longer cancel (killed, or a create that timed out) still stops.
        self.state.cancel_after = f"{max(5, math.ceil(remaining) + 2)}s"
        with map_replicate_errors(self.settings, self.state):
            try:
                if version:
                    prediction = self.client.predictions.create(version=version, input=inputs, wait=wait)
                else:  # (``client.predictions.create(model=...)`` drops ``wait`` in SDK 1.0.7; this keeps it)
                    prediction = self.client.models.predictions.create(model=name, input=inputs, wait=wait)
            except ValueError as exc:
                if not _is_sdk_validation_error(exc):
                    raise
                # The SDK's Prediction model rejects statuses it does not know (``aborted``): read the
                # answer it could not parse, kept by the response hook, as a plain dict.
                data = self.state.kept_create_json()
                if data is None or not data.get("id"):
                    given = re.search(r"given=([A-Za-z_]+)", str(exc))
                    raise RequestFailed(
                        f"the prediction ended with status '{given.group(1) if given else 'unknown'}' when it "
                        "was created (the SDK cannot parse that status)", error_type="InvalidResponseError"
                    ) from exc
                self.state.latest = data
                return data
        # The answer as sent (the SDK's model drops fields such as ``data_removed``).
        data = self.state.kept_create_json()
        if data is None or data.get("id") != prediction.id:
            data = prediction.dict()
        self.state.latest = data
        return data

    def resume(self, prediction_id: str) -> bool:
        """Take up a prediction created earlier (by a run that died waiting for it) instead of creating one.

        False where it cannot be used: gone (404, another account), failed, canceled or aborted, or the API
        did not answer; the caller then creates a new prediction.
        """
        import httpx

        try:
            status, data, _ = self.call("GET", f"/v1/predictions/{prediction_id}")
        except httpx.TransportError:
            return False
        if status != 200 or data is None or data.get("id") != prediction_id:
            return False
        if str(data.get("status")) in TERMINAL - {"succeeded"}:
            return False
        self.state.latest = data
        return True

    def wait(self) -> dict[str, Any]:
        """Poll until the prediction ends; past the deadline, cancel it and fail."""
        import httpx

        prediction = self.state.latest or {}
        pid = self.state.prediction_id
        delay = self.settings.poll_interval_s
        while str(prediction.get("status")) not in TERMINAL:
            remaining = self.state.deadline - time.monotonic()
            if remaining <= 0:
                canceled = self.cancel()
                raise RequestFailed(f"deadline exceeded after {self.state.deadline_s:g} s (status "
                                    f"'{prediction.get('status')}'): prediction {pid} "
                                    f"{'canceled' if canceled else 'cancel requested but not confirmed'}",
                                    error_type="DeadlineExceeded")
            time.sleep(min(delay, remaining))
            try:
                status, data, headers = self.call("GET", f"/v1/predictions/{pid}")
            except httpx.TransportError as exc:
                delay = self._poll_failed(type(exc).__name__)
                continue
            if status == 200 and data is not None:
                prediction = self.state.latest = data
                delay = self.settings.poll_interval_s
                continue
            if status in (401, 403):
                raise api_error(status, None, None, headers, self.settings.token, creating=False)
            if status == 404:
                raise RequestFailed(f"prediction {pid} is gone (HTTP 404 on poll)", error_type="InvalidResponseError")
            # 429, 5xx, an HTML or non-JSON answer: keep polling inside the deadline
            delay = max(self._poll_failed(f"HTTP {status}"), retry_after_seconds(headers) or 0.0)
        return prediction

    def _poll_failed(self, what: str) -> float:
        """Count a failed poll; the delay before the next one (exponential, capped)."""
        self.state.poll_errors += 1
        self.state.last_poll_error = what
        return min(self.settings.poll_interval_s * 2 ** self.state.poll_errors, _MAX_POLL_DELAY_S)

    def cancel(self) -> bool:
        """Ask Replicate to cancel; True when it confirms the prediction has ended."""
        import httpx

        try:
            status, data, _ = self.call("POST", f"/v1/predictions/{self.state.prediction_id}/cancel")
        except httpx.HTTPError:
            return False
        return status == 200 and data is not None and data.get("status") in TERMINAL

    def call(self, method: str, path: str) -> tuple[int, dict[str, Any] | None, httpx.Headers]:
        """A raw API call through the SDK's httpx client; JSON is read as a plain dict."""
        response = self.client._client.request(method, path)
        try:
            data = response.json()
        except ValueError:
            data = None
        return response.status_code, data if isinstance(data, dict) else None, response.headers

    # outputs -------------------------------------------------------------------------------------------
    def download(self, output: object) -> bytes:
        """Bytes of one output: a ``data:`` URI, an ``http(s)`` URL string, or a ``FileOutput``."""
        import httpx

        pid = self.state.prediction_id
        url = getattr(output, "url", output)
        if not isinstance(url, str):
            raise RequestFailed(f"InvalidResponse: output of prediction {pid} is {type(output).__name__}, "
                                "not a URL", error_type="InvalidResponseError")
        if url.startswith("data:"):
            return _data_uri_bytes(url, pid)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise RequestFailed(f"InvalidResponse: output of prediction {pid} has an unsupported URL scheme "
                                f"'{parts.scheme}'", error_type="InvalidResponseError")
        host = parts.hostname or ""
        trusted = parts.netloc == self.settings.host or any(host == s or host.endswith("." + s)
                                                            for s in _TRUSTED_HOST_SUFFIXES)
        last_error = ""
        for attempt in range(_DOWNLOAD_TRIES):
            try:
                if trusted:  # the token goes to Replicate's own hosts only
                    response = self.client._client.get(url)
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
                raise RequestFailed(f"output of prediction {pid} could not be downloaded (HTTP "
                                    f"{response.status_code}: the file host refused the token)",
                                    error_type="AuthenticationError")
            if response.status_code in (404, 410):
                raise RequestFailed(f"output of prediction {pid} has expired or was deleted (HTTP "
                                    f"{response.status_code})", error_type="InvalidResponseError")
            last_error = f"HTTP {response.status_code}"
            time.sleep(0.2 * 2 ** attempt)
        raise RequestFailed(f"output of prediction {pid} could not be downloaded after {_DOWNLOAD_TRIES} tries "
                            f"({last_error})", error_type="TransientBackendError")


def _data_uri_bytes(url: str, pid: str) -> bytes:
    header, _, encoded = url.partition(",")
    try:
        if header.endswith(";base64"):
            return base64.b64decode(encoded, validate=True)
        return unquote_to_bytes(encoded)
    except (binascii.Error, ValueError) as exc:
        raise RequestFailed(f"InvalidResponse: output of prediction {pid} is a data: URI with bad base64",
                            error_type="InvalidResponseError") from exc
