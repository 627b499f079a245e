"""The Scorer contract, which scorers a sweep gets, and the logger's ``prepare`` hook that runs them.

A scorer turns images (with the requests that made them) into metrics; ``Scoring`` holds the scorers of one
sweep (or one ``workbench score``), scores a whole generation batch at once, and never loses an image to a
failed score (the failure becomes the image's ``scoring`` note). Every image gets the image statistics;
images of the shapes model get adherence; every image gets a CLIP score when a CLIP model is named
(``evaluate: {clip: MODEL}`` in the spec, or ``--clip MODEL``).

    >>> scoring = scoring_for(ScoreConfig())
    >>> [s.name for s in scoring.scorers]
    ['image statistics', 'adherence']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..tracking.schema import SCORING_NOTE
from ..types import GeneratedImage, GenerationRequest, GenerationResult
from .adherence import AdherenceScorer
from .clip import ClipScorer
from .image_stats import IMAGE_STATS, image_statistics

if TYPE_CHECKING:
    from PIL import Image

    from ..experiments.spec import ExperimentSpec
    from ..tracking.schema import RunRecord

__all__ = ["Scorer", "ScoreConfig", "ScoreLine", "Scoring", "ImageStatsScorer", "score_config", "scoring_for",
           "describe"]


class Scorer(Protocol):
    """What every scorer offers. ``score`` gets the images a batch made (only those ``applies`` accepts)
    and returns one mapping of metric name to value per image; ``scored(record)`` says whether a logged
    run already holds this scorer's metrics (``workbench score`` skips it then)."""

    name: str
    metrics: tuple[str, ...]
    applies_to: str  # for the plan: which images it scores

    def check(self) -> None: ...  # fail now on a bad model name, loading nothing

    def load(self) -> None: ...  # load its model now (once per process)

    def applies(self, request: GenerationRequest) -> bool: ...

    def score(self, requests: Sequence[GenerationRequest], images: Sequence[Image.Image]
              ) -> list[dict[str, float]]: ...

    def tags(self) -> dict[str, str]: ...

    def parent_params(self) -> dict[str, str]: ...

    def scored(self, record: RunRecord) -> bool: ...


class ImageStatsScorer:
    """``image_stats.image_statistics`` as a ``Scorer``: every image."""

    name = "image statistics"
    metrics = IMAGE_STATS
    applies_to = "every image"

    def check(self) -> None:
        pass

    def load(self) -> None:
        pass

    def applies(self, request: GenerationRequest) -> bool:
        return True

    def score(self, requests: Sequence[GenerationRequest], images: Sequence[Image.Image]
              ) -> list[dict[str, float]]:
        return [image_statistics(image) for image in images]

    def tags(self) -> dict[str, str]:
        return {}

    def parent_params(self) -> dict[str, str]:
        return {}

    def scored(self, record: RunRecord) -> bool:
        return all(name in record.metrics for name in IMAGE_STATS)


@dataclass(frozen=True)
class ScoreConfig:
    """What to score beyond the defaults; plain data, so it travels to Ray workers. ``clip``: a CLIP model."""

    clip: str | None = None


def score_config(spec: ExperimentSpec, clip: str | None = None) -> ScoreConfig:
    """The spec's ``evaluate`` section, with ``clip`` (``--clip``) taking precedence."""
    return ScoreConfig(clip=clip or spec.evaluate.clip)


@dataclass(frozen=True)
class ScoreLine:
    """One line of what a plan will score: the scorer, its metrics, how many images, and why not where not."""

    name: str
    metrics: tuple[str, ...]
    images: int
    note: str = ""
    estimated: bool = False  # extrapolated from the cells a summarised plan built

    def to_dict(self) -> dict[str, object]:
        return {"scorer": self.name, "metrics": list(self.metrics), "images": self.images, "note": self.note,
                "estimated": self.estimated}


class Scoring:
    """The scorers of one sweep. ``prepare`` is the ``BackgroundLogger`` hook; ``score`` scores any images."""

    def __init__(self, scorers: Sequence[Scorer]) -> None:
        self.scorers = list(scorers)

    def check(self) -> None:
        """Fail now on a model name that cannot work, loading nothing (a Ray driver's check)."""
        for scorer in self.scorers:
            scorer.check()

    def load(self) -> None:
        """Load every model now, so that a model that is not there fails before anything is generated."""
        for scorer in self.scorers:
            scorer.load()

    def run_tags(self) -> dict[str, str]:
        """Tags for every run these scorers score (the CLIP model and its weights hash)."""
        return {k: v for scorer in self.scorers for k, v in scorer.tags().items()}

    def parent_params(self) -> dict[str, str]:
        return {k: v for scorer in self.scorers for k, v in scorer.parent_params().items()}

    def score(self, requests: Sequence[GenerationRequest], images: Sequence[Image.Image],
              scorers: Sequence[Scorer] | None = None) -> tuple[list[dict[str, float]], list[str]]:
        """Metrics for each image from every scorer that applies (one batched call per scorer), and the
        failures (one line per scorer that raised: its metrics are missing, the others are kept)."""
        metrics: list[dict[str, float]] = [{} for _ in requests]
        failures: list[str] = []
        for scorer in self.scorers if scorers is None else scorers:
            chosen = [i for i, request in enumerate(requests) if scorer.applies(request)]
            if not chosen:
                continue
            try:
                values = scorer.score([requests[i] for i in chosen], [images[i] for i in chosen])
            except Exception as exc:  # one scorer's failure costs its own metrics only
                failures.append(f"{scorer.name} not computed: {type(exc).__name__}: {str(exc)[:400]}")
                continue
            for i, value in zip(chosen, values, strict=True):
                metrics[i].update(value)
        return metrics, failures

    def prepare(self, results: list[GenerationResult]) -> list[GenerationResult]:
        """The logger's hook: each finished image with its scores added to ``metrics`` (failures: a note)."""
        images = [(i, r) for i, r in enumerate(results) if isinstance(r, GeneratedImage)]
        if not images:
            return results
        metrics, failures = self.score([r.request for _, r in images], [r.image for _, r in images])
        out = list(results)
        for (i, result), values in zip(images, metrics, strict=True):
            notes = {**result.notes, SCORING_NOTE: "; ".join(failures)} if failures else result.notes
            out[i] = dataclasses.replace(result, metrics={**result.metrics, **values}, notes=notes)
        return out


def scoring_for(config: ScoreConfig) -> Scoring:
    """The scorers ``config`` asks for: image statistics and adherence always (each picks its images), CLIP
    when a model is named."""
    scorers: list[Scorer] = [ImageStatsScorer(), AdherenceScorer()]
    if config.clip:
        scorers.append(ClipScorer(config.clip))
    return Scoring(scorers)


def describe(config: ScoreConfig, requests: Sequence[GenerationRequest]) -> list[ScoreLine]:
    """What a plan will score: each scorer, its metrics and how many of ``requests`` it applies to."""
    lines = []
    for scorer in scoring_for(config).scorers:
        count = sum(1 for r in requests if scorer.applies(r))
        note = "" if count else f"not computed: it scores {scorer.applies_to}, and this plan has none"
        name = f"{scorer.name} ({config.clip})" if isinstance(scorer, ClipScorer) else scorer.name
        lines.append(ScoreLine(name, scorer.metrics, count, note))
    if not config.clip:
        lines.append(ScoreLine(ClipScorer.name, ClipScorer.metrics, 0,
                               "not computed: no CLIP model named; add `evaluate: {clip: MODEL}` to the spec "
                               "or pass --clip MODEL (a hub id such as openai/clip-vit-base-patch32, or a "
                               "local folder)"))
    return lines
