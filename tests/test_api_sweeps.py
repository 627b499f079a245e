"""Sweeps over the API backends, end to end: real SDKs → loopback stand-ins → real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from tests.standins import (FAKE_OPENAI_KEY, FAKE_REPLICATE_TOKEN, OpenAIStandin, ReplicateStandin, openai_env,
                            openai_standin, replicate_env, replicate_standin)
from workbench.cli import cli
from workbench.runner import RetryPolicy, run_experiment
from workbench.tracking import Tracker

__all__ = ["openai_env", "openai_standin", "replicate_env", "replicate_standin"]  # fixtures used below

SPEC = """
name: mixed
prompt: a lighthouse on a cliff at dusk, oil painting
backend: openai
model: gpt-image-1-mini
params: {width: 1024, height: 1024, steps: 4, guidance: 3.5}
seeds: [1, 2]
vary:
  backend: ["replicate:black-forest-labs/flux-schnell", "fake:m"]
"""


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.yaml"
    path.write_text(SPEC)
    return path


def test_backend_as_the_varied_factor(openai_env: OpenAIStandin, replicate_env: ReplicateStandin, fake_backend,
                                      tracking_uri: str, spec_path: Path, tmp_path: Path) -> None:
    summary = run_experiment(spec_path, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g")
    assert (summary.finished, summary.failed) == (6, 0), summary
    records = Tracker(tracking_uri).records("mixed")
    by_backend = {}
    for record in records:
        by_backend.setdefault(record.params["backend"], []).append(record)
    assert sorted(by_backend) == ["fake", "openai", "replicate"]
    # OpenAI has no seed: replicates, honestly labelled
    assert {r.params["seed"] for r in by_backend["openai"]} == {"not controlled"}
    assert {r.params["replicate"] for r in by_backend["openai"]} == {"0", "1"}
    assert all("seed_not_controlled" in r.tags.get("workbench.flags", "") for r in by_backend["openai"])
    assert all(r.metrics["cost_usd"] > 0 for r in by_backend["openai"] + by_backend["replicate"])
    # Replicate honours seeds and records its prediction
    assert {r.params["seed"] for r in by_backend["replicate"]} == {"1", "2"}
    assert len(replicate_env.requests) >= 2 and len(openai_env.requests) == 2
    (grid,) = summary.grids
    assert grid.name == "grid-backend.png" and grid.is_file()


def test_plan_shows_cost_per_backend_and_max_cost_refuses(openai_env: OpenAIStandin, replicate_env: ReplicateStandin,
                                                          fake_backend, tracking_uri: str, spec_path: Path) -> None:
    runner = CliRunner()
    plan = runner.invoke(cli, ["plan", str(spec_path), "--tracking-uri", tracking_uri], catch_exceptions=False)
    assert plan.exit_code == 0, plan.output
    assert "cost by backend: openai $" in plan.output and "replicate $" in plan.output
    assert "openai cannot hold 'seed'" in plan.output
    as_json = json.loads(runner.invoke(cli, ["plan", str(spec_path), "--tracking-uri", tracking_uri, "--json"]).output)
    assert as_json["est_cost_usd"] == pytest.approx(sum(as_json["cost_by_backend"].values()))
    assert as_json["est_cost_usd"] > 0.01
    refused = runner.invoke(cli, ["run", str(spec_path), "--tracking-uri", tracking_uri, "--max-cost", "0.001"])
    assert refused.exit_code == 2 and "over --max-cost $0.00" in refused.output
    assert openai_env.requests == [] and replicate_env.requests == []  # nothing generated, nothing paid


def test_auth_failure_stops_the_sweep_and_keeps_finished_images(openai_env: OpenAIStandin, fake_backend,
                                                                tracking_uri: str, tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.replace('vary:\n  backend: ["replicate:black-forest-labs/flux-schnell", "fake:m"]', ""))
    first = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g")
    assert first.finished == 2
    spec.write_text(spec.read_text().replace("seeds: [1, 2]", "seeds: [1, 2, 3, 4, 5, 6]"))
    openai_env.script({"fault": "401", "times": 10})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g",
                             retry=RetryPolicy(attempts=2, base_delay_s=0.01))
    assert summary.stopped and "AuthenticationError" in summary.stopped
    assert (summary.skipped, summary.finished) == (2, 0) and summary.not_run == 4
    assert MlflowClient(tracking_uri).get_run(summary.parent_run_id).info.status == "FAILED"
    assert len(Tracker(tracking_uri).records("mixed", statuses=["FINISHED"])) == 2  # nothing lost
    assert FAKE_OPENAI_KEY not in summary.stopped


def test_no_api_key_reaches_the_store(openai_env: OpenAIStandin, replicate_env: ReplicateStandin, fake_backend,
                                      tracking_uri: str, spec_path: Path, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    result = CliRunner().invoke(cli, ["run", str(spec_path), "--tracking-uri", tracking_uri, "--grids-dir",
                                      str(tmp_path / "g")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    logs = result.output + caplog.text  # what a user sees, and what the libraries logged
    assert "WORKBENCHFAKE" not in logs and len(logs) > 100
    store = Path(tracking_uri[len("sqlite:///"):]).parent
    client = MlflowClient(tracking_uri)
    secrets = [FAKE_OPENAI_KEY.encode(), FAKE_REPLICATE_TOKEN.encode(), b"WORKBENCHFAKE"]
    scanned = 0
    for path in [*store.rglob("*"), *(tmp_path / "g").rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            assert not any(secret in data for secret in secrets), path
    assert scanned > 20
    for run in client.search_runs([client.get_experiment_by_name("mixed").experiment_id]):
        text = json.dumps({"params": run.data.params, "tags": run.data.tags})
        assert "WORKBENCHFAKE" not in text


FAST = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.1)
ONE_CELL = """
name: faults
prompt: a red fox in the snow
backend: {backend}
model: {model}
params: {{width: 1024, height: 1024, steps: 4}}
options: {options}
seeds: [1, 2, 3]
"""


@pytest.mark.parametrize("fault, outcome", [
    ({"fault": "429", "retry_after": 0.05}, (3, 0, 0, False)),
    ("500", (3, 0, 0, False)),
    ("502_html", (3, 0, 0, False)),
    ("503", (3, 0, 0, False)),
    ("drop", (3, 0, 0, False)),
    ("bad_json", (3, 0, 0, False)),
    ("html_200", (3, 0, 0, False)),
    ("content_policy_violation", (2, 0, 1, False)),
    ("moderation_blocked", (2, 0, 1, False)),
    ("corrupt_base64", (2, 1, 0, False)),
    ("missing_data", (2, 1, 0, False)),
    ("not_an_image", (2, 1, 0, False)),
    ({"fault": "401", "times": 3}, (0, 0, 0, True)),
    ({"fault": "insufficient_quota", "times": 3}, (0, 0, 0, True)),
])
def test_openai_faults_in_a_sweep(fault, outcome, openai_env: OpenAIStandin, tracking_uri: str,  # type: ignore[no-untyped-def]
                                  tmp_path: Path) -> None:
    spec = tmp_path / "f.yaml"
    spec.write_text(ONE_CELL.format(backend="openai", model="gpt-image-1-mini", options="{}"))
    openai_env.script(fault)
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g", retry=FAST)
    finished, failed, blocked, stopped = outcome
    assert (summary.finished, summary.failed, summary.blocked) == (finished, failed, blocked), summary
    assert bool(summary.stopped) == stopped
    records = Tracker(tracking_uri).records("faults")
    assert len(records) == finished + failed + blocked  # every attempt that ended is logged, once
    if blocked:
        assert [r.outcome for r in records].count("BLOCKED") == 1


@pytest.mark.parametrize("fault, outcome", [
    ({"fault": "429", "retry_after": 0.05}, (3, 0, 0)),
    ("nsfw", (2, 0, 1)),
    ("failed", (2, 1, 0)),
    ("canceled", (2, 1, 0)),
    ("aborted", (2, 1, 0)),
    ("never", (2, 1, 0)),
    ({"fault": "503_get", "times": 2}, (3, 0, 0)),
])
def test_replicate_faults_in_a_sweep(fault, outcome, replicate_env: ReplicateStandin, tracking_uri: str,  # type: ignore[no-untyped-def]
                                     tmp_path: Path) -> None:
    spec = tmp_path / "f.yaml"
    spec.write_text(ONE_CELL.format(backend="replicate", model="black-forest-labs/flux-schnell",
                                    options="{deadline_s: 1.0}"))
    replicate_env.script(fault)
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g", retry=FAST)
    assert (summary.finished, summary.failed, summary.blocked) == outcome, summary
    assert not summary.stopped
    failed = [r for r in Tracker(tracking_uri).records("faults") if r.status == "FAILED"]
    for record in failed:
        assert record.reason  # a clear reason on every failed run


def test_revised_prompts_are_logged_with_their_difference(openai_env: OpenAIStandin, tracking_uri: str,
                                                          tmp_path: Path) -> None:
    spec = tmp_path / "revised.yaml"
    spec.write_text(ONE_CELL.format(backend="openai", model="dall-e-3", options="{quality: standard}")
                    .replace("seeds: [1, 2, 3]", "seeds: [1]"))
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g")
    assert summary.finished == 1
    (record,) = Tracker(tracking_uri).records("faults")
    assert 0.0 <= record.metrics["prompt_drift"] <= 1.0
    client = MlflowClient(tracking_uri)
    names = {a.path for a in client.list_artifacts(record.run_id)}
    assert {"revised_prompt.txt", "prompt_diff.txt"} <= names
    diff = Tracker(tracking_uri).load_bytes(record.run_id, "prompt_diff.txt").decode()
    assert "a red fox in the snow" in diff and "drift" in diff
