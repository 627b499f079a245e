"""Replicate backend: the real ``replicate`` SDK against the loopback stand-in (tests/standins/replicate_server.py)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends.test_openai import declared_range
from tests.standins import (
    FAKE_REPLICATE_TOKEN,
    ReplicateStandin,
    expected_colours,
    replicate_env,
    replicate_standin,
)
from tests.standins.replicate_server import FLUX_SCHNELL_VERSION, SDXL_VERSION, parse_duration
from workbench.backends._http import RequestFailed
from workbench.backends.registry import get_backend
from workbench.backends.replicate import (
    DEFAULT_MODEL,
    ReplicateBackend,
    nearest_aspect_ratio,
    parse_model_ref,
)
from workbench.backends.replicate_api import Prediction
from workbench.backends.replicate_journal import PredictionJournal
from workbench.errors import (
    AuthenticationError,
    BackendError,
    MissingDependencyError,
    QuotaError,
    RateLimitError,
    TransientBackendError,
    UnsupportedRequestError,
)
from workbench.types import GeneratedImage, GenerationFailure, GenerationRequest

__all__ = ["replicate_env", "replicate_standin"]  # fixtures, imported for pytest

DEV = "black-forest-labs/flux-dev"


def req(model: str = DEFAULT_MODEL, prompt: str = "a red fox in the snow", seed: int | None = 7, width: int = 1024,
        height: int = 1024, steps: int = 4, **kw: Any) -> GenerationRequest:
    return GenerationRequest(backend="replicate", model=model, prompt=prompt, seed=seed, width=width,
                             height=height, steps=steps, **kw)


def make_backend(**kw: Any) -> ReplicateBackend:
    # a journal of its own: a create left unanswered in one test is nothing to look for in the next
    settings: dict[str, Any] = {"timeout_s": 2.0, "deadline_s": 3.0, "poll_interval_s": 0.02,
                                "journal": PredictionJournal(Path(tempfile.mkdtemp(prefix="journal-")))}
    settings.update(kw)
    return ReplicateBackend(**settings)


@pytest.fixture
def backend(replicate_env: ReplicateStandin) -> ReplicateBackend:
    b = make_backend()
    yield b
    b.close()


def only(results: list[Any]) -> Any:
    assert len(results) == 1
    return results[0]


def quadrant_colours(image: Any) -> tuple[tuple[int, int, int], ...]:
    w, h = image.size
    rgb = image.convert("RGB")
    return tuple(rgb.getpixel(p) for p in ((w // 4, h // 4), (3 * w // 4, h // 4), (w // 4, 3 * h // 4),
                                           (3 * w // 4, 3 * h // 4)))


# ------------------------------------------------------------------------------------------ success paths
def test_flux_schnell_on_the_model_route(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    request = req()
    backend.validate(request)
    result = only(backend.generate([request]))
    assert isinstance(result, GeneratedImage), result
    assert result.image.size == (1024, 1024) and result.original_format == "png"
    assert quadrant_colours(result.image) == expected_colours(request.prompt, 7)
    assert result.flags == frozenset()
    assert result.cost_usd == 0.003
    ids = result.backend_ids
    assert ids["prediction_id"] and ids["model_version"] == "hidden" and ids["seed"] == "7"
    assert ids["model"] == DEFAULT_MODEL
    assert "Using seed: 7" in result.notes["logs"]
    assert float(result.notes["predict_time_s"]) > 0
    # Replicate's own timings, as metrics (the stand-in reports its processing time)
    assert result.metrics["predict_time_s"] == pytest.approx(replicate_env.processing_s)
    assert result.metrics["total_time_s"] >= result.metrics["predict_time_s"]
    create = only(replicate_env.requests_to("create"))
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.headers["prefer"].startswith("wait=")
    assert create.json["input"] == {"prompt": request.prompt, "seed": 7, "aspect_ratio": "1:1", "megapixels": "1",
                                    "num_inference_steps": 4, "output_format": "png", "go_fast": False}
    assert json.loads(result.notes["input"]) == create.json["input"]
    # the file URL was fetched with the token (the stand-in's /files needs it)
    assert only(replicate_env.requests_to("files")).headers["authorization"] == f"Bearer {FAKE_REPLICATE_TOKEN}"


def test_version_route_records_the_version(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    model = f"{DEFAULT_MODEL}:{FLUX_SCHNELL_VERSION}"
    result = only(backend.generate([req(model)]))
    assert isinstance(result, GeneratedImage)
    create = only(replicate_env.requests_to("create"))
    assert create.path == "/v1/predictions" and create.json["version"] == FLUX_SCHNELL_VERSION
    assert result.backend_ids["model_version"] == FLUX_SCHNELL_VERSION
    assert result.environment["model_version"] == FLUX_SCHNELL_VERSION
    assert backend.environment(model)["model_version"] == FLUX_SCHNELL_VERSION


def test_sdxl_maps_size_steps_guidance_negative_prompt_scheduler(backend: ReplicateBackend,
                                                                 replicate_env: ReplicateStandin) -> None:
    request = req(f"stability-ai/sdxl:{SDXL_VERSION}", width=768, height=512, steps=20, guidance=6.5,
                  negative_prompt="blurry", scheduler="K_EULER")
    backend.validate(request)
    assert backend.uncontrolled(request) == {}
    result = only(backend.generate([request]))
    assert isinstance(result, GeneratedImage) and result.image.size == (768, 512)
    assert only(replicate_env.requests_to("create")).json["input"] == {
        "prompt": request.prompt, "seed": 7, "width": 768, "height": 512, "num_inference_steps": 20,
        "guidance_scale": 6.5, "negative_prompt": "blurry", "scheduler": "K_EULER"}
    assert backend.estimate_cost(request) == 0.004


def test_flux_dev_sends_guidance(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    result = only(backend.generate([req(DEV, steps=28, guidance=3.5)]))
    assert isinstance(result, GeneratedImage)
    inputs = only(replicate_env.requests_to("create")).json["input"]
    assert inputs["guidance"] == 3.5 and inputs["num_inference_steps"] == 28
    assert result.cost_usd == 0.025


def test_size_maps_to_the_nearest_aspect_ratio_and_megapixels(backend: ReplicateBackend,
                                                              replicate_env: ReplicateStandin) -> None:
    result = only(backend.generate([req(width=1000, height=600)]))
    assert isinstance(result, GeneratedImage)
    assert "16:9" in result.notes["aspect_ratio"] and "1000x600" in result.notes["aspect_ratio"]
    assert "size_mismatch" in result.flags  # 1000x600 is 5:3, the image is 16:9
    assert "nearest, 16:9" in backend.uncontrolled(req(width=1000, height=600))["size"]

    small = only(backend.generate([req(width=512, height=512)]))
    assert small.image.size == (512, 512) and "size_mismatch" not in small.flags
    assert replicate_env.requests_to("create")[-1].json["input"]["megapixels"] == "0.25"

    chosen = only(backend.generate([req(width=1024, height=576, options={"aspect_ratio": "21:9"})]))
    assert replicate_env.requests_to("create")[-1].json["input"]["aspect_ratio"] == "21:9"
    assert "aspect_ratio" not in chosen.notes
    assert nearest_aspect_ratio(1024, 1024) == "1:1" and nearest_aspect_ratio(768, 1344) == "9:16"


def test_same_ratio_different_pixels_is_noted_not_flagged(backend: ReplicateBackend) -> None:
    result = only(backend.generate([req(width=1024, height=576)]))  # 16:9 at 1 MP -> 1344x768
    assert result.image.size == (1344, 768)
    assert "size_mismatch" not in result.flags and "1344x768" in result.notes["size"]


def test_options_pass_through(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    request = req(options={"output_format": "webp", "output_quality": 90, "megapixels": "1",
                           "disable_safety_checker": True})
    backend.validate(request)
    result = only(backend.generate([request]))
    assert result.original_format == "webp"
    sent = only(replicate_env.requests_to("create")).json["input"]
    assert sent["output_format"] == "webp" and sent["output_quality"] == 90 and sent["disable_safety_checker"] is True


def test_go_fast_is_flagged_nondeterministic(backend: ReplicateBackend) -> None:
    request = req(options={"go_fast": True})
    assert "not deterministic" in backend.uncontrolled(request)["seed"]
    result = only(backend.generate([request]))
    assert "nondeterministic" in result.flags and "go_fast" in result.notes["nondeterministic"]


def test_no_seed_records_the_seed_from_the_logs(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    request = req(seed=None)
    assert "no seed given" in backend.uncontrolled(request)["seed"]
    result = only(backend.generate([request]))
    assert "seed" not in only(replicate_env.requests_to("create")).json["input"]
    seed = int(result.backend_ids["seed"])
    assert "seed_not_controlled" in result.flags and f"seed {seed}" in result.notes["seed"]
    assert quadrant_colours(result.image) == expected_colours(request.prompt, seed)


def test_data_uri_outputs(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    replicate_env.output_mode = "data"
    result = only(backend.generate([req()]))
    assert isinstance(result, GeneratedImage) and result.image.size == (1024, 1024)
    assert replicate_env.requests_to("files") == []


def test_polling_without_prefer_wait(replicate_env: ReplicateStandin) -> None:
    backend = make_backend(prefer_wait_s=0)
    result = only(backend.generate([req()]))
    assert isinstance(result, GeneratedImage)
    assert "prefer" not in only(replicate_env.requests_to("create")).headers
    assert len(replicate_env.requests_to("get")) >= 1
    backend.close()


def test_prefer_wait_runs_out_then_202_and_polls(replicate_env: ReplicateStandin) -> None:
    backend = make_backend(prefer_wait_s=1)
    replicate_env.script({"fault": "slow_prediction", "seconds": 1.3})
    result = only(backend.generate([req()]))
    assert isinstance(result, GeneratedImage)
    assert only(replicate_env.requests_to("create")).headers["prefer"] == "wait=1"
    assert len(replicate_env.requests_to("get")) >= 1
    backend.close()


def test_output_already_there_while_processing(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    replicate_env.script("processing_with_output")
    assert isinstance(only(backend.generate([req()])), GeneratedImage)


# ------------------------------------------------------------------------------------------ validation
INVALID = [
    (req(steps=30), "takes steps 1..4, got 30"),
    (req(DEV, steps=28, guidance=12), "takes guidance 0..10, got 12"),
    (req(options={"style": "x"}), "has no option 'style'"),
    (req(options={"aspect_ratio": "7:5"}), "allowed values: 1:1, 16:9"),
    (req(options={"output_format": "gif"}), "allowed values: webp, jpg, png"),
    (req(options={"go_fast": "yes"}), "go_fast='yes'"),
    (req(options={"megapixels": 1}), "megapixels=1"),
    (req(options={"output_quality": 101}), "0..100"),
    (req(options={"num_outputs": 2}), "one image per request"),
    (req(options={"seed": 3}), "set from the spec's 'seed'"),
    (req(options={"num_inference_steps": 2}), "set from the spec's 'steps'"),
    (req(options={"deadline_s": -1}), "positive number"),
    (req(scheduler="DDIM"), "no choice of scheduler"),
    (req(prompt="   "), "prompt is empty"),
    (req("stability-ai/sdxl", steps=20), "not an official model"),
    (req(f"stability-ai/sdxl:{SDXL_VERSION}", steps=20, width=100, height=100), "128..2048 in multiples of 8"),
    (req(f"stability-ai/sdxl:{SDXL_VERSION}", steps=20, scheduler="Euler"), "no scheduler 'Euler'"),
    (req("flux-schnell"), "not 'owner/name'"),
]


@pytest.mark.parametrize(("request_", "message"), INVALID)
def test_invalid_requests_fail_at_plan_time(backend: ReplicateBackend, replicate_env: ReplicateStandin,
                                            request_: GenerationRequest, message: str) -> None:
    with pytest.raises(UnsupportedRequestError) as info:
        backend.validate(request_)
    assert message in str(info.value)
    assert replicate_env.requests == []


def test_unknown_models_pass_options_through(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    request = req("someone/some-model:abc123", options={"width": 512, "anything": 1})
    with pytest.raises(UnsupportedRequestError, match="'width' field"):
        backend.validate(request)
    request = req("someone/some-model:abc123", options={"image_size": 512, "anything": 1})
    backend.validate(request)
    loose = backend.uncontrolled(request)
    assert "unknown" in loose["steps"] and "unknown" in loose["size"]
    assert backend.estimate_cost(request) == 0.0
    inputs, _ = backend.build_input(request)
    assert inputs == {"prompt": request.prompt, "seed": 7, "image_size": 512, "anything": 1}
    outcome = only(backend.generate([request]))  # the stand-in does not know it
    assert isinstance(outcome, GenerationFailure) and "Invalid version" in outcome.reason


def test_capabilities_and_costs(backend: ReplicateBackend) -> None:
    caps = backend.capabilities(DEFAULT_MODEL)
    assert (caps.seeds, caps.max_batch, caps.concurrency, caps.guidance, caps.negative_prompt) == (True, 1, 4, False,
                                                                                                  False)
    assert backend.capabilities(DEV).guidance is True
    assert backend.capabilities(f"stability-ai/sdxl:{SDXL_VERSION}").schedulers is True
    assert backend.estimate_cost(req()) == 0.003
    assert backend.estimate_cost(req(DEV)) == 0.025
    assert parse_model_ref("a/b:v1") == ("a/b", "v1") and parse_model_ref("a/b") == ("a/b", None)


# ------------------------------------------------------------------------------------------ faults
def run_fault(backend: ReplicateBackend, server: ReplicateStandin, *faults: Any,
              request: GenerationRequest | None = None) -> Any:
    server.script(*faults)
    try:
        return only(backend.generate([request or req()]))
    except BackendError as exc:
        return exc


OUTCOMES = [
    ("nsfw", "BLOCKED", "ContentPolicyError", "NSFW content detected"),
    ({"fault": "failed", "error": "CUDA out of memory"}, "FAILED", "PredictionFailed", "failed: CUDA out of memory"),
    ("canceled", "FAILED", "PredictionCanceled", "was canceled"),
    ("aborted", "FAILED", "PredictionAborted", "aborted"),
    ("expired_output", "FAILED", "InvalidResponseError", "expired"),
    ("data_removed", "FAILED", "InvalidResponseError", "data_removed"),
]


@pytest.mark.parametrize("prefer_wait_s", [10, 0], ids=["prefer-wait", "polling"])
@pytest.mark.parametrize(("fault", "status", "error_type", "message"), OUTCOMES,
                         ids=lambda v: v if isinstance(v, str) else None)
def test_prediction_outcomes(replicate_env: ReplicateStandin, prefer_wait_s: int, fault: Any, status: str,
                             error_type: str, message: str) -> None:
    backend = make_backend(prefer_wait_s=prefer_wait_s)
    outcome = run_fault(backend, replicate_env, fault)
    assert isinstance(outcome, GenerationFailure), outcome
    assert (outcome.status, outcome.error_type) == (status, error_type)
    assert message in outcome.reason
    assert outcome.backend_ids["prediction_id"] == replicate_env.created[0].id  # even for 'aborted'
    # what Replicate said about a failed prediction is kept too: version, logs, timings
    assert outcome.backend_ids["model_version"] == "hidden" and outcome.backend_ids["model"] == DEFAULT_MODEL
    if fault == "aborted":  # it never started: no logs, and nothing to pay for
        assert "logs" not in outcome.notes and "not charged" in outcome.reason
    else:
        assert "Using seed: 7" in outcome.notes["logs"]
    if fault in ("nsfw", "expired_output", "data_removed") or isinstance(fault, dict):  # failed or succeeded
        assert outcome.metrics["predict_time_s"] == pytest.approx(replicate_env.processing_s)
    backend.close()


def test_never_finishing_prediction_is_canceled_at_the_deadline(replicate_env: ReplicateStandin) -> None:
    backend = make_backend(deadline_s=0.6, prefer_wait_s=0)
    started = time.monotonic()
    outcome = run_fault(backend, replicate_env, "never")
    assert time.monotonic() - started < 0.6 + 5  # canceled at the deadline, not hung (slack: a loaded CI box)
    assert isinstance(outcome, GenerationFailure) and outcome.error_type == "DeadlineExceeded"
    assert "deadline exceeded" in outcome.reason and "canceled" in outcome.reason
    cancel = only(replicate_env.requests_to("cancel"))
    assert cancel.path == f"/v1/predictions/{outcome.backend_ids['prediction_id']}/cancel"
    assert replicate_env.predictions[outcome.backend_ids["prediction_id"]].canceled_at is not None
    assert outcome.backend_ids["model_version"] == "hidden"  # from the last poll
    assert "Using seed: 7" in outcome.notes["logs"] and "input" in outcome.notes
    backend.close()


def test_every_create_carries_cancel_after_a_little_past_the_deadline(replicate_env: ReplicateStandin) -> None:
    for deadline_s, expected in ((60.0, "62s"), (1.0, "5s")):  # 5 s is the API's minimum
        backend = make_backend(deadline_s=deadline_s)
        assert isinstance(only(backend.generate([req()])), GeneratedImage)
        create = replicate_env.requests_to("create")[-1]
        assert create.headers["cancel-after"] == expected
        assert replicate_env.created[-1].cancel_after_s == parse_duration(expected)
        backend.close()


def test_standin_cancels_at_cancel_after(replicate_standin: ReplicateStandin) -> None:
    auth = {"Authorization": f"Bearer {FAKE_REPLICATE_TOKEN}"}
    url = f"{replicate_standin.url}/v1/models/{DEFAULT_MODEL}/predictions"
    replicate_standin.script("never")
    created = httpx.post(url, headers={**auth, "Cancel-After": "1m30s"}, json={"input": {"prompt": "x"}}).json()
    prediction = replicate_standin.predictions[created["id"]]
    assert prediction.cancel_after_s == 90
    assert replicate_standin._status(prediction, prediction.created + 89) == "processing"
    assert replicate_standin._status(prediction, prediction.created + 91) == "canceled"
    too_short = httpx.post(url, headers={**auth, "Cancel-After": "2s"}, json={"input": {"prompt": "x"}})
    assert too_short.status_code == 422 and "at least 5s" in too_short.json()["detail"]
    assert parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5 and parse_duration("5 min") is None


def test_cancel_after_reached_before_the_start_ends_aborted(replicate_standin: ReplicateStandin) -> None:
    # Replicate's changelog 2025-10-16: "aborted" if the deadline is reached before it starts running,
    # "canceled" if while it runs; only the latter is charged.
    auth = {"Authorization": f"Bearer {FAKE_REPLICATE_TOKEN}", "Cancel-After": "5s"}
    url = f"{replicate_standin.url}/v1/models/{DEFAULT_MODEL}/predictions"
    replicate_standin.starting_s = 8.0  # queued for longer than its deadline
    created = httpx.post(url, headers=auth, json={"input": {"prompt": "x"}}).json()
    prediction = replicate_standin.predictions[created["id"]]
    assert replicate_standin._status(prediction, prediction.created + 4.9) == "starting"
    assert replicate_standin._status(prediction, prediction.created + 5.1) == "aborted"
    prediction.created -= 6  # as if six seconds had passed
    answer = httpx.get(f"{replicate_standin.url}/v1/predictions/{prediction.id}", headers=auth).json()
    assert answer["status"] == "aborted" and answer["started_at"] is None and answer["logs"] == ""
    assert answer["output"] is None and answer["completed_at"]
    replicate_standin.starting_s = 0.01  # started at once: the same deadline comes while it runs
    replicate_standin.script("never")
    running = httpx.post(url, headers=auth, json={"input": {"prompt": "x"}}).json()
    late = replicate_standin.predictions[running["id"]]
    assert replicate_standin._status(late, late.created + 5.1) == "canceled"


def test_an_aborted_prediction_says_it_never_started_and_costs_nothing(replicate_env: ReplicateStandin) -> None:
    backend = make_backend(prefer_wait_s=0)
    outcome = run_fault(backend, replicate_env, "aborted")
    assert isinstance(outcome, GenerationFailure) and outcome.error_type == "PredictionAborted"
    assert "before it started" in outcome.reason and "not charged" in outcome.reason
    assert outcome.cost_usd is None
    canceled = run_fault(backend, replicate_env, "canceled")
    assert "while it ran" in canceled.reason and "charged" in canceled.reason
    backend.close()


def test_a_429_with_only_the_documented_body_is_waited_out_by_its_detail(replicate_env: ReplicateStandin) -> None:
    # replicate.com/docs/topics/predictions/rate-limits: a 429 "with a body like" this, no header promised
    auth = {"Authorization": f"Bearer {FAKE_REPLICATE_TOKEN}"}
    replicate_env.script("429")
    raw = httpx.post(f"{replicate_env.url}/v1/models/{DEFAULT_MODEL}/predictions", headers=auth,
                     json={"input": {"prompt": "x"}})
    assert raw.status_code == 429 and "retry-after" not in raw.headers
    assert raw.json() == {"detail": "Request was throttled. Your rate limit resets in ~30s."}
    backend = make_backend(prefer_wait_s=0)
    outcome = run_fault(backend, replicate_env, "429")
    assert isinstance(outcome, RateLimitError) and outcome.retry_after == 30.0  # read from "~30s"
    assert "resets in ~30s" in str(outcome) and len(replicate_env.requests_to("create")) == 2
    with_header = run_fault(backend, replicate_env, {"fault": "429", "retry_after": 7, "header": True})
    assert isinstance(with_header, RateLimitError) and with_header.retry_after == 7.0
    polled = run_fault(backend, replicate_env, {"fault": "429", "on": "get", "retry_after": 0.1})
    assert isinstance(polled, GeneratedImage) and polled.notes["poll_errors"] == "1 (last: HTTP 429)"
    backend.close()


def test_version_takes_an_id_a_full_ref_or_an_official_model_only(replicate_standin: ReplicateStandin) -> None:
    # Replicate's changelog 2025-08-05: POST /v1/predictions takes "{owner}/{name}" for official models,
    # "{owner}/{name}:{version_id}" and the 64-character "{version_id}".
    auth = {"Authorization": f"Bearer {FAKE_REPLICATE_TOKEN}", "Prefer": "wait=5"}
    url = f"{replicate_standin.url}/v1/predictions"
    body = {"input": {"prompt": "x", "width": 512, "height": 512}}
    for version in (SDXL_VERSION, f"stability-ai/sdxl:{SDXL_VERSION}"):
        assert httpx.post(url, headers=auth, json={**body, "version": version}).status_code == 201
    bare = httpx.post(url, headers=auth, json={**body, "version": "stability-ai/sdxl"})  # a community model
    assert bare.status_code == 422 and bare.json()["title"] == "Invalid version or not permitted"
    official = httpx.post(url, headers=auth, json={"version": DEFAULT_MODEL, "input": {"prompt": "x"}})
    assert official.status_code == 201 and official.json()["version"] == "hidden"
    unknown = httpx.post(url, headers=auth, json={"version": "someone/not-a-model", "input": {"prompt": "x"}})
    assert unknown.status_code == 422


def test_the_backend_never_sends_a_bare_community_name_as_version(backend: ReplicateBackend,
                                                                  replicate_env: ReplicateStandin) -> None:
    with pytest.raises(UnsupportedRequestError, match="not an official model: give its version"):
        backend.validate(req("stability-ai/sdxl", steps=20))
    official = only(backend.generate([req()]))  # an official model goes to the model route, no version sent
    create = only(replicate_env.requests_to("create"))
    assert isinstance(official, GeneratedImage) and create.path == f"/v1/models/{DEFAULT_MODEL}/predictions"
    assert "version" not in (create.json or {})


def test_a_slow_create_is_bounded_by_the_deadline_not_the_timeout(replicate_env: ReplicateStandin) -> None:
    backend = make_backend(timeout_s=30.0, deadline_s=0.5, prefer_wait_s=0)
    outcome = run_fault(backend, replicate_env, {"fault": "slow", "seconds": 5})
    assert isinstance(outcome, TransientBackendError), outcome
    bound = float(str(outcome).split("timed out after ")[1].split(" s")[0])
    assert 0 < bound <= 0.5  # what was left of the deadline, not timeout_s
    assert "may have started anyway" in str(outcome)
    backend.close()


def test_a_create_that_timed_out_after_starting_a_prediction_is_not_paid_twice(
        replicate_env: ReplicateStandin) -> None:
    """The create's answer never came, but Replicate had started the prediction: the retry (the runner's, on
    TransientBackendError) finds it in the account's list and fetches it instead of creating another."""
    backend = make_backend(timeout_s=0.4, deadline_s=5.0, prefer_wait_s=0)
    first = run_fault(backend, replicate_env, {"fault": "slow", "seconds": 0.8})  # answers after we gave up
    assert isinstance(first, TransientBackendError) and "may have started anyway" in str(first)
    deadline = time.monotonic() + 5
    while not replicate_env.created and time.monotonic() < deadline:  # made once the server wakes
        time.sleep(0.02)
    [orphan] = replicate_env.created
    retry = only(backend.generate([req()]))
    assert isinstance(retry, GeneratedImage), retry
    assert retry.backend_ids["prediction_id"] == orphan.id
    assert "created by an earlier run" in retry.notes["resumed"]
    assert len(replicate_env.requests_to("create")) == 1 and len(replicate_env.created) == 1  # paid once
    assert replicate_env.requests_to("list")
    # another seed is another image: the orphan is not taken for it
    other = only(backend.generate([req(seed=8)]))
    assert isinstance(other, GeneratedImage) and other.backend_ids["prediction_id"] != orphan.id
    backend.close()


