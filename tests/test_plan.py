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
