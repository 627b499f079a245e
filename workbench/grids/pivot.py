"""Pivoting logged runs into a rows × columns table of cells (pure: no drawing, no I/O).

``pivot_records`` picks the runs of a grid on two keys (a factor, or ``seed``) while holding every other
varying parameter fixed, so ``workbench run``, ``workbench grid`` and the notebook widgets agree on which
run fills a cell. ``render.py`` draws the result.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import UserInputError
from ..tracking.schema import FLAGS_TAG, RunRecord

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["GridCell", "GridData", "pivot_records", "varying_keys", "sort_levels", "axis_value", "resolve_where"]

# Params that identify a run rather than describe a condition: never grid axes or filters.
_IDENTITY = {"run_key", "prompt", "template_version", "model_hash", "replicate", "seed"}


@dataclass
class GridCell:
    """An image, or a status (FAILED, BLOCKED, missing...) with a short reason."""

    image: Image.Image | None = None
    status: str = "FINISHED"
    reason: str = ""
    run_id: str | None = None


@dataclass
class GridData:
    """A pivoted table of cells, ready to render (or to show as widgets)."""

    rows: str
    cols: str
    row_levels: list[str]
    col_levels: list[str]
    cells: dict[tuple[str, str], GridCell]
    fixed: dict[str, str] = field(default_factory=dict)
    title: str = ""
    notes: list[str] = field(default_factory=list)
    base_col: str | None = None  # the column level that is the experiment's base (marked in the header)


def sort_levels(levels: Sequence[str]) -> list[str]:
    """Numeric levels in numeric order; others in the order first seen."""
    unique = list(dict.fromkeys(levels))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def varying_keys(records: Sequence[RunRecord]) -> list[str]:
    """Params that take more than one value across ``records`` (candidate factors)."""
    values: dict[str, set[str]] = {}
    for record in records:
        for key, value in record.params.items():
            values.setdefault(key, set()).add(value)
    keys = {k for k, v in values.items() if len(v) > 1 and k not in _IDENTITY}
    # width/height are covered by size; the negative prompt etc. still count
    if "size" in keys:
        keys -= {"width", "height"}
    return sorted(keys)


def axis_value(record: RunRecord, key: str) -> str:
    """The label of ``record``'s level on axis ``key`` ("seed 7", or "replicate 2" where seeds are not
    controlled)."""
    if key == "seed":
        seed = record.params.get("seed", "")
        if seed in ("", "not controlled"):
            return f"replicate {int(record.params.get('replicate', '0')) + 1}"
        return f"seed {seed}"
    return record.params.get(key, "—")


def resolve_where(records: Sequence[RunRecord], where: Mapping[str, str]) -> dict[str, str]:
    """``--where`` as the runs spell it (``guidance=7`` → ``7.0``); refuse a key or value no run has,
    which would draw an empty grid."""
    resolved: dict[str, str] = {}
    for key, value in where.items():
        values = sort_levels(sorted({r.params[key] for r in records if key in r.params}))
        if not values:
            raise UserInputError(f"--where {key}=…: '{key}' is not a parameter of these runs; parameters: "
                                 f"{', '.join(sorted({k for r in records for k in r.params}))}")
        if value not in values:
            value = next((v for v in values if _same_number(v, value)), value)
        if value not in values:
            shown = ", ".join(values[:20]) + (f", … ({len(values)} values)" if len(values) > 20 else "")
            raise UserInputError(f"--where {key}={value}: no run has {key}={value}; its values are: {shown}")
        resolved[key] = value
    if resolved and not any(all(r.params.get(k) == v for k, v in resolved.items()) for r in records):
        raise UserInputError("no run has " + ", ".join(f"{k}={v}" for k, v in resolved.items())
                             + " all at once; drop one of the --where values")
    return resolved


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def pivot_records(records: Sequence[RunRecord], rows: str, cols: str, *,
                  where: Mapping[str, str] | None = None) -> tuple[GridData, list[RunRecord]]:
    """Pick the runs of a rows × cols grid; every other varying param is held at ``where`` or its mode.

    Returns the grid (cells without images yet) and the chosen records. The latest run wins when
    several runs fill one cell (a re-run after a failure, say).
    """
    if not records:
        raise UserInputError("no runs to build a grid from; run the experiment first")
    known = set(varying_keys(records)) | {"seed"} | {k for r in records for k in r.params}
    for axis in (rows, cols):
        if axis not in known:
            raise UserInputError(f"'{axis}' is not a parameter of these runs; choose from: "
                                 f"{', '.join(['seed', *varying_keys(records)])}")
    if rows == cols:
        raise UserInputError(f"rows and cols are both '{rows}'; pick two different factors")
    fixed = dict(where or {})
    for key in varying_keys(records):
        if key in (rows, cols) or key in fixed:
            continue
        if {rows, cols} & {"size"} and key in ("width", "height"):
            continue
        if _follows(records, key, rows) or _follows(records, key, cols):
            continue  # e.g. a template's negative prompt changes with the template: not a held factor
        fixed[key] = Counter(r.params.get(key) for r in records).most_common(1)[0][0]
    chosen = [r for r in records if all(r.params.get(k) == v for k, v in fixed.items())]
    held_seed = None
    if "seed" not in (rows, cols) and not {"seed", "replicate"} & set(where or {}):
        # Seeds are replicates: with neither axis on them, show the first one (said under "fixed"),
        # not whichever run happened to be logged last.
        labels = _levels([axis_value(r, "seed") for r in chosen], "seed")
        if len(labels) > 1:
            held = [next(v for v in labels if v.startswith(kind)) for kind in ("seed", "replicate")
                    if any(v.startswith(kind) for v in labels)]
            chosen = [r for r in chosen if axis_value(r, "seed") in held]
            held_seed = " / ".join(held)
    cells: dict[tuple[str, str], GridCell] = {}
    picked: dict[tuple[str, str], RunRecord] = {}
    for record in chosen:  # oldest first, so later runs overwrite earlier ones
        key = (axis_value(record, rows), axis_value(record, cols))
        previous = picked.get(key)
        if previous is not None and previous.outcome == "FINISHED" and record.outcome != "FINISHED":
            continue  # a finished image beats a later failed attempt
        picked[key] = record
    for key, record in picked.items():
        cells[key] = GridCell(status=record.outcome, reason=record.reason if record.outcome != "FINISHED" else
                              _flag_note(record), run_id=record.run_id)
    row_levels = _levels([k[0] for k in picked], rows)
    col_levels = _levels([k[1] for k in picked], cols)
    if "seed" in (rows, cols):
        _mark_impossible(cells, picked, rows, cols, row_levels if rows == "seed" else col_levels)
    notes = []
    if any(r.params.get("seed") == "not controlled" for r in chosen):
        notes.append("seed not controlled by the backend: rows are independent replicates")
    shown_fixed = {k: v for k, v in fixed.items() if k not in ("width", "height")}
    if held_seed:
        shown_fixed["seed"] = held_seed.removeprefix("seed ")
    data = GridData(rows=rows, cols=cols, row_levels=row_levels, col_levels=col_levels, cells=cells,
                    fixed=shown_fixed, notes=notes)
    return data, list(picked.values())


def _mark_impossible(cells: dict[tuple[str, str], GridCell], picked: Mapping[tuple[str, str], RunRecord],
                     rows: str, cols: str, seed_levels: Sequence[str]) -> None:
    """Across backends, seed rows and replicate rows never meet: say "n/a" there, not "not run"."""
    other = cols if rows == "seed" else rows
    kinds: dict[str, set[str]] = {}  # level of the other axis -> "seed" and/or "replicate"
    for record in picked.values():
        kinds.setdefault(axis_value(record, other), set()).add(axis_value(record, "seed").split()[0])
    for seed_level in seed_levels:
        kind = seed_level.split()[0]
        for level, present in kinds.items():
            key = (seed_level, level) if rows == "seed" else (level, seed_level)
            if kind not in present and key not in cells:
                why = ("this backend has no seeds: its images are the replicate rows" if kind == "seed" else
                       "this backend takes seeds: its images are the seed rows")
                cells[key] = GridCell(status="n/a", reason=why)


def _follows(records: Sequence[RunRecord], key: str, axis: str) -> bool:
    """True when ``key`` takes one value per level of ``axis`` (it changes only together with it)."""
    seen: dict[str, str | None] = {}
    for record in records:
        level, value = axis_value(record, axis), record.params.get(key)
        if seen.setdefault(level, value) != value:
            return False
    return len(seen) > 1


def _flag_note(record: RunRecord) -> str:
    flags = record.tags.get(FLAGS_TAG, "")
    return flags.replace(",", ", ") if flags else ""


def _levels(values: list[str], axis: str) -> list[str]:
    if axis == "seed":
        def number(v: str) -> float:
            try:
                return float(v.split()[-1])
            except ValueError:
                return math.inf
        return sorted(dict.fromkeys(values), key=lambda v: (v.startswith("replicate"), number(v)))
    return sort_levels(values)