def test_429_while_polling_is_waited_out_inside_the_deadline(replicate_env: ReplicateStandin) -> None:
    backend = make_backend(prefer_wait_s=0)
    outcome = run_fault(backend, replicate_env, {"fault": "429", "on": "get", "retry_after": 0.1})
    assert isinstance(outcome, GeneratedImage), outcome
    assert outcome.notes["poll_errors"] == "1 (last: HTTP 429)"
    assert len(replicate_env.requests_to("create")) == 1
    backend.close()


def test_an_empty_body_is_transient_on_create_and_polled_again_on_get(replicate_env: ReplicateStandin) -> None:
    backend = make_backend(prefer_wait_s=0)
    outcome = run_fault(backend, replicate_env, "empty_body")
    assert isinstance(outcome, TransientBackendError) and "an empty body" in str(outcome)
    assert "may have started anyway" in str(outcome)
    polled = run_fault(backend, replicate_env, {"fault": "empty_body", "on": "get"})
    assert isinstance(polled, GeneratedImage) and polled.notes["poll_errors"] == "1 (last: HTTP 200)"
    broken_file = run_fault(backend, replicate_env, {"fault": "empty_body", "on": "files"})
    assert isinstance(broken_file, GenerationFailure) and "not an image: 0 bytes" in broken_file.reason
    backend.close()


