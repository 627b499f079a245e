"""The effects report, as numbers: which level of each factor wins on a metric, and by how much beyond noise.

Pure: logged runs in, an ``EffectsReport`` out (``report.py`` reads the store, draws and logs it). For each
factor (one-factor-at-a-time) and level: n (seeds), mean, sd, a 95% t interval over the seeds, the
difference from the base level and its interval, and whether that difference is within noise (its interval
holds 0). With seeds the difference is paired: the same seed is the same starting noise, so each level is
compared with the base seed by seed. Seedless replicates (API backends) are independent: the difference is
unpaired (Welch), and the report says so. A two-axis grid gets a cell table (rows × columns) and the main
effect of each axis (per seed, the mean over the other axis, compared with the base level like a factor).

A cell a factor's level shares with the base (a level equal to the base value) is the base cell itself:
expansion logs it once, so levels are read from each run's params, not only from its factor tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserInputError
from ..experiments.spec import ExperimentSpec
from ..grids.pivot import sort_levels
from ..tracking.schema import (
    BEST_PICK_METRIC,
    BEST_PICK_PREFIX,
    CLIP_SCORE_METRIC,
    COST_METRIC,
    FACTOR_TAG,
    IMAGE,
    IMAGE_STAT_PREFIX,
    LATENCY_METRIC,
    LEVEL_TAG,
    NOT_SCORES,
    PROMPT_DRIFT_METRIC,
    RATING_METRIC,
    RATING_PREFIX,
    RunRecord,
)
from .adherence import OVERALL
from .ratings import aggregate
from .stats import Estimate, mean_interval, paired_difference, welch_difference

__all__ = ["LevelEffect", "FactorEffect", "CellEffect", "GridEffect", "EffectsReport", "effects",
           "available_metrics", "default_metric", "higher_is_better", "LOWER_IS_BETTER", "BASE"]

BASE = "base"  # the factor tag of the base cell
# Metrics where less is better; every other metric is taken as higher-is-better unless the caller says.
LOWER_IS_BETTER = frozenset({LATENCY_METRIC, COST_METRIC, PROMPT_DRIFT_METRIC, IMAGE_STAT_PREFIX + "clipped",
                             IMAGE_STAT_PREFIX + "blank"})
# What a report shows when no metric is named: the first of these the runs hold.
DEFAULT_METRICS = (CLIP_SCORE_METRIC, OVERALL, RATING_METRIC, BEST_PICK_METRIC,
                   IMAGE_STAT_PREFIX + "sharpness")

Replicate = tuple[str, str]  # ("seed", "3") or ("replicate", "0"): what pairs a run across levels


@dataclass(frozen=True)
class LevelEffect:
    """One level: the metric over its seeds, and its difference from the base level (None for the base)."""

    level: str
    estimate: Estimate
    is_base: bool = False
    difference: Estimate | None = None  # level − base; n is the number of pairs when paired
    paired: bool = False

    @property
    def within_noise(self) -> bool | None:
        """The difference's interval holds 0 (None: too few values for an interval, or the base itself)."""
        return None if self.difference is None else self.difference.includes(0.0)


@dataclass(frozen=True)
class FactorEffect:
    """Every level of one factor (or one grid axis's main effect), the base level and the best one."""

    factor: str
    base_level: str | None
    levels: list[LevelEffect]
    best: str | None
    paired: bool
    notes: list[str] = field(default_factory=list)

    def level(self, name: str) -> LevelEffect:
        return next(le for le in self.levels if le.level == name)


@dataclass(frozen=True)
class CellEffect:
    row: str
    col: str
    estimate: Estimate


@dataclass(frozen=True)
class GridEffect:
    """A rows × columns grid: each cell over its seeds, and the main effect of each axis."""

    rows: str
    cols: str
    row_levels: list[str]
    col_levels: list[str]
    cells: list[CellEffect]
    row_effect: FactorEffect
    col_effect: FactorEffect

    def cell(self, row: str, col: str) -> CellEffect | None:
        return next((c for c in self.cells if c.row == row and c.col == col), None)


