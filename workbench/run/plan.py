"""What a spec would do, before anything runs: cells, images, what is already done, time and cost.

``make_plan`` expands the spec, validates every request against its backend (so a request the
backend can't honour fails here, naming the allowed values), looks up finished runs by run key,
and groups what is left into batches. Nothing is generated.

A plan of more than ``SUMMARY_CELLS`` cells, asked with ``summarise=True`` (what ``workbench plan`` does), is a
summary: the first and last ``SHOWN_CELLS`` cells are expanded, validated, costed and looked up, and the rest are
counted, not built (a million-cell grid answers at once). ``run`` always plans every cell.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend
from ..backends.registry import get_backend
from ..errors import UnsupportedRequestError
from ..evaluate.scoring import ScoreConfig, ScoreLine, describe, score_config, scoring_for
from ..experiments.expand import count_cells, expand, summary_cells
from ..experiments.spec import ExperimentSpec
from ..prompts.templates import TemplateLibrary
from ..tracking.schema import LATENCY_METRIC, RunRecord
from ..tracking.store import Tracker
from ..types import GenerationRequest

__all__ = ["Plan", "PlanRow", "PlanSummary", "make_plan", "make_batches", "format_usd", "SUMMARY_CELLS"]

SUMMARY_CELLS = 200  # a plan of more cells can be a summary (its table would be too long to read anyway)
SHOWN_CELLS = 5  # a summary shows the first and the last this many cells


def format_usd(amount: float, *, digits: int = 3) -> str:
    """Money as people read it: cents from $1 up, else as many decimals as ``digits`` significant figures need.

    Example:
        >>> format_usd(12.345), format_usd(0.04), format_usd(0.001), format_usd(0.0125), format_usd(0)
        ('$12.35', '$0.04', '$0.001', '$0.0125', '$0.00')
    """
    if amount < 0:
        return "-" + format_usd(-amount, digits=digits)
    if amount == 0 or round(amount, 2) >= 1:
        return f"${amount:,.2f}"
    # Below a dollar, cents hide a $0.003 image or a --max-cost 0.001: keep the significant figures.
    decimals = max(2, digits - 1 - math.floor(math.log10(amount)))
    text = f"{amount:.{decimals}f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


@dataclass(frozen=True)
class PlanRow:
    """One cell of the experiment."""

    group: str
    label: str
    backend: str
    model: str
    images: int
    done: int
    est_seconds: float | None
    est_cost: float | None  # None: the backend cannot price some of its images

    @property
    def to_run(self) -> int:
        return self.images - self.done


@dataclass(frozen=True)
class PlanSummary:
    """What a summarised plan counts without building: every cell and image of the spec."""

    cells: int
    images: int  # cells × seeds (cells equal to another, such as a grid cell at the base levels, count twice)


@dataclass
class Plan:
    spec: ExperimentSpec
    experiment: str
    requests: list[GenerationRequest]
    done: dict[str, str]  # run key → run id of finished runs that will be skipped
    rows: list[PlanRow]
    batches: list[list[GenerationRequest]]
    uncontrolled: dict[str, dict[str, str]] = field(default_factory=dict)  # backend → param → why
    backends: dict[str, Backend] = field(default_factory=dict)
    scoring: ScoreConfig = field(default_factory=ScoreConfig)  # what is scored beyond the defaults (CLIP)
    warnings: list[str] = field(default_factory=list)  # what the backends say before anything is sent
    max_batch: int | None = None  # --max-batch, over the spec's own
    summary: PlanSummary | None = None  # set when only some cells were planned (``rows``, ``requests``)

    @property
    def scores(self) -> list[ScoreLine]:
        """What will be scored on the images to run: each scorer, its metrics, how many images, or why not.

        A summarised plan's counts are extrapolated from the cells it planned (``estimated``)."""
        lines = describe(self.scoring, self.todo)
        if self.summary is None:
            return lines
        return [dataclasses.replace(line, images=round(line.images * self._scale), estimated=True) for line in lines]

    @property
    def todo(self) -> list[GenerationRequest]:
        return [r for r in self.requests if r.run_key not in self.done]

    @property
    def total_images(self) -> int:
        return self.summary.images if self.summary else len(self.requests)

    @property
    def _scale(self) -> float:
        """From the cells planned to all of them (1 unless summarised)."""
        return self.summary.images / len(self.requests) if self.summary and self.requests else 1.0

    @property
    def est_seconds(self) -> float | None:
        """Seconds for what is left; a summary's is extrapolated from the cells it planned."""
        values = [r.est_seconds for r in self.rows if r.to_run]
        return None if any(v is None for v in values) else sum(v or 0.0 for v in values) * self._scale

    @property
    def est_cost(self) -> float:
        """The cost of the images that can be priced (``cost_unknown`` names the cells that cannot); a
        summary's is extrapolated from the cells it planned."""
        return sum(r.est_cost or 0.0 for r in self.rows) * self._scale

    @property
    def cost_unknown(self) -> list[str]:
        """``backend:model`` of every cell whose cost the backend cannot estimate."""
        return list(dict.fromkeys(f"{r.backend}:{r.model}" for r in self.rows if r.est_cost is None))

    def cost_by_backend(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for row in self.rows:
            out[row.backend] = out.get(row.backend, 0.0) + (row.est_cost or 0.0) * self._scale
        return out

    def with_done(self, finished: dict[str, str]) -> Plan:
        """This plan again, with every run key of ``finished`` (run key → run id) done: what another run of
        the experiment finished while this one waited. Rows keep their estimates, scaled to what is left."""
        done = {**self.done, **{k: v for k, v in finished.items() if k in {r.run_key for r in self.requests}}}
        if done == self.done:
            return self
        rows, todo = [], [r for r in self.requests if r.run_key not in done]
        for row in self.rows:
            members = [r for r in self.requests if _cell(r) == (row.group, row.label, row.backend, row.model)]
            left = sum(1 for r in members if r.run_key not in done)
            scale = left / row.to_run if row.to_run else 0.0
            rows.append(dataclasses.replace(
                row, done=row.images - left, est_seconds=None if row.est_seconds is None else row.est_seconds * scale,
                est_cost=None if row.est_cost is None else row.est_cost * scale))
        return dataclasses.replace(self, done=done, rows=rows,
                                   batches=make_batches(todo, self.backends, self.max_batch or self.spec.max_batch))

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment, "images": self.total_images, "done": len(self.done),
            "summary": None if self.summary is None else {"cells": self.summary.cells, "cells_shown": len(self.rows),
                                                          "images": self.summary.images},
            "to_run": len(self.todo), "batches": len(self.batches), "est_seconds": self.est_seconds,
            "est_cost_usd": self.est_cost, "cost_by_backend": self.cost_by_backend(),
            "cost_unknown": self.cost_unknown, "uncontrolled": self.uncontrolled,
            "scores": [line.to_dict() for line in self.scores], "warnings": self.warnings,
            "cells": [{"group": r.group, "cell": r.label, "backend": r.backend, "model": r.model,
                       "images": r.images, "done": r.done, "to_run": r.to_run, "est_seconds": r.est_seconds,
                       "est_cost_usd": r.est_cost} for r in self.rows],
        }