def test_deadline_option_per_request(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    started = time.monotonic()
    outcome = run_fault(backend, replicate_env, "never", request=req(options={"deadline_s": 0.4}))
    assert isinstance(outcome, GenerationFailure) and "deadline exceeded after 0.4 s" in outcome.reason
    assert time.monotonic() - started < 0.4 + 5  # canceled at the deadline, not hung (slack: a loaded CI box)
    assert "deadline_s" not in only(replicate_env.requests_to("create")).json["input"]


def test_poll_errors_are_retried_inside_the_deadline(replicate_env: ReplicateStandin) -> None:
    backend = make_backend(prefer_wait_s=0)
    outcome = run_fault(backend, replicate_env, "503_get", "504_get", {"fault": "500", "on": "get"},
                        {"fault": "drop", "on": "get"})
    assert isinstance(outcome, GeneratedImage), outcome
    assert outcome.notes["poll_errors"].startswith("4")
    assert len(replicate_env.requests_to("create")) == 1  # never a second prediction
    backend.close()


RAISED = [
    ({"fault": "429", "retry_after": 3}, RateLimitError, "rate limit"),
    ("402", QuotaError, "out of credit"),
    ("500", TransientBackendError, "HTTP 500"),
    ("502_html", TransientBackendError, "HTTP 502"),
    ("503", TransientBackendError, "HTTP 503"),
    ("drop", TransientBackendError, "could not reach"),
    ("empty_body", TransientBackendError, "an empty body"),
    ({"fault": "slow", "seconds": 1.5}, TransientBackendError, "may have started anyway"),
    ("401", AuthenticationError, "REPLICATE_API_TOKEN"),
]


@pytest.mark.parametrize(("fault", "error", "message"), RAISED, ids=lambda v: v if isinstance(v, str) else None)
def test_create_faults_raise_mapped_errors(replicate_env: ReplicateStandin, fault: Any, error: type,
                                           message: str) -> None:
    # prefer_wait_s=0: the SDK sends that create with no timeout at all; the slow fault shows ours applies.
    # (With Prefer: wait=N the SDK sets its own read timeout, N + 0.5 s.)
    backend = make_backend(timeout_s=0.5, prefer_wait_s=0)
    outcome = run_fault(backend, replicate_env, fault)
    assert type(outcome) is error, outcome
    assert message in str(outcome)
    assert outcome.__cause__ is not None  # mapped with raise ... from
    assert len(replicate_env.requests_to("create")) == 1  # a POST is never retried here
    if isinstance(outcome, RateLimitError):
        assert outcome.retry_after == 3.0
    backend.close()


def test_server_side_input_validation_and_bad_version_fail_that_run(backend: ReplicateBackend,
                                                                    replicate_env: ReplicateStandin) -> None:
    outcome = only(backend.generate([req(steps=30)]))  # validate() skipped: the stand-in answers 422
    assert isinstance(outcome, GenerationFailure) and outcome.status == "FAILED"
    assert "HTTP 422" in outcome.reason and "Input validation failed" in outcome.reason
    assert "num_inference_steps" in outcome.reason
    bad_version = only(backend.generate([req(f"{DEFAULT_MODEL}:{'0' * 64}")]))
    assert "Invalid version or not permitted" in bad_version.reason
    not_official = only(backend.generate([req("stability-ai/sdxl", steps=20)]))
    assert "HTTP 404" in not_official.reason


def test_outputs_removed_after_the_ttl(replicate_env: ReplicateStandin) -> None:
    replicate_env.data_ttl_s = 0.0
    backend = make_backend(prefer_wait_s=0)
    outcome = only(backend.generate([req()]))
    assert isinstance(outcome, GenerationFailure) and "data_removed" in outcome.reason
    backend.close()


def open_prediction(backend: ReplicateBackend) -> Prediction:
    """A prediction call as the backend opens one (its own SDK client over the shared connections)."""
    return Prediction(backend._settings(), backend._connections, deadline=time.monotonic() + backend.deadline_s,
                      deadline_s=backend.deadline_s)


def test_token_goes_only_to_replicate_hosts(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    other = ReplicateStandin().start()
    try:
        prediction = open_prediction(backend)
        with pytest.raises(RequestFailed, match="HTTP 401"):
            prediction.download(f"{other.url}/files/p/out-0.png")
        assert "authorization" not in only(other.requests).headers
    finally:
        other.stop()


def test_file_output_objects_are_accepted(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    from replicate.helpers import FileOutput

    first = only(backend.generate([req()]))
    prediction = open_prediction(backend)
    url = f"{replicate_env.url}/files/{first.backend_ids['prediction_id']}/out-0.png"
    data = prediction.download(FileOutput(url, prediction.client))
    assert data == first.original_bytes


# ------------------------------------------------------------------------------------------ keys and setup
def test_missing_token_fails_before_any_request(replicate_standin: ReplicateStandin,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    backend = make_backend(base_url=replicate_standin.base_url)
    with pytest.raises(AuthenticationError, match="REPLICATE_API_TOKEN"):
        backend.preflight({DEFAULT_MODEL})
    with pytest.raises(AuthenticationError, match="REPLICATE_API_TOKEN"):
        backend.generate([req()])
    assert replicate_standin.requests == []


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", FAKE_REPLICATE_TOKEN)
    monkeypatch.setitem(sys.modules, "replicate", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'workbench\[replicate\]'"):
        make_backend(base_url="http://127.0.0.1:1").preflight({DEFAULT_MODEL})


def test_the_token_never_appears_in_errors_results_notes_or_environment(replicate_env: ReplicateStandin) -> None:
    backend = make_backend(timeout_s=0.5, deadline_s=0.6, prefer_wait_s=0)
    texts: list[str] = []
    faults = [f for f, *_ in RAISED] + [f for f, *_ in OUTCOMES] + ["never", "503_get", None]
    for fault in faults:
        outcome = run_fault(backend, replicate_env, fault) if fault else only(backend.generate([req()]))
        texts += [str(outcome), repr(outcome)]
        exc: BaseException | None = outcome if isinstance(outcome, BaseException) else None
        while exc is not None:
            texts += [str(exc), repr(exc)]
            exc = exc.__cause__ or exc.__context__
        if not isinstance(outcome, BaseException):
            texts += [json.dumps(dict(getattr(outcome, "notes", {}))), json.dumps(dict(outcome.environment)),
                      json.dumps(dict(outcome.backend_ids))]
    texts.append(json.dumps(backend.environment(DEFAULT_MODEL)))
    blob = "\n".join(texts)
    assert FAKE_REPLICATE_TOKEN not in blob and "WORKBENCHFAKETOKEN" not in blob
    assert f"Bearer {FAKE_REPLICATE_TOKEN}" in replicate_env.all_text()
    backend.close()


def test_environment_fingerprint(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    env = backend.environment(DEFAULT_MODEL)
    assert env["backend"] == "replicate" and env["sdk"] == "replicate"
    assert env["sdk_version"] in declared_range("replicate")  # the range pyproject promises works
    assert "1.1.0" not in declared_range("replicate")  # we rely on the private client._client of 1.0.x
    assert env["api_host"] == replicate_env.url.removeprefix("http://")
    assert "model_version" not in env


def test_registry_backend_follows_the_environment(replicate_env: ReplicateStandin,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.02")
    backend = get_backend("replicate", deadline_s=3.0)
    assert isinstance(backend, ReplicateBackend)
    assert isinstance(only(backend.generate([req()])), GeneratedImage)


def test_predictions_run_concurrently_and_thread_safely(backend: ReplicateBackend,
                                                        replicate_env: ReplicateStandin) -> None:
    requests = [req(seed=seed) for seed in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda r: only(backend.generate([r])), requests))
    for request, result in zip(requests, results, strict=True):
        assert isinstance(result, GeneratedImage)
        assert result.backend_ids["seed"] == str(request.seed)
        assert quadrant_colours(result.image) == expected_colours(request.prompt, request.seed)
    assert len(replicate_env.requests_to("create")) == 8


def test_control_route_scripts_faults(backend: ReplicateBackend, replicate_env: ReplicateStandin) -> None:
    answer = httpx.post(f"{replicate_env.url}/__control/script", json=[{"fault": "nsfw"}])
    assert answer.json() == {"queued": 1}
    outcome = only(backend.generate([req()]))
    assert isinstance(outcome, GenerationFailure) and outcome.status == "BLOCKED"


def test_standin_speaks_replicate_auth_and_errors(replicate_standin: ReplicateStandin) -> None:
    url = replicate_standin.url
    no_token = httpx.post(f"{url}/v1/predictions", json={"version": FLUX_SCHNELL_VERSION, "input": {"prompt": "x"}})
    assert no_token.status_code == 401 and no_token.json()["title"] == "Unauthenticated"
    auth = {"Authorization": f"Bearer {FAKE_REPLICATE_TOKEN}"}
    invalid = httpx.post(f"{url}/v1/models/{DEFAULT_MODEL}/predictions", headers=auth, json={"input": {}})
    assert invalid.status_code == 422 and invalid.json()["invalid_fields"][0]["description"] == "prompt is required"
    created = httpx.post(f"{url}/v1/predictions", headers={**auth, "Prefer": "wait=5"},
                         json={"version": f"{DEFAULT_MODEL}:{FLUX_SCHNELL_VERSION}", "input": {"prompt": "x", "seed": 1}})
    assert created.status_code == 201 and created.json()["status"] == "succeeded"
    file_url = created.json()["output"][0]
    assert httpx.get(file_url).status_code == 401 and httpx.get(file_url, headers=auth).status_code == 200
