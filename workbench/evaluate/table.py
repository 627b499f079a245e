"""The effects report as rows of text: what the CLI's rich tables and the widget's report tab both show.

One formatting, so the terminal, the notebook and the JSON artifact never disagree on a number.

    >>> fmt(0.123456), fmt(31.234), fmt(None)
    ('0.1235', '31.23', '—')
"""

from __future__ import annotations

from .effects import FactorEffect, GridEffect, LevelEffect
from .stats import Estimate

__all__ = ["LEVEL_COLUMNS", "fmt", "interval", "verdict", "level_rows", "cell_rows", "direction_text"]

LEVEL_COLUMNS = ("level", "n", "mean", "sd", "95% CI", "Δ vs base", "95% CI of Δ", "verdict")


def fmt(value: float | None) -> str:
    """Four significant figures, no exponent below a million (metrics are small numbers)."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude < 1 or magnitude >= 1e6:
        return f"{value:.4g}"
    return f"{value:.{max(0, 4 - len(str(int(magnitude))))}f}"


def interval(estimate: Estimate | None) -> str:
    if estimate is None or estimate.low is None or estimate.high is None:
        return "—"
    return f"[{fmt(estimate.low)}, {fmt(estimate.high)}]"


def direction_text(higher: bool) -> str:
    return "higher is better" if higher else "lower is better"


def verdict(level: LevelEffect, higher: bool) -> str:
    """``base``, ``within noise``, ``better than base`` or ``worse than base`` (or why there is none)."""
    if level.is_base:
        return "base"
    if level.difference is None:
        return "no base to compare with"
    if level.within_noise is None:
        return "too few seeds for an interval"
    if level.within_noise:
        return "within noise"
    better = (level.difference.mean > 0) == higher
    return "better than base" if better else "worse than base"


def level_rows(effect: FactorEffect, higher: bool) -> list[list[str]]:
    """One row per level, in ``LEVEL_COLUMNS`` order; the best level's name carries a star."""
    rows = []
    for level in effect.levels:
        e, d = level.estimate, level.difference
        name = level.level + (" ★" if level.level == effect.best else "")
        delta = ""
        if d is not None:
            delta = f"{'+' if d.mean > 0 else ''}{fmt(d.mean)}" + ("" if level.paired else " (unpaired)")
        rows.append([name, str(e.n), fmt(e.mean), fmt(e.sd), interval(e), delta, interval(d),
                     verdict(level, higher)])
    return rows


def cell_rows(grid: GridEffect) -> tuple[list[str], list[list[str]]]:
    """The grid's cell table: a header (rows ↓ cols →, then the column levels) and one row per row level,
    each cell ``mean ± half-width (n)``."""
    header = [f"{grid.rows} ↓  {grid.cols} →", *grid.col_levels]
    rows = []
    for row in grid.row_levels:
        line = [row]
        for col in grid.col_levels:
            cell = grid.cell(row, col)
            if cell is None:
                line.append("not run")
                continue
            e = cell.estimate
            spread = f" ± {fmt(e.half_width)}" if e.half_width is not None else ""
            line.append(f"{fmt(e.mean)}{spread} (n={e.n})")
        rows.append(line)
    return header, rows
