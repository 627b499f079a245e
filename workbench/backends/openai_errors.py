"""The OpenAI SDK's errors mapped onto ``workbench.errors`` at one point: ``map_openai_errors``.

Whole-call problems raise (retryable, fatal or neither, see ``errors.py``), ``raise ... from`` the SDK's
error. A problem with this request only (a safety block, a parameter the server refuses) raises
``RequestFailed``, which ``openai.py`` turns into a ``GenerationFailure`` that keeps the request id. A
model the server does not have (404 ``model_not_found``, a retired model) is the fatal
``ModelNotFoundError``: the sweep stops instead of failing every image one call at a time.

Example:
    >>> with map_openai_errors("gpt-image-1.5", host="api.openai.com", timeout_s=120, key=None):  # doctest: +SKIP
    ...     client.images.with_raw_response.generate(model="gpt-image-1.5", prompt="a fox")
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import (
    AuthenticationError,
    BackendError,
    ModelNotFoundError,
    QuotaError,
    RateLimitError,
    TransientBackendError,
)
from ._http import RequestFailed, redact, retry_after_seconds
from .openai_models import current_models

if TYPE_CHECKING:
    import openai

__all__ = ["map_openai_errors"]

# The codes of a safety block (DALL·E; GPT-image). Other ``image_generation_user_error``s are not blocks.
_SAFETY_CODES = {"content_policy_violation", "moderation_blocked"}
# A retired or unknown model: the status is not confirmed for every case, the wording is.
_NO_MODEL = re.compile(r"\bmodel\b.*\b(does not exist|not found|deprecated|retired|shut down)\b",
                       re.IGNORECASE)


@contextmanager
def map_openai_errors(model: str, *, host: str, timeout_s: float, key: str | None,
                      current: Sequence[str] | None = None) -> Iterator[None]:
    """Around every call into the ``openai`` SDK: its errors leave as ``workbench.errors`` (or
    ``RequestFailed``), with the SDK's error as the cause and ``key`` redacted from server text. ``current``
    names the models to suggest when the server has none of that name (default: ``current_models()``)."""
    import openai  # the optional extra: the caller has already checked that it is installed

    try:
        yield
    except openai.APIStatusError as exc:
        raise _status_error(exc, model, host, key, current_models() if current is None else current) from exc
    except openai.APITimeoutError as exc:
        raise TransientBackendError(
            f"openai: no answer from {host} within {timeout_s:g} s (model '{model}'); "
            f"raise WORKBENCH_OPENAI_TIMEOUT_S if the model is slow") from exc
    except openai.APIConnectionError as exc:
        cause = type(exc.__cause__).__name__ if exc.__cause__ else "connection error"
        raise TransientBackendError(
            f"openai: could not reach {host} ({cause}); check the network and OPENAI_BASE_URL") from exc
    except openai.OpenAIError as exc:
        raise BackendError(f"openai: {type(exc).__name__}: {redact(str(exc), key)}") from exc


def _status_error(exc: openai.APIStatusError, model: str, host: str, key: str | None,
                  current: Sequence[str]) -> BackendError | RequestFailed:
    """The error for an HTTP error answer: a ``BackendError`` for whole-call problems, ``RequestFailed``
    for this request's."""
    status = exc.status_code
    request_id = exc.request_id
    code = exc.code or ""
    err_type = exc.type or ""
    body = exc.body if isinstance(exc.body, dict) else {}
    message = redact(str(body.get("message") or ""), key)
    headers = exc.response.headers
    where = f"HTTP {status}" + (f" {code}" if code else "") + (f", request id {request_id}" if request_id else "")
    # (403 model_not_found is "no access to the model": the key's problem, handled as auth below.)
    no_model = status == 404 or (code == "model_not_found" and status != 403) or (
        status == 400 and bool(_NO_MODEL.search(message)))
    if no_model:
        return ModelNotFoundError(
            f"openai: model '{model}' is not available on {host} ({where}): "
            f"{message or 'not found'}; it may be retired or unknown to this key. Current models: "
            f"{', '.join(current)}; check the spec's model and OPENAI_BASE_URL", request_id=request_id)
    if status == 401:
        return AuthenticationError(
            f"openai refused the API key ({where}); set a valid OPENAI_API_KEY "
            f"(and OPENAI_ORG_ID / OPENAI_PROJECT_ID if you use them)", request_id=request_id)
    if status == 403:
        return AuthenticationError(
            f"openai denied access to model '{model}' ({where}): {message or 'permission denied'}; "
            f"check the key's project and organisation verification", request_id=request_id)
    if status == 429 and (code == "insufficient_quota" or err_type == "insufficient_quota"):
        return QuotaError(
            f"openai quota exhausted ({where}): add credit or raise the limit in the OpenAI billing "
            f"settings; retrying will not help", request_id=request_id)
    if status == 429:
        return RateLimitError(f"openai rate limit ({where}): {message or 'too many requests'}",
                              retry_after=retry_after_seconds(headers), request_id=request_id)
    if status >= 500 or status in (408, 409):
        html = "html" in (headers.get("content-type") or "").lower()
        detail = "an HTML error page (gateway or proxy)" if html else (message or "server error")
        if (headers.get("x-should-retry") or "").lower() == "false":
            return BackendError(f"openai server error ({where}): {detail}; the server asked not to retry",
                                request_id=request_id)
        return TransientBackendError(f"openai server error ({where}): {detail}",
                                     retry_after=retry_after_seconds(headers), request_id=request_id)
    if code in _SAFETY_CODES:
        details = body.get("moderation_details")
        stage = details.get("moderation_stage") if isinstance(details, dict) else None
        at = f" at the {stage} stage" if stage else ""  # input: the prompt; output: the image
        return RequestFailed(f"blocked by OpenAI's safety system{at} ({where}): {message}", status="BLOCKED",
                             error_type="ContentPolicyError", request_id=request_id)
    param = f" (parameter '{body.get('param')}')" if body.get("param") else ""
    return RequestFailed(f"openai rejected the request ({where}){param}: {message}",
                         error_type="UnsupportedRequestError", request_id=request_id)
