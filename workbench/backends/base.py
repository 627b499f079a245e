"""The backend contract: declared capabilities plus ``generate(batch)``.

A backend is one file, self-contained. The runner and the plan read ``capabilities`` and call
``validate`` before anything is generated; ``generate`` is the only method that does work.

Example (a complete backend):

    class SolidColour(Backend):
        name = "solid"

        def capabilities(self, model):
            return Capabilities(seeds=True, max_batch=64)

        def generate(self, batch):
            return [GeneratedImage(request=r, image=Image.new("RGB", (r.width, r.height), "red"))
                    for r in batch]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import UnsupportedRequestError
from ..hashing import canonical_json
from ..types import GenerationRequest, GenerationResult, Lora

__all__ = ["Backend", "Capabilities"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend/model can honour. The plan and the runner read these, never guess."""

    seeds: bool = True  # a seed fixes the image
    max_batch: int = 1  # requests that may share one call
    negative_prompt: bool = True
    guidance: bool = True
    steps: bool = True
    schedulers: bool = False  # a scheduler can be chosen by name
    revised_prompt: bool = False  # the backend may rewrite the prompt and tell us
    sizes: tuple[tuple[int, int], ...] | None = None  # None: any size (subject to ``size_multiple``)
    size_multiple: int = 8
    concurrency: int = 1  # calls in flight at once (API backends: a few)
    seconds_per_image: float | None = None  # rough prior for the plan's time estimate


class Backend(ABC):
    """Base class of every backend. Subclasses set ``name`` and implement ``generate``."""

    name: ClassVar[str]

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities()

    def validate(self, request: GenerationRequest) -> None:
        """Raise ``UnsupportedRequestError`` (naming the allowed values) if ``request`` can't run."""
        caps = self.capabilities(request.model)
        if caps.sizes is not None and (request.width, request.height) not in caps.sizes:
            allowed = ", ".join(f"{w}x{h}" for w, h in caps.sizes)
            raise UnsupportedRequestError(
                f"{self.name} model '{request.model}' cannot make {request.width}x{request.height} "
                f"images; allowed sizes: {allowed}")
        if caps.sizes is None and (request.width % caps.size_multiple or request.height % caps.size_multiple):
            raise UnsupportedRequestError(
                f"{self.name}: width and height must be multiples of {caps.size_multiple}, "
                f"got {request.width}x{request.height}")
        if request.scheduler and not caps.schedulers:
            raise UnsupportedRequestError(
                f"{self.name} model '{request.model}' has no choice of scheduler; remove "
                f"'scheduler: {request.scheduler}' from the spec")

    def uncontrolled(self, request: GenerationRequest) -> dict[str, str]:
        """Parameters of ``request`` this backend cannot hold, with why (logged with the run)."""
        caps = self.capabilities(request.model)
        out: dict[str, str] = {}
        if not caps.seeds:
            out["seed"] = "not supported by the backend: replicates are independent draws"
        if not caps.guidance:
            out["guidance"] = "ignored by the backend"
        if not caps.steps:
            out["steps"] = "ignored by the backend"
        if request.negative_prompt and not caps.negative_prompt:
            out["negative_prompt"] = "ignored by the backend"
        return out

    def defaults(self, model: str) -> dict[str, Any]:
        """Generation parameters ``model`` is best run with (steps, guidance, width, height), for a spec and
        template that set none of them; empty where the backend has no opinion."""
        return {}

    def resolve_loras(self, loras: tuple[Lora, ...]) -> tuple[Lora, ...]:
        """The LoRAs with the hash of their weights filled in (the plan calls it; the run key uses the hash).

        A backend that takes no LoRAs refuses them here, at plan time."""
        raise UnsupportedRequestError(f"{self.name} takes no LoRAs; remove 'loras' from the spec or run it on "
                                      f"the diffusers backend")

    def estimate_cost(self, request: GenerationRequest) -> float | None:
        """Expected price of one image in USD (0 for local backends; None where it is unknown)."""
        return 0.0

    def warnings(self, request: GenerationRequest) -> list[str]:
        """What the plan should tell before ``request`` is sent (a model shutting down, an unknown cost)."""
        return []

    def setup_warnings(self) -> list[str]:
        """What would stop ``preflight`` (and so ``workbench run``) today, said cheaply for the plan: an API
        key that is not set. Empty where nothing is missing."""
        return []

    def estimate_seconds(self, request: GenerationRequest) -> float | None:
        """Rough time per image, used when the tracking store has no history to go by."""
        return self.capabilities(request.model).seconds_per_image

    def batch_key(self, request: GenerationRequest) -> Hashable:
        """Requests with equal keys may share one ``generate`` call (up to ``max_batch``)."""
        return canonical_json({
            "model": request.model, "width": request.width, "height": request.height,
            "steps": request.steps, "guidance": float(request.guidance), "scheduler": request.scheduler,
            "options": dict(request.options),
        })

    def preflight(self, models: set[str]) -> None:
        """Check, before anything runs, that the backend can work at all (keys set, extras installed).

        Raise ``AuthenticationError`` or ``MissingDependencyError`` with a message that says how to fix it.
        """

    def model_hash(self, model: str) -> str | None:
        """What identifies the weights behind ``model`` beyond its name (see ``GenerationRequest.model_hash``);
        None where the name is the identity (API models, pinned hub revisions)."""
        return None

    def environment(self, model: str) -> dict[str, Any]:
        """Fingerprint of what produced the images (versions, device, weights)."""
        return {}

    @abstractmethod
    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate one result per request, in order.

        Per-request problems (a blocked prompt) come back as ``GenerationFailure``; problems that
        hit the whole call raise a ``BackendError`` subclass, which the runner retries or reports.
        """

    def close(self) -> None:
        """Release resources (pipelines, HTTP clients)."""
