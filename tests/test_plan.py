"""The plan: counts, what is already done, time from logged history, validation at plan time."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.errors import UnsupportedRequestError
from workbench.experiments.spec import parse_spec
from workbench.run.plan import make_plan
from workbench.run.runner import run_experiment
from workbench.tracking.store import Tracker


def spec(**changes):  # type: ignore[no-untyped-def]
    data = {"name": "planned", "prompt": "a {{ colour }} circle", "variables": {"colour": "red"},
            "backend": "fake", "model": "m", "params": {"width": 32, "height": 32, "steps": 4, "guidance": 5},
            "seeds": [1, 2, 3], "vary": {"guidance": [2, 9], "var.colour": ["blue"]}}
    data.update(changes)
    return parse_spec(data)


def test_plan_counts_cells_and_batches(fake_backend) -> None:
    plan = make_plan(spec())
    assert [(r.group, r.label, r.images) for r in plan.rows] == [
        ("base", "base", 3), ("guidance", "guidance=2", 3), ("guidance", "guidance=9", 3),
        ("var.colour", "var.colour=blue", 3)]
    assert plan.total_images == 12 and len(plan.todo) == 12 and plan.est_cost == 0.0
    # base and blue share one batch key (only the prompt differs); each guidance level is its own
    assert sorted(len(b) for b in plan.batches) == [3, 3, 6]
    assert plan.to_dict()["to_run"] == 12


def test_plan_marks_what_is_logged_and_times_from_history(fake_backend, tracking_uri: str, tmp_path: Path) -> None:
    run_experiment(spec(seeds=[1, 2]), tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    tracker = Tracker(tracking_uri)
    plan = make_plan(spec(), tracker=tracker)
    assert len(plan.done) == 8 and len(plan.todo) == 4
    assert [r.done for r in plan.rows] == [2, 2, 2, 2]
    logged = [r.metrics["latency_s"] for r in tracker.records("planned")]
    assert plan.est_seconds is not None and plan.est_seconds <= 4 * max(logged) + 1e-9


def test_a_request_the_backend_cannot_take_fails_at_plan_time_naming_the_cell(fake_backend) -> None:
    with pytest.raises(UnsupportedRequestError, match=r"multiples of 8, got 33x32 \(in size=33x32 of spec"):
        make_plan(spec(vary={"size": ["33x32"]}))


def test_the_weights_are_part_of_the_run_key(embedded_model: Path, tracking_uri: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The same folder name with other weights is another image: retraining in place regenerates."""
    import shutil

    from workbench.models import weights

    folder = tmp_path / "my-model"
    shutil.copytree(embedded_model, folder)
    local = parse_spec({"name": "weights", "prompt": "a red circle", "backend": "diffusers", "model": str(folder),
                        "params": {"width": 64, "height": 64, "steps": 2}, "seeds": [1, 2]})
    first = make_plan(local)
    assert {r.model_hash for r in first.requests} == {weights.weights_hash(folder)}
    summary = run_experiment(local, tracking_uri=tracking_uri, progress=False, make_grids=False)
    assert summary.ok and summary.finished == 2
    (record, _) = Tracker(tracking_uri).records("weights")
    assert record.params["model_hash"] == weights.weights_hash(folder)

    hashed: list[Path] = []
    real = weights._content_hash
    monkeypatch.setattr(weights, "_content_hash", lambda root, files: hashed.append(root) or real(root, files))
    assert len(make_plan(local, tracker=Tracker(tracking_uri)).done) == 2
    assert hashed == []  # unchanged files: the cached hash, no re-reading of the weights

    weight_file = next(folder.rglob("*.safetensors"))
    data = bytearray(weight_file.read_bytes())
    data[-1] ^= 0xFF  # "retrained": one byte of the weights differs
    weight_file.write_bytes(bytes(data))
    after = make_plan(local, tracker=Tracker(tracking_uri))
    assert hashed == [folder.resolve()]
    assert len(after.done) == 0 and {r.model_hash for r in after.requests} != {record.params["model_hash"]}


def test_api_and_hub_models_keep_their_name_as_identity(fake_backend) -> None:
    plan = make_plan(spec())
    assert {r.model_hash for r in plan.requests} == {None}
    assert "model_hash" not in plan.requests[0].image_fields()


def huge_grid(**changes):  # type: ignore[no-untyped-def]
    data = {"name": "huge", "prompt": "a red circle", "backend": "fake", "model": "m", "seeds": [1],
            "max_images": 10**7, "grid": {"rows": {"factor": "guidance", "levels": [i / 100 for i in range(1000)]},
                                          "cols": {"factor": "steps", "levels": list(range(1, 1001))}}}
    return parse_spec({**data, **changes})


def test_a_million_cell_plan_is_summarised_not_built(tracking_uri: str, tmp_path: Path) -> None:
    # the speed is in benchmarks/plan_scale.py (docs/benchmarks.md, "Huge and hostile specs"); here: the shape
    plan = make_plan(huge_grid(), tracker=Tracker(tracking_uri), summarise=True)
    assert plan.summary is not None and (plan.summary.cells, plan.summary.images) == (1_000_001, 1_000_001)
    assert [r.label for r in plan.rows] == ["base", *(f"guidance×steps=0.0 × {s}" for s in range(1, 5)),
                                            *(f"guidance×steps=9.99 × {s}" for s in range(996, 1001))]
    assert len(plan.requests) == 10 and plan.total_images == 1_000_001
    assert plan.to_dict()["summary"] == {"cells": 1_000_001, "cells_shown": 10, "images": 1_000_001}
    # what is scored counts every image to run, not only the cells shown
    scored = [line for line in plan.scores if not line.note]
    assert scored and all(line.estimated and line.images == 1_000_001 for line in scored)
    # the CLI: the first and last rows, a count of the rest, the totals for every cell
    from click.testing import CliRunner

    from workbench.cli import cli

    path = tmp_path / "huge.yaml"
    import yaml

    path.write_text(yaml.safe_dump(huge_grid().model_dump(exclude_defaults=True)))
    result = CliRunner().invoke(cli, ["plan", str(path), "--tracking-uri", tracking_uri])
    assert result.exit_code == 0, result.output
    assert "999,991 more cells" in result.output and "1,000,001 cells × 1 seeds" in result.output
    assert "9.99 × 1000" in result.output and "0.0 × 1 " in result.output
    assert f"{scored[0].name}: " in result.output and "on about 1,000,001 image(s) to run" in result.output
    assert len(result.output.splitlines()) < 40  # not a million rows
    # a small plan is never summarised, and `run` always plans every cell
    assert make_plan(spec(), summarise=True).summary is None
    assert make_plan(huge_grid(grid=None), summarise=True).summary is None


def test_a_million_seeds_are_refused_before_anything_is_built() -> None:
    from workbench.errors import BudgetError

    with pytest.raises(BudgetError, match=r"1 cells × 1,000,000 seeds = 1,000,000 images, over max_images=1,000"):
        parse_spec({"name": "s", "prompt": "p", "backend": "fake", "model": "m", "seeds": list(range(10**6))})
