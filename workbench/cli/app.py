"""The ``workbench`` group and its commands: thin. Each command parses, calls one library function, prints.

Errors become exit codes here and only here: bad input (``UserInputError``) → 2, any other
``WorkbenchError`` → 1, a sweep that stopped early or lost a write → 1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ..config import public_uri, resolve_tracking_uri, workbench_home
from ..errors import UserInputError
from .common import err, handle_errors, out, tracking_option
from .evaluate import clip_option, rate_command, report_command, score_command
from .reproduce import inspect_command, reproduce_command
from .templates import templates_group


@click.group()
@click.version_option(package_name="workbench")
def cli() -> None:
    """Prompt experiments for text-to-image models, tracked in MLflow.

    \b
    Quick start:
      workbench templates list
      workbench plan experiments/quickstart.yaml
      workbench run experiments/quickstart.yaml
      workbench grid quickstart --cols var.lighting -o lighting.png
      workbench reproduce RUN_ID
      workbench ui

    \b
    Which level wins (docs/evaluation.md):
      workbench score quickstart --clip openai/clip-vit-base-patch32
      workbench rate RUN_ID 4
      workbench report quickstart --metric clip_score
    """


cli.add_command(templates_group)
cli.add_command(inspect_command)
cli.add_command(reproduce_command)
cli.add_command(score_command)
cli.add_command(rate_command)
cli.add_command(report_command)


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@tracking_option
@click.option("--experiment", help="MLflow experiment name (default: the spec's name).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@clip_option
@handle_errors
def plan(spec: Path, tracking_uri: str | None, experiment: str | None, as_json: bool,
         clip: str | None) -> None:
    """Show what SPEC would run: cells, seeds, images, what is already logged, time, cost and scores."""
    from ..experiments.spec import load_spec
    from ..run.plan import format_usd, make_plan
    from ..tracking.store import Tracker

    loaded = load_spec(spec)
    tracker = Tracker(tracking_uri, create=False)  # looking creates nothing
    exists = tracker.exists()  # a store not made yet holds nothing done
    if exists:
        tracker.check()
    result = make_plan(loaded, tracker=tracker if exists else None, experiment=experiment, clip=clip,
                       summarise=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    several = len({(r.backend, r.model) for r in result.rows}) > 1
    title = f"plan: {loaded.name} → experiment '{result.experiment}'"
    if not several:
        title += f" on {result.rows[0].backend}:{result.rows[0].model}"
    table = Table(title=title, title_justify="left")
    columns = [("factor", "left"), ("level", "left")] + ([("backend:model", "left")] if several else []) + [
        ("images", "right"), ("logged", "right"), ("to run", "right"), ("time", "right"), ("cost", "right")]
    for column, justify in columns:
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    summary = result.summary
    for index, row in enumerate(result.rows):
        if summary and index == len(result.rows) // 2:  # a summary: the first cells, this line, the last ones
            table.add_row("…", f"{summary.cells - len(result.rows):,} more cells", *([""] if several else []),
                          "", "", "", "", "")
        level = row.label.split("=", 1)[1] if "=" in row.label else row.label
        table.add_row(row.group, level, *([f"{row.backend}:{row.model}"] if several else []), str(row.images),
                      str(row.done), str(row.to_run), _duration(row.est_seconds),
                      "unknown" if row.est_cost is None else format_usd(row.est_cost))
    table.add_section()
    approx = "≈ " if summary else ""
    table.add_row("total", f"{summary.cells if summary else len(result.rows):,} cells × {len(loaded.seeds):,} seeds",
                  *([""] if several else []), f"{result.total_images:,}", "?" if summary else str(len(result.done)),
                  "?" if summary else str(len(result.todo)), approx + _duration(result.est_seconds),
                  approx + format_usd(result.est_cost) + (" + unknown" if result.cost_unknown else ""))
    out.print(table)
    if summary:
        out.print(f"summary: {summary.cells:,} cells; the {len(result.rows)} shown (the first and the last) were "
                  f"planned in full (checks, run keys, what is logged), time and cost are extrapolated from them. "
                  f"`workbench run` plans every cell before it starts.")
    if len(result.cost_by_backend()) > 1 or result.est_cost:
        costs = result.cost_by_backend()
        out.print("cost by backend: " + ", ".join(f"{k} {format_usd(v)}" for k, v in costs.items()))
    for warning in result.warnings:
        _print_warning(warning)
    if result.cost_unknown:
        out.print("[yellow]cost unknown[/] for " + escape(", ".join(result.cost_unknown)) + ": the total above "
                  "leaves them out")
    for backend, params in result.uncontrolled.items():
        for param, why in params.items():
            out.print(f"[yellow]note:[/] {backend} cannot hold '{param}': {escape(why)}")
    for line in result.scores:
        if line.note:
            out.print(f"[dim]scores: {line.name}: {escape(line.note)}[/]")
        else:
            about = "about " if line.estimated else ""
            out.print(f"scores: {line.name}: {', '.join(line.metrics)} on {about}{line.images:,} image(s) to run")
    batches = "" if summary else f"{len(result.batches)} batch(es); "
    store = tracker.display_uri if exists else (f"{tracker.display_uri}, which does not exist yet (nothing is logged "
                                                f"there; `workbench run` creates it)")
    out.print(f"{batches}store: {store}. Nothing was generated.")


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@tracking_option
@click.option("--experiment", help="MLflow experiment name (default: the spec's name).")
@click.option("--max-cost", type=click.FloatRange(min=0),
              help="Refuse to start if the estimated cost in USD is higher.")
@click.option("--max-batch", type=click.IntRange(min=1), help="Largest batch per backend call.")
@click.option("--grids-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write grid PNGs (default: <workbench home>/grids/<experiment>).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where batches run: this process, or Ray workers (one per GPU; docs/scale.md).")
@click.option("--address", help="Ray cluster to join (e.g. auto, HOST:6379, ray://HOST:10001); "
                                "default: a local Ray started for this run.")
@click.option("--workers", type=click.IntRange(min=1), help="Ray workers (default: one per GPU, else per CPU).")
@clip_option
@handle_errors
def run(spec: Path, tracking_uri: str | None, experiment: str | None, max_cost: float | None,
        max_batch: int | None, grids_dir: Path | None, no_progress: bool, executor: str, address: str | None,
        workers: int | None, clip: str | None) -> None:
    """Generate every image of SPEC not already logged, log each to MLflow, write the grids."""
    from ..run.ray_executor import RayOptions
    from ..run.runner import run_experiment

    if executor == "local" and (address or workers):
        raise UserInputError("--address and --workers need --executor ray")
    ray = RayOptions(address=address, workers=workers) if executor == "ray" else None
    # SIGTERM (a scheduler, `kill`) stops like Ctrl-C: finished images are flushed, the run marked KILLED.
    # SIGINT too, even where it was inherited ignored (a job started with `&` from a script, nohup under
    # some shells): there Python leaves it ignored, and `kill -INT` would do nothing.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    summary = run_experiment(spec, tracking_uri=tracking_uri, experiment=experiment, max_cost=max_cost,
                             max_batch=max_batch, grids_dir=grids_dir, progress=not no_progress, ray=ray,
                             clip=clip, on_wait=lambda message: err.print(f"[yellow]{escape(message)}[/]"),
                             on_warning=_print_warning)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("experiment", f"{summary.experiment} (id {summary.experiment_id})")
    table.add_row("parent run", summary.parent_run_id or "none (nothing was left to generate)")
    table.add_row("images", f"{summary.planned} planned: {summary.finished} generated, {summary.skipped} already "
                            f"logged (skipped), {summary.failed} failed, {summary.blocked} blocked"
                  + (f", {summary.not_run} not run" if summary.not_run else ""))
    table.add_row("runs logged", f"{summary.logged} this run, in {summary.seconds:.1f} s")
    if summary.worker_deaths:
        table.add_row("ray workers", f"{summary.worker_deaths} died mid-sweep; their unfinished batches ran on "
                                     f"other workers")
    table.add_row("store", summary.tracking_uri)
    for path in summary.grids:
        table.add_row("grid", str(path))
    out.print(table)
    exe = _workbench_command()
    ui_hint = f"{exe} ui" if tracking_uri is None else f"{exe} ui --tracking-uri {summary.tracking_uri}"
    if summary.tracking_uri.startswith(("http://", "https://")):
        out.print(f"runs in the MLflow UI: {summary.tracking_uri.rstrip('/')}/#/experiments/{summary.experiment_id}/runs")
    else:
        out.print(f"open the MLflow UI: [bold]{ui_hint}[/], then http://127.0.0.1:5000/#/experiments/"
                  f"{summary.experiment_id}/runs")
    if summary.skipped and not summary.logged:
        waited = f" (by run {summary.waited_for}, which this one waited for)" if summary.waited_for else ""
        out.print(f"everything was already logged{waited}: nothing to generate.")
    if summary.spooled:
        err.print(f"[yellow]{len(summary.spooled)} finished image(s) could not be logged and were saved in "
                  f"{escape(str(summary.spool_dir))}; the next `workbench run {escape(str(spec))}` uploads them.[/]")
    for failure in summary.log_failures:
        err.print(f"[red]not logged:[/] {failure.run_key}: {escape(str(failure.error))}")
    first = summary.first_failure
    if first is not None:  # the reason is in MLflow too, but a sweep whose images failed must say so here
        err.print(f"[bold red]{summary.failed} image(s) failed[/]; the first ({escape(first.cell)}, seed "
                  f"{first.seed}, run {first.run_id}): {escape(first.reason or 'no reason recorded')}")
        err.print(f"fix: {escape(failure_fix(first.reason or ''))}; then run again: `workbench run "
                  f"{escape(str(spec))}` regenerates only what failed")
    if summary.stopped:
        err.print(f"[bold red]stopped:[/] {escape(summary.stopped)}")
        err.print(f"resume with: workbench run {escape(str(spec))}")
    if not summary.ok or summary.failed:
        sys.exit(1)


@cli.command()
@click.argument("experiment")
@tracking_option
@click.option("--rows", default="seed", show_default=True, help="Factor down the side (or 'seed').")
@click.option("--cols", required=True, help="Factor across the top, e.g. guidance or var.lighting.")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE", help="Hold a parameter at a value.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The grid file, in the format its suffix names: .png (which also names the run of every "
                   "cell), .jpg / .jpeg or .webp.")
@handle_errors
def grid(experiment: str, tracking_uri: str | None, rows: str, cols: str, where: tuple[str, ...],
         output: Path) -> None:
    """Rebuild a labelled grid from what MLflow holds for EXPERIMENT (nothing is generated)."""
    from ..grids.pivot import resolve_where
    from ..grids.render import grid_format, grid_from_records, save_grid
    from ..tracking.store import Tracker

    fmt = grid_format(output)  # before anything is read: an unknown suffix writes nothing
    fixed = {}
    for item in where:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserInputError(f"--where '{item}' is not KEY=VALUE")
        fixed[key] = value
    tracker = Tracker(tracking_uri, create=False)  # looking creates nothing
    tracker.check()
    if tracker.experiment_id(experiment, create=False) is None:
        names = tracker.experiment_names()
        raise UserInputError(f"no experiment '{experiment}' in {tracker.display_uri}; experiments: "
                             f"{', '.join(names) or '(none)'}")
    records = tracker.records(experiment)
    if not records:
        raise UserInputError(f"experiment '{experiment}' has no image runs yet; run its spec first")
    fixed = resolve_where(records, fixed)
    image, data = grid_from_records(records, rows, cols, load_image=tracker.load_image, where=fixed,
                                    title=f"{experiment}: {cols} x {rows}")
    save_grid(image, output)
    shown = sum(1 for c in data.cells.values() if c.image is not None)
    out.print(f"wrote {output} ({len(data.row_levels)} rows × {len(data.col_levels)} columns, {shown} images"
              + (f"; fixed: {', '.join(f'{k}={v}' for k, v in data.fixed.items())}" if data.fixed else "") + ")")
    if fmt != "PNG":
        out.print(f"note: a {fmt} grid holds the pixels only; a .png one also names the run of every cell")


@cli.command()
@tracking_option
@click.option("--port", default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@handle_errors
def ui(tracking_uri: str | None, port: int, host: str) -> None:
    """Open the MLflow UI on the store (default: the embedded one): one light local server, stopped whole."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        click.echo(f"{public_uri(uri) or uri} is a tracking server: open it in a browser; it serves the MLflow UI")
        return
    from ..tracking.local_store import check_local_store
    from .ui import serve_ui

    check_local_store(uri, public_uri(uri) or uri, create=False)  # looking creates nothing (nor does MLflow)
    click.echo(f"MLflow UI on http://{host}:{port} for {uri} (Ctrl-C to stop)")
    raise SystemExit(serve_ui(uri, host, port))


