"""The comparison grid's report tab: the effects report of the runs the grid read, for a metric chosen.

The numbers are ``evaluate.effects.effects`` over the grid's records and the text is ``evaluate.table``'s,
so the tab, ``workbench report`` and the JSON artifact agree. "log to parent run" runs ``evaluate.report``
(the JSON and the chart on the experiment's latest parent run). The report is computed when the tab is
first shown, and again when the metric or direction changes or the grid is refreshed.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import ipywidgets as w

from ..evaluate.chart import effects_chart
from ..evaluate.effects import EffectsReport, FactorEffect, available_metrics, default_metric, effects
from ..evaluate.report import logged_spec, report
from ..evaluate.table import LEVEL_COLUMNS, cell_rows, direction_text, level_rows
from ..tracking.schema import RunRecord
from ..tracking.store import Tracker

__all__ = ["ReportTab", "report_html"]

_AUTO = "auto"
_CSS = ("<style>.wb-report table {border-collapse: collapse; font-size: 12px; margin: 2px 0 10px 0}"
        ".wb-report td, .wb-report th {border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: right}"
        ".wb-report td:first-child, .wb-report th:first-child, .wb-report td:last-child {text-align: left}"
        ".wb-report tr.wb-best td {font-weight: 600} .wb-report tr.wb-noise td {color: #888}</style>")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(f"<tr class='{classes[i] if i < len(classes) else ''}'>"
                   + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for i, row in enumerate(rows))
    return f"<table><tr>{cells}</tr>{body}</table>"


def _factor_html(effect: FactorEffect, higher: bool, title: str) -> str:
    rows = level_rows(effect, higher)
    classes = ["wb-best" if r[0].endswith("★") else "wb-noise" if r[-1] == "within noise" else ""
               for r in rows]
    notes = "".join(f"<div style='color:#666'><i>{html.escape(n)}</i></div>" for n in effect.notes)
    return f"<h4>{html.escape(title)}</h4>{_table(LEVEL_COLUMNS, rows, classes)}{notes}"


def report_html(result: EffectsReport) -> str:
    """The report as HTML tables (one per factor; a cell table and main effects per grid)."""
    parts = [_CSS, f"<div class='wb-report'><p><b>{html.escape(result.metric)}</b> "
                   f"({direction_text(result.higher_is_better)}), {result.runs} finished runs; 95% CI over "
                   f"the seeds; Δ = level − base, paired on seeds; ★ best level</p>"]
    parts += [f"<div style='color:#a60'>{html.escape(n)}</div>" for n in result.notes]
    for effect in result.factors:
        parts.append(_factor_html(effect, result.higher_is_better, f"{effect.factor}: best {effect.best}"))
    for grid in result.grids:
        header, rows = cell_rows(grid)
        title = f"grid {html.escape(grid.rows)} × {html.escape(grid.cols)}"
        parts.append(f"<h4>{title}</h4>{_table(header, rows)}")
        for effect in (grid.row_effect, grid.col_effect):
            parts.append(_factor_html(effect, result.higher_is_better, f"main effect of {effect.factor}"))
    return "".join(parts) + "</div>"


class ReportTab:
    """The report tab; ``records()`` gives the grid's runs. State: ``report``, ``logged``, the controls."""

    def __init__(self, tracker: Tracker, experiment: str, records: Callable[[], list[RunRecord]]) -> None:
        self.tracker, self.experiment, self._records = tracker, experiment, records
        self.report: EffectsReport | None = None
        self.logged: str | None = None  # the parent run the last "log" went to
        self.metric_control = w.Dropdown(options=[], description="metric", layout=w.Layout(width="300px"))
        self.direction_control = w.Dropdown(options=[_AUTO, direction_text(True), direction_text(False)],
                                            value=_AUTO, description="direction",
                                            layout=w.Layout(width="260px"))
        self.tables = w.HTML()
        self.chart: w.Image | None = None  # made with the first report: an image model only when there is one
        self.chart_box = w.VBox()
        self.log_button = w.Button(description="log to parent run", icon="upload",
                                   tooltip="log the numbers (JSON) and the chart (PNG) to the latest parent "
                                           "run")
        self.status = w.HTML()
        self._quiet = False
        self.metric_control.observe(lambda _: self._changed(), "value")
        self.direction_control.observe(lambda _: self._changed(), "value")
        self.log_button.on_click(lambda _: self.log())
        self.widget = w.VBox([w.HBox([self.metric_control, self.direction_control, self.log_button]),
                              self.status, self.tables, self.chart_box])
        self.stale = True

    @property
    def higher(self) -> bool | None:
        value = self.direction_control.value
        return None if value == _AUTO else value == direction_text(True)

    def show(self, metric: str | None = None) -> EffectsReport | None:
        """Compute the report (for ``metric``, else the chosen or default one) and draw it."""
        records = [r for r in self._records() if r.outcome == "FINISHED"]
        if not records:
            self.tables.value = "<p><i>No finished runs to report on yet.</i></p>"
            return None
        names = available_metrics(records)
        chosen = metric or (self.metric_control.value if self.metric_control.value in names else None) or \
            default_metric(records)
        self._quiet = True
        try:
            self.metric_control.options = names
            self.metric_control.value = chosen
        finally:
            self._quiet = False
        try:
            self.report = effects(records, chosen, experiment=self.experiment, higher=self.higher,
                                  spec=logged_spec(self.tracker, self.experiment))
            self.tables.value = report_html(self.report)
            png = effects_chart(self.report)
            if self.chart is None:
                self.chart = w.Image(format="png", layout=w.Layout(max_width="100%"))
                self.chart_box.children = (self.chart,)
            self.chart.value = png
            self.status.value = ""
        except Exception as exc:  # shown in the tab, never raised into the notebook
            self._failed(exc)
        self.stale = False
        return self.report

    def _changed(self) -> None:
        if not self._quiet:
            self.show()

    def log(self) -> str | None:
        """Log this report's JSON and chart to the experiment's latest parent run; returns that run's id."""
        try:
            logged = report(self.experiment, metric=self.metric_control.value or None, higher=self.higher,
                            tracker=self.tracker)
        except Exception as exc:
            self._failed(exc)
            return None
        self.logged = logged.parent_run_id
        if self.logged:
            self.status.value = (f"logged to parent run <code>{html.escape(self.logged)}</code>: "
                                 f"{html.escape(', '.join(logged.artifacts))}")
        else:
            self.status.value = html.escape(logged.notes[-1])
        return self.logged

    def _failed(self, exc: Exception) -> None:
        self.status.value = f"<span style='color:#b00'>{html.escape(f'{type(exc).__name__}: {exc}')}</span>"
