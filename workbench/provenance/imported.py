"""What another tool's metadata (an A1111 text, a ComfyUI graph, InvokeAI's metadata) turns into.

``Imported`` is the request a file describes, as far as it maps onto one, plus what it does not hold
(``not_reproduced``: the file's words for LoRAs, hires passes, upscalers...) and how values were read
(``notes``: assumptions worth knowing, such as the schedule a missing ``Schedule type`` stands for). A file
that cannot become a request at all raises ``MetadataError`` naming what could not be mapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..types import GenerationRequest

__all__ = ["Imported", "SOURCES"]

# The tools whose files are read: the PNG text chunk each writes, and how its files are named here.
SOURCES = {"a1111": "A1111 parameters", "comfyui": "ComfyUI graph", "invokeai": "InvokeAI metadata"}


@dataclass(frozen=True)
class Imported:
    """A request read from another tool's metadata, with what it could not hold."""

    source: str  # a key of SOURCES
    request: GenerationRequest
    not_reproduced: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def described(self) -> str:
        return SOURCES.get(self.source, self.source)