def make_batches(requests: Sequence[GenerationRequest], backends: dict[str, Backend],
                 max_batch: int | None = None) -> list[list[GenerationRequest]]:
    """Group requests that can share one backend call, in first-seen order, up to each max batch."""
    groups: OrderedDict[tuple[str, Any], list[GenerationRequest]] = OrderedDict()
    for request in requests:
        backend = backends[request.backend]
        groups.setdefault((request.backend, backend.batch_key(request)), []).append(request)
    batches: list[list[GenerationRequest]] = []
    for (name, _), members in groups.items():
        size = backends[name].capabilities(members[0].model).max_batch
        if max_batch:
            size = min(size, max_batch)
        size = max(size, 1)
        batches += [members[i:i + size] for i in range(0, len(members), size)]
    return batches


def _seconds_per_image(history: list[RunRecord], backend: Backend, request: GenerationRequest) -> float | None:
    # Median logged latency of the same backend/model/size/steps beats any prior.
    same = [r.metrics[LATENCY_METRIC] for r in history
            if r.status == "FINISHED" and LATENCY_METRIC in r.metrics
            and r.params.get("backend") == request.backend and r.params.get("model") == request.model
            and r.params.get("size") == f"{request.width}x{request.height}"
            and r.params.get("steps") == str(request.steps)]
    if same:
        return float(statistics.median(same))
    return backend.estimate_seconds(request)


