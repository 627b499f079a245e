"""Sweeps over the API backends, end to end: real SDKs → loopback stand-ins → real MLflow store."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.standins import (FAKE_OPENAI_KEY, FAKE_REPLICATE_TOKEN, OpenAIStandin, ReplicateStandin, openai_env,
                            openai_standin, replicate_env, replicate_standin)
from workbench.backends import registry
from workbench.backends.replicate import ReplicateBackend
from workbench.cli import cli
from workbench.run.batch import RetryPolicy
from workbench.run.runner import run_experiment
from workbench.tracking.spool import spool_dir, spool_result
from workbench.tracking.store import Tracker
from workbench.types import GenerationRequest

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


@pytest.fixture(autouse=True)
def fresh_api_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test builds its own API backends, so they read this test's environment (timeouts, poll interval)."""
    for name in ("openai", "replicate"):
        monkeypatch.delitem(registry._instances, name, raising=False)
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.05")


def id_tags(record) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v for k, v in record.tags.items() if k.startswith("workbench.id.")}


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
    assert refused.exit_code == 2 and "over --max-cost $0.001;" in refused.output
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


SECRETS = [FAKE_OPENAI_KEY, FAKE_REPLICATE_TOKEN, "WORKBENCHFAKE", "sk-***CRET"]  # the last: the 401's masked key


def scan_files(roots: list[Path]) -> dict[str, int]:
    """Assert no secret is in any file under ``roots`` (PNG text chunks decoded with PIL); counts what was read."""
    seen = {"files": 0, "png_chunks": 0, "workbench_pngs": 0, "failure.txt": 0, "notes": 0}
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file():
                continue
            data = path.read_bytes()
            seen["files"] += 1
            seen["failure.txt"] += path.name == "failure.txt"
            seen["notes"] += path.parent.name == "notes"
            assert not any(secret.encode() in data for secret in SECRETS), path
            if data[:8] == b"\x89PNG\r\n\x1a\n":
                with Image.open(path) as image:
                    image.load()
                    chunks = {k: v for k, v in image.info.items() if isinstance(v, str | bytes)}
                seen["png_chunks"] += len(chunks)
                seen["workbench_pngs"] += "workbench" in chunks
                text = " ".join(v if isinstance(v, str) else v.decode("latin-1") for v in chunks.values())
                assert not any(secret in text for secret in SECRETS), path
    return seen


