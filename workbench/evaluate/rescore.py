"""``rescore()``: add scores to an experiment's existing image runs, reading their images from the store.

Nothing is generated: each FINISHED image run's PNG and request are read back, every scorer that applies and
whose metrics the run does not hold yet scores it (batched, like a sweep), and the metrics (and the CLIP
model's tags) are added to the run. Idempotent: a second call finds everything scored and writes nothing
(``force=True`` scores again). Runs logged before a scorer existed get it this way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from ..tracking.schema import REQUEST_ARTIFACT, RunRecord
from ..tracking.store import Tracker
from ..types import GenerationRequest
from .report import finished_records
from .scoring import ScoreConfig, Scorer, scoring_for

__all__ = ["RescoreSummary", "rescore"]

BATCH = 16  # images read and scored together


@dataclass
class RescoreSummary:
    """What ``rescore`` did: runs looked at, scored and already scored; the metrics written; what failed."""

    experiment: str
    runs: int = 0
    scored: int = 0
    skipped: int = 0  # already held every metric that applies to them
    metrics: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "run id: why"

    @property
    def ok(self) -> bool:
        return not self.failures


def _request(tracker: Tracker, record: RunRecord) -> GenerationRequest:
    return GenerationRequest.from_dict(json.loads(tracker.load_bytes(record.run_id, REQUEST_ARTIFACT)))


def rescore(experiment: str, *, clip: str | None = None, tracking_uri: str | None = None,
            tracker: Tracker | None = None, force: bool = False,
            on_batch: Callable[[int, int], None] | None = None) -> RescoreSummary:
    """Score the FINISHED image runs of ``experiment`` that lack a score (``clip``: a CLIP model to add).

    ``on_batch(done, total)`` is called after each batch (a progress bar). Returns a ``RescoreSummary``.

    Example:
        >>> rescore("quickstart", clip="openai/clip-vit-base-patch32")  # doctest: +SKIP
        RescoreSummary(experiment='quickstart', runs=15, scored=15, skipped=0, metrics=['clip_score', ...])
    """
    tracker = tracker or Tracker(tracking_uri, create=False)  # its runs must be there: never make a store
    tracker.check()
    records = [r for r in finished_records(tracker, experiment) if r.outcome == "FINISHED"]
    scoring = scoring_for(ScoreConfig(clip=clip))
    scoring.load()  # a CLIP model that is not there fails before any run is touched
    summary = RescoreSummary(experiment=experiment, runs=len(records))
    written: set[str] = set()
    for start in range(0, len(records), BATCH):
        _score_batch(tracker, records[start:start + BATCH], scoring.scorers, force, summary, written)
        if on_batch is not None:
            on_batch(min(start + BATCH, len(records)), len(records))
    summary.metrics = sorted(written)
    return summary


def _score_batch(tracker: Tracker, records: list[RunRecord], scorers: list[Scorer], force: bool,
                 summary: RescoreSummary, written: set[str]) -> None:
    todo: list[tuple[RunRecord, GenerationRequest, list[Scorer]]] = []
    for record in records:
        wanted = [s for s in scorers if force or not s.scored(record)]
        if not wanted:
            summary.skipped += 1
            continue
        try:
            request = _request(tracker, record)
        except Exception as exc:  # a run logged without its request: nothing to score it against
            summary.failures.append(f"{record.run_id}: its {REQUEST_ARTIFACT} cannot be read "
                                    f"({type(exc).__name__})")
            continue
        wanted = [s for s in wanted if s.applies(request)]
        if wanted:
            todo.append((record, request, wanted))
        else:
            summary.skipped += 1
    images = {}
    for record, _, _ in todo:
        try:
            images[record.run_id] = tracker.load_image(record.run_id)
        except Exception as exc:
            summary.failures.append(f"{record.run_id}: its image cannot be read "
                                    f"({type(exc).__name__}: {exc})")
    metrics: dict[str, dict[str, float]] = {}
    tags: dict[str, dict[str, str]] = {}
    for scorer in scorers:
        chosen = [(r, q) for r, q, wanted in todo if scorer in wanted and r.run_id in images]
        if not chosen:
            continue
        try:
            values = scorer.score([q for _, q in chosen], [images[r.run_id] for r, _ in chosen])
        except Exception as exc:  # this scorer's metrics are missing; the others are still written
            summary.failures += [f"{r.run_id}: {scorer.name} failed ({type(exc).__name__}: {str(exc)[:200]})"
                                 for r, _ in chosen]
            continue
        for (record, _), value in zip(chosen, values, strict=True):
            metrics.setdefault(record.run_id, {}).update(value)
            tags.setdefault(record.run_id, {}).update(scorer.tags())
    for run_id, values in metrics.items():
        tracker.log_metrics(run_id, values, tags=tags.get(run_id))
        written.update(values)
        summary.scored += 1
