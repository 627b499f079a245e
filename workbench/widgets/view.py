"""What a comparison grid shows, as plain data (pure: no widgets, no I/O).

``build_view`` turns logged runs plus the user's choices (row factor, column factor, filters, how
seeds are shown) into a ``GridView``: row and column levels, and one cell per (row, column, seed).
The pivoting itself is ``grids.pivot.pivot_records``, the function behind ``workbench grid``, so the
notebook and the CLI always agree on which run fills a cell. ``GridView.to_grid_data()`` is what the
export hands to ``grids.render.render_grid``.

    >>> from workbench.tracking.schema import RunRecord
    >>> runs = [RunRecord(f"r{g}{s}", "FINISHED", f"k{g}{s}", {"guidance": g, "seed": s, "steps": "10"}, {}, {}, "")
    ...         for g in ("3", "7") for s in ("1", "2")]
    >>> view = build_view(runs, rows="seed", cols="guidance")
    >>> view.row_levels, view.col_levels, view.cells[("seed 1", "7", "")].run_id
    (['seed 1', 'seed 2'], ['3', '7'], 'r71')
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import UserInputError
from ..grids.pivot import GridCell, GridData, axis_value, pivot_records, sort_levels, varying_keys
from ..tracking.schema import FACTOR_TAG, RunRecord

__all__ = ["SEED", "SIDE_BY_SIDE", "PAGED", "GridView", "Filter", "axis_options", "default_cols", "filters_for",
           "seed_label", "seed_levels", "build_view"]

SEED = "seed"
SIDE_BY_SIDE = "side by side"
PAGED = "one at a time"


def seed_label(record: RunRecord) -> str:
    """``seed 3``, or ``replicate 2`` where the backend does not honour seeds (same labels as the PNG grid)."""
    return axis_value(record, SEED)


def axis_options(records: Sequence[RunRecord]) -> list[str]:
    """What a grid axis can be: ``seed`` and every parameter that varies (``model`` when none does)."""
    factors = varying_keys(records)
    return [SEED, *(factors or ["model"])]


def default_cols(records: Sequence[RunRecord], rows: str) -> str:
    """The first varying factor that is not ``rows`` (``seed`` when rows is a factor)."""
    options = [o for o in axis_options(records) if o != rows]
    if rows != SEED:
        return SEED
    return options[0]


@dataclass(frozen=True)
class Filter:
    """A varying parameter that is not on an axis: held at ``value`` (``linked`` ones follow an axis)."""

    key: str
    levels: list[str]
    value: str
    linked_to: str | None = None  # the axis this parameter changes with (not filtered, just shown)


def _linked(records: Sequence[RunRecord], key: str, axes: Sequence[str]) -> str | None:
    """The axis ``key`` is a function of (e.g. the negative prompt follows the template), else None."""
    for axis in axes:
        if axis == SEED:
            continue
        seen: dict[str, str | None] = {}
        for record in records:
            level = record.params.get(axis)
            value = record.params.get(key)
            if seen.setdefault(level, value) != value:  # type: ignore[arg-type]
                break
        else:
            return axis
    return None


def filters_for(records: Sequence[RunRecord], rows: str, cols: str,
                where: Mapping[str, str] | None = None) -> list[Filter]:
    """One filter per varying parameter off the axes, defaulting to ``where`` or the most common value
    (which, in a one-factor-at-a-time experiment, is the base value)."""
    where = dict(where or {})
    out = []
    for key in varying_keys(records):
        if key in (rows, cols):
            continue
        levels = sort_levels([r.params[key] for r in records if key in r.params])
        linked = _linked(records, key, (rows, cols))
        mode = Counter(r.params.get(key) for r in records if key in r.params).most_common(1)[0][0]
        value = where.get(key, mode)
        if value not in levels:
            raise UserInputError(f"{key}={value!r} matches no run; its values are: {', '.join(levels)}")
        out.append(Filter(key, levels, value, linked))
    return out


@dataclass
class GridView:
    """Rows × columns × seeds of cells. ``seeds`` holds the seed levels inside each column (one entry,
    ``""``, when seed is itself an axis)."""

    rows: str
    cols: str
    row_levels: list[str]
    col_levels: list[str]
    seeds: list[str]
    cells: dict[tuple[str, str, str], GridCell]
    fixed: dict[str, str] = field(default_factory=dict)
    linked: dict[str, str] = field(default_factory=dict)  # parameter -> the axis it follows
    notes: list[str] = field(default_factory=list)
    title: str = ""
    base_col: str | None = None

    def cell(self, row: str, col: str, seed: str = "") -> GridCell:
        return self.cells.get((row, col, seed)) or GridCell(status="missing", reason="not run")

    @property
    def tiles_per_row(self) -> int:
        return max(1, len(self.col_levels) * len(self.seeds))

    @property
    def tile_columns(self) -> list[tuple[str, str]]:
        """(column level, seed) of every tile column, left to right ("" as seed when seed is an axis)."""
        return [(c, s) for c in self.col_levels for s in self.seeds]

    def page_shape(self, page_size: int) -> tuple[int, int]:
        """(rows, tile columns) per page so that a page never holds more than ``page_size`` tiles.

        Whole rows while a row fits; a wider row (many seeds side by side, or many levels) is split
        into column pages, keeping each level's seeds on one page where they fit.
        """
        width = self.tiles_per_row
        if width <= page_size:
            return max(1, page_size // width), width
        per_level = len(self.seeds)
        cols = (page_size // per_level) * per_level if per_level <= page_size else page_size
        return 1, cols

    def column_pages(self, page_size: int) -> int:
        """How many pages one band of rows spans (1 unless rows are wider than ``page_size``)."""
        return max(1, math.ceil(len(self.tile_columns) / self.page_shape(page_size)[1]))

    def pages(self, page_size: int) -> int:
        return max(1, math.ceil(len(self.row_levels) / self.page_shape(page_size)[0])) * self.column_pages(page_size)

    def page_start(self, page: int, page_size: int) -> tuple[int, int]:
        """(first row, first tile column) of ``page``: pages go across a band of rows, then down."""
        rows, cols = self.page_shape(page_size)
        across = self.column_pages(page_size)
        return (page // across) * rows, (page % across) * cols

    def page_rows(self, page: int, page_size: int) -> list[str]:
        start = self.page_start(page, page_size)[0]
        return self.row_levels[start:start + self.page_shape(page_size)[0]]

    def page_columns(self, page: int, page_size: int) -> list[tuple[str, str]]:
        start = self.page_start(page, page_size)[1]
        return self.tile_columns[start:start + self.page_shape(page_size)[1]]

    def page_label(self, page: int, page_size: int) -> str:
        """``page 2 of 5 (rows 9–16 of 40)``, with the columns when rows are paged across too."""
        first, left = (n + 1 for n in self.page_start(page, page_size))
        rows, columns = self.page_rows(page, page_size), self.page_columns(page, page_size)
        where = f"rows {first}–{first + len(rows) - 1} of {len(self.row_levels)}"
        if self.column_pages(page_size) > 1:
            where += f"; columns {left}–{left + len(columns) - 1} of {len(self.tile_columns)}"
        return f"page {page + 1} of {self.pages(page_size)} ({where})"

    def row_of(self, run_id: str) -> str | None:
        """The row level that holds ``run_id`` (None when the view does not show it)."""
        return next((row for (row, _, _), cell in self.cells.items() if cell.run_id == run_id), None)

    def row_run_ids(self, row: str) -> list[str]:
        """The finished runs of one row: every column and seed, on every page (a best-of-row pick's row)."""
        return [cell.run_id for (r, _, _), cell in self.cells.items()
                if r == row and cell.run_id and cell.status == "FINISHED"]

    def column_label(self, col: str, seed: str) -> str:
        return f"{col} · {seed}" if seed else col

    def to_grid_data(self) -> GridData:
        """The same view as one table for ``render_grid`` (seeds side by side become sub-columns)."""
        cols = [self.column_label(c, s) for c in self.col_levels for s in self.seeds]
        cells = {(r, self.column_label(c, s)): cell for (r, c, s), cell in self.cells.items()}
        fixed = dict(self.fixed)
        if len(self.seeds) == 1 and self.seeds[0]:  # one seed at a time: say which
            cols = self.col_levels
            cells = {(r, c): cell for (r, c, _), cell in self.cells.items()}
            fixed[SEED] = self.seeds[0].removeprefix("seed ")
        base = None
        if self.base_col is not None:
            base = next((c for c in cols if c == self.base_col or c.startswith(f"{self.base_col} · ")), None)
        return GridData(rows=self.rows, cols=self.cols, row_levels=list(self.row_levels), col_levels=cols,
                        cells=cells, fixed=fixed, title=self.title, notes=list(self.notes), base_col=base)


def build_view(records: Sequence[RunRecord], rows: str = SEED, cols: str | None = None, *,
               where: Mapping[str, str] | None = None, seed_mode: str = SIDE_BY_SIDE, seed: str | None = None,
               title: str = "") -> GridView:
    """Pivot ``records`` on ``rows`` × ``cols`` with every other varying parameter held (see ``filters_for``).

    When neither axis is ``seed``, each cell holds one run per seed: all of them side by side
    (``seed_mode=SIDE_BY_SIDE``) or only ``seed`` (``PAGED``; default the first). Levels that no run
    reached under the current filters still get their row or column, with "not run" cells, so a
    one-factor-at-a-time experiment shows what was never crossed.
    """
    if not records:
        raise UserInputError("no runs to show; run the experiment first (workbench run SPEC)")
    cols = cols or default_cols(records, rows)
    options = axis_options(records)
    for axis in (rows, cols):
        if axis not in options and not any(axis in r.params for r in records):
            raise UserInputError(f"'{axis}' is not a parameter of these runs; choose from: {', '.join(options)}")
    if rows == cols:
        raise UserInputError(f"rows and cols are both '{rows}'; pick two different factors")
    filters = filters_for(records, rows, cols, where)
    linked = {f.key: f.linked_to for f in filters if f.linked_to}
    fixed = {f.key: f.value for f in filters if not f.linked_to}
    # Parameters that follow an axis are dropped from the records pivot_records sees, so that it
    # does not hold them at one value (which would hide every other level of that axis).
    view_records = [dataclasses.replace(r, params={k: v for k, v in r.params.items() if k not in linked})
                    if linked else r for r in records]
    seed_axis = SEED in (rows, cols)
    all_seeds = seed_levels(records)
    if seed_axis:
        groups = {"": view_records}
    else:
        chosen = all_seeds if seed_mode == SIDE_BY_SIDE else [seed if seed in all_seeds else all_seeds[0]]
        groups = {s: [r for r in view_records if seed_label(r) == s] for s in chosen}
    cells: dict[tuple[str, str, str], GridCell] = {}
    notes: list[str] = []
    for group, members in groups.items():
        if not members:
            continue
        data, _ = pivot_records(members, rows, cols, where=fixed)
        for (row, col), cell in data.cells.items():
            cells[(row, col, group)] = cell
        notes += [n for n in data.notes if n not in notes]
    row_levels = _all_levels(records, rows)
    col_levels = _all_levels(records, cols)
    base = next((r for r in records if r.tags.get(FACTOR_TAG) == "base"), None)
    base_col = base.params.get(cols) if base is not None and cols != SEED else None
    return GridView(rows=rows, cols=cols, row_levels=row_levels, col_levels=col_levels, seeds=list(groups),
                    cells=cells, fixed={k: v for k, v in fixed.items() if k not in ("width", "height")},
                    linked=linked, notes=notes, title=title, base_col=base_col)


def seed_levels(records: Sequence[RunRecord]) -> list[str]:
    """Every seed (or replicate) label of ``records``, in numeric order."""
    return _sorted_seeds({seed_label(r) for r in records})


def _sorted_seeds(labels: set[str]) -> list[str]:
    def key(label: str) -> tuple[bool, float]:
        try:
            return label.startswith("replicate"), float(label.split()[-1])
        except ValueError:
            return True, math.inf
    return sorted(labels, key=key)


def _all_levels(records: Sequence[RunRecord], axis: str) -> list[str]:
    if axis == SEED:
        return seed_levels(records)
    return sort_levels([axis_value(r, axis) for r in records])