@cli.group()
def embedded() -> None:
    """The embedded models: shipped or built in code, no download."""


@embedded.command("list")
@handle_errors
def embedded_list() -> None:
    """The embedded models, what each is for, and where it lives."""
    from ..models import embedded as emb

    table = Table("model", "what it is", "folder", "ready")
    for name, entry in emb.EMBEDDED_MODELS.items():
        path = emb.embedded_path(name)
        ready = (path / "model_index.json").is_file()
        table.add_row(f"embedded:{name}", entry["description"], str(path),
                      "yes" if ready else ("[red]missing[/]" if "shipped" in entry else "no (built on first use)"))
    out.print(table)


@embedded.command("build")
@click.option("--name", default="tiny-sd", show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even if present.")
@handle_errors
def embedded_build(name: str, force: bool) -> None:
    """Build an embedded model into the workbench home (deterministic; seconds). Shipped models need none."""
    from ..models import embedded as emb

    path = emb.build(name, force=force)
    how = "shipped with the workbench" if "shipped" in emb.EMBEDDED_MODELS[name.removeprefix(emb.PREFIX)] else "ready"
    out.print(f"embedded model [bold]embedded:{name.removeprefix(emb.PREFIX)}[/] {how} at {path}")


@cli.command()
def info() -> None:
    """Where the workbench keeps things, and which backends exist."""
    from ..backends.registry import list_backends

    out.print(f"workbench home: {workbench_home()}")
    out.print(f"tracking URI:   {resolve_tracking_uri(os.environ.get('MLFLOW_TRACKING_URI'))}")
    out.print(f"backends:       {', '.join(list_backends())}")


def _workbench_command() -> str:
    """How to call ``workbench`` from here: plain if on PATH, else e.g. ``.venv/bin/workbench``."""
    if shutil.which("workbench"):
        return "workbench"
    script = Path(sys.executable).with_name("workbench")
    return os.path.relpath(script) if script.exists() else f"{sys.executable} -m workbench"


def failure_fix(reason: str) -> str:
    """What to do about a failed image, from its reason (the reason names the cause; this the next step)."""
    fixes = (
        (("OutOfMemory",), "lower --max-batch, the image size or the steps, or use a smaller dtype"),
        (("RateLimit", "429"), "wait a while, or lower the backend's concurrency; the service is throttling"),
        (("could not reach", "timed out", "Transient", "ConnectError", "server error"),
         "check the network and the backend's base URL (OPENAI_BASE_URL, REPLICATE_BASE_URL); the service "
         "did not answer"),
        (("NaN", "nan"), "run in bfloat16 or float32, or use an fp16-safe VAE"),
        (("cannot be downloaded", "HF_HUB_OFFLINE", "not in the local Hugging Face cache"),
         "download the model where there is a network, or use a local folder or an embedded model"),
    )
    for needles, fix in fixes:
        if any(n in reason for n in needles):
            return fix
    return "fix what the reason names (the run's failure.txt in the MLflow UI has the details)"


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _print_warning(message: str) -> None:
    """A plan's warning on stderr, as both `plan` and `run` print it."""
    err.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
