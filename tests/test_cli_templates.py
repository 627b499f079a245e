"""``workbench templates``: list, show, render through click's CliRunner, on real template files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from workbench.cli.templates import templates_group

TYPED = """
    ---
    description: Typed variables for the CLI.
    variables:
      subject: {description: The subject.}
      count: {description: How many., default: 2}
      scale: {description: A weight., default: 1.5}
      sharp: {description: Add sharp focus., default: false}
    ---
    {{ count }} {{ subject }} at {{ scale }}{% if sharp %}, sharp focus{% endif %}
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200", "WORKBENCH_TEMPLATES": ""})


@pytest.fixture
def typed_dir(tmp_path: Path) -> Path:
    (tmp_path / "typed.j2").write_text(textwrap.dedent(TYPED).lstrip(), encoding="utf-8")
    return tmp_path


def test_list(runner: CliRunner) -> None:
    result = runner.invoke(templates_group, ["list"])
    assert result.exit_code == 0, result.output
    for name in ("photoreal", "product", "concept_art", "diagram", "shapes"):
        assert name in result.stdout
    assert "Version" in result.stdout and "time_of_day" in result.stdout


@pytest.mark.parametrize("columns", [80, 200])
def test_list_cuts_no_word_at_80_columns(columns: int) -> None:
    from workbench.prompts.templates import TemplateLibrary

    result = CliRunner(env={"COLUMNS": str(columns), "WORKBENCH_TEMPLATES": ""}).invoke(templates_group, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns and "…" not in result.stdout
    def words(text: str) -> set[str]:
        return {w.strip(",.()*") for w in text.split()}

    shown = words(result.stdout)
    library = TemplateLibrary()
    for name in library.names():  # every name, description word, variable, tag and version whole
        t = library.get(name)
        wanted = words(" ".join([name, t.version, t.description, *t.tags, *t.variables]))
        assert wanted <= shown, (name, sorted(wanted - shown))


def test_list_marks_required_variables_and_reports_broken_templates(runner: CliRunner, typed_dir: Path) -> None:
    (typed_dir / "broken.j2").write_text("---\ndescription: x\n---\n{{ nope }}\n")
    result = runner.invoke(templates_group, ["list", "--dir", str(typed_dir)])
    assert result.exit_code == 2
    assert "subject*" in result.stdout and "photoreal" in result.stdout and "broken" in result.stdout
    assert result.stderr.startswith("error: 1 template(s) failed to load (broken)")


def test_show(runner: CliRunner) -> None:
    result = runner.invoke(templates_group, ["show", "diagram"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for needle in ("A clean labelled diagram", "labels", "'architecture'", "mind map", "width=1536",
                   "gpt-image", 'q.negative("diagram")', "{% import", "diagram.j2", "Rendered with the defaults"):
        assert needle in out, needle


def test_show_required_variable(runner: CliRunner, typed_dir: Path) -> None:
    result = runner.invoke(templates_group, ["show", "typed", "--dir", str(typed_dir)])
    assert result.exit_code == 0, result.output
    assert "(required)" in result.stdout and "Rendered with the defaults" not in result.stdout


def test_render_with_vars(runner: CliRunner) -> None:
    result = runner.invoke(templates_group, ["render", "photoreal", "--var", "subject=a red fox in snow",
                                             "-v", "lens=200mm"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("template: photoreal (version ")
    assert lines[1].startswith("prompt: photograph of a red fox in snow") and "200mm" in lines[1]
    assert lines[2].startswith("negative_prompt: lowres")


def test_render_json(runner: CliRunner) -> None:
    result = runner.invoke(templates_group, ["render", "product", "--var", "background=gradient", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["template"] == "product" and len(data["version"]) == 16
    assert data["variables"]["background"] == "gradient" and "gradient backdrop" in data["prompt"]
    assert data["defaults"]["guidance"] == 11.0 and data["negative_prompt"]


def test_render_converts_values_like_their_defaults(runner: CliRunner, typed_dir: Path) -> None:
    args = ["render", "typed", "--dir", str(typed_dir), "--json", "--var", "subject=cats", "--var", "count=3",
            "--var", "scale=2", "--var", "sharp=yes", "--var", "extra=="]
    result = runner.invoke(templates_group, args[:-2])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["variables"] == {"subject": "cats", "count": 3, "scale": 2.0, "sharp": True}
    assert data["prompt"] == "3 cats at 2.0, sharp focus"
    # a value may itself contain '='; an undeclared name is refused by the library
    result = runner.invoke(templates_group, args)
    assert result.exit_code == 2 and "unknown variable 'extra'" in result.stderr


@pytest.mark.parametrize("args, needle", [
    (["--var", "subject"], "--var 'subject' is not KEY=VALUE"),
    (["--var", "=cats"], "is not KEY=VALUE"),
    (["--var", "subject=cats", "--var", "count=three"], "--var count='three': expected a whole number"),
    (["--var", "subject=cats", "--var", "scale=big"], "expected a number"),
    (["--var", "subject=cats", "--var", "sharp=maybe"], "expected true or false"),
    (["--var", "subject=a", "--var", "subject=b"], "given twice"),
    ([], "required variable 'subject'"),
])
def test_bad_vars_exit_2(runner: CliRunner, typed_dir: Path, args: list[str], needle: str) -> None:
    result = runner.invoke(templates_group, ["render", "typed", "--dir", str(typed_dir), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and needle in result.stderr
    assert result.stdout == ""


def test_disallowed_value_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(templates_group, ["render", "photoreal", "--var", "lighting=moonlight"])
    assert result.exit_code == 2
    assert "'moonlight' is not allowed" in result.stderr and "'golden hour'" in result.stderr


def test_unknown_template_exits_2(runner: CliRunner) -> None:
    for command in ("show", "render"):
        result = runner.invoke(templates_group, [command, "photorealistic"])
        assert result.exit_code == 2
        assert "error: template 'photorealistic'" in result.stderr
        assert "concept_art, diagram, photoreal, product" in result.stderr


def test_dir_option_shadows_the_builtins(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "photoreal.j2").write_text("---\ndescription: mine\n---\nmy own photo\n")
    result = runner.invoke(templates_group, ["render", "photoreal", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and "prompt: my own photo" in result.stdout