def test_no_api_key_reaches_the_store_the_home_or_the_logs(
        openai_env: OpenAIStandin, replicate_env: ReplicateStandin, fake_backend, tracking_uri: str,
        spec_path: Path, workbench_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the SDKs and httpx log requests at DEBUG
    # Faults whose answers or logs could carry a key: a 500, a safety block, a failed prediction whose error
    # echoes the token, then a 401 that echoes the masked key (it stops the second sweep).
    openai_env.script("500", "content_policy_violation")
    replicate_env.script("nsfw", {"fault": "failed",
                                  "error": f"could not pull weights with {FAKE_REPLICATE_TOKEN}"})
    runner = CliRunner()
    first = runner.invoke(cli, ["run", str(spec_path), "--tracking-uri", tracking_uri], catch_exceptions=False)
    # one image failed (exit 1, its reason printed: redacted); grids go to WORKBENCH_HOME/grids
    assert first.exit_code == 1 and "1 image(s) failed" in first.output, first.output
    spec_path.write_text(spec_path.read_text().replace("seeds: [1, 2]", "seeds: [1, 2, 3]"))
    openai_env.script({"fault": "401", "times": 4})
    second = runner.invoke(cli, ["run", str(spec_path), "--tracking-uri", tracking_uri], catch_exceptions=False)
    assert second.exit_code == 1 and "AuthenticationError" in second.output
    assert f"Bearer {FAKE_OPENAI_KEY}" in openai_env.all_text()  # the key was used, so there was one to leak

    # What a crashed store leaves behind: the spool, written from real backend results (a finished image
    # and a failure whose error echoes the token).
    replicate_env.script({"fault": "failed", "error": f"bad token {FAKE_REPLICATE_TOKEN}"})
    backend = ReplicateBackend(timeout_s=2.0, deadline_s=3.0, poll_interval_s=0.02)
    for seed in (5, 6):
        request = GenerationRequest(backend="replicate", model="black-forest-labs/flux-schnell", prompt="a fox",
                                    seed=seed, width=1024, height=1024, steps=4)
        (result,) = backend.generate([request])
        spool_result(result, tracking_uri=tracking_uri, experiment="mixed", parent_run_id=None)
    backend.close()

    logs = first.output + second.output + caplog.text  # what a user sees, and what the libraries logged
    assert len(caplog.records) > 20 and any(r.levelno == logging.DEBUG for r in caplog.records)
    assert not any(secret in logs for secret in SECRETS)

    store = Path(tracking_uri[len("sqlite:///"):]).parent
    seen = scan_files([store, workbench_home / "grids", spool_dir(tracking_uri)])
    assert seen["failure.txt"] >= 3 and seen["notes"] >= 3  # the blocked and failed runs were scanned
    finished = Tracker(tracking_uri).records("mixed", statuses=["FINISHED"])
    assert len(finished) >= 3 and seen["workbench_pngs"] >= len(finished)  # every image's chunks were decoded
    assert len(list(spool_dir(tracking_uri).iterdir())) == 2
    assert (workbench_home / "grids" / "mixed").is_dir()
    scan_files([workbench_home])  # and everything else the workbench keeps in its home

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("mixed").experiment_id])
    reasons = [r.data.tags.get("workbench.status_reason", "") for r in runs]
    assert any("could not pull weights with [redacted]" in reason for reason in reasons)
    assert any("AuthenticationError" in reason for reason in reasons)  # the stopped parent says why
    for run in runs:
        text = json.dumps({"params": run.data.params, "tags": run.data.tags, "metrics": run.data.metrics})
        assert not any(secret in text for secret in SECRETS)


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
    ({"fault": "slow", "seconds": 3}, (3, 0, 0, False)),  # a timeout (WORKBENCH_OPENAI_TIMEOUT_S=0.5)
    ("empty_body", (3, 0, 0, False)),
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
    ({"fault": "403", "times": 3}, (0, 0, 0, True)),
    ({"fault": "model_not_found", "times": 3}, (0, 0, 0, True)),
], ids=lambda v: (v if isinstance(v, str) else v.get("fault")) if not isinstance(v, tuple) else None)
def test_openai_faults_in_a_sweep(fault, outcome, openai_env: OpenAIStandin, tracking_uri: str,  # type: ignore[no-untyped-def]
                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_OPENAI_TIMEOUT_S", "0.5")
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
    for record in records:
        if record.outcome in ("FAILED", "BLOCKED"):  # the call a support ticket asks about
            assert id_tags(record)["workbench.id.request_id"].startswith("req_"), record.tags
        if record.outcome == "BLOCKED":  # and the reason says which call was blocked, and where
            assert id_tags(record)["workbench.id.request_id"] in record.reason and "HTTP 400" in record.reason


@pytest.mark.parametrize("fault, outcome", [
    ({"fault": "429", "retry_after": 0.05}, (3, 0, 0, False)),
    ("500", (3, 0, 0, False)),
    ("502_html", (3, 0, 0, False)),
    ("503", (3, 0, 0, False)),
    ("drop", (3, 0, 0, False)),
    ("empty_body", (3, 0, 0, False)),
    ({"fault": "slow", "seconds": 3}, (3, 0, 0, False)),  # the create times out (bounded by the deadline)
    ("nsfw", (2, 0, 1, False)),
    ("failed", (2, 1, 0, False)),
    ("canceled", (2, 1, 0, False)),
    ("aborted", (2, 1, 0, False)),
    ("never", (2, 1, 0, False)),
    ({"fault": "503_get", "times": 2}, (3, 0, 0, False)),
    ({"fault": "504_get", "times": 2}, (3, 0, 0, False)),
    ({"fault": "429", "on": "get", "retry_after": 0.05}, (3, 0, 0, False)),
    ({"fault": "402", "times": 3}, (0, 0, 0, True)),
    ({"fault": "401", "times": 3}, (0, 0, 0, True)),
], ids=lambda v: (v if isinstance(v, str) else f"{v['fault']}-{v.get('on', 'create')}") if not isinstance(v, tuple)
    else None)
def test_replicate_faults_in_a_sweep(fault, outcome, replicate_env: ReplicateStandin, tracking_uri: str,  # type: ignore[no-untyped-def]
                                     tmp_path: Path) -> None:
    spec = tmp_path / "f.yaml"
    spec.write_text(ONE_CELL.format(backend="replicate", model="black-forest-labs/flux-schnell",
                                    options="{deadline_s: 2.0}"))
    replicate_env.script(fault)
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g", retry=FAST)
    finished, failed, blocked, stopped = outcome
    assert (summary.finished, summary.failed, summary.blocked) == (finished, failed, blocked), summary
    assert bool(summary.stopped) == stopped, summary.stopped
    records = Tracker(tracking_uri).records("faults")
    assert len(records) == finished + failed + blocked
    for record in records:
        ids = id_tags(record)
        assert ids["workbench.id.prediction_id"] and ids["workbench.id.model_version"] == "hidden", record.tags
        if record.outcome == "FINISHED":
            assert record.metrics["predict_time_s"] == pytest.approx(replicate_env.processing_s)
        else:  # the reason says what happened, to which prediction
            name = fault if isinstance(fault, str) else fault["fault"]
            assert REPLICATE_REASONS[name] in record.reason, record.reason
            assert name == "nsfw" or ids["workbench.id.prediction_id"] in record.reason, record.reason


REPLICATE_REASONS = {  # what a failed or blocked run's reason says, for each outcome the stand-in can give
    "nsfw": "blocked by the model's safety checker: NSFW content detected",
    "failed": "failed: CUDA out of memory",
    "canceled": "was canceled while it ran, not by this run",
    "aborted": "was aborted by Replicate before it started",
    "never": "deadline exceeded after 2 s (status 'processing')",
}


def test_revised_prompts_are_logged_with_their_difference(openai_env: OpenAIStandin, tracking_uri: str,
                                                          tmp_path: Path) -> None:
    spec = tmp_path / "revised.yaml"
    spec.write_text(ONE_CELL.format(backend="openai", model="dall-e-3", options="{quality: standard}")
                    .replace("seeds: [1, 2, 3]", "seeds: [1]"))
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g")
    assert summary.finished == 1
    (record,) = Tracker(tracking_uri).records("faults")
    # "a red fox in the snow" → "A detailed, vivid depiction of a red fox in the snow, set against a softly lit
    # background.": content stems {red, fox, snow} against those and {detail, vivid, depict, set, against, soft,
    # lit, background}, so the Jaccard similarity is 3/10
    assert record.metrics["prompt_drift"] == pytest.approx(0.7)
    client = MlflowClient(tracking_uri)
    names = {a.path for a in client.list_artifacts(record.run_id)}
    assert {"revised_prompt.txt", "prompt_diff.txt"} <= names
    diff = Tracker(tracking_uri).load_bytes(record.run_id, "prompt_diff.txt").decode()
    assert "a red fox in the snow" in diff and "drift" in diff


def test_a_sweep_keeps_a_few_calls_in_flight_and_no_more(openai_env: OpenAIStandin, tracking_uri: str,
                                                         tmp_path: Path) -> None:
    spec = tmp_path / "wide.yaml"
    spec.write_text(ONE_CELL.format(backend="openai", model="gpt-image-1-mini", options="{}")
                    .replace("seeds: [1, 2, 3]", f"seeds: {list(range(1, 13))}"))
    openai_env.latency_s = 0.3  # a slow API: calls overlap if the runner lets them
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g")
    assert summary.finished == 12, summary
    limit = registry.get_backend("openai").capabilities("gpt-image-1-mini").concurrency
    assert limit == 4
    assert 1 < openai_env.max_in_flight <= limit  # not serial, and never over the declared limit
    assert openai_env.in_flight == 0 and len(openai_env.requests_to("generate")) == 12


def test_replicates_without_a_seed_are_different_images(openai_env: OpenAIStandin, tracking_uri: str,
                                                       tmp_path: Path) -> None:
    spec = tmp_path / "reps.yaml"
    spec.write_text(ONE_CELL.format(backend="openai", model="gpt-image-1-mini", options="{}"))
    assert run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g").finished == 3
    tracker = Tracker(tracking_uri)
    records = tracker.records("faults")
    assert {r.params["replicate"] for r in records} == {"0", "1", "2"}
    pixels = {tracker.load_image(r.run_id).tobytes() for r in records}
    assert len(pixels) == 3  # one prompt, three independent draws


@pytest.mark.parametrize("backend, model", [("openai", "gpt-image-1-mini"),
                                            ("replicate", "black-forest-labs/flux-schnell")])
def test_retry_after_is_waited_out_before_the_retry(backend: str, model: str, openai_env: OpenAIStandin,
                                                    replicate_env: ReplicateStandin, tracking_uri: str,
                                                    tmp_path: Path) -> None:
    server = openai_env if backend == "openai" else replicate_env
    route = "generate" if backend == "openai" else "create"
    spec = tmp_path / "ra.yaml"
    spec.write_text(ONE_CELL.format(backend=backend, model=model, options="{}").replace("seeds: [1, 2, 3]",
                                                                                         "seeds: [1]"))
    server.script({"fault": "429", "retry_after": 1.5})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g",
                             retry=RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=5.0))
    assert (summary.finished, summary.retries) == (1, 1), summary
    first, retry = server.requests_to(route)
    assert retry.time - first.time >= 1.45  # no earlier than the server asked (a lower bound only)