@dataclass(frozen=True)
class EffectsReport:
    """The report of one metric over one experiment. ``to_dict()`` is the JSON artifact."""

    experiment: str
    metric: str
    higher_is_better: bool
    runs: int  # finished image runs that hold the metric
    factors: list[FactorEffect]
    grids: list[GridEffect]
    metrics: list[str]  # every metric the runs hold (what --metric can name)
    notes: list[str] = field(default_factory=list)
    parent_run_id: str | None = None  # where report.py logged it
    artifacts: list[str] = field(default_factory=list)

    def factor(self, name: str) -> FactorEffect:
        return next(f for f in self.factors if f.factor == name)

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "metric": self.metric,
                "direction": "higher is better" if self.higher_is_better else "lower is better",
                "confidence": 0.95, "runs": self.runs, "notes": self.notes,
                "factors": [_factor_dict(f) for f in self.factors],
                "grids": [_grid_dict(g) for g in self.grids],
                "parent_run_id": self.parent_run_id, "artifacts": self.artifacts}


def _grid_dict(g: GridEffect) -> dict[str, Any]:
    return {"rows": g.rows, "cols": g.cols, "row_levels": g.row_levels, "col_levels": g.col_levels,
            "cells": [{"row": c.row, "col": c.col, **_estimate_dict(c.estimate)} for c in g.cells],
            "main_effects": {"rows": _factor_dict(g.row_effect), "cols": _factor_dict(g.col_effect)}}


def _estimate_dict(e: Estimate) -> dict[str, Any]:
    return {"n": e.n, "mean": e.mean, "sd": e.sd, "ci95": None if e.low is None else [e.low, e.high]}


def _factor_dict(f: FactorEffect) -> dict[str, Any]:
    levels = []
    for le in f.levels:
        entry = {"level": le.level, "base": le.is_base, **_estimate_dict(le.estimate)}
        if le.difference is not None:
            d = le.difference
            entry["difference"] = {"mean": d.mean, "ci95": None if d.low is None else [d.low, d.high],
                                   "paired": le.paired, "n": d.n, "within_noise": le.within_noise}
        levels.append(entry)
    best = f.level(f.best) if f.best is not None else None
    return {"factor": f.factor, "base_level": f.base_level, "paired": f.paired, "best": f.best,
            "best_within_noise": None if best is None else best.within_noise, "levels": levels,
            "notes": f.notes}


def higher_is_better(metric: str) -> bool:
    """The direction of ``metric``: lower is better for time, cost, drift, clipping and blank images."""
    return metric not in LOWER_IS_BETTER


def metric_value(record: RunRecord, metric: str) -> float | None:
    """``record``'s value of ``metric``; the rating and pick means are recomputed from each rater's metric."""
    for name, prefix in ((RATING_METRIC, RATING_PREFIX), (BEST_PICK_METRIC, BEST_PICK_PREFIX)):
        if metric == name:
            mean = aggregate(record.metrics, prefix)
            return mean if mean is not None else record.metrics.get(metric)
    return record.metrics.get(metric)


def available_metrics(records: Iterable[RunRecord]) -> list[str]:
    """Every metric the runs hold that measures an image (sorted), bookkeeping left out."""
    return sorted({k for r in records for k in r.metrics if k not in NOT_SCORES})


def default_metric(records: Sequence[RunRecord]) -> str:
    """The metric a report shows when none is named: CLIP, else adherence, else ratings, else sharpness."""
    names = set(available_metrics(records))
    for metric in DEFAULT_METRICS:
        if metric in names:
            return metric
    if not names:
        raise UserInputError("these runs hold no metrics to report on; score them first "
                             "(workbench score EXPERIMENT)")
    return sorted(names)[0]


def _finished(records: Iterable[RunRecord]) -> list[RunRecord]:
    latest: dict[str, RunRecord] = {}
    for r in sorted(records, key=lambda r: r.start_time):  # a later run of the same request wins
        if r.outcome == "FINISHED" and r.kind in (IMAGE, None):
            latest[r.run_key or r.run_id] = r
    return list(latest.values())


def _replicate(record: RunRecord) -> Replicate:
    seed = record.params.get("seed", "")
    if seed and seed != "not controlled":
        return ("seed", seed)
    return ("replicate", record.params.get("replicate", "0"))


def _label(record: RunRecord, factor: str, with_model: bool = False) -> str:
    """The level of ``factor`` a run was made at, as its params spell it (so base and levels compare)."""
    if factor == "backend":
        backend = record.params.get("backend", "")
        tagged = record.tags.get(LEVEL_TAG, "") if record.tags.get(FACTOR_TAG) == factor else ""
        return tagged or (f"{backend}:{record.params.get('model', '')}" if with_model else backend)
    if factor in record.params:
        return record.params[factor] if record.params[factor] != "" else "(empty)"
    return record.tags.get(LEVEL_TAG) or "(base)"


