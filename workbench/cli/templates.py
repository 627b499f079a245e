"""``workbench templates``: list, inspect and render the prompt template library.

    workbench templates list
    workbench templates show photoreal
    workbench templates render photoreal --var subject="a red fox in snow" --var lens=200mm --json

``app.py`` mounts it with ``cli.add_command(templates_group)``. Errors follow the CLI convention:
``error: <message>`` on stderr, exit code 2 for a ``UserInputError``, 1 for any other ``WorkbenchError``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..config import template_dirs
from ..errors import TemplateError, UserInputError
from ..prompts.templates import PromptTemplate, TemplateLibrary, TemplateVariable
from .common import handle_errors

__all__ = ["templates_group", "parse_vars"]

F = TypeVar("F", bound=Callable[..., Any])
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def parse_vars(pairs: Sequence[str], template: PromptTemplate) -> dict[str, Any]:
    """``["lens=35mm", "steps=4"]`` → values, typed like each variable's default (int, float, bool, else str).

    >>> parse_vars(["lens=35mm"], TemplateLibrary().get("photoreal"))
    {'lens': '35mm'}
    """
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserInputError(f"--var {pair!r} is not KEY=VALUE; write it like --var subject='a red fox'")
        if key in values:
            raise UserInputError(f"--var {key} is given twice; give each variable once")
        values[key] = _convert(key, raw, template.variables.get(key))
    return values


def _convert(key: str, raw: str, var: TemplateVariable | None) -> Any:
    ref = None if var is None else var.default if not var.required else (var.allowed or (None,))[0]
    try:
        if isinstance(ref, bool):
            if raw.strip().lower() not in _TRUE | _FALSE:
                raise ValueError
            return raw.strip().lower() in _TRUE
        if isinstance(ref, int):
            return int(raw)
        if isinstance(ref, float):
            return float(raw)
    except ValueError:
        kind = {bool: "true or false", int: "a whole number", float: "a number"}[type(ref)]
        raise UserInputError(f"--var {key}={raw!r}: expected {kind} (the default is {ref!r})") from None
    return raw


def _library(dirs: Sequence[Path]) -> TemplateLibrary:
    return TemplateLibrary([*dirs, *template_dirs()]) if dirs else TemplateLibrary()


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


_dir_option = click.option(
    "--dir", "dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
    help="Template folder searched before the configured ones (repeatable).")


@click.group("templates")
def templates_group() -> None:
    """List, inspect and render prompt templates (templates/*.j2)."""


@templates_group.command("list")
@_dir_option
@handle_errors
def list_templates(dirs: tuple[Path, ...]) -> None:
    """A table of the templates: name, description, variables, version, tags."""
    library = _library(dirs)
    names = library.names()
    if not names:
        raise UserInputError(f"no templates found in {', '.join(map(str, library.dirs))}; add <name>.j2 files "
                             f"or set $WORKBENCH_TEMPLATES")
    # Fits 80 columns without cutting a word: light borders, tags under the description, and columns no
    # narrower than their longest word (rich would otherwise write "Photorealis…").
    table = Table(title="Prompt templates", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Name", style="bold", no_wrap=True)
    table.add_column("Description (tags)", min_width=20, overflow="fold")
    table.add_column("Variables", min_width=14, max_width=24, overflow="fold")
    table.add_column("Version", no_wrap=True)
    broken: list[str] = []
    for name in names:
        try:
            t = library.get(name)
        except TemplateError as exc:
            broken.append(name)
            table.add_row(escape(name), f"[red]{escape(str(exc))}[/red]", "", "")
            continue
        variables = ", ".join(f"{v.name}*" if v.required else v.name for v in t.variables.values())
        tags = f"\n[dim]tags: {escape(', '.join(t.tags))}[/dim]" if t.tags else ""
        table.add_row(escape(name), escape(t.description) + tags, escape(variables), t.version)
    _console().print(table)
    if broken:
        raise UserInputError(f"{len(broken)} template(s) failed to load ({', '.join(broken)}); "
                             f"run `workbench templates show NAME` for details")


@templates_group.command("show")
@click.argument("name")
@_dir_option
@handle_errors
def show_template(name: str, dirs: tuple[Path, ...]) -> None:
    """Everything about one template: variables, defaults, notes, negative prompt, body."""
    t = _library(dirs).get(name)
    console = _console()
    console.print(f"[bold]{escape(t.name)}[/bold]: {escape(t.description)}")
    console.print(f"version {t.version}   path {escape(str(t.path))}")
    if t.tags:
        console.print(f"tags: {escape(', '.join(t.tags))}")
    table = Table(title="Variables", title_justify="left")
    for column in ("Name", "Default", "Allowed", "Description"):
        table.add_column(column, no_wrap=column == "Name")
    for v in t.variables.values():
        default = "[italic](required)[/italic]" if v.required else escape(repr(v.default))
        allowed = escape(", ".join(map(str, v.allowed))) if v.allowed else ""
        table.add_row(escape(v.name), default, allowed, escape(v.description))
    console.print(table)
    defaults = ", ".join(f"{k}={v}" for k, v in t.defaults.items()) or "(none)"
    console.print(f"[bold]Generation defaults:[/bold] {escape(defaults)}")
    if t.notes:
        console.print(f"[bold]Notes:[/bold] {escape(t.notes)}")
    console.print("[bold]Negative prompt (template):[/bold]")
    console.print(t.negative_prompt or "(none)", markup=False, soft_wrap=True)
    console.print("[bold]Body:[/bold]")
    console.print(t.body.rstrip(), markup=False, soft_wrap=True)
    if not any(v.required for v in t.variables.values()):
        console.print("[bold]Rendered with the defaults:[/bold]")
        console.print(t.render().prompt, markup=False, soft_wrap=True)


@templates_group.command("render")
@click.argument("name")
@click.option("--var", "-v", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A template variable (repeatable); typed like its default.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: prompt, negative prompt, version, variables.")
@_dir_option
@handle_errors
def render_template(name: str, pairs: tuple[str, ...], as_json: bool, dirs: tuple[Path, ...]) -> None:
    """Render a template with its defaults and any --var overrides."""
    template = _library(dirs).get(name)
    rendered = template.render(parse_vars(pairs, template))
    if as_json:
        click.echo(json.dumps({"template": rendered.template, "version": rendered.version,
                               "prompt": rendered.prompt, "negative_prompt": rendered.negative_prompt,
                               "variables": rendered.variables, "defaults": template.defaults},
                              indent=2, ensure_ascii=False))
        return
    click.echo(f"template: {rendered.template} (version {rendered.version})")
    click.echo(f"prompt: {rendered.prompt}")
    click.echo(f"negative_prompt: {rendered.negative_prompt}")
