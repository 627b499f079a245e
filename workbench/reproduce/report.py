"""What a reproduction found: ``ReproductionReport`` (for people and for machines) and the pixel comparison.

``compare_images`` says bit-exact, or how far two images are apart: the largest difference, the fraction
of pixels that differ and the PSNR. The report adds the request, the batch shapes and the environment
fields that differ; ``to_text()`` is what ``workbench reproduce`` prints, ``to_json()`` its ``--json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..hashing import canonical_json
from ..provenance.imported import SOURCES
from ..provenance.png import jsonable
from ..tracking.schema import REPRODUCES_TAG
from ..types import GenerationRequest

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["ReproductionReport", "compare_images"]


@dataclass
class ReproductionReport:
    """What a reproduction found. ``to_text()`` for people, ``to_dict()`` / ``to_json()`` for machines."""

    source: str
    source_kind: str  # "run", "png" (workbench chunk), or another tool's file: "a1111", "comfyui", "invokeai"
    request: GenerationRequest
    original_run_id: str | None
    tracking_uri: str | None
    seed_controlled: bool
    exact_batch: bool  # regenerated with its whole original batch
    original_batch_size: int | None  # None where unknown (A1111 files)
    original_batch_index: int | None
    batch_size: int  # of the reproduction's backend call
    batch_index: int
    size_matches: bool
    bit_exact: bool
    max_abs_diff: int | None  # 0..255, None when the sizes differ
    fraction_differing: float | None  # of pixels with any channel different
    psnr: float | None  # dB; inf when identical
    environment_diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # fields that can change pixels
    informational_diff: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # workbench, git, batch position
    original_environment: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    alone_why: str | None = None  # why an image of a batch was regenerated alone
    reproduction_run_id: str | None = None
    image: Image.Image | None = field(default=None, repr=False, compare=False)
    original_image: Image.Image | None = field(default=None, repr=False, compare=False)

    @property
    def verdict(self) -> str:
        """``bit-exact`` or ``differs: max diff N, PSNR x dB, fraction y``."""
        if self.bit_exact:
            return "bit-exact"
        if not self.size_matches:
            size = f"{self.image.width}x{self.image.height}" if self.image is not None else "?"
            original = f"{self.original_image.width}x{self.original_image.height}" if self.original_image else "?"
            return f"differs: size {size} vs {original} in the original"
        return (f"differs: max diff {self.max_abs_diff}, PSNR {self.psnr:.2f} dB, "
                f"fraction {self.fraction_differing:.4f}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "source_kind": self.source_kind, "original_run_id": self.original_run_id,
            "reproduction_run_id": self.reproduction_run_id, "tracking_uri": self.tracking_uri,
            "verdict": self.verdict, "bit_exact": self.bit_exact, "size_matches": self.size_matches,
            "max_abs_diff": self.max_abs_diff, "fraction_differing": self.fraction_differing,
            # null when identical (infinite PSNR): JSON has no infinity
            "psnr_db": self.psnr if self.psnr is not None and math.isfinite(self.psnr) else None,
            "seed_controlled": self.seed_controlled, "exact_batch": self.exact_batch,
            "alone_why": self.alone_why,
            "original_batch": {"size": self.original_batch_size, "index": self.original_batch_index},
            "reproduction_batch": {"size": self.batch_size, "index": self.batch_index},
            "run_key": self.request.run_key, "request": self.request.to_dict(),
            "environment_diff": {k: {"original": a, "reproduction": b}
                                 for k, (a, b) in self.environment_diff.items()},
            "informational_diff": {k: {"original": a, "reproduction": b}
                                   for k, (a, b) in self.informational_diff.items()},
            "notes": list(self.notes), "original_environment": self.original_environment,
            "environment": self.environment,
        }

    def to_json(self) -> str:
        return json.dumps(jsonable(self.to_dict()), indent=2, ensure_ascii=False)

    def to_text(self) -> str:
        r = self.request
        origin = {"run": f"run {self.original_run_id}", "png": f"{self.source}",
                  **{kind: f"{self.source} ({text})" for kind, text in SOURCES.items()}}[self.source_kind]
        if self.source_kind == "png" and self.original_run_id:
            origin += f" (run {self.original_run_id})"
        seed = r.seed if r.seed is not None else "none"
        lines = [
            f"reproduction of {origin}",
            f"  request:      {r.backend}:{r.model}, seed {seed}, {r.width}x{r.height}, {r.steps} steps, "
            f"guidance {float(r.guidance):g}, scheduler {r.scheduler or 'default'}",
            f"  prompt:       {_short(r.prompt)}",
        ]
        if r.negative_prompt:
            lines.append(f"  negative:     {_short(r.negative_prompt)}")
        if self.original_batch_size is not None:
            how = "with its whole batch" if self.exact_batch else "alone"
            why = ", read from the store" if self.exact_batch else (f", {self.alone_why}" if self.alone_why else "")
            lines.append(f"  batch:        original image {self.original_batch_index + 1} of "
                         f"{self.original_batch_size}; regenerated {how} (image {self.batch_index + 1} of "
                         f"{self.batch_size}){why}")
        lines.append(f"  verdict:      {self.verdict}")
        if not self.seed_controlled:
            lines.append("  seed:         not controlled by the backend: this cannot be reproduced exactly")
        if self.source_kind in SOURCES:
            lines.append(f"  environment:  not recorded in the file ({SOURCES[self.source_kind]} only)")
        elif self.environment_diff:
            lines.append(f"  environment:  {len(self.environment_diff)} field(s) differ")
            for key, (old, new) in self.environment_diff.items():
                lines.append(f"    {key}: {_short(_show(old), 50)} → {_short(_show(new), 50)}")
        else:
            lines.append("  environment:  the same libraries, device, dtype, model and scheduler")
        if self.source_kind not in SOURCES and self.informational_diff:
            lines.append("  also differ:  " + "; ".join(
                f"{key} {_short(_show(old), 40)} → {_short(_show(new), 40)}"
                for key, (old, new) in self.informational_diff.items()))
        if self.reproduction_run_id:
            lines.append(f"  logged as:    run {self.reproduction_run_id} ({REPRODUCES_TAG}="
                         f"{self.original_run_id or '-'})")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def compare_images(original: Image.Image, new: Image.Image) -> dict[str, Any]:
    """Pixel comparison: ``size_matches``, ``bit_exact``, ``max_abs_diff`` (0–255), ``fraction_differing``
    (pixels with any channel different) and ``psnr`` in dB (inf when identical).

    >>> from PIL import Image
    >>> compare_images(Image.new("RGB", (2, 2)), Image.new("RGB", (2, 2), (0, 0, 4)))["max_abs_diff"]
    4
    """
    if original.size != new.size:
        return {"size_matches": False, "bit_exact": False, "max_abs_diff": None, "fraction_differing": None,
                "psnr": None}
    mode = original.mode if original.mode == new.mode else ("RGBA" if "A" in original.mode + new.mode else "RGB")
    a = np.asarray(original.convert(mode), dtype=np.int16)
    b = np.asarray(new.convert(mode), dtype=np.int16)
    diff = np.abs(a - b)
    per_pixel = diff if diff.ndim == 2 else diff.max(axis=-1)
    mse = float(np.mean((a - b).astype(np.float64) ** 2))
    return {
        "size_matches": True,
        "bit_exact": bool(mse == 0.0),
        "max_abs_diff": int(diff.max()) if diff.size else 0,
        "fraction_differing": float(np.count_nonzero(per_pixel)) / per_pixel.size if per_pixel.size else 0.0,
        "psnr": math.inf if mse == 0.0 else 10.0 * math.log10(255.0 ** 2 / mse),
    }


def _short(text: str, limit: int = 100) -> str:
    text = text.replace("\n", "⏎")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return canonical_json(value)
    return "(absent)" if value is None else str(value)
