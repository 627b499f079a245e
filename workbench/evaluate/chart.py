"""The effects report as a chart: one panel per factor (level means with their 95% intervals) and one per
grid (a heatmap of cell means). matplotlib, drawn on its Agg canvas directly (no pyplot, so a notebook's
backend is never switched), imported only when a chart is drawn.

In a factor panel the base level is grey, the best level gold, and a level whose difference from the base is
within noise is drawn hollow; the dashed line is the base mean.
"""

from __future__ import annotations

import io
import math
from typing import Any

from ..errors import MissingDependencyError
from .effects import EffectsReport, FactorEffect, GridEffect
from .table import direction_text, fmt

__all__ = ["effects_chart"]

_BASE, _BEST, _LEVEL = "#888888", "#d4a017", "#3b6ea8"


def _factor_panel(ax: Any, effect: FactorEffect, metric: str) -> None:
    xs = list(range(len(effect.levels)))
    for x, level in zip(xs, effect.levels, strict=True):
        e = level.estimate
        colour = _BASE if level.is_base else _BEST if level.level == effect.best else _LEVEL
        if e.low is not None and e.high is not None:
            ax.errorbar([x], [e.mean], yerr=[[e.mean - e.low], [e.high - e.mean]], color=colour, capsize=4,
                        lw=1.5)
        hollow = level.within_noise is True
        ax.plot([x], [e.mean], marker="*" if level.level == effect.best else "o", markersize=11, color=colour,
                markerfacecolor="white" if hollow else colour, markeredgewidth=1.5, linestyle="none")
    if effect.base_level is not None:
        ax.axhline(effect.level(effect.base_level).estimate.mean, color=_BASE, lw=0.8, ls="--")
    ax.set_xticks(xs)
    ax.set_xticklabels([_short(le.level) + (" (base)" if le.is_base else "") for le in effect.levels],
                       rotation=20 if len(xs) > 3 else 0, ha="right" if len(xs) > 3 else "center", fontsize=8)
    pairing = "paired on seeds" if effect.paired else "unpaired"
    ax.set_title(f"{effect.factor}  ({pairing})", fontsize=10)
    ax.set_ylabel(metric, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(x=0.15)


def _grid_panel(ax: Any, grid: GridEffect, metric: str, figure: Any) -> None:
    import numpy as np

    values = np.full((len(grid.row_levels), len(grid.col_levels)), np.nan)
    for cell in grid.cells:
        values[grid.row_levels.index(cell.row), grid.col_levels.index(cell.col)] = cell.estimate.mean
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    for (i, j), value in np.ndenumerate(values):
        if not math.isnan(value):
            cell = grid.cell(grid.row_levels[i], grid.col_levels[j])
            half = cell.estimate.half_width if cell else None
            spread = f"\n±{fmt(half)}" if half is not None else ""
            bright = high > low and (value - low) / (high - low) > 0.6  # viridis is light up there: dark text
            ax.text(j, i, fmt(float(value)) + spread, ha="center", va="center", fontsize=7,
                    color="black" if bright else "white")
    ax.set_xticks(range(len(grid.col_levels)))
    ax.set_xticklabels([_short(v) for v in grid.col_levels], fontsize=8)
    ax.set_yticks(range(len(grid.row_levels)))
    ax.set_yticklabels([_short(v) for v in grid.row_levels], fontsize=8)
    ax.set_xlabel(grid.cols, fontsize=9)
    ax.set_ylabel(grid.rows, fontsize=9)
    ax.set_title(f"{grid.rows} × {grid.cols}: mean {metric}", fontsize=10)
    figure.colorbar(image, ax=ax, shrink=0.8)


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def effects_chart(report: EffectsReport, *, dpi: int = 100) -> bytes:
    """The chart of ``report`` as PNG bytes.

    Example:
        >>> png = effects_chart(report)  # doctest: +SKIP
        >>> png[:4]  # doctest: +SKIP
        b'\\x89PNG'
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("matplotlib", "all") from None  # a core dependency: a broken install
    panels: list[tuple[str, Any]] = [("factor", f) for f in report.factors]
    panels += [("grid", g) for g in report.grids]
    columns = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(4.6 * columns, 3.6 * rows + 0.6), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(f"{report.experiment}: {report.metric} ({direction_text(report.higher_is_better)}; "
                    f"mean and 95% CI over seeds; hollow = within noise of base)", fontsize=10)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (kind, panel) in zip(axes, panels, strict=False):
        if kind == "factor":
            _factor_panel(ax, panel, report.metric)
        else:
            _grid_panel(ax, panel, report.metric, figure)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if not panels:
        axes[0].text(0.5, 0.5, "no runs hold this metric", ha="center", va="center")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
