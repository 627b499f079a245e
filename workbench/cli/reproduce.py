"""``workbench inspect`` and ``workbench reproduce``: read a PNG's metadata; regenerate and verify an image.

    workbench inspect out.png [--json]
    workbench reproduce 3f2a9c0d1e8b4f6a9d7c5b3a1e0f2d4c [--alone | --exact-batch] [--no-log] [--check]
    workbench reproduce out.png --tracking-uri sqlite:////path/mlflow.db
    workbench reproduce a1111.png --model embedded:tiny-sd

``app.py`` mounts both with ``cli.add_command``. Exit codes: 0 for a completed reproduction, bit-exact
or not (the verdict is printed), unless ``--check`` asks for bit-exact (then a difference exits 1, for
scripts and CI); 2 for bad input (unknown run, PNG without metadata...); 1 for any other failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ..types import GenerationRequest
from .common import err, handle_errors, out, tracking_option

__all__ = ["inspect_command", "reproduce_command"]

# Environment fields worth a glance, in this order (the JSON output has them all).
_HIGHLIGHTS = ("backend", "device", "device_name", "dtype", "python", "torch", "diffusers", "transformers", "numpy",
               "cuda", "cudnn", "model_source", "revision", "weights_hash", "pipeline_class", "scheduler",
               "attention", "torch_threads", "deterministic_algorithms", "workbench", "git_commit", "git_dirty")


def _table(title: str) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def _value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)


def _request_rows(table: Table, request: GenerationRequest) -> None:
    rows = [("prompt", request.prompt), ("negative prompt", request.negative_prompt or "(none)"),
            ("backend", request.backend), ("model", request.model),
            ("seed", request.seed if request.seed is not None else "(not controlled)"),
            ("size", f"{request.width}x{request.height}"), ("steps", request.steps),
            ("guidance", float(request.guidance)), ("scheduler", request.scheduler or "(pipeline default)")]
    if request.options:
        rows.append(("options", dict(request.options)))
    if request.template:
        rows.append(("template", f"{request.template}@{request.template_version}"))
    if request.variables:
        rows.append(("variables", dict(request.variables)))
    if request.experiment:
        rows.append(("experiment", f"{request.experiment}" + (f" · {request.factor}={request.level}"
                                                              if request.factor else "")))
    rows.append(("run key", request.run_key))
    for key, value in rows:
        table.add_row(key, escape(_value(value)))


@click.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.option("--model", help="For other tools' files (A1111, ComfyUI, InvokeAI): the model the request would use "
                              "instead of the file's.")
@handle_errors
def inspect_command(file: Path, as_json: bool, model: str | None) -> None:
    """Show the generation metadata of FILE.png: the workbench chunk, the A1111 parameters, or another tool's
    (ComfyUI, InvokeAI) metadata and the request it maps to."""
    from ..errors import MetadataError
    from ..provenance.imported import SOURCES
    from ..provenance.png import read_png_metadata

    meta = read_png_metadata(file)
    a1111 = meta.a1111
    request, problem, imported = None, None, None
    try:
        request = meta.request(model=model)
        imported = meta.imported(model=model)
    except MetadataError as exc:
        problem = str(exc)
    if as_json:
        click.echo(json.dumps({
            "file": str(file), "size": [meta.width, meta.height], "source": meta.source,
            "workbench": meta.workbench, "parameters": meta.parameters, "a1111": a1111,
            "request": request.to_dict() if request else None, "run_key": request.run_key if request else None,
            "not_reproduced": dict(imported.not_reproduced) if imported else None,
            "notes": list(imported.notes) if imported else None, "problem": problem}, indent=2, ensure_ascii=False))
        return
    chunk = meta.workbench
    if chunk is not None:
        generation = _table(f"{file}: {meta.width}x{meta.height}, workbench metadata (verified)")
        assert request is not None
        _request_rows(generation, request)
        out.print(generation)
        provenance = _table("provenance")
        batch = meta.batch
        for key, value in (("run id", meta.run_id), ("experiment id", meta.experiment_id),
                           ("tracking URI", meta.tracking_uri),
                           ("batch", f"image {batch['index'] + 1} of {batch['size']}" if batch else None),
                           ("batch id", meta.batch_id),
                           ("revised prompt", chunk.get("revised_prompt")),
                           ("flags", ", ".join(chunk.get("flags") or []) or None),
                           ("backend ids", chunk.get("backend_ids") or None)):
            if value is not None:
                provenance.add_row(key, escape(_value(value)))
        out.print(provenance)
        env = meta.environment
        if env:
            environment = _table("environment (highlights; --json shows all)")
            for key in _HIGHLIGHTS:
                if env.get(key) is not None:
                    environment.add_row(key, escape(_value(env[key])))
            out.print(environment)
    if a1111 is not None:
        params = _table("A1111 parameters" + (" (as other tools read them)" if chunk is not None else
                                              f" ({file}: {meta.width}x{meta.height}, no workbench metadata)"))
        for key, value in a1111.items():
            if not (key.endswith(("-1", "-2")) and key[:-2] in a1111):
                params.add_row(key, escape(value))
        out.print(params)
        if chunk is not None and request is not None and (a1111.get("Prompt") != request.prompt.strip()):
            err.print("[yellow]note:[/] the A1111 prompt differs from the workbench request (the workbench chunk "
                      "is the one reproduced)")
    if chunk is None and a1111 is None:
        out.print(f"{escape(str(file))}: {meta.width}x{meta.height}, no workbench metadata; "
                  f"{SOURCES[meta.source]} (text chunks: {escape(', '.join(sorted(meta.texts)))})")
    if chunk is None:
        if request is not None and imported is not None:
            would = _table("the request we would run")
            _request_rows(would, request)
            out.print(would)
            for note in imported.notes:
                out.print(f"[yellow]note:[/] {escape(note)}")
            if imported.not_reproduced:
                out.print("[yellow]not reproduced:[/] " + escape(", ".join(
                    f"{k}: {v}" for k, v in imported.not_reproduced.items())))
            out.print(f"reproduce it with: workbench reproduce {escape(str(file))}"
                      + ("" if model else " [--model MODEL]"))
        else:
            out.print(f"[yellow]cannot build a request:[/] {escape(problem or '')}")


@click.command("reproduce")
@click.argument("source")
@tracking_option
@click.option("--alone", is_flag=True,
              help="Regenerate the image alone, not with the batch it was made in (by default the whole batch is "
                   "regenerated in one call when the store holds it: bit-exact needs the same batch shape).")
@click.option("--exact-batch", is_flag=True,
              help="Require the whole original batch: exit 2 when it cannot be rebuilt, instead of regenerating "
                   "the image alone.")
@click.option("--no-log", is_flag=True, help="Do not log the reproduction as a new MLflow run.")
@click.option("--model", help="Use this model instead of the recorded one (A1111 files name checkpoints we can't "
                              "load, e.g. --model embedded:tiny-sd).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--check", is_flag=True, help="Exit 1 unless the reproduction is bit-exact (for scripts and CI).")
@handle_errors
def reproduce_command(source: str, tracking_uri: str | None, alone: bool, exact_batch: bool, no_log: bool,
                      model: str | None, as_json: bool, check: bool) -> None:
    """Regenerate SOURCE (an MLflow run id or a PNG) and report: bit-exact, or how far it differs.

    An image made in a batch is regenerated with its whole batch when the store holds it (the report says
    so), else alone (the report says why)."""
    from ..errors import UserInputError
    from ..reproduce.regenerate import reproduce

    if alone and exact_batch:
        raise UserInputError("--alone and --exact-batch contradict each other: pass one of them")
    whole = False if alone else True if exact_batch else None
    report = reproduce(source, tracking_uri=tracking_uri, exact_batch=whole, log=not no_log, model=model)
    if as_json:
        click.echo(report.to_json())
    else:
        colour = "green" if report.bit_exact else "yellow"
        text = escape(report.to_text())
        text = text.replace(f"verdict:      {escape(report.verdict)}",
                            f"verdict:      [bold {colour}]{escape(report.verdict)}[/]", 1)
        out.print(text, highlight=False)
    if check and not report.bit_exact:
        err.print(f"[bold red]check failed:[/] the reproduction {escape(report.verdict)}", highlight=False)
        raise SystemExit(1)
