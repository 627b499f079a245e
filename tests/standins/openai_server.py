"""Stand-in for the OpenAI images API: ``POST /v1/images/generations`` and ``GET /files/{name}``.

Validates each request against model profiles the way the real API does (legacy dall-e-2/3 and
gpt-image-1, current gpt-image-* including every name the openai 3.57 SDK lists; each with a retired flag;
gpt-image-2's free sizes under its published pixel budget), answers with the real body shapes
(``x-request-id``; ``revised_prompt`` from dall-e-3; ``usage`` from GPT-image models) and serves
``url`` responses from ``/files/{name}`` until ``url_ttl_s`` runs out.

Routes (for faults' ``on``): ``generate``, ``files``. Faults (default route ``generate``):

=======================  =====================================================================
``500``                  500 server_error JSON
``502_html``             502 with an HTML body (a gateway page)
``503``                  503 "engine overloaded" JSON
``429``                  429 rate_limit_exceeded with ``retry-after-ms`` and ``retry-after``
                         (``retry_after`` seconds, default 1)
``insufficient_quota``   429 insufficient_quota (never clears)
``401`` / ``403``        invalid_api_key (echoes a masked key, as the real API does) / permission
``content_policy_violation``  400, the DALL·E safety block
``moderation_blocked``   400, the GPT-image safety block (with ``moderation_details``)
``n_must_be_1``          400 "You must provide n=1 for this model."
``unknown_parameter``    400 unknown_parameter (``param``, default response_format)
``model_not_found``      404 model_not_found
``retired_model``        400 "The model `...` has been deprecated" with no code (the wording, not the
                         status, is what is known of retired models)
``user_error``           400 ``image_generation_user_error`` that is not a safety block (``code``,
                         ``message``)
``x_should_retry_false`` 500 with ``x-should-retry: false``
``slow``                 sleep ``seconds`` (default 5) before answering normally
``drop``                 close the connection without an answer
``bad_json``             200 ``application/json`` that is cut off mid-way
``html_200``             200 ``text/html``
``empty_body``           200 ``application/json`` with a 0-byte body
``missing_data``         200 ``{"created": ...}`` with no ``data``
``empty_data``           200 with ``data: []``
``empty_item``           200 with ``data: [{}]``
``corrupt_base64``       ``b64_json`` that is not base64
``not_an_image``         ``b64_json`` that decodes to HTML, not an image
``truncated_image``      ``b64_json`` of half a PNG
``wrong_size``           a 64x64 image whatever the size asked
``url_expired``          (route ``files``) 404 for a file URL, as after the real 60 minutes
=======================  =====================================================================

The API has no seed, so every answer is a new draw: image ``i`` of an answer is drawn with seed
``image_seeds[request_id][i]`` (a request counter), and replicates of one prompt differ.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from . import FAKE_OPENAI_KEY, Reply, StandinServer, deterministic_image

__all__ = ["OpenAIStandin", "MODELS", "StandinModel", "revise", "openai_standin", "openai_env"]


@dataclass(frozen=True)
class StandinModel:
    family: str  # "dalle" or "gpt-image"
    max_prompt: int
    max_n: int
    sizes: frozenset[str] | None  # None: any WxH under the gpt-image-2 rules (a pixel budget)
    qualities: frozenset[str]
    params: frozenset[str]
    retired: bool = False
    revises_prompt: bool = False


_COMMON = frozenset({"model", "prompt", "n", "size", "quality", "user"})
_DALLE = _COMMON | {"response_format"}
_GPT = _COMMON | {"background", "moderation", "output_format", "output_compression", "safety_identifier",
                  "stream", "partial_images", "complexity"}
_GPT_SIZES = frozenset({"1024x1024", "1536x1024", "1024x1536", "auto"})
_GPT_QUALITY = frozenset({"low", "medium", "high", "auto"})
_GPT_2_5_QUALITY = _GPT_QUALITY | {"xhigh", "max"}  # the SDK: 2.5 models "also support xhigh and max"

MODELS: dict[str, StandinModel] = {
    "dall-e-2": StandinModel("dalle", 1000, 10, frozenset({"256x256", "512x512", "1024x1024"}),
                             frozenset({"standard"}), _DALLE, retired=True),
    "dall-e-3": StandinModel("dalle", 4000, 1, frozenset({"1024x1024", "1792x1024", "1024x1792"}),
                             frozenset({"standard", "hd"}), _DALLE | {"style"}, revises_prompt=True),
    "gpt-image-1": StandinModel("gpt-image", 32000, 10, _GPT_SIZES, _GPT_QUALITY, _GPT, retired=True),
    "gpt-image-1-mini": StandinModel("gpt-image", 32000, 10, _GPT_SIZES, _GPT_QUALITY, _GPT),
    "gpt-image-1.5": StandinModel("gpt-image", 32000, 10, _GPT_SIZES, _GPT_QUALITY, _GPT),
    "gpt-image-2": StandinModel("gpt-image", 32000, 10, None, _GPT_QUALITY, _GPT),
    "gpt-image-2-2026-04-21": StandinModel("gpt-image", 32000, 10, None, _GPT_QUALITY, _GPT),
    "chatgpt-image-latest": StandinModel("gpt-image", 32000, 10, _GPT_SIZES, _GPT_QUALITY, _GPT),
    **{name: StandinModel("gpt-image", 32000, 10, None, _GPT_2_5_QUALITY, _GPT)
       for name in ("gpt-image-2.5-sunburst", "gpt-image-2.5-sunburst-2026-09-08", "gpt-image-2.5-flare",
                    "gpt-image-2.5-flare-2026-09-08")},
    # The SDK names no free sizes for 2.6: the standard GPT image sizes only.
    **{name: StandinModel("gpt-image", 32000, 10, _GPT_SIZES, _GPT_QUALITY, _GPT)
       for name in ("gpt-image-2.6-sunburst", "gpt-image-2.6-flare")},
}

_FAULTS = ["500", "502_html", "503", "429", "insufficient_quota", "401", "403", "content_policy_violation",
           "moderation_blocked", "n_must_be_1", "unknown_parameter", "model_not_found", "retired_model",
           "user_error", "x_should_retry_false", "slow", "drop", "bad_json", "html_200", "empty_body",
           "missing_data", "empty_data", "empty_item",
           "corrupt_base64", "not_an_image", "truncated_image", "wrong_size"]
# Faults that change an otherwise valid answer (applied after validation).
_MUTATIONS = {"bad_json", "missing_data", "empty_data", "empty_item", "corrupt_base64", "not_an_image",
              "truncated_image", "wrong_size"}

_HTML_502 = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
             "</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n")


def revise(prompt: str, style: str = "vivid") -> str:
    """The stand-in's dall-e-3 prompt rewrite: drops the last comma phrase and adds its own words."""
    phrases = [p.strip() for p in prompt.split(",") if p.strip()]
    kept = phrases[:-1] if len(phrases) > 1 else phrases
    opener = "A detailed, vivid depiction of" if style == "vivid" else "A natural, understated photograph of"
    return f"{opener} {', '.join(kept)}, set against a softly lit background."