def make_plan(spec: ExperimentSpec, *, tracker: Tracker | None = None, experiment: str | None = None,
              library: TemplateLibrary | None = None, max_batch: int | None = None, clip: str | None = None,
              summarise: bool = False) -> Plan:
    """Expand, validate and cost ``spec``; with a ``tracker``, mark what is already logged. ``clip`` (a CLIP
    model, ``--clip``) overrides the spec's ``evaluate.clip``. ``summarise``: over ``SUMMARY_CELLS`` cells, plan
    only the first and last ones (``Plan.summary`` counts the rest)."""
    experiment = experiment or spec.name
    n_cells = count_cells(spec)
    summary = PlanSummary(n_cells, n_cells * len(spec.seeds)) if summarise and n_cells > SUMMARY_CELLS else None
    scoring = score_config(spec, clip)
    scoring_for(scoring).check()  # a CLIP model name that cannot work fails here, loading nothing
    backends: dict[str, Backend] = {}

    def backend(name: str) -> Backend:
        if name not in backends:
            backends[name] = get_backend(name)
        return backends[name]

    notes: list[str] = []  # levels equal to the base value
    requests = expand(spec, library=library,
                      seeds_supported=lambda name, model: backend(name).capabilities(model).seeds,
                      model_defaults=lambda name, model: backend(name).defaults(model), notes=notes,
                      only=summary_cells(spec, SHOWN_CELLS) if summary else None)
    uncontrolled: dict[str, dict[str, str]] = {}
    warnings: dict[str, None] = dict.fromkeys(notes)
    for request in requests:
        b = backend(request.backend)
        try:
            b.validate(request)
        except UnsupportedRequestError as exc:
            cell = f"{request.factor}={request.level}" if request.factor else "the base cell"
            raise UnsupportedRequestError(f"{exc} (in {cell} of spec '{spec.name}')") from None
        for param, why in b.uncontrolled(request).items():
            uncontrolled.setdefault(request.backend, {})[param] = why
        warnings.update(dict.fromkeys(b.warnings(request)))

    for b in backends.values():  # a key not set: `run` stops before anything is written, the plan warns
        warnings.update(dict.fromkeys(b.setup_warnings()))
    # The weights behind each model name, once per model: part of the run key (GenerationRequest.model_hash).
    hashes: dict[tuple[str, str], str | None] = {}
    for key in dict.fromkeys((r.backend, r.model) for r in requests):
        hashes[key] = backend(key[0]).model_hash(key[1])
    requests = [r.replace(model_hash=hashes[(r.backend, r.model)]) if hashes[(r.backend, r.model)] else r
                for r in requests]
    # Likewise each LoRA's weights: the run key holds their hash, not their path.
    requests = [r.replace(loras=backend(r.backend).resolve_loras(r.loras)) if r.loras else r for r in requests]
    history = tracker.records(experiment) if tracker is not None else []
    wanted = {r.run_key for r in requests}
    done = {r.run_key: r.run_id for r in history if r.status == "FINISHED" and r.run_key in wanted}
    rows: list[PlanRow] = []
    by_cell: OrderedDict[tuple[str, str, str, str], list[GenerationRequest]] = OrderedDict()
    for request in requests:
        by_cell.setdefault(_cell(request), []).append(request)
    for (group, label, name, model), members in by_cell.items():
        todo = [r for r in members if r.run_key not in done]
        b = backend(name)
        per_image = _seconds_per_image(history, b, members[0]) if todo else 0.0
        rows.append(PlanRow(
            group=group, label=label, backend=name, model=model, images=len(members),
            done=len(members) - len(todo),
            est_seconds=None if per_image is None else per_image * len(todo),
            est_cost=_cost(b, todo)))
    todo_all = [r for r in requests if r.run_key not in done]
    return Plan(spec=spec, experiment=experiment, requests=requests, done=done, rows=rows,
                batches=make_batches(todo_all, backends, max_batch or spec.max_batch),
                uncontrolled=uncontrolled, backends=backends, scoring=scoring, warnings=list(warnings),
                max_batch=max_batch, summary=summary)


def _cell(request: GenerationRequest) -> tuple[str, str, str, str]:
    """The plan row of a request: group, label, backend, model."""
    label = f"{request.factor}={request.level}" if request.factor else "base"
    return request.factor or "base", label, request.backend, request.model


def _cost(backend: Backend, requests: Sequence[GenerationRequest]) -> float | None:
    costs = [backend.estimate_cost(r) for r in requests]
    return None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
