"""Stand-in for the Replicate predictions API.

Routes (names in brackets are the ``on`` values of faults):

- ``POST /v1/models/{owner}/{name}/predictions`` [create] official models only;
- ``POST /v1/predictions`` [create] with ``version`` as 64-hex, ``owner/name:version`` or ``owner/name``;
- ``GET /v1/predictions/{id}`` [get] and ``POST /v1/predictions/{id}/cancel`` [cancel];
- ``GET /v1/predictions`` [list]: the account's predictions, newest first, ``page_size`` (100) a page with
  ``next`` / ``previous`` cursor URLs, ``created_after`` / ``created_before`` (ISO 8601) as filters;
- ``GET /files/{id}/{name}`` [files] output files, token required.

Every API route needs ``Authorization: Bearer ...`` (401 without). Inputs are checked against each
model's schema (422 ``Input validation failed`` with ``invalid_fields``); an unknown version answers 422
``Invalid version or not permitted``. ``version`` takes what Replicate's changelog of 2025-08-05 lists: a
64-hex version id, ``owner/name:version``, or a bare ``owner/name`` for an official model only; a bare
``owner/name`` of a community model is refused like an unknown version. ``Prefer: wait`` / ``wait=N`` holds the create until the prediction
finishes (201) or the wait runs out (202 with ``Location``). A prediction goes
``starting`` → ``processing`` → ``succeeded`` | ``failed`` | ``canceled`` | ``aborted`` on a clock
(``starting_s``, ``processing_s``); its logs say ``Using seed: N``; finished ones carry
``metrics.predict_time``; after ``data_ttl_s`` the output is removed (``data_removed: true``). Outputs are
``http://`` file URLs (``output_mode = "http"``, served by ``/files``, token required) or ``data:`` URIs
(``output_mode = "data"``).

``Cancel-After`` on a create (a duration such as ``30s``, ``5m``, ``1h30m``; at least 5 s, else 422, stricter
than what is confirmed of the real API) ends the prediction that long after its creation, as Replicate's
changelog of 2025-10-16 says: ``aborted`` when the deadline comes before it started (not charged), ``canceled``
when it was running.

Faults. HTTP faults (default route ``create``; give ``on`` for others): ``429`` (the documented body only,
``{"detail": "Request was throttled. Your rate limit resets in ~Ns."}`` with N = ``retry_after``, and no
header; ``header: true`` adds ``Retry-After``), ``402`` (insufficient credit), ``500``, ``502_html``, ``503``,
``401``, ``drop``, ``slow`` (``seconds``), ``empty_body`` (HTTP 200 with a 0-byte body); ``503_get`` and
``504_get`` (route ``get``). Outcome faults shape the next created prediction: ``nsfw`` (failed, "NSFW
content detected"), ``failed`` (failed with ``error``), ``canceled``, ``aborted`` (ends when it would have
started: no logs, no output), ``never`` (processing forever, until canceled), ``processing_with_output``
(output filled while still processing), ``expired_output`` (its files answer 404 at once), ``data_removed``
(output already deleted when it finishes), ``slow_prediction`` (processing takes ``seconds``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import sqrt
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest

from . import FAKE_REPLICATE_TOKEN, Reply, StandinServer, deterministic_image

__all__ = ["ReplicateStandin", "MODELS", "StandinModel", "FLUX_SCHNELL_VERSION", "FLUX_DEV_VERSION",
           "SDXL_VERSION", "parse_duration", "replicate_standin", "replicate_env"]


def _hex(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


FLUX_SCHNELL_VERSION = _hex("black-forest-labs/flux-schnell")
FLUX_DEV_VERSION = _hex("black-forest-labs/flux-dev")
SDXL_VERSION = _hex("stability-ai/sdxl")

ASPECT_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]

_FLUX_COMMON: dict[str, dict[str, Any]] = {
    "prompt": {"type": "string", "required": True},
    "aspect_ratio": {"type": "string", "enum": ASPECT_RATIOS, "default": "1:1"},
    "seed": {"type": "integer"},
    "num_outputs": {"type": "integer", "min": 1, "max": 4, "default": 1},
    "output_format": {"type": "string", "enum": ["webp", "jpg", "png"], "default": "webp"},
    "output_quality": {"type": "integer", "min": 0, "max": 100, "default": 80},
    "megapixels": {"type": "string", "enum": ["1", "0.25"], "default": "1"},
    "disable_safety_checker": {"type": "boolean", "default": False},
    "go_fast": {"type": "boolean", "default": True},
}


@dataclass(frozen=True)
class StandinModel:
    version: str
    official: bool
    schema: Mapping[str, Mapping[str, Any]]
    sizing: str = "aspect"  # "aspect": aspect_ratio + megapixels; "wh": width/height inputs
    default_steps: int = 4
    extra: Mapping[str, Any] = field(default_factory=dict)


MODELS: dict[str, StandinModel] = {
    "black-forest-labs/flux-schnell": StandinModel(
        FLUX_SCHNELL_VERSION, True,
        _FLUX_COMMON | {"num_inference_steps": {"type": "integer", "min": 1, "max": 4, "default": 4}}),
    "black-forest-labs/flux-dev": StandinModel(
        FLUX_DEV_VERSION, True,
        _FLUX_COMMON | {"num_inference_steps": {"type": "integer", "min": 1, "max": 50, "default": 28},
                        "guidance": {"type": "number", "min": 0, "max": 10, "default": 3}},
        default_steps=28),
    "stability-ai/sdxl": StandinModel(
        SDXL_VERSION, False,
        {"prompt": {"type": "string", "required": True},
         "negative_prompt": {"type": "string", "default": ""},
         "width": {"type": "integer", "min": 128, "max": 2048, "default": 1024},
         "height": {"type": "integer", "min": 128, "max": 2048, "default": 1024},
         "num_inference_steps": {"type": "integer", "min": 1, "max": 500, "default": 50},
         "guidance_scale": {"type": "number", "min": 1, "max": 50, "default": 7.5},
         "seed": {"type": "integer"},
         "num_outputs": {"type": "integer", "min": 1, "max": 4, "default": 1},
         "scheduler": {"type": "string", "enum": ["DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM",
                                                  "K_EULER_ANCESTRAL", "K_EULER", "PNDM"],
                       "default": "K_EULER"}},
        sizing="wh", default_steps=50),
}

_HTTP_FAULTS = {"429", "402", "500", "502_html", "503", "401", "drop", "slow", "empty_body"}
_OUTCOME_FAULTS = {"nsfw", "failed", "canceled", "aborted", "never", "processing_with_output", "expired_output",
                   "data_removed", "slow_prediction"}
NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."
_HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def flux_size(aspect_ratio: str, megapixels: str) -> tuple[int, int]:
    """Pixel size the stand-in draws for a flux aspect ratio and megapixel setting (multiples of 64)."""
    w, h = (int(v) for v in aspect_ratio.split(":"))
    pixels = 1024 * 1024 if megapixels == "1" else 512 * 512
    ratio = w / h
    return max(64, round(sqrt(pixels * ratio) / 64) * 64), max(64, round(sqrt(pixels / ratio) / 64) * 64)


@dataclass
class _Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    seed: int
    created: float
    outcome: str = "succeeded"  # succeeded | failed | canceled | aborted | never
    error: str | None = None
    starting_s: float = 0.01
    processing_s: float = 0.04
    canceled_at: float | None = None
    output_early: bool = False
    expired: bool = False
    removed: bool = False
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    outputs: list[str] | None = None
    cancel_after_s: float | None = None  # from the Cancel-After header
    aborted: bool = False  # ended by Cancel-After before it started


class ReplicateStandin(StandinServer):
    """The Replicate stand-in. ``base_url`` (no ``/v1``) is what ``replicate.Client`` takes."""

    FAULT_ROUTES = ({name: "create" for name in _HTTP_FAULTS | _OUTCOME_FAULTS}
                    | {"503_get": "get", "504_get": "get"})

    def __init__(self, *, models: Mapping[str, StandinModel] | None = None, starting_s: float = 0.01,
                 processing_s: float = 0.04, data_ttl_s: float = 3600.0, output_mode: str = "http",
                 max_wait_s: float = 60.0, valid_tokens: set[str] | None = None) -> None:
        super().__init__()
        self.models = dict(MODELS if models is None else models)
        self.starting_s = starting_s
        self.processing_s = processing_s
        self.data_ttl_s = data_ttl_s
        self.output_mode = output_mode  # "http" (file URLs) or "data" (data: URIs)
        self.max_wait_s = max_wait_s
        self.valid_tokens = valid_tokens
        self.predictions: dict[str, _Prediction] = {}
        self.page_size = 100  # as Replicate's list
        self._plock = threading.Lock()

    @property
    def base_url(self) -> str:
        return self.url

    def match(self, method: str, path: str) -> tuple[str, Callable[..., Reply], dict[str, str]]:
        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) == 5 and parts[:2] == ["v1", "models"] and parts[4] == "predictions":
            return "create", self._create, {"model_ref": f"{parts[2]}/{parts[3]}"}
        if method == "POST" and parts == ["v1", "predictions"]:
            return "create", self._create, {"model_ref": ""}
        if method == "GET" and parts == ["v1", "predictions"]:
            return "list", self._list, {}
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "predictions"]:
            return "get", self._get, {"pid": parts[2]}
        if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "predictions"] and parts[3] == "cancel":
            return "cancel", self._cancel, {"pid": parts[2]}
        if method == "GET" and len(parts) == 3 and parts[0] == "files":
            return "files", self._file, {"pid": parts[1], "name": parts[2]}
        return "unknown", lambda **_: _problem(404, "Not found", "The requested resource could not be found."), {}

    # helpers ----------------------------------------------------------------------------------------
    def _authorised(self, headers: Mapping[str, str]) -> bool:
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else ""
        return bool(token) and (self.valid_tokens is None or token in self.valid_tokens)

    def _http_fault(self, fault: Mapping[str, Any]) -> Reply | None:
        name = fault["fault"]
        if name == "429":  # replicate.com/docs/topics/predictions/rate-limits: this body, no header promised
            after = fault.get("retry_after", 30)
            return Reply.json(429, {"detail": f"Request was throttled. Your rate limit resets in ~{after}s."},
                              {"Retry-After": str(after)} if fault.get("header") else {})
        if name == "402":
            return _problem(402, "Insufficient credit", "You have insufficient credit to run this model. Go to "
                                                        "https://replicate.com/account/billing to purchase credit.")
        if name == "500":
            return _problem(500, "Internal Server Error", "Something went wrong on our end.")
        if name in ("503", "503_get"):
            return _problem(503, "Service Unavailable", "The service is temporarily unavailable.",
                            headers={"Retry-After": str(fault.get("retry_after", 0))})
        if name == "504_get":
            return _problem(504, "Gateway Timeout", "The gateway timed out.")
        if name == "502_html":
            return Reply(502, _HTML_502, content_type="text/html")
        if name == "401":
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        if name == "drop":
            return Reply(drop=True)
        if name == "empty_body":
            return Reply(200, b"")
        if name == "slow":
            self.sleep(float(fault.get("seconds", 5.0)))
        return None

    def _status(self, p: _Prediction, now: float) -> str:
        if p.canceled_at is None and p.cancel_after_s is not None and now - p.created >= p.cancel_after_s:
            end = p.created + p.starting_s + p.processing_s
            if p.outcome == "never" or end > p.created + p.cancel_after_s:  # not finished at Cancel-After
                p.canceled_at = p.created + p.cancel_after_s
                p.aborted = p.cancel_after_s < p.starting_s  # the deadline came before it started
        if p.canceled_at is not None:
            return "aborted" if p.aborted else "canceled"
        elapsed = now - p.created
        if elapsed < p.starting_s:
            return "starting"
        if p.outcome == "aborted":  # Replicate gave up on it before it started: no logs, no output
            return "aborted"
        if p.outcome == "never" or elapsed < p.starting_s + p.processing_s:
            return "processing"
        return p.outcome

    def _finished_at(self, p: _Prediction) -> float:
        if p.canceled_at is not None:
            return p.canceled_at
        return p.created + p.starting_s + (0.0 if p.outcome == "aborted" else p.processing_s)

    def _make_outputs(self, p: _Prediction) -> list[str]:
        if p.outputs is None:
            model = self.models[p.model]
            if model.sizing == "wh":
                width, height = p.input.get("width", 1024), p.input.get("height", 1024)
                fmt = "png"
            else:
                width, height = flux_size(p.input.get("aspect_ratio", "1:1"), p.input.get("megapixels", "1"))
                fmt = p.input.get("output_format", "webp")
            pil_fmt = "jpeg" if fmt == "jpg" else fmt
            outputs = []
            for index in range(p.input.get("num_outputs", 1)):
                data = deterministic_image(p.input["prompt"], p.seed + index, width, height, pil_fmt)
                name = f"out-{index}.{fmt}"
                p.files[name] = (data, f"image/{pil_fmt}")
                if self.output_mode == "data":
                    outputs.append(f"data:image/{pil_fmt};base64,{base64.b64encode(data).decode()}")
                else:
                    outputs.append(f"{self.url}/files/{p.id}/{name}")
            p.outputs = outputs
        return p.outputs

    def _json(self, p: _Prediction) -> dict[str, Any]:
        now = time.time()
        status = self._status(p, now)
        terminal = status in ("succeeded", "failed", "canceled", "aborted")
        started = status not in ("starting", "aborted")
        steps = p.input.get("num_inference_steps", self.models[p.model].default_steps)
        logs = ""
        if started:
            logs = f"Using seed: {p.seed}\n  0%|          | 0/{steps} [00:00<?, ?it/s]\n"
            if status == "succeeded":
                logs += f"100%|██████████| {steps}/{steps} [00:00<00:00, 20.0it/s]\n"
            elif status == "failed" and p.error == NSFW_ERROR:
                logs += f"100%|██████████| {steps}/{steps} [00:00<00:00, 20.0it/s]\nNSFW content detected\n"
        output = None
        if status == "succeeded" or (status == "processing" and p.output_early):
            output = self._make_outputs(p)
        removed = p.removed or (terminal and now > self._finished_at(p) + self.data_ttl_s)
        if removed and terminal:
            output = None
        data: dict[str, Any] = {
            "id": p.id, "model": p.model, "version": p.version,
            "input": {} if removed and terminal else p.input,
            "logs": logs, "output": output, "data_removed": bool(removed and terminal),
            "error": p.error if status == "failed" else None, "status": status,
            "source": "api", "created_at": _iso(p.created),
            "started_at": _iso(p.created + p.starting_s) if started else None,
            "completed_at": _iso(self._finished_at(p)) if terminal else None,
            "urls": {"get": f"{self.url}/v1/predictions/{p.id}",
                     "cancel": f"{self.url}/v1/predictions/{p.id}/cancel",
                     "web": f"https://replicate.com/p/{p.id}"},
        }
        if terminal and status in ("succeeded", "failed"):
            data["metrics"] = {"predict_time": round(p.processing_s, 6),
                               "total_time": round(p.starting_s + p.processing_s, 6)}
        return data

    # routes -------------------------------------------------------------------------------------------
    def _create(self, *, model_ref: str, headers: Mapping[str, str], body: bytes, **_: Any) -> Reply:
        if not self._authorised(headers):
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        fault = self.take_fault("create")
        outcome_fault: dict[str, Any] | None = None
        if fault is not None:
            if fault["fault"] in _OUTCOME_FAULTS:
                outcome_fault = fault
            else:
                reply = self._http_fault(fault)
                if reply is not None:
                    return reply
        try:
            payload = json.loads(body or b"{}")
            if not isinstance(payload, dict):
                raise ValueError
        except ValueError:
            return _problem(400, "Bad Request", "The request body is not valid JSON.")
        if model_ref:  # the model route: official models only
            model = self.models.get(model_ref)
            if model is None:
                return _problem(404, "Not found", f"Model {model_ref} not found.")
            if not model.official:
                return _problem(404, "Not found", f"{model_ref} is not an official model; create predictions "
                                                  "for it with a version.")
            name, version = model_ref, "hidden"
        else:
            resolved = self._resolve(str(payload.get("version") or ""))
            if resolved is None:
                return _problem(422, "Invalid version or not permitted",
                                "The specified version does not exist (or perhaps you don't have permission "
                                "to use it?)")
            name, version = resolved
            model = self.models[name]
        inputs = payload.get("input")
        if not isinstance(inputs, dict):
            inputs = {}
        invalid = _validate_input(model.schema, inputs)
        if invalid:
            detail = "".join(f"- {f['field']}: {f['description']}\n" for f in invalid)
            return _problem(422, "Input validation failed", detail, invalid_fields=invalid)
        cancel_after = None
        if "cancel-after" in headers:
            cancel_after = parse_duration(headers["cancel-after"])
            if cancel_after is None or cancel_after < 5:
                return _problem(422, "Invalid Cancel-After", f"Cancel-After must be a duration of at least 5s "
                                                              f"(e.g. 30s, 5m), got {headers['cancel-after']!r}")
        now = time.time()
        pid = base64.b32encode(uuid.uuid4().bytes).decode().lower().rstrip("=")[:26]
        seed = inputs["seed"] if "seed" in inputs else int(hashlib.sha256(pid.encode()).hexdigest()[:8], 16)
        p = _Prediction(pid, name, version, dict(inputs), seed, now, starting_s=self.starting_s,
                        processing_s=self.processing_s, cancel_after_s=cancel_after)
        if outcome_fault is not None:
            kind = outcome_fault["fault"]
            if kind == "nsfw":
                p.outcome, p.error = "failed", NSFW_ERROR
            elif kind == "failed":
                p.outcome, p.error = "failed", str(outcome_fault.get("error", "CUDA out of memory"))
            elif kind in ("canceled", "aborted", "never"):
                p.outcome = kind
            elif kind == "processing_with_output":
                p.output_early = True
                p.processing_s = float(outcome_fault.get("seconds", max(self.processing_s, 0.3)))
            elif kind == "expired_output":
                p.expired = True
            elif kind == "data_removed":
                p.removed = True
            elif kind == "slow_prediction":
                p.processing_s = float(outcome_fault.get("seconds", 2.0))
        with self._plock:
            self.predictions[pid] = p
        wait = _prefer_wait(headers.get("prefer", ""), self.max_wait_s)
        if wait is None:
            return Reply.json(201, self._json(p))
        deadline = time.time() + wait
        while self._status(p, time.time()) in ("starting", "processing") and time.time() < deadline:
            if self._stopping.wait(0.01):
                break
        data = self._json(p)
        if data["status"] in ("starting", "processing"):
            return Reply.json(202, data, {"Location": data["urls"]["get"]})
        return Reply.json(201, data)

    def _resolve(self, ref: str) -> tuple[str, str] | None:
        """What ``version`` names: a 64-hex id, ``owner/name:id``, or ``owner/name`` of an official model."""
        for name, model in self.models.items():
            if ref in (model.version, f"{name}:{model.version}"):
                return name, model.version
            if ref == name and model.official:  # since 2025-08-05, official models only
                return name, "hidden"
        return None

    def _lookup(self, pid: str) -> _Prediction | None:
        with self._plock:
            return self.predictions.get(pid)

    def _get(self, *, pid: str, headers: Mapping[str, str], **_: Any) -> Reply:
        if not self._authorised(headers):
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        fault = self.take_fault("get")
        if fault is not None:
            reply = self._http_fault(fault)
            if reply is not None:
                return reply
        p = self._lookup(pid)
        if p is None:
            return _problem(404, "Not found", "Not found.")
        return Reply.json(200, self._json(p))

    def _list(self, *, headers: Mapping[str, str], query: str, **_: Any) -> Reply:
        if not self._authorised(headers):
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        args = {k: v[-1] for k, v in parse_qs(query).items()}
        bounds = {}
        for name in ("created_after", "created_before"):
            if name in args:
                try:
                    bounds[name] = datetime.fromisoformat(args[name].replace("Z", "+00:00")).timestamp()
                except ValueError:
                    return _problem(400, "Bad Request", f"{name} must be an ISO 8601 date-time")
        with self._plock:
            found = sorted(self.predictions.values(), key=lambda p: p.created, reverse=True)
        found = [p for p in found if p.created > bounds.get("created_after", float("-inf"))
                 and p.created < bounds.get("created_before", float("inf"))]
        start = int(args.get("cursor", "0") or 0)
        page = found[start:start + self.page_size]

        def link(at: int) -> str:
            return f"{self.url}/v1/predictions?{urlencode({**args, 'cursor': str(at)})}"

        after = start + self.page_size
        return Reply.json(200, {"next": link(after) if after < len(found) else None,
                                "previous": link(max(0, start - self.page_size)) if start else None,
                                "results": [self._json(p) for p in page]})

    def _cancel(self, *, pid: str, headers: Mapping[str, str], **_: Any) -> Reply:
        if not self._authorised(headers):
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        fault = self.take_fault("cancel")
        if fault is not None:
            reply = self._http_fault(fault)
            if reply is not None:
                return reply
        p = self._lookup(pid)
        if p is None:
            return _problem(404, "Not found", "Not found.")
        if self._status(p, time.time()) in ("starting", "processing"):
            p.canceled_at = time.time()
        return Reply.json(200, self._json(p))

    def _file(self, *, pid: str, name: str, headers: Mapping[str, str], **_: Any) -> Reply:
        if not self._authorised(headers):
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        fault = self.take_fault("files")
        if fault is not None:
            reply = self._http_fault(fault)
            if reply is not None:
                return reply
        p = self._lookup(pid)
        if p is None or name not in p.files or p.expired or p.removed or (
                time.time() > self._finished_at(p) + self.data_ttl_s):
            return _problem(404, "Not found", "The file has expired or does not exist.")
        data, content_type = p.files[name]
        return Reply(200, data, content_type=content_type)

    @property
    def created(self) -> list[_Prediction]:
        with self._plock:
            return list(self.predictions.values())


def _problem(status: int, title: str, detail: str, *, headers: Mapping[str, str] | None = None,
             **extra: Any) -> Reply:
    body = {"type": f"https://replicate.com/docs/reference/http#{status}", "title": title, "detail": detail,
            "status": status, **extra}
    return Reply(status, json.dumps(body).encode(), dict(headers or {}), content_type="application/problem+json")


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``90s``, ``5m``, ``1h30m``, ``500ms``); None if it is not one."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[u] for n, u in parts)


def _prefer_wait(prefer: str, max_wait: float) -> float | None:
    prefer = prefer.strip().lower()
    if not prefer.startswith("wait"):
        return None
    if "=" in prefer:
        try:
            return min(float(prefer.split("=", 1)[1]), max_wait)
        except ValueError:
            return max_wait
    return max_wait


def _validate_input(schema: Mapping[str, Mapping[str, Any]], inputs: Mapping[str, Any]) -> list[dict[str, str]]:
    invalid: list[dict[str, str]] = []
    for name, spec in schema.items():
        if spec.get("required") and name not in inputs:
            invalid.append({"type": "required", "field": "input", "description": f"{name} is required"})
    for name, value in inputs.items():
        spec = schema.get(name)
        field_name = f"input.{name}"
        if spec is None:
            invalid.append({"type": "additional_property_not_allowed", "field": "input",
                            "description": f"Additional property {name} is not allowed"})
            continue
        kind = spec["type"]
        ok_type = {"string": isinstance(value, str), "boolean": isinstance(value, bool),
                   "integer": isinstance(value, int) and not isinstance(value, bool),
                   "number": isinstance(value, int | float) and not isinstance(value, bool)}[kind]
        if not ok_type:
            invalid.append({"type": "invalid_type", "field": field_name,
                            "description": f"Invalid type. Expected: {kind}, given: {type(value).__name__}"})
            continue
        if "enum" in spec and value not in spec["enum"]:
            choices = ", ".join(f'"{c}"' for c in spec["enum"])
            invalid.append({"type": "enum", "field": field_name,
                            "description": f"{field_name} must be one of the following: {choices}"})
        if "min" in spec and value < spec["min"]:
            invalid.append({"type": "number_gte", "field": field_name,
                            "description": f"Must be greater than or equal to {spec['min']}"})
        if "max" in spec and value > spec["max"]:
            invalid.append({"type": "number_lte", "field": field_name,
                            "description": f"Must be less than or equal to {spec['max']}"})
    return invalid


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def replicate_standin() -> Iterator[ReplicateStandin]:
    """A running Replicate stand-in (fresh for each test); point the SDK at ``replicate_standin.base_url``."""
    server = ReplicateStandin().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def replicate_env(replicate_standin: ReplicateStandin, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReplicateStandin]:
    """``replicate_standin`` with ``REPLICATE_API_TOKEN`` (the fake token) and ``REPLICATE_BASE_URL`` set."""
    monkeypatch.setenv("REPLICATE_API_TOKEN", FAKE_REPLICATE_TOKEN)
    monkeypatch.setenv("REPLICATE_BASE_URL", replicate_standin.base_url)
    yield replicate_standin