def _collect(pairs: Iterable[tuple[str, Replicate, float]]
             ) -> tuple[dict[str, dict[Replicate, float]], list[str]]:
    """level → replicate → value; where one level and seed hold several runs (the spec changed between
    sweeps), their mean, with a note."""
    raw: dict[str, dict[Replicate, list[float]]] = {}
    for level, replicate, value in pairs:
        raw.setdefault(level, {}).setdefault(replicate, []).append(value)
    notes = [f"{level}: {len(v)} runs share {' '.join(k)} (other settings changed between sweeps?); "
             f"their mean is used"
             for level, by_rep in raw.items() for k, v in by_rep.items() if len(v) > 1]
    return {level: {k: sum(v) / len(v) for k, v in by_rep.items()} for level, by_rep in raw.items()}, notes


def _factor_effect(factor: str, values: Mapping[str, Mapping[Replicate, float]], base: str | None,
                   higher: bool, notes: list[str]) -> FactorEffect:
    levels = sort_levels(list(values))
    base_values = values.get(base) if base is not None else None
    seeded = all(k[0] == "seed" for by_rep in values.values() for k in by_rep)
    out = []
    for level in levels:
        by_rep = values[level]
        estimate = mean_interval(list(by_rep.values()))
        if level == base or not base_values:
            out.append(LevelEffect(level, estimate, is_base=level == base))
            continue
        common = [k for k in by_rep if k in base_values]
        if seeded and common:
            diff = paired_difference([by_rep[k] for k in common], [base_values[k] for k in common])
            out.append(LevelEffect(level, estimate, difference=diff, paired=True))
        else:
            diff = welch_difference(list(by_rep.values()), list(base_values.values()))
            out.append(LevelEffect(level, estimate, difference=diff, paired=False))
    notes = list(notes)
    if not seeded:
        notes.append("replicates without seeds (the backend does not take one) are independent: "
                     "the differences are unpaired (Welch's t interval)")
    if base is None or base not in values:
        notes.append("no base runs hold this metric: no differences from the base")
    pick = max if higher else min
    best = pick(out, key=lambda le: le.estimate.mean).level if out else None
    return FactorEffect(factor=factor, base_level=base if base in values else None, levels=out, best=best,
                        paired=seeded, notes=notes)


def _spelled(levels: Sequence[Any], labels: Iterable[str]) -> list[str]:
    """The spec's levels as the runs' params spell them (``2`` → ``2.0`` for guidance)."""
    known = list(dict.fromkeys(labels))
    out = []
    for level in levels:
        text = str(level)
        exact = next((k for k in known if k == text), None)
        out.append(exact or next((k for k in known if _same_number(k, text)), text))
    return out


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def _grid_effect(group: str, runs: Sequence[tuple[RunRecord, float]], base: RunRecord | None, higher: bool,
                 levels: tuple[Sequence[Any], Sequence[Any]] | None) -> GridEffect:
    rows, cols = group.split("×", 1)
    # Grid cells equal to the base or to a level of a varied axis were logged once, under that tag.
    candidates = [(r, v) for r, v in runs if r.tags.get(FACTOR_TAG) in (group, BASE, rows, cols)]
    members = [(r, v) for r, v in candidates if r.tags.get(FACTOR_TAG) == group]
    notes: list[str] = []
    if levels is not None:
        row_levels = _spelled(levels[0], (_label(r, rows) for r, _ in candidates))
        col_levels = _spelled(levels[1], (_label(r, cols) for r, _ in candidates))
    else:  # no spec to read them from: the grid's own runs (a level equal to the base hides in the base cell)
        row_levels = sort_levels([_label(r, rows) for r, _ in members])
        col_levels = sort_levels([_label(r, cols) for r, _ in members])
        notes.append("the grid's levels were read from its runs, not from the spec: a level equal to "
                     "the base value may be missing")
    inside = [(r, v) for r, v in candidates
              if _label(r, rows) in row_levels and _label(r, cols) in col_levels]
    cells_values, dup_notes = _collect((f"{_label(r, rows)}\0{_label(r, cols)}", _replicate(r), v)
                                       for r, v in inside)
    notes += dup_notes
    cells = [CellEffect(*key.split("\0"), mean_interval(list(by_rep.values())))
             for key, by_rep in cells_values.items()]
    cells.sort(key=lambda c: (row_levels.index(c.row), col_levels.index(c.col)))

    def main_effect(axis: str, levels: list[str], other: list[str], is_rows: bool) -> FactorEffect:
        per_level: dict[str, dict[Replicate, float]] = {}
        dropped = 0
        for level in levels:
            keyed = [cells_values.get(f"{level}\0{o}" if is_rows else f"{o}\0{level}", {}) for o in other]
            common = set.intersection(*(set(k) for k in keyed)) if keyed else set()
            dropped += len(set().union(*(set(k) for k in keyed)) - common)
            per_level[level] = {rep: sum(k[rep] for k in keyed) / len(keyed) for rep in common}
        per_level = {k: v for k, v in per_level.items() if v}
        base_level = _label(base, axis) if base is not None else None
        axis_notes = [*notes, f"main effect: per seed, the mean over the {len(other)} levels of the other "
                              f"axis"]
        if dropped:
            axis_notes.append(f"{dropped} seed(s) missing from some cells are left out of the main effect")
        if base_level not in per_level and levels:
            axis_notes.append(f"the base level of {axis} is not in the grid: differences are from "
                              f"{levels[0]}")
            base_level = levels[0]
        return _factor_effect(axis, per_level, base_level, higher, axis_notes)

    return GridEffect(rows=rows, cols=cols, row_levels=row_levels, col_levels=col_levels, cells=cells,
                      row_effect=main_effect(rows, row_levels, col_levels, True),
                      col_effect=main_effect(cols, col_levels, row_levels, False))


