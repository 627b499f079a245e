"""What a sweep tells its user: each image's run, exit codes for failed images and missing keys, no stray
parent runs (none RUNNING after a failure, none for a run that generated nothing), reproductions grouped,
money with the figures it needs. Real SQLite stores, the fake backend, the CLI through click."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from tests.standins import FAKE_OPENAI_KEY, openai_env, openai_standin
from workbench.backends import registry
from workbench.backends.base import Backend, Capabilities
from workbench.backends.fake import fake_image
from workbench.cli import cli
from workbench.errors import SpecError
from workbench.experiments.spec import parse_spec
from workbench.run import runner
from workbench.run.plan import format_usd
from workbench.run.runner import run_experiment
from workbench.tracking.store import Tracker
from workbench.types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult

__all__ = ["openai_env", "openai_standin"]  # fixtures

SPEC = """\
name: outcomes
prompt: a {{ colour }} circle
variables: {colour: red}
backend: BACKEND
model: MODEL
params: {width: 32, height: 32, steps: 2, guidance: 5}
seeds: [1, 2]
vary:
  guidance: [2, 9]
"""


def write_spec(folder: Path, backend: str = "fake", model: str = "m", **replace: str) -> Path:
    text = SPEC.replace("BACKEND", backend).replace("MODEL", model)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = folder / "outcomes.yaml"
    path.write_text(text)
    return path


def invoke(*args: object):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def runs_in(tracking_uri: str, experiment: str = "outcomes", kind: str | None = None) -> list:  # type: ignore[type-arg]
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id])
    return [r for r in runs if kind is None or r.data.tags.get("workbench.kind") == kind]


class HalfBroken(Backend):
    """Guidance 9 fails with a reason a user can act on; everything else is an image."""

    name = "halfbroken"

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(seeds=True, max_batch=1)

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [GenerationFailure(r, "TransientBackendError: could not reach api.example.com (ConnectError)",
                                  error_type="TransientBackendError") if r.guidance == 9 else
                GeneratedImage(request=r, image=fake_image(r)) for r in batch]


@pytest.fixture
def halfbroken():  # type: ignore[no-untyped-def]
    registry.register_backend("halfbroken", HalfBroken)
    registry._instances["halfbroken"] = HalfBroken()
    yield
    registry._registered.pop("halfbroken", None)
    registry._instances.pop("halfbroken", None)


# -- the summary's runs -------------------------------------------------------------------------------
def test_the_summary_lists_each_images_run(tracking_uri: str, halfbroken, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = write_spec(tmp_path, "halfbroken")
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, make_grids=False)
    assert [(r.cell, r.seed, r.outcome) for r in summary.runs] == [
        ("base", 1, "generated"), ("base", 2, "generated"), ("guidance=2", 1, "generated"),
        ("guidance=2", 2, "generated"), ("guidance=9", 1, "failed"), ("guidance=9", 2, "failed")]
    client = MlflowClient(tracking_uri)
    for run in summary.runs:  # each id is the image's own run in the store, under this sweep's parent
        stored = client.get_run(run.run_id)
        assert stored.data.tags["workbench.run_key"] == run.run_key
        assert stored.data.tags["mlflow.parentRunId"] == summary.parent_run_id
        assert stored.info.status == ("FINISHED" if run.outcome == "generated" else "FAILED")
    assert summary.first_failure is not None and "could not reach" in (summary.first_failure.reason or "")
    with pytest.raises(AttributeError):
        summary.runs[0].run_id = "x"  # type: ignore[misc]  # frozen records

    again = run_experiment(spec, tracking_uri=tracking_uri, progress=False, make_grids=False)
    first_ids = {r.run_key: r.run_id for r in summary.runs if r.outcome == "generated"}
    assert {r.run_key: r.run_id for r in again.runs if r.outcome == "skipped"} == first_ids
    assert sorted(r.outcome for r in again.runs) == ["failed", "failed"] + ["skipped"] * 4


# -- parent runs: none left RUNNING, none for a run that made nothing ----------------------------------
@pytest.mark.parametrize("where", ["log_parent_details", "logger", "grids"])
def test_no_parent_run_is_left_running_when_the_run_fails_after_starting(
        where: str, tracking_uri: str, fake_backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    def fail(*args: object, **kwargs: object) -> None:
        raise SpecError(f"injected failure in {where}")

    if where == "log_parent_details":
        monkeypatch.setattr(Tracker, "log_parent_details", fail)
    elif where == "logger":
        monkeypatch.setattr(runner, "BackgroundLogger", fail)
    else:
        monkeypatch.setattr(runner, "_write_grids", fail)
    with pytest.raises(SpecError, match="injected"):
        run_experiment(write_spec(tmp_path), tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g")
    (parent,) = runs_in(tracking_uri, kind="parent")
    assert parent.info.status == "FAILED"
    assert "injected failure" in parent.data.tags["workbench.status_reason"]
    assert not [r for r in runs_in(tracking_uri) if r.info.status == "RUNNING"]


def test_a_rerun_that_generates_nothing_makes_no_parent_run(tracking_uri: str, fake_backend,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    first = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g")
    (grid,) = first.grids
    grid.unlink()
    result = invoke("run", spec, "--tracking-uri", tracking_uri, "--no-progress", "--grids-dir", tmp_path / "g")
    assert result.exit_code == 0, result.output
    assert "parent run" in result.output and "none (nothing was left to generate)" in result.output
    assert "everything was already logged" in result.output
    assert [p.info.run_id for p in runs_in(tracking_uri, kind="parent")] == [first.parent_run_id]
    assert grid.is_file()  # the grids are still written, from what the store holds


def test_reproductions_are_grouped_under_one_run(tracking_uri: str, fake_backend, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from workbench.reproduce.regenerate import reproduce

    summary = run_experiment(write_spec(tmp_path), tracking_uri=tracking_uri, progress=False, make_grids=False)
    for image in summary.runs[:2]:
        reproduce(image.run_id, tracking_uri=tracking_uri)
    (group,) = runs_in(tracking_uri, kind="reproductions")
    reproductions = runs_in(tracking_uri, kind="reproduction")
    assert len(reproductions) == 2 and group.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in reproductions} == {group.info.run_id}
    assert {r.data.tags["workbench.reproduces"] for r in reproductions} == {r.run_id for r in summary.runs[:2]}
    assert [p.info.run_id for p in runs_in(tracking_uri, kind="parent")] == [summary.parent_run_id]


# -- exit codes ---------------------------------------------------------------------------------------
def test_a_sweep_with_failed_images_exits_1_naming_the_first_failure_and_its_fix(
        tracking_uri: str, halfbroken, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = invoke("run", write_spec(tmp_path, "halfbroken"), "--tracking-uri", tracking_uri, "--no-progress",
                    "--grids-dir", tmp_path / "g")
    assert result.exit_code == 1, result.output
    assert "4 generated" in result.output and "2 failed" in result.output
    assert "2 image(s) failed; the first (guidance=9, seed 1, run " in result.output
    assert "could not reach api.example.com" in result.output
    assert "fix: check the network and the backend's base URL" in result.output


def test_a_missing_api_key_is_bad_input_run_exits_2_and_plan_warns(tmp_path: Path, tracking_uri: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(registry._instances, "replicate", raising=False)
    monkeypatch.delitem(registry._instances, "openai", raising=False)
    for backend, model, variable in (("replicate", "black-forest-labs/flux-schnell", "REPLICATE_API_TOKEN"),
                                     ("openai", "gpt-image-2", "OPENAI_API_KEY")):
        spec = write_spec(tmp_path, backend, model, **{"width: 32, height: 32": "width: 1024, height: 1024",
                                                       "steps: 2": "steps: 4", "guidance: 5": "guidance: 3"})
        plan = invoke("plan", spec, "--tracking-uri", tracking_uri)
        assert plan.exit_code == 0, plan.output
        assert f"warning: {backend}: no API" in plan.output and f"set the {variable} environment" in plan.output
        run = invoke("run", spec, "--tracking-uri", tracking_uri, "--no-progress")
        assert run.exit_code == 2, run.output
        assert f"error: {backend}: no API" in run.output and variable in run.output
        assert "Traceback" not in run.output
        assert runs_in(tracking_uri) == []  # nothing written: no parent, no image run


def test_a_key_that_cannot_reach_the_api_fails_the_images_and_exits_1(tmp_path: Path, tracking_uri: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(registry._instances, "openai", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    spec = write_spec(tmp_path, "openai", "gpt-image-1-mini", **{
        "width: 32, height: 32": "width: 1024, height: 1024", "steps: 2": "steps: 4", "guidance: 5": "guidance: 3",
        "seeds: [1, 2]": "seeds: [1]", "vary:\n  guidance: [2, 9]\n": ""})
    result = CliRunner().invoke(cli, ["run", str(spec), "--tracking-uri", tracking_uri, "--no-progress",
                                      "--grids-dir", str(tmp_path / "g")], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "1 image(s) failed" in result.output and "fix: check the network" in result.output
    assert FAKE_OPENAI_KEY not in result.output


def test_an_offline_hub_id_fails_at_once_with_one_line(tmp_path: Path, tracking_uri: str, session_home: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path, "diffusers", "someone/not-in-the-cache")
    expected = "error: diffusers model 'someone/not-in-the-cache' is not in the local Hugging Face cache"
    # `run` as a user starts it (the console entry point in a process of its own: every line it prints)...
    done = subprocess.run([sys.executable, "-m", "workbench", "run", str(spec), "--tracking-uri", tracking_uri],
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "WORKBENCH_HOME": str(session_home)},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), done.stderr
    assert "HF_HUB_OFFLINE is set" in lines[0] and "huggingface-cli download" in lines[0]
    # ...and `plan` the same way, in this process
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = invoke("plan", spec, "--tracking-uri", tracking_uri)
    assert plan.exit_code == 2 and [line for line in plan.output.splitlines() if line.strip()] == lines
    assert runs_in(tracking_uri) == []


# -- money --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("amount, text", [
    (0, "$0.00"), (0.001, "$0.001"), (0.003, "$0.003"), (0.0125, "$0.0125"), (0.04, "$0.04"), (0.1, "$0.10"),
    (0.123456, "$0.123"), (0.9999, "$1.00"), (12.345, "$12.35"), (1234.5, "$1,234.50"), (0.0000123, "$0.0000123"),
])
def test_money_is_shown_with_the_figures_it_needs(amount: float, text: str) -> None:
    assert format_usd(amount) == text


def test_max_cost_below_a_cent_is_printed_as_given(openai_env, tracking_uri: str, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(registry._instances, "openai", raising=False)
    spec = write_spec(tmp_path, "openai", "gpt-image-1-mini", **{
        "width: 32, height: 32": "width: 1024, height: 1024", "steps: 2": "steps: 4", "guidance: 5": "guidance: 3"})
    refused = invoke("run", spec, "--tracking-uri", tracking_uri, "--max-cost", "0.001")
    assert refused.exit_code == 2
    assert "over --max-cost $0.001;" in refused.output and "$0.00;" not in refused.output
    assert openai_env.requests == []
    estimate = json.loads(invoke("plan", spec, "--tracking-uri", tracking_uri, "--json").output)["est_cost_usd"]
    assert 0 < estimate < 1
    plan = invoke("plan", spec, "--tracking-uri", tracking_uri)
    assert format_usd(estimate) in plan.output and format_usd(estimate) != f"${estimate:.2f}"
