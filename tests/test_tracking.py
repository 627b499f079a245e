"""Tracking details: params, credentials, the spool round trip."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

from workbench.config import public_uri
from workbench.tracking import lease
from workbench.tracking.schema import (
    LEASE_HELD,
    LEASE_TAG,
    LEASE_TRYING,
    LEASE_WAITING,
    MAX_PARAM,
    request_params,
)
from workbench.tracking.spool import load_entry, pending, spool_result, upload_spool
from workbench.tracking.store import WRITING_HERE, Tracker
from workbench.types import GeneratedImage, GenerationFailure, GenerationRequest


def request(**kw):  # type: ignore[no-untyped-def]
    fields = {"backend": "fake", "model": "m", "prompt": "a red circle", "seed": 3, "width": 32, "height": 32,
              "experiment": "spooled", "variables": {"colour": "red"}, "options": {"eta": 0.5}}
    fields.update(kw)
    return GenerationRequest(**fields)


def test_params_are_flat_and_capped() -> None:
    params = request_params(request(prompt="x" * 10_000))
    assert params["var.colour"] == "red" and params["option.eta"] == "0.5" and params["scheduler"] == "default"
    assert len(params["prompt"]) <= MAX_PARAM and "10000 chars" in params["prompt"]
    assert request_params(request(seed=None))["seed"] == "not controlled"


def test_credentials_never_leave_the_uri() -> None:
    assert public_uri("http://alice:s3cret@mlflow.example:5000/x") == "http://mlflow.example:5000/x"
    assert public_uri("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"


def test_spool_round_trip_and_upload(tracking_uri: str) -> None:
    image = Image.new("RGB", (32, 32), (200, 10, 10))
    done = GeneratedImage(request=request(), image=image, revised_prompt="a crimson circle", latency_s=0.5,
                          cost_usd=0.01, flags=frozenset({"seed_not_controlled"}), environment={"device": "cpu"})
    failed = GenerationFailure(request=request(seed=4), reason="blocked", status="BLOCKED")
    for result in (done, failed):
        spool_result(result, tracking_uri=tracking_uri, experiment="spooled", parent_run_id=None)
    entries = pending(tracking_uri)
    assert len(entries) == 2
    restored, experiment, _ = load_entry(next(e for e in entries if e.name == done.request.run_key))
    assert experiment == "spooled" and restored.request == done.request
    assert isinstance(restored, GeneratedImage) and restored.image.tobytes() == image.tobytes()
    assert restored.revised_prompt == "a crimson circle" and restored.flags == done.flags
    tracker = Tracker(tracking_uri)
    assert upload_spool(tracker) == 2 and pending(tracking_uri) == []
    records = tracker.records("spooled")
    assert sorted(r.outcome for r in records) == ["BLOCKED", "FINISHED"]
    assert tracker.load_image(next(r.run_id for r in records if r.outcome == "FINISHED")).size == (32, 32)


def test_spool_is_per_store(tracking_uri: str, tmp_path: Path) -> None:
    spool_result(GenerationFailure(request=request(), reason="x"), tracking_uri=tracking_uri, experiment="e",
                 parent_run_id=None)
    assert pending(f"sqlite:///{tmp_path / 'other.db'}") == []


def test_the_batch_position_has_one_source_and_is_derived_where_it_is_written(tracking_uri: str) -> None:
    import json

    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment_id("batched")
    image = GeneratedImage(request=request(), image=Image.new("RGB", (32, 32)), environment={"device": "cpu"},
                           batch_size=3, batch_index=2, batch_id="call-7")
    failure = GenerationFailure(request=request(seed=4), reason="nan", batch_size=3, batch_index=1, batch_id="call-7")
    for result in (image, failure):
        tracker.log_image_run(experiment_id, None, result)
    by_seed = {r.params["seed"]: r for r in tracker.records("batched")}
    assert by_seed["3"].metrics["batch_size"] == 3 and by_seed["3"].metrics["batch_index"] == 2
    assert {r.tags["workbench.batch_id"] for r in by_seed.values()} == {"call-7"}
    for seed, index in (("3", 2), ("4", 1)):  # a failed image's position is kept in its environment.json
        environment = json.loads(tracker.load_bytes(by_seed[seed].run_id, "environment.json"))
        assert (environment["batch_size"], environment["batch_index"], environment["batch_id"]) == (3, index, "call-7")
    assert json.loads(tracker.load_bytes(by_seed["3"].run_id, "environment.json"))["device"] == "cpu"
    members = tracker.batch_members(experiment_id, "call-7")
    assert sorted(m.run_id for m in members) == sorted(r.run_id for r in by_seed.values())


@dataclass
class LeaseAttempt:
    """What ``acquire_lease`` did for a new parent (``mine``) beside a live rival parent."""

    tracker: Tracker
    rival: str
    mine: str
    reported: list[str]  # the holders ``on_wait`` was told of
    waited: bool
    pauses: int


def acquire_beside_a_rival(tracking_uri: str, monkeypatch, rival_lease: str,  # type: ignore[no-untyped-def]
                           on_pause: Callable[[Tracker, str, int], None]) -> LeaseAttempt:
    """Take the lease beside a live rival whose tag is ``rival_lease``; each back-off pause calls
    ``on_pause(tracker, rival, pauses so far)`` instead of sleeping, so the rounds are deterministic."""
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment_id("contended")
    assert experiment_id is not None
    rival = tracker.start_parent(experiment_id, name="rival", tags={LEASE_TAG: rival_lease})
    mine = tracker.start_parent(experiment_id, name="mine", tags={})
    pauses = 0

    def pause(seconds: float) -> None:
        nonlocal pauses
        pauses += 1
        on_pause(tracker, rival, pauses)

    monkeypatch.setattr(lease, "time", SimpleNamespace(sleep=pause))
    WRITING_HERE.add(rival)  # a live writer in this process
    try:
        reported: list[str] = []
        waited = lease.acquire_lease(tracker, experiment_id, mine, on_wait=lambda r: reported.append(r.run_id))
    finally:
        WRITING_HERE.discard(rival)
    return LeaseAttempt(tracker, rival, mine, reported, waited, pauses)


def test_a_round_lost_to_another_runs_try_is_contention_not_a_wait(tracking_uri: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two runs that both wrote ``trying`` both step back; neither generates yet, so neither may say
    "another run is generating" (the later winner would print it and then generate)."""
    def rival_steps_back(tracker: Tracker, rival: str, pauses: int) -> None:  # it lost the same round
        tracker.set_tags(rival, {LEASE_TAG: LEASE_WAITING})

    attempt = acquire_beside_a_rival(tracking_uri, monkeypatch, LEASE_TRYING, rival_steps_back)
    assert attempt.pauses == 1, "the first round should have been lost to the rival's try"
    assert attempt.reported == [] and attempt.waited is False
    assert attempt.tracker.client.get_run(attempt.mine).data.tags[LEASE_TAG] == LEASE_HELD


def test_a_run_that_holds_the_lease_is_reported_once_and_waited_for(tracking_uri: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def holder_ends_on_the_third_pause(tracker: Tracker, rival: str, pauses: int) -> None:
        if pauses == 3:
            tracker.end_run(rival)

    attempt = acquire_beside_a_rival(tracking_uri, monkeypatch, LEASE_HELD, holder_ends_on_the_third_pause)
    assert attempt.pauses == 3 and attempt.reported == [attempt.rival] and attempt.waited is True
