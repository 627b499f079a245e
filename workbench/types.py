"""Core value types: what is asked for (``GenerationRequest``) and what came back (``GenerationResult``).

All are frozen dataclasses. A run read back from the store is ``tracking.schema.RunRecord``. ``GenerationRequest.run_key`` hashes exactly the fields that
determine the image (see ``IMAGE_FIELDS``); provenance (template, experiment, factor) is
carried along but never changes the key, so the same image asked for by two experiments is
recognised as the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .hashing import canonical_json, run_key

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "IMAGE_FIELDS",
    "Lora",
    "GenerationRequest",
    "GeneratedImage",
    "GenerationFailure",
    "GenerationResult",
]

# The fields of a request that determine the image: the run key covers these and only these.
IMAGE_FIELDS = ("backend", "model", "model_hash", "prompt", "negative_prompt", "seed", "width", "height", "steps",
                "guidance", "scheduler", "options")


@dataclass(frozen=True)
class Lora:
    """A LoRA applied on top of the model: a file (or a folder holding one, or a hub id) at a scale.

    ``enabled=False`` is the "off" level of a ``lora.NAME`` factor: the request names the LoRA (so its
    params and grids say "off") but the image is made without it, and its run key is that of no LoRA.
    ``hash`` identifies the weights (set by the plan from the file): the run key uses it, not the path.
    """

    name: str
    source: str
    scale: float = 1.0
    weight_name: str | None = None
    enabled: bool = True
    hash: str | None = None

    def key_fields(self) -> dict[str, Any]:
        identity = {"hash": self.hash} if self.hash else {"source": self.source, "weight_name": self.weight_name}
        return {**identity, "scale": float(self.scale)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GenerationRequest:
    """One image to generate.

    Example:
        >>> r = GenerationRequest(backend="diffusers", model="embedded:tiny-sd", prompt="a red circle",
        ...                       seed=1, width=64, height=64, steps=10)
        >>> len(r.run_key)
        32
    """

    backend: str
    model: str
    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    width: int = 512
    height: int = 512
    steps: int = 30
    guidance: float = 7.5
    scheduler: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    # What the weights behind ``model`` are, where the backend can tell (a content hash of a local or
    # embedded model's folder, set by the plan): the same name with other weights is another image.
    model_hash: str | None = None
    # Replicate index inside a cell; part of the key only where there is no seed (API backends),
    # so that n replicates of a seedless request stay n distinct runs.
    replicate: int = 0
    # LoRAs on top of the model, in the order they are applied; the enabled ones are part of the run key.
    loras: tuple[Lora, ...] = ()
    # Provenance: where the request came from. Not part of the run key.
    template: str | None = None
    template_version: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    experiment: str | None = None
    factor: str | None = None
    level: Any = None

    def image_fields(self) -> dict[str, Any]:
        """The fields that determine the image, as plain JSON-able values."""
        fields = {name: getattr(self, name) for name in IMAGE_FIELDS}
        fields["options"] = dict(self.options)
        fields["guidance"] = float(self.guidance)
        if self.model_hash is None:  # API models and hub ids: the name (and revision) is the identity
            del fields["model_hash"]
        if self.seed is None:
            fields["replicate"] = self.replicate
        active = [lora.key_fields() for lora in self.loras if lora.enabled]
        if active:  # no LoRA keeps the run keys requests had before LoRAs existed
            fields["loras"] = active
        return fields

    @property
    def run_key(self) -> str:
        return run_key(self.image_fields())

    def factor_values(self) -> dict[str, Any]:
        """Flat view used for factors, grids and MLflow params (``var.NAME``, ``option.NAME``)."""
        values: dict[str, Any] = {
            "backend": self.backend,
            "model": self.model,
            "template": self.template,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "replicate": self.replicate,
            "width": self.width,
            "height": self.height,
            "size": f"{self.width}x{self.height}",
            "steps": self.steps,
            "guidance": float(self.guidance),
            "scheduler": self.scheduler,
        }
        values.update({f"var.{k}": v for k, v in self.variables.items()})
        values.update({f"option.{k}": v for k, v in self.options.items()})
        for lora in self.loras:
            values[f"lora.{lora.name}"] = "on" if lora.enabled else "off"
            values[f"lora.{lora.name}.scale"] = float(lora.scale)
        return values

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["options"] = dict(self.options)
        data["variables"] = dict(self.variables)
        data["loras"] = [lora.to_dict() for lora in self.loras]
        if not data["loras"]:
            del data["loras"]  # the request JSON of a run without LoRAs reads as it always did
        return data

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationRequest:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown request fields {unknown}; known fields are {sorted(known)}")
        fields = dict(data)
        if "loras" in fields:
            fields["loras"] = tuple(lora if isinstance(lora, Lora) else Lora(**lora) for lora in fields["loras"])
        return cls(**fields)

    def replace(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GeneratedImage:
    """A successful generation: the image and everything the backend told us about it."""

    request: GenerationRequest
    image: Image.Image
    revised_prompt: str | None = None
    backend_ids: Mapping[str, str] = field(default_factory=dict)  # request id, prediction id, version
    latency_s: float = 0.0  # wall time of the backend call, divided over the batch
    cost_usd: float | None = None
    # "nan", "black", "nsfw", "truncated_prompt", "seed_not_controlled", ...
    flags: frozenset[str] = frozenset()
    notes: Mapping[str, str] = field(default_factory=dict)  # human-readable detail per flag
    environment: Mapping[str, Any] = field(default_factory=dict)  # library versions, device, dtype...
    metrics: Mapping[str, float] = field(default_factory=dict)  # backend-reported numbers (predict_time_s)
    # The backend call it came from, set by the runner (the one place that knows the batch): the only record
    # of the batch position; the environment written next to the image derives it from here.
    batch_size: int = 1
    batch_index: int = 0
    batch_id: str | None = None  # shared by every result of one backend call
    # What the backend sent, when it was not our own PNG (API webp/jpeg): kept as an artifact.
    original_bytes: bytes | None = None
    original_format: str | None = None  # "png", "webp", "jpeg"

    status: Literal["FINISHED"] = "FINISHED"


@dataclass(frozen=True)
class GenerationFailure:
    """A request that produced no usable image. ``status`` BLOCKED means a safety filter."""

    request: GenerationRequest
    reason: str
    status: Literal["FAILED", "BLOCKED"] = "FAILED"
    error_type: str = ""
    backend_ids: Mapping[str, str] = field(default_factory=dict)
    latency_s: float = 0.0
    environment: Mapping[str, Any] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)  # e.g. the backend's logs
    cost_usd: float | None = None  # some APIs bill failed or blocked attempts too
    metrics: Mapping[str, float] = field(default_factory=dict)
    batch_size: int = 1  # the batch it failed in, as for GeneratedImage
    batch_index: int = 0
    batch_id: str | None = None  # None where no backend call answered (all retries failed)


GenerationResult = GeneratedImage | GenerationFailure

