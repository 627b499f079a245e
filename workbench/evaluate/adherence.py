"""Adherence of a shapes image to its prompt: the shapes model's pixel checks as metrics.

On runs whose model is ``embedded:shapes`` or whose template is ``shapes``, and whose prompt parses in the
shapes grammar (``models.shapes.dataset.parse_prompt``), ``models.shapes.scorer.score`` reads what the
picture shows and compares it with what the prompt asks: ``adherence.<attribute>`` is 1 or 0 for each
attribute the prompt names (shape, colour, size, position, background), ``adherence.overall`` their mean.
No model, numpy and PIL only.

    >>> from workbench.models.shapes.dataset import draw
    >>> prompt = "a large red circle on the left, white background"
    >>> request = GenerationRequest(backend="fake", model="embedded:shapes", prompt=prompt)
    >>> scorer = AdherenceScorer()
    >>> scorer.applies(request), scorer.score([request], [draw({"shape": "circle", "colour": "red",
    ...     "size": "large", "position": "left", "background": "white"})])[0]["adherence.overall"]
    (True, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..models.shapes.dataset import ATTRIBUTES, parse_prompt
from ..models.shapes.scorer import score
from ..tracking.schema import ADHERENCE_PREFIX
from ..types import GenerationRequest

if TYPE_CHECKING:
    from PIL import Image

    from ..tracking.schema import RunRecord

__all__ = ["AdherenceScorer", "SHAPES_MODEL", "SHAPES_TEMPLATE", "OVERALL"]

SHAPES_MODEL, SHAPES_TEMPLATE = "embedded:shapes", "shapes"
OVERALL = ADHERENCE_PREFIX + "overall"


class AdherenceScorer:
    """The shapes model's adherence as a ``scoring.Scorer``."""

    name = "adherence"
    metrics = (OVERALL, *(ADHERENCE_PREFIX + a for a in ATTRIBUTES))
    applies_to = f"images of {SHAPES_MODEL} or of template '{SHAPES_TEMPLATE}' whose prompt names a shape"

    def check(self) -> None:
        pass

    def load(self) -> None:
        pass

    def applies(self, request: GenerationRequest) -> bool:
        shapes = request.model == SHAPES_MODEL or request.template == SHAPES_TEMPLATE
        return shapes and parse_prompt(request.prompt) is not None

    def score(self, requests: Sequence[GenerationRequest], images: Sequence[Image.Image]
              ) -> list[dict[str, float]]:
        out = []
        for request, image in zip(requests, images, strict=True):
            checks = score(image, request.prompt)
            out.append({ADHERENCE_PREFIX + name: float(value) for name, value in checks.items()})
        return out

    def tags(self) -> dict[str, str]:
        return {}

    def parent_params(self) -> dict[str, str]:
        return {}

    def scored(self, record: RunRecord) -> bool:
        return OVERALL in record.metrics
