"""Loopback stand-ins for the OpenAI images API and the Replicate predictions API.

Each stand-in is a stdlib ``ThreadingHTTPServer`` on ``127.0.0.1`` port 0, started in a thread by a
pytest fixture. They speak the real wire formats (see ``shared/reference/reliability-ecosystem.md``
§1-2), so the real SDKs are pointed at them with ``base_url``. Both:

- record every request (method, path, headers, body) in ``server.requests``;
- take a scripted FIFO of faults: ``server.script("500", {"fault": "429", "retry_after": 0.1})`` from
  Python, or ``POST /__control/script`` with ``{"faults": [...]}`` over HTTP (``/__control/*`` requests
  are not recorded; ``GET /__control/requests`` returns the record, ``POST /__control/reset`` clears it);
- return deterministic images whose colours come from ``sha256(prompt, seed)`` (``expected_colours``);
- count requests in flight (``in_flight``, and the most at once, ``max_in_flight``) and can answer every
  request ``latency_s`` late (a slow API), so tests can see how many calls a sweep runs at once;
- take the fault ``empty_body``: HTTP 200 with a 0-byte body.

A fault is a name or a dict ``{"fault": name, "times": n, "on": route, ...parameters}``. A request takes
the first queued fault whose ``on`` matches its route (each stand-in documents its routes and faults).

Fixtures (import them into a test module or a conftest: ``from tests.standins import openai_standin``):

- ``openai_standin``: a running ``OpenAIStandin``; ``.base_url`` ends in ``/v1`` as the SDK needs.
- ``openai_env``: ``openai_standin`` plus ``OPENAI_API_KEY`` (``FAKE_OPENAI_KEY``) and ``OPENAI_BASE_URL``
  set in the environment, so ``get_backend("openai")`` talks to it.
- ``replicate_standin``: a running ``ReplicateStandin``; ``.base_url`` has no ``/v1``.
- ``replicate_env``: ``replicate_standin`` plus ``REPLICATE_API_TOKEN`` (``FAKE_REPLICATE_TOKEN``) and
  ``REPLICATE_BASE_URL``.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

__all__ = [
    "Recorded",
    "Reply",
    "StandinServer",
    "deterministic_image",
    "expected_colours",
    "OpenAIStandin",
    "ReplicateStandin",
    "openai_standin",
    "openai_env",
    "replicate_standin",
    "replicate_env",
    "FAKE_OPENAI_KEY",
    "FAKE_REPLICATE_TOKEN",
]

# Recognisable fake secrets: tests scan every message, result and note for them.
FAKE_OPENAI_KEY = "sk-test-WORKBENCHFAKEKEY-0123456789abcdefSECRET"
FAKE_REPLICATE_TOKEN = "r8_WORKBENCHFAKETOKEN0123456789abcdefSECRET"


# ----------------------------------------------------------------------------------------- images
def expected_colours(prompt: str, seed: int | None) -> tuple[tuple[int, int, int], ...]:
    """The four quadrant colours (top-left, top-right, bottom-left, bottom-right) for (prompt, seed)."""
    digest = hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()
    return tuple(tuple(digest[i * 3:i * 3 + 3]) for i in range(4))  # type: ignore[return-value]


@lru_cache(maxsize=256)
def deterministic_image(prompt: str, seed: int | None, width: int, height: int, fmt: str = "png") -> bytes:
    """Encoded image bytes (``png``, ``webp`` or ``jpeg``): four flat quadrants from ``expected_colours``."""
    colours = expected_colours(prompt, seed)
    img = Image.new("RGB", (width, height), colours[0])
    hw, hh = max(width // 2, 1), max(height // 2, 1)
    img.paste(colours[1], (hw, 0, width, hh))
    img.paste(colours[2], (0, hh, hw, height))
    img.paste(colours[3], (hw, hh, width, height))
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, "PNG", compress_level=1)
    elif fmt == "webp":
        img.save(buf, "WEBP", lossless=True, method=0)
    elif fmt in ("jpeg", "jpg"):
        img.save(buf, "JPEG", quality=95)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------- server
@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in saw it."""

    method: str
    path: str  # without the query string
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    route: str
    time: float

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None