def test_retry_after_over_the_policy_fails_those_runs_and_the_sweep_goes_on(
        openai_env: OpenAIStandin, tracking_uri: str, tmp_path: Path) -> None:
    spec = tmp_path / "ra.yaml"
    spec.write_text(ONE_CELL.format(backend="openai", model="gpt-image-1-mini", options="{}"))
    openai_env.script({"fault": "429", "retry_after": 30})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g",
                             retry=RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.5))
    assert (summary.finished, summary.failed, summary.stopped) == (2, 1, None), summary
    (failed,) = Tracker(tracking_uri).records("faults", statuses=["FAILED"])
    assert "asked to wait 30 s" in failed.reason and "RateLimitError" in failed.reason
    assert len(openai_env.requests_to("generate")) == 3  # the throttled one was not retried early


def test_a_missing_model_stops_the_sweep_at_once(openai_env: OpenAIStandin, fake_backend, tracking_uri: str,
                                                 tmp_path: Path) -> None:
    spec = tmp_path / "gone.yaml"
    spec.write_text(ONE_CELL.format(backend="openai", model="gpt-image-2", options="{}")
                    .replace("seeds: [1, 2, 3]", f"seeds: {list(range(1, 21))}"))
    openai_env.script({"fault": "model_not_found", "times": 20})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "g", retry=FAST)
    assert summary.stopped and "ModelNotFoundError" in summary.stopped and "gpt-image-2" in summary.stopped
    assert "retired or unknown" in summary.stopped
    assert (summary.finished, summary.failed, summary.not_run) == (0, 0, 20)
    calls = len(openai_env.requests_to("generate"))
    assert 1 <= calls <= registry.get_backend("openai").capabilities("gpt-image-2").concurrency  # not 20
    assert MlflowClient(tracking_uri).get_run(summary.parent_run_id).info.status == "FAILED"
