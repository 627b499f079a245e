"""``workbench score``, ``workbench rate`` and ``workbench report``: scores, ratings, and which level wins.

Thin, like every command: each calls one library function (``evaluate.rescore.rescore``,
``evaluate.ratings.rate``, ``evaluate.report.report``) and prints what it did.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from ..evaluate.effects import EffectsReport, FactorEffect
from ..evaluate.ratings import MAX_RATING, MIN_RATING, RATER_ENV
from ..evaluate.table import LEVEL_COLUMNS, cell_rows, direction_text, level_rows
from .common import err, handle_errors, out, tracking_option

__all__ = ["score_command", "rate_command", "report_command", "print_report"]

clip_option = click.option("--clip", "clip", metavar="MODEL",
                           help="A CLIP model to score prompt adherence with: a hub id "
                                "(openai/clip-vit-base-patch32) or a local folder.")


@click.command("score")
@click.argument("experiment")
@clip_option
@tracking_option
@click.option("--force", is_flag=True, help="Score again runs that already hold the scores.")
@handle_errors
def score_command(experiment: str, clip: str | None, tracking_uri: str | None, force: bool) -> None:
    """Add scores to the finished image runs of EXPERIMENT, reading their images from MLflow.

    Nothing is generated. Image statistics (and adherence, on the shapes model) are added where missing;
    with --clip, a CLIP score. Runs that already hold a score are skipped: running it twice is harmless.
    """
    from ..evaluate.rescore import rescore

    summary = rescore(experiment, clip=clip, tracking_uri=tracking_uri, force=force)
    out.print(f"{summary.runs} finished image run(s) of '{escape(experiment)}': {summary.scored} scored, "
              f"{summary.skipped} already scored (skipped). Nothing was generated.")
    if summary.metrics:
        out.print("metrics written: " + ", ".join(summary.metrics))
    for failure in summary.failures:
        err.print(f"[red]not scored:[/] {escape(failure)}")
    if not summary.ok:
        raise SystemExit(1)


@click.command("rate")
@click.argument("run_id")
@click.argument("rating", type=click.IntRange(MIN_RATING, MAX_RATING), metavar="RATING")
@click.option("--rater", help=f"Who rates (default: ${RATER_ENV}, else your OS user name).")
@tracking_option
@handle_errors
def rate_command(run_id: str, rating: int, rater: str | None, tracking_uri: str | None) -> None:
    """Rate the image of RUN_ID from 1 (poor) to 5 (excellent), stored in MLflow as rating.<rater>."""
    from ..evaluate.ratings import rate

    result = rate(run_id, rating, rater=rater, tracking_uri=tracking_uri)
    others = f" over {result.raters} raters" if result.raters > 1 else ""
    out.print(f"run {result.run_id}: {result.rater} rated it {result.value}/{MAX_RATING}; its rating (the "
              f"mean{others}) is now {result.mean:g}")


@click.command("report")
@click.argument("experiment")
@click.option("--metric", help="The metric to compare levels on (default: clip_score, else "
                               "adherence.overall, else rating, else image.sharpness).")
@click.option("--higher-is-better/--lower-is-better", "higher", default=None,
              help="The metric's direction (default: lower for latency_s, cost_usd, prompt_drift, "
                   "image.clipped, image.blank; higher for the rest).")
@tracking_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (the artifact's numbers).")
@click.option("--chart", type=click.Path(dir_okay=False, path_type=Path),
              help="Also save the chart PNG here.")
@click.option("--no-log", is_flag=True, help="Do not log the JSON and chart to the latest parent run.")
@handle_errors
def report_command(experiment: str, metric: str | None, higher: bool | None, tracking_uri: str | None,
                   as_json: bool, chart: Path | None, no_log: bool) -> None:
    """Which level of each factor wins on a metric: mean, 95% CI over the seeds, the paired difference from
    the base level, the best level, and whether it is within noise. Logs the numbers (JSON) and a chart
    (PNG) to the experiment's latest parent run. Nothing is generated."""
    from ..evaluate.chart import effects_chart
    from ..evaluate.report import report

    result = report(experiment, metric=metric, higher=higher, tracking_uri=tracking_uri, log=not no_log)
    if chart is not None:
        chart.parent.mkdir(parents=True, exist_ok=True)
        chart.write_bytes(effects_chart(result))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    print_report(result)
    if chart is not None:
        out.print(f"chart: {chart}")


def _factor_table(effect: FactorEffect, higher: bool, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in LEVEL_COLUMNS:
        justify = "left" if column in ("level", "verdict") else "right"
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in level_rows(effect, higher):
        style = "bold" if row[0].endswith("★") else ("dim" if row[-1] == "within noise" else None)
        table.add_row(*row, style=style)
    return table


def print_report(result: EffectsReport) -> None:
    """The report as rich tables on stdout: one per factor, a cell table and main effects per grid."""
    out.print(f"[bold]{escape(result.experiment)}[/]: {escape(result.metric)} "
              f"({direction_text(result.higher_is_better)}), {result.runs} finished runs; "
              f"95% CI over the seeds; Δ is level − base, paired on seeds where there are seeds; "
              f"★ best level")
    for note in result.notes:
        out.print(f"[yellow]note:[/] {escape(note)}")
    for effect in result.factors:
        best = effect.level(effect.best) if effect.best is not None else None
        tail = ""
        if best is not None and not best.is_base:
            tail = " (within noise of the base)" if best.within_noise else ""
        out.print(_factor_table(effect, result.higher_is_better,
                                f"{effect.factor}: best {effect.best}{tail}"))
        for note in effect.notes:
            out.print(f"  [yellow]note:[/] {escape(note)}")
    for grid in result.grids:
        header, rows = cell_rows(grid)
        table = Table(*header, title=f"grid {grid.rows} × {grid.cols}: mean ± 95% CI half-width",
                      title_justify="left")
        for row in rows:
            table.add_row(*row)
        out.print(table)
        for effect in (grid.row_effect, grid.col_effect):
            out.print(_factor_table(effect, result.higher_is_better,
                                    f"main effect of {effect.factor} (over the grid): best {effect.best}"))
            for note in effect.notes:
                out.print(f"  [yellow]note:[/] {escape(note)}")
    if result.parent_run_id:
        out.print(f"logged to parent run {result.parent_run_id}: {', '.join(result.artifacts)}")
    others = [m for m in result.metrics if m != result.metric]
    if others:
        out.print("other metrics (--metric): " + escape(", ".join(others)))