@dataclass
class Reply:
    """What a route handler answers. ``drop`` closes the connection without a response."""

    status: int = 200
    body: bytes | str | Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    drop: bool = False

    @classmethod
    def json(cls, status: int, data: Any, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(data).encode(), dict(headers or {}))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep the test output quiet
        pass

    def _serve(self) -> None:
        standin = self.server.standin
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        try:
            reply = standin.dispatch(self.command, parts.path, parts.query,
                                     {k.lower(): v for k, v in self.headers.items()}, body)
        except Exception as exc:  # a bug in the stand-in: answer 500 so the test sees it
            reply = Reply.json(599, {"standin_error": repr(exc)})
        if reply.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        data = reply.body
        if isinstance(data, str):
            data = data.encode()
        elif not isinstance(data, bytes):
            data = json.dumps(data).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    standin: StandinServer


class StandinServer:
    """Base of both stand-ins: lifecycle, request record, fault script, control routes."""

    #: fault name -> default route it applies to (subclasses fill this in)
    FAULT_ROUTES: Mapping[str, str] = {}

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._faults: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.latency_s = 0.0  # every API answer waits this long (a slow API)
        self.in_flight = 0
        self.max_in_flight = 0
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.standin = self
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StandinServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sleep(self, seconds: float) -> None:
        """Sleep in a handler, waking early when the server stops."""
        self._stopping.wait(seconds)

    # faults -----------------------------------------------------------------------------------------
    def script(self, *faults: str | Mapping[str, Any]) -> None:
        """Queue faults (FIFO). ``"500"`` or ``{"fault": "429", "retry_after": 1, "times": 2, "on": "get"}``."""
        with self._lock:
            for fault in faults:
                spec = {"fault": fault} if isinstance(fault, str) else dict(fault)
                name = spec.get("fault")
                if name not in self.FAULT_ROUTES:
                    raise ValueError(f"unknown fault {name!r}; known faults: {sorted(self.FAULT_ROUTES)}")
                spec.setdefault("on", self.FAULT_ROUTES[name])
                for _ in range(int(spec.pop("times", 1))):
                    self._faults.append(dict(spec))

    @property
    def pending_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._faults)

    def take_fault(self, route: str) -> dict[str, Any] | None:
        """Pop the first queued fault that applies to ``route`` (``on`` may be a route or ``"any"``)."""
        with self._lock:
            for i, fault in enumerate(self._faults):
                on = fault["on"]
                if on == "any" or on == route or (isinstance(on, list | tuple) and route in on):
                    return self._faults.pop(i)
        return None

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self.max_in_flight = self.in_flight

    # record ----------------------------------------------------------------------------------------
    def requests_to(self, route: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.route == route]

    def all_text(self) -> str:
        """Every recorded request as text (headers included): for scanning in tests."""
        with self._lock:
            return "\n".join(f"{r.method} {r.path}?{r.query} {dict(r.headers)} {r.body!r}" for r in self.requests)

    # dispatch ------------------------------------------------------------------------------------
    def dispatch(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> Reply:
        if path.startswith("/__control/"):
            return self._control(method, path, body)
        route, handler, params = self.match(method, path)
        with self._lock:
            self.requests.append(Recorded(method, path, query, headers, body, route, time.time()))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s:
                self.sleep(self.latency_s)
            return handler(headers=headers, body=body, query=query, **params)
        finally:
            with self._lock:
                self.in_flight -= 1

    def match(self, method: str, path: str) -> tuple[str, Callable[..., Reply], dict[str, str]]:
        raise NotImplementedError

    def _control(self, method: str, path: str, body: bytes) -> Reply:
        if method == "POST" and path == "/__control/script":
            data = json.loads(body or b"{}")
            faults = data.get("faults", []) if isinstance(data, dict) else data
            try:
                self.script(*faults)
            except ValueError as exc:
                return Reply.json(400, {"error": str(exc)})
            return Reply.json(200, {"queued": len(self.pending_faults)})
        if method == "POST" and path == "/__control/reset":
            self.reset()
            return Reply.json(200, {"ok": True})
        if method == "GET" and path == "/__control/requests":
            with self._lock:
                data = [{"method": r.method, "path": r.path, "route": r.route, "headers": dict(r.headers),
                         "body": r.body.decode("utf-8", "replace")} for r in self.requests]
            return Reply.json(200, data)
        return Reply.json(404, {"error": f"unknown control route {method} {path}"})


# Fixtures and the two stand-ins (imported last: they build on the definitions above).
from .openai_server import OpenAIStandin, openai_env, openai_standin  # noqa: E402
from .replicate_server import ReplicateStandin, replicate_env, replicate_standin  # noqa: E402