def _error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
           **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": type_, "param": param, "code": code, **extra}}


class OpenAIStandin(StandinServer):
    """The OpenAI images stand-in. ``base_url`` (with ``/v1``) is what the SDK takes."""

    FAULT_ROUTES = {name: "generate" for name in _FAULTS} | {"url_expired": "files"}

    def __init__(self, *, models: Mapping[str, StandinModel] | None = None, url_ttl_s: float = 3600.0,
                 force_url: bool = False, valid_keys: set[str] | None = None) -> None:
        super().__init__()
        self.models = dict(MODELS if models is None else models)
        self.url_ttl_s = url_ttl_s
        self.force_url = force_url  # answer with ``url`` even when b64_json was asked (a lax server)
        self.valid_keys = valid_keys  # None: any bearer token is accepted
        self._files: dict[str, tuple[bytes, str, float]] = {}
        self._ids: Iterator[int] = itertools.count(1)
        self._draws: Iterator[int] = itertools.count(1)
        self.image_seeds: dict[str, list[int]] = {}  # request id -> the seed each image was drawn with

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def match(self, method: str, path: str) -> tuple[str, Callable[..., Reply], dict[str, str]]:
        if method == "POST" and path == "/v1/images/generations":
            return "generate", self._generate, {}
        if method == "GET" and path.startswith("/files/"):
            return "files", self._file, {"name": path[len("/files/"):]}
        return "unknown", self._unknown, {"method": method, "path": path}

    # helpers --------------------------------------------------------------------------------------
    def _reply(self, status: int, data: Any, request_id: str, headers: Mapping[str, str] | None = None) -> Reply:
        return Reply.json(status, data, {"x-request-id": request_id, "openai-processing-ms": "12",
                                         **(headers or {})})

    def _unknown(self, *, method: str, path: str, **_: Any) -> Reply:
        status, body = _error(404, f"Invalid URL ({method} {path})", "invalid_request_error")
        return self._reply(status, body, f"req_{uuid.uuid4().hex}")

    def _file(self, *, name: str, **_: Any) -> Reply:
        fault = self.take_fault("files")
        entry = self._files.get(name)
        if fault is not None or entry is None or time.time() > entry[2]:
            return Reply(404, "<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code>"
                              "<Message>Signed expiry time has passed</Message></Error>",
                         content_type="application/xml")
        data, content_type, _ = entry
        return Reply(200, data, content_type=content_type)

    def _fault_reply(self, fault: Mapping[str, Any], request_id: str, headers: Mapping[str, str],
                     model: str) -> Reply | None:
        name = fault["fault"]
        if name == "500":
            return self._reply(*_error(500, "The server had an error while processing your request. Sorry "
                                            "about that!", "server_error"), request_id)
        if name == "502_html":
            return Reply(502, _HTML_502, {"x-request-id": request_id}, content_type="text/html")
        if name == "503":
            return self._reply(*_error(503, "The engine is currently overloaded, please try again later.",
                                       "server_error"), request_id)
        if name == "429":
            after = float(fault.get("retry_after", 1.0))
            hdrs = {"retry-after-ms": str(int(after * 1000)), "retry-after": str(max(int(round(after)), 0)),
                    "x-ratelimit-limit-images": "5", "x-ratelimit-remaining-images": "0"}
            return self._reply(*_error(429, f"Rate limit reached for {model} on images per minute (IPM): "
                                            f"Limit 5, Used 5, Requested 1. Please try again in {after:g}s.",
                                       "requests", "rate_limit_exceeded"), request_id, hdrs)
        if name == "insufficient_quota":
            return self._reply(*_error(429, "You exceeded your current quota, please check your plan and "
                                            "billing details.", "insufficient_quota", "insufficient_quota"),
                               request_id)
        if name == "401":
            key = headers.get("authorization", "").removeprefix("Bearer ").strip()
            masked = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
            return self._reply(*_error(401, f"Incorrect API key provided: {masked}. You can find your API key "
                                            "at https://platform.openai.com/account/api-keys.",
                                       "invalid_request_error", "invalid_api_key"), request_id)
        if name == "403":
            return self._reply(*_error(403, f"Project does not have access to model {model}.",
                                       "invalid_request_error", "model_not_found"), request_id)
        if name == "content_policy_violation":
            return self._reply(*_error(400, "Your request was rejected as a result of our safety system. Your "
                                            "prompt may contain text that is not allowed by our safety system.",
                                       "invalid_request_error", "content_policy_violation"), request_id)
        if name == "moderation_blocked":
            return self._reply(*_error(400, "Your request was rejected by the safety system. If you believe "
                                            f"this is an error, contact us and include the request ID "
                                            f"{request_id}.", "image_generation_user_error",
                                       "moderation_blocked", moderation_details={"moderation_stage": "input"}),
                               request_id)
        if name == "n_must_be_1":
            return self._reply(*_error(400, "You must provide n=1 for this model.", "invalid_request_error",
                                       None, "n"), request_id)
        if name == "unknown_parameter":
            param = fault.get("param", "response_format")
            return self._reply(*_error(400, f"Unknown parameter: '{param}'.", "invalid_request_error",
                                       "unknown_parameter", param), request_id)
        if name == "model_not_found":
            return self._reply(*_error(404, f"The model `{model}` does not exist or you do not have access "
                                            "to it.", "invalid_request_error", "model_not_found"), request_id)
        if name == "retired_model":
            return self._reply(*_error(400, f"The model `{model}` has been deprecated, learn more here: "
                                            "https://platform.openai.com/docs/deprecations",
                                       "invalid_request_error"), request_id)
        if name == "user_error":
            return self._reply(*_error(400, str(fault.get("message", "Invalid image generation request.")),
                                       "image_generation_user_error", fault.get("code")), request_id)
        if name == "x_should_retry_false":
            return self._reply(*_error(500, "The server had an error processing your request.", "server_error"),
                               request_id, {"x-should-retry": "false"})
        if name == "slow":
            self.sleep(float(fault.get("seconds", 5.0)))
            return None
        if name == "drop":
            return Reply(drop=True)
        if name == "html_200":
            return Reply(200, "<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body>"
                              "<h1>Welcome to nginx!</h1></body></html>", {"x-request-id": request_id},
                         content_type="text/html; charset=utf-8")
        if name == "empty_body":
            return Reply(200, b"", {"x-request-id": request_id})
        return None  # a mutation: applied to the valid answer

    # POST /v1/images/generations ---------------------------------------------------------------
    def _generate(self, *, headers: Mapping[str, str], body: bytes, **_: Any) -> Reply:
        request_id = f"req_{uuid.uuid4().hex}"
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return self._reply(*_error(401, "You didn't provide an API key. You need to provide your API key in "
                                            "an Authorization header using Bearer auth (i.e. Authorization: "
                                            "Bearer YOUR_KEY).", "invalid_request_error"), request_id)
        if self.valid_keys is not None and auth[7:].strip() not in self.valid_keys:
            return self._fault_reply({"fault": "401"}, request_id, headers, "") or Reply(401)
        try:
            params = json.loads(body or b"{}")
            if not isinstance(params, dict):
                raise ValueError("body is not an object")
        except ValueError:
            return self._reply(*_error(400, "We could not parse the JSON body of your request.",
                                       "invalid_request_error"), request_id)
        model_name = str(params.get("model") or "dall-e-2")
        fault = self.take_fault("generate")
        mutation = None
        if fault is not None:
            reply = self._fault_reply(fault, request_id, headers, model_name)
            if reply is not None:
                return reply
            if fault["fault"] in _MUTATIONS:
                mutation = fault["fault"]

        checked = self._validate(model_name, params, request_id)
        if isinstance(checked, Reply):
            return checked
        model = checked
        return self._answer(model_name, model, params, request_id, mutation)

    def _validate(self, model_name: str, params: dict[str, Any], request_id: str) -> StandinModel | Reply:
        model = self.models.get(model_name)
        if model is None or model.retired:
            return self._reply(*_error(404, f"The model `{model_name}` does not exist or you do not have access "
                                            "to it.", "invalid_request_error", "model_not_found"), request_id)
        for key in params:
            if key not in model.params:
                return self._reply(*_error(400, f"Unknown parameter: '{key}'.", "invalid_request_error",
                                           "unknown_parameter", key), request_id)
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return self._reply(*_error(400, "Missing required parameter: 'prompt'.", "invalid_request_error",
                                       "missing_required_parameter", "prompt"), request_id)
        if len(prompt) > model.max_prompt:
            return self._reply(*_error(400, f"Invalid 'prompt': string too long. Expected a string with maximum "
                                            f"length {model.max_prompt}, but got a string with length "
                                            f"{len(prompt)} instead.", "invalid_request_error",
                                       "string_above_max_length", "prompt"), request_id)
        n = params.get("n", 1)
        if model_name == "dall-e-3" and n != 1:
            return self._reply(*_error(400, "You must provide n=1 for this model.", "invalid_request_error",
                                       None, "n"), request_id)
        if not isinstance(n, int) or not 1 <= n <= model.max_n:
            return self._reply(*_error(400, f"Invalid 'n': expected an integer between 1 and {model.max_n}.",
                                       "invalid_request_error", "integer_out_of_range", "n"), request_id)
        size = params.get("size", "1024x1024")
        if model.sizes is not None and size not in model.sizes:
            allowed = ", ".join(f"'{s}'" for s in sorted(model.sizes))
            return self._reply(*_error(400, f"Invalid value: '{size}'. Supported values are: {allowed}.",
                                       "invalid_request_error", "invalid_value", "size"), request_id)
        if model.sizes is None and size != "auto":
            problem = _free_size_problem(size)
            if problem:
                return self._reply(*_error(400, f"Invalid size '{size}': {problem}.", "invalid_request_error",
                                           "invalid_value", "size"), request_id)
        quality = params.get("quality")
        if quality is not None and quality not in model.qualities:
            allowed = ", ".join(f"'{q}'" for q in sorted(model.qualities))
            return self._reply(*_error(400, f"Invalid value: '{quality}'. Supported values are: {allowed}.",
                                       "invalid_request_error", "invalid_value", "quality"), request_id)
        checks = {"style": {"vivid", "natural"}, "response_format": {"url", "b64_json"},
                  "background": {"transparent", "opaque", "auto"}, "moderation": {"low", "auto"},
                  "output_format": {"png", "jpeg", "webp"}}
        for key, allowed_values in checks.items():
            if key in params and params[key] not in allowed_values:
                allowed = ", ".join(f"'{v}'" for v in sorted(allowed_values))
                return self._reply(*_error(400, f"Invalid value: '{params[key]}'. Supported values are: "
                                                f"{allowed}.", "invalid_request_error", "invalid_value", key),
                                   request_id)
        if params.get("background") == "transparent" and params.get("output_format", "png") == "jpeg":
            return self._reply(*_error(400, "Transparent background requires output_format png or webp.",
                                       "invalid_request_error", "invalid_value", "background"), request_id)
        return model

    def _answer(self, model_name: str, model: StandinModel, params: dict[str, Any], request_id: str,
                mutation: str | None) -> Reply:
        prompt = params["prompt"]
        size = params.get("size", "1024x1024")
        width, height = (1024, 1024) if size == "auto" else (int(v) for v in size.split("x"))
        if mutation == "wrong_size":
            width, height = 64, 64
        fmt = params.get("output_format", "png") if model.family == "gpt-image" else "png"
        created = int(time.time())
        if mutation == "missing_data":
            return self._reply(200, {"created": created}, request_id)
        if mutation == "empty_data":
            return self._reply(200, {"created": created, "data": []}, request_id)
        if mutation == "empty_item":
            return self._reply(200, {"created": created, "data": [{}]}, request_id)
        want_url = model.family == "dalle" and params.get("response_format", "url") == "url"
        data = []
        draw = next(self._draws)
        seeds = self.image_seeds[request_id] = [draw * 100 + index for index in range(params.get("n", 1))]
        for seed in seeds:
            image = deterministic_image(prompt, seed, width, height, fmt)
            item: dict[str, Any] = {}
            if mutation == "corrupt_base64":
                item["b64_json"] = "!!!this is not base64 at all!!!"
            elif mutation == "not_an_image":
                item["b64_json"] = base64.b64encode(b"<html><body>not an image</body></html>").decode()
            elif mutation == "truncated_image":
                item["b64_json"] = base64.b64encode(image[: len(image) // 2]).decode()
            elif want_url or self.force_url:
                name = f"img-{next(self._ids)}-{hashlib.sha256(image).hexdigest()[:12]}.{fmt}"
                self._files[name] = (image, f"image/{fmt}", time.time() + self.url_ttl_s)
                item["url"] = f"{self.url}/files/{name}"
            else:
                item["b64_json"] = base64.b64encode(image).decode()
            if model.revises_prompt:
                item["revised_prompt"] = revise(prompt, params.get("style", "vivid"))
            data.append(item)
        answer: dict[str, Any] = {"created": created, "data": data}
        if model.family == "gpt-image":
            quality = params.get("quality", "auto")
            quality = "medium" if quality == "auto" else quality
            out_tokens = {"low": 272, "medium": 1056, "high": 4160, "xhigh": 8320, "max": 16640}[quality] * len(data)
            in_tokens = len(prompt.split()) + 8
            answer.update({
                "background": "transparent" if params.get("background") == "transparent" else "opaque",
                "output_format": fmt, "quality": quality, "size": f"{width}x{height}",
                "usage": {"input_tokens": in_tokens,
                          "input_tokens_details": {"text_tokens": in_tokens, "image_tokens": 0},
                          "output_tokens": out_tokens, "total_tokens": in_tokens + out_tokens},
            })
        if mutation == "bad_json":
            text = json.dumps(answer)
            return Reply(200, text[: max(len(text) // 3, 20)], {"x-request-id": request_id})
        return self._reply(200, answer, request_id)


def _free_size_problem(size: Any) -> str | None:
    """gpt-image-2's published size rule (image generation guide): edges multiples of 16, the long edge at
    most 3840, long:short at most 3:1, 655,360 to 8,294,400 pixels."""
    try:
        width, height = (int(v) for v in str(size).split("x"))
    except ValueError:
        return "expected WIDTHxHEIGHT"
    if width <= 0 or height <= 0 or width % 16 or height % 16:
        return "width and height must be divisible by 16"
    if max(width, height) > 3 * min(width, height):
        return "aspect ratio must be between 1:3 and 3:1"
    if max(width, height) > 3840:
        return "the maximum edge length is 3840"
    if not 655_360 <= width * height <= 8_294_400:
        return "the total pixels must be between 655,360 and 8,294,400"
    return None


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def openai_standin() -> Iterator[OpenAIStandin]:
    """A running OpenAI stand-in (fresh for each test); point the SDK at ``openai_standin.base_url``."""
    server = OpenAIStandin().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def openai_env(openai_standin: OpenAIStandin, monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStandin]:
    """``openai_standin`` with ``OPENAI_API_KEY`` (the fake key) and ``OPENAI_BASE_URL`` set."""
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_standin.base_url)
    yield openai_standin
