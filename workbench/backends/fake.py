"""A deterministic, instant backend for tests, dry runs and benchmarks of the workbench itself.

Each image is a smooth pattern whose colours come from SHA-256 of the request's run key, so the
same request always gives the same pixels and different requests differ. No model, no I/O.
The option ``fault`` injects failures for fault tests in other processes (Ray workers, the CLI):
``auth`` raises a fatal AuthenticationError, ``error`` an unexpected RuntimeError.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ..errors import AuthenticationError
from ..types import GeneratedImage, GenerationRequest, GenerationResult
from .base import Backend, Capabilities

__all__ = ["FakeBackend", "fake_image"]


def fake_image(request: GenerationRequest) -> Image.Image:
    """The image the fake backend draws for ``request``."""
    digest = hashlib.sha256(request.run_key.encode()).digest()
    colours = np.frombuffer(digest[:12], dtype=np.uint8).reshape(4, 3).astype(np.float32)
    y = np.linspace(0.0, 1.0, request.height, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, request.width, dtype=np.float32)[None, :, None]
    top = colours[0] * (1 - x) + colours[1] * x
    bottom = colours[2] * (1 - x) + colours[3] * x
    pixels = top * (1 - y) + bottom * y
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB")


class FakeBackend(Backend):
    """Draws ``fake_image`` for every request; ``delay_s`` simulates a slow model per call."""

    name = "fake"

    def __init__(self, delay_s: float | None = None, max_batch: int = 8) -> None:
        # $WORKBENCH_FAKE_DELAY_S lets fault tests slow a sweep run in another process.
        self.delay_s = float(os.environ.get("WORKBENCH_FAKE_DELAY_S", "0")) if delay_s is None else delay_s
        self.max_batch = max_batch
        self.calls: list[int] = []  # batch sizes, in call order (tests read this)

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(seeds=True, max_batch=self.max_batch, schedulers=True, seconds_per_image=0.001)

    def environment(self, model: str) -> dict[str, str]:
        return {"backend": "fake", "model": model}

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        start = time.perf_counter()
        if self.delay_s:
            time.sleep(self.delay_s)
        self.calls.append(len(batch))
        faults = {r.options.get("fault") for r in batch}
        if "auth" in faults:
            raise AuthenticationError("the fake backend was asked to fail authentication (option fault=auth)")
        if "error" in faults:
            raise RuntimeError("the fake backend was asked to fail this batch (option fault=error)")
        images = [fake_image(r) for r in batch]
        latency = (time.perf_counter() - start) / max(len(batch), 1)
        return [GeneratedImage(request=r, image=img, latency_s=latency, batch_size=len(batch), batch_index=i,
                               environment=self.environment(r.model))
                for i, (r, img) in enumerate(zip(batch, images, strict=True))]