def effects(records: Sequence[RunRecord], metric: str, *, experiment: str = "", higher: bool | None = None,
            spec: ExperimentSpec | None = None) -> EffectsReport:
    """The effects of every factor and grid of ``records`` (an experiment's runs) on ``metric``.

    ``spec`` (the one the runs were made from; ``report.logged_spec`` reads it from the parent run) gives
    the factors' order and the grid's levels; without it, both are read from the runs.

    Example:
        >>> rep = effects(tracker.records("lighthouse"), "clip_score")  # doctest: +SKIP
        >>> rep.factor("guidance").best, rep.factor("guidance").level("12.0").within_noise  # doctest: +SKIP
        ('12.0', False)
    """
    finished = _finished(records)
    names = available_metrics(finished)
    if metric not in names:
        listed = ", ".join(names) or "(none: score the runs first, workbench score EXPERIMENT)"
        raise UserInputError(f"no run of experiment '{experiment}' has the metric '{metric}'; its metrics: "
                             f"{listed}")
    higher = higher_is_better(metric) if higher is None else higher
    runs = [(r, v) for r in finished if (v := metric_value(r, metric)) is not None]
    notes = []
    if len(runs) < len(finished):
        notes.append(f"{len(finished) - len(runs)} of {len(finished)} finished runs have no {metric}: "
                     f"left out")
    groups = list(dict.fromkeys(r.tags.get(FACTOR_TAG, BASE) for r, _ in runs))
    if spec is not None:  # the spec's order, not the order the batches happened to be logged in
        order = list(spec.vary)
        groups.sort(key=lambda g: order.index(g) if g in order else len(order))
    bases = [r for r, _ in runs if r.tags.get(FACTOR_TAG) == BASE]
    base = bases[-1] if bases else None
    factors = []
    for factor in [g for g in groups if g != BASE and "×" not in g]:
        members = [(r, v) for r, v in runs if r.tags.get(FACTOR_TAG) in (BASE, factor)]
        with_model = factor == "backend" and any(":" in r.tags.get(LEVEL_TAG, "") for r, _ in members)
        values, dup_notes = _collect((_label(r, factor, with_model), _replicate(r), v) for r, v in members)
        base_level = _label(base, factor, with_model) if base is not None else None
        factors.append(_factor_effect(factor, values, base_level, higher, dup_notes))
    levels: dict[str, tuple[list[Any], list[Any]]] = {}
    if spec is not None and spec.grid is not None:
        rows, cols = spec.grid.rows, spec.grid.cols
        levels[f"{rows.factor}×{cols.factor}"] = (rows.levels, cols.levels)
    grids = [_grid_effect(g, runs, base, higher, levels.get(g)) for g in groups if "×" in g]
    if not factors and not grids and runs:
        values, dup_notes = _collect((BASE, _replicate(r), v) for r, v in runs)
        only = [*dup_notes, "no factor varies: the base cell only"]
        factors.append(_factor_effect(BASE, values, BASE, higher, only))
    return EffectsReport(experiment=experiment, metric=metric, higher_is_better=higher, runs=len(runs),
                         factors=factors, grids=grids, metrics=names, notes=notes)
