"""OpenAI backend: the real ``openai`` SDK against the loopback stand-in (tests/standins/openai_server.py)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.standins import FAKE_OPENAI_KEY, OpenAIStandin, expected_colours, openai_env, openai_standin
from tests.standins.openai_server import revise
from workbench import Tracker
from workbench.backends.openai import PROFILES, ModelNotFoundError, OpenAIBackend, current_models
from workbench.backends.registry import get_backend
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

__all__ = ["openai_env", "openai_standin"]  # fixtures, imported for pytest


def req(model: str = "gpt-image-1.5", prompt: str = "a red fox in the snow", width: int = 1024,
        height: int = 1024, **kw: Any) -> GenerationRequest:
    return GenerationRequest(backend="openai", model=model, prompt=prompt, width=width, height=height, **kw)


@pytest.fixture
def backend(openai_env: OpenAIStandin) -> OpenAIBackend:
    b = OpenAIBackend(timeout_s=2.0)
    yield b
    b.close()


def only(results: list[Any]) -> Any:
    assert len(results) == 1
    return results[0]


def declared_range(package: str) -> Any:
    """The version range the ``package`` extra of pyproject.toml declares, as a SpecifierSet."""
    from packaging.requirements import Requirement

    extras = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    (line,) = extras[package]
    return Requirement(line).specifier


def quadrant_colours(image: Any) -> tuple[tuple[int, int, int], ...]:
    w, h = image.size
    rgb = image.convert("RGB")
    return tuple(rgb.getpixel(p) for p in ((w // 4, h // 4), (3 * w // 4, h // 4), (w // 4, 3 * h // 4),
                                           (3 * w // 4, 3 * h // 4)))


# ------------------------------------------------------------------------------------------ profiles
VALID = [
    ("gpt-image-1.5", 1024, 1024, {}),
    ("gpt-image-1.5", 1536, 1024, {"quality": "low", "output_format": "webp", "output_compression": 80}),
    ("gpt-image-1-mini", 1024, 1536, {"quality": "medium", "background": "transparent"}),
    ("gpt-image-1-mini", 1024, 1024, {"output_format": "jpeg", "moderation": "low"}),
    ("gpt-image-2", 1536, 864, {"quality": "high"}),
    ("gpt-image-2", 1024, 1024, {}),
    ("dall-e-3", 1024, 1024, {}),
    ("dall-e-3", 1792, 1024, {"quality": "hd", "style": "natural"}),
    ("dall-e-3", 1024, 1792, {"quality": "standard", "style": "vivid"}),
]


@pytest.mark.parametrize(("model", "width", "height", "options"), VALID)
def test_every_profile_generates_a_decoded_image(backend: OpenAIBackend, openai_env: OpenAIStandin, model: str,
                                                 width: int, height: int, options: dict[str, Any]) -> None:
    request = req(model, width=width, height=height, options=options)
    backend.validate(request)
    result = only(backend.generate([request]))
    assert isinstance(result, GeneratedImage), result
    assert result.image.size == (width, height)
    expected_format = options.get("output_format", "png")
    assert result.original_format == expected_format
    assert result.original_bytes and len(result.original_bytes) > 50
    assert result.backend_ids["request_id"].startswith("req_")
    (drawn,) = openai_env.image_seeds[result.backend_ids["request_id"]]
    # every quadrant is the colour the stand-in drew; JPEG and lossy WebP keep flat colours within a few levels
    tolerance = 0 if expected_format == "png" else 12
    for got, want in zip(quadrant_colours(result.image), expected_colours(request.prompt, drawn), strict=True):
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= tolerance, (expected_format, got, want)
    assert "seed_not_controlled" in result.flags
    if backend.estimate_cost(request) is not None:
        assert result.cost_usd is not None and result.cost_usd > 0
    else:  # gpt-image-2 at a size its price table does not list: unknown, not guessed
        assert result.cost_usd is None and (model, width, height) == ("gpt-image-2", 1536, 864)
    assert result.environment["backend"] == "openai" and result.environment["model"] == model

    body = only(openai_env.requests_to("generate")).json
    assert body["model"] == model and body["n"] == 1 and body["size"] == f"{width}x{height}"
    if model.startswith("gpt-image"):
        assert "response_format" not in body  # GPT-image models reject it
        assert "usage" in result.notes
    else:
        assert body["response_format"] == "b64_json"
    for key, value in options.items():
        assert body[key] == value


INVALID = [
    ("gpt-image-1.5", 512, 512, {}, "allowed sizes: 1024x1024, 1536x1024, 1024x1536"),
    ("gpt-image-1.5", 1024, 1024, {"quality": "hd"}, "allowed values: low, medium, high, auto"),
    ("gpt-image-1.5", 1024, 1024, {"style": "vivid"}, "has no option 'style'"),
    ("gpt-image-1.5", 1024, 1024, {"output_format": "gif"}, "allowed values: png, jpeg, webp"),
    ("gpt-image-1.5", 1024, 1024, {"background": "transparent", "output_format": "jpeg"}, "png or webp"),
    ("gpt-image-1.5", 1024, 1024, {"output_compression": 50}, "output_compression needs output_format"),
    ("gpt-image-1.5", 1024, 1024, {"output_format": "webp", "output_compression": 101}, "integer 0..100"),
    ("gpt-image-1.5", 1024, 1024, {"response_format": "url"}, "response_format"),
    ("gpt-image-1-mini", 1024, 1024, {"n": 2}, "option 'n'"),
    ("gpt-image-1-mini", 1024, 1024, {"moderation": "none"}, "allowed values: low, auto"),
    ("gpt-image-1-mini", 1792, 1024, {}, "allowed sizes"),
    ("gpt-image-2", 1000, 1000, {}, "multiples of 16"),
    ("gpt-image-2", 3072, 1008, {}, "between 1:3 and 3:1"),
    ("gpt-image-2", 3840, 2176, {}, "3840x2160"),
    ("gpt-image-2", 1024, 1024, {"style": "vivid"}, "has no option 'style'"),
    ("dall-e-3", 1024, 1024, {"quality": "low"}, "allowed values: standard, hd"),
    ("dall-e-3", 1536, 1024, {}, "allowed sizes: 1024x1024, 1792x1024, 1024x1792"),
    ("dall-e-3", 1024, 1024, {"style": "anime"}, "allowed values: vivid, natural"),
    ("dall-e-3", 1024, 1024, {"background": "opaque"}, "options it takes: quality, style"),
    ("dall-e-3", 1024, 1024, {"n": 1}, "option 'n'"),
    ("dall-e-2", 512, 512, {}, "retired"),
    ("gpt-image-1", 1024, 1024, {}, "shut down"),
    ("gpt-image-9", 1024, 1024, {}, "unknown model 'gpt-image-9'"),
]


@pytest.mark.parametrize(("model", "width", "height", "options", "message"), INVALID)
def test_invalid_requests_fail_at_plan_time_naming_allowed_values(
        backend: OpenAIBackend, openai_env: OpenAIStandin, model: str, width: int, height: int,
        options: dict[str, Any], message: str) -> None:
    with pytest.raises(UnsupportedRequestError, match=message.replace("(", r"\(").replace(".", r"\.")):
        backend.validate(req(model, width=width, height=height, options=options))
    assert openai_env.requests == []


def test_retired_models_name_the_current_ones(backend: OpenAIBackend) -> None:
    for model in ("dall-e-2", "gpt-image-1"):
        with pytest.raises(UnsupportedRequestError) as info:
            backend.validate(req(model, width=1024, height=1024))
        for current in backend.current_models():
            assert current in str(info.value)
    # After 2026-12-01 (OpenAI's deprecations page) the 1.x models and chatgpt-image-latest are gone too.
    assert set(current_models(date(2026, 12, 2))) == {
        "gpt-image-2", "gpt-image-2-2026-04-21", "gpt-image-2.5-sunburst", "gpt-image-2.5-sunburst-2026-09-08",
        "gpt-image-2.5-flare", "gpt-image-2.5-flare-2026-09-08", "gpt-image-2.6-sunburst", "gpt-image-2.6-flare"}
    assert {"gpt-image-1.5", "gpt-image-1-mini", "chatgpt-image-latest"} <= set(current_models(date(2026, 11, 30)))


def test_prompt_too_long_and_scheduler_fail_at_plan_time(backend: OpenAIBackend) -> None:
    with pytest.raises(UnsupportedRequestError, match="at most 4000 characters; this one has 4001"):
        backend.validate(req("dall-e-3", prompt="x" * 4001))
    backend.validate(req("gpt-image-1.5", prompt="x" * 32000))
    with pytest.raises(UnsupportedRequestError, match="at most 32000"):
        backend.validate(req("gpt-image-1.5", prompt="x" * 32001))
    with pytest.raises(UnsupportedRequestError, match="scheduler"):
        backend.validate(req(scheduler="euler"))


def test_legacy_dalle3_is_refused_against_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UnsupportedRequestError, match="legacy profile .*compatible server"):
        OpenAIBackend().validate(req("dall-e-3"))
    OpenAIBackend(base_url="http://127.0.0.1:1/v1").validate(req("dall-e-3"))


def test_gpt_image_2_free_sizes() -> None:
    backend = OpenAIBackend(base_url="http://127.0.0.1:1/v1")
    # A pixel budget (655,360..8,294,400), not an edge cap: 2880x2880 fits, as does the budget's floor 1024x640.
    for width, height in ((1536, 864), (3840, 2160), (2160, 3840), (768, 2304), (2880, 2880), (1024, 640)):
        backend.validate(req("gpt-image-2", width=width, height=height))
        backend.validate(req("gpt-image-2-2026-04-21", width=width, height=height))
    for width, height, why in ((640, 640, "outside the budget of 655,360"), (2896, 2896, "outside the budget"),
                               (3856, 1296, "long edge must be at most 3840")):
        with pytest.raises(UnsupportedRequestError, match=why):
            backend.validate(req("gpt-image-2", width=width, height=height))


def test_what_cannot_be_held_is_reported_not_refused(backend: OpenAIBackend) -> None:
    request = req(seed=42, negative_prompt="blurry", steps=50, guidance=9.0)
    backend.validate(request)  # not an error
    loose = backend.uncontrolled(request)
    assert set(loose) == {"seed", "guidance", "steps", "negative_prompt"}
    assert "no seed" in loose["seed"] and "replicates" in loose["seed"]


def test_capabilities(backend: OpenAIBackend) -> None:
    caps = backend.capabilities("gpt-image-1.5")
    assert (caps.seeds, caps.max_batch, caps.concurrency, caps.revised_prompt) == (False, 1, 4, False)
    assert caps.sizes == ((1024, 1024), (1536, 1024), (1024, 1536))
    assert backend.capabilities("dall-e-3").revised_prompt is True
    assert backend.capabilities("gpt-image-2").sizes is None
    assert backend.capabilities("gpt-image-2").seconds_per_image
    assert OpenAIBackend(concurrency=2).capabilities("gpt-image-1.5").concurrency == 2


# ------------------------------------------------------------------------------------------ revised prompts
def test_revised_prompt_is_stored_and_diffed_once(backend: OpenAIBackend, tracking_uri: str) -> None:
    request = req("dall-e-3", prompt="a red fox, oil painting, 35mm lens")
    result = only(backend.generate([request]))
    assert isinstance(result, GeneratedImage)
    assert result.revised_prompt == revise(request.prompt)
    assert {"prompt_revised", "dropped_elements", "seed_not_controlled"} <= result.flags
    assert result.notes["dropped_elements"] == "35mm lens"
    # The backend reports the revised prompt; tracking writes its difference (and drift), once per run.
    assert not {"prompt_diff", "prompt_drift"} & set(result.notes)
    tracker = Tracker(tracking_uri)
    run_id = tracker.log_image_run(tracker.experiment_id("revised"), None, result)
    diff = tracker.load_bytes(run_id, "prompt_diff.txt").decode()
    assert "- 35mm lens" in diff
    assert "+ detailed" in diff
    (record,) = tracker.records("revised")
    assert 0 < record.metrics["prompt_drift"] < 1
    client = MlflowClient(tracking_uri)
    artifacts = {a.path for folder in (None, "notes") for a in client.list_artifacts(run_id, folder)}
    assert "prompt_diff.txt" in artifacts and "notes/prompt_diff.txt" not in artifacts


def test_no_revised_prompt_for_gpt_image(backend: OpenAIBackend) -> None:
    result = only(backend.generate([req("gpt-image-1-mini")]))
    assert result.revised_prompt is None
    assert "prompt_diff" not in result.notes and "dropped_elements" not in result.flags


# ------------------------------------------------------------------------------------------ costs
def test_cost_estimates_from_the_price_table() -> None:
    backend = OpenAIBackend(base_url="http://127.0.0.1:1/v1")
    assert backend.estimate_cost(req("gpt-image-1.5", options={"quality": "low"})) == 0.009
    assert backend.estimate_cost(req("gpt-image-1.5", width=1536, options={"quality": "high"})) == 0.2
    assert backend.estimate_cost(req("gpt-image-1.5", options={"quality": "auto"})) == 0.133  # upper bound
    assert backend.estimate_cost(req("gpt-image-1.5")) == 0.133
    assert backend.estimate_cost(req("gpt-image-1-mini", height=1536, options={"quality": "medium"})) == 0.015
    assert backend.estimate_cost(req("dall-e-3")) == 0.04
    assert backend.estimate_cost(req("dall-e-3", width=1792, options={"quality": "hd"})) == 0.12
    # gpt-image-2 (the guide's table, 2026-07-27): non-square is cheaper than square, not dearer by area
    assert backend.estimate_cost(req("gpt-image-2", options={"quality": "low"})) == 0.006
    assert backend.estimate_cost(req("gpt-image-2", width=1536, options={"quality": "low"})) == 0.005
    assert backend.estimate_cost(req("gpt-image-2", height=1536, options={"quality": "high"})) == 0.165
    assert backend.estimate_cost(req("gpt-image-2", options={"quality": "medium"})) == 0.053
    assert backend.estimate_cost(req("gpt-image-2")) == 0.211  # no quality: priced as high (an upper bound)
    assert backend.estimate_cost(req("gpt-image-2", width=2048, height=2048)) is None  # no published price
    assert backend.estimate_cost(req("gpt-image-2.6-flare")) is None  # no profile: unknown, not free
    assert backend.estimate_cost(req("no-such-model")) is None


def test_prices_are_configurable_through_profiles() -> None:
    cheap = dataclasses.replace(PROFILES["gpt-image-1.5"],
                                prices={**PROFILES["gpt-image-1.5"].prices, ("1024x1024", "low"): 0.001})
    backend = OpenAIBackend(base_url="http://127.0.0.1:1/v1", profiles={"gpt-image-1.5": cheap})
    assert backend.estimate_cost(req(options={"quality": "low"})) == 0.001


def test_logged_cost_uses_the_quality_the_api_reports(backend: OpenAIBackend) -> None:
    result = only(backend.generate([req("gpt-image-1.5")]))  # quality auto: the stand-in reports medium
    assert result.notes["quality"] == "medium"
    assert result.cost_usd == 0.034


# ------------------------------------------------------------------------------------------ faults
def run_fault(backend: OpenAIBackend, server: OpenAIStandin, fault: Any, model: str = "gpt-image-1.5") -> Any:
    server.script(fault)
    try:
        return only(backend.generate([req(model)]))
    except BackendError as exc:
        return exc


RAISED = [
    ("500", TransientBackendError, "HTTP 500"),
    ("502_html", TransientBackendError, "HTML error page"),
    ("503", TransientBackendError, "HTTP 503"),
    ({"fault": "429", "retry_after": 2.5}, RateLimitError, "rate limit"),
    ("insufficient_quota", QuotaError, "quota exhausted"),
    ("401", AuthenticationError, "OPENAI_API_KEY"),
    ("403", AuthenticationError, "denied access"),
    ("x_should_retry_false", BackendError, "asked not to retry"),
    ("drop", TransientBackendError, "could not reach"),
    ({"fault": "slow", "seconds": 1.5}, TransientBackendError, "no answer"),
    ("bad_json", TransientBackendError, "not valid JSON"),
    ("html_200", TransientBackendError, "answered HTML"),
    ("empty_body", TransientBackendError, "HTTP 200 with an empty body"),
    ("model_not_found", ModelNotFoundError, "is not available"),
    ("retired_model", ModelNotFoundError, "has been deprecated"),
]


@pytest.mark.parametrize(("fault", "error", "message"), RAISED, ids=lambda v: v if isinstance(v, str) else None)
def test_whole_call_faults_raise_mapped_errors(openai_env: OpenAIStandin, fault: Any, error: type,
                                               message: str) -> None:
    backend = OpenAIBackend(timeout_s=0.5)
    outcome = run_fault(backend, openai_env, fault)
    assert type(outcome) is error, outcome
    assert message in str(outcome)
    import openai

    if fault not in ("bad_json", "html_200", "empty_body"):
        assert isinstance(outcome.__cause__, openai.OpenAIError)  # mapped with raise ... from
    assert len(openai_env.requests_to("generate")) == 1  # max_retries=0: retries are the runner's
    answered = fault != "drop" and not (isinstance(fault, dict) and fault["fault"] == "slow")
    if answered:  # the x-request-id of the answer is kept for support tickets
        assert outcome.request_id and outcome.request_id.startswith("req_")
    flags = (outcome.retryable, outcome.fatal)
    expected_flags = {TransientBackendError: (True, False), RateLimitError: (True, False),
                      QuotaError: (False, True), AuthenticationError: (False, True),
                      ModelNotFoundError: (False, True),
                      BackendError: (False, False)}[error]
    assert flags == expected_flags
    backend.close()


def test_rate_limit_carries_retry_after(backend: OpenAIBackend, openai_env: OpenAIStandin) -> None:
    outcome = run_fault(backend, openai_env, {"fault": "429", "retry_after": 2.5})
    assert isinstance(outcome, RateLimitError) and outcome.retry_after == 2.5  # from retry-after-ms


PER_REQUEST = [
    ("content_policy_violation", "BLOCKED", "ContentPolicyError", "safety system"),
    ("moderation_blocked", "BLOCKED", "ContentPolicyError", "moderation_blocked"),
    ("n_must_be_1", "FAILED", "UnsupportedRequestError", "You must provide n=1"),
    ("unknown_parameter", "FAILED", "UnsupportedRequestError", "Unknown parameter"),
    ({"fault": "user_error", "code": "invalid_prompt_format"}, "FAILED", "UnsupportedRequestError",
     "invalid_prompt_format"),  # an image_generation_user_error that is no safety block
    ("missing_data", "FAILED", "InvalidResponseError", "'data' missing"),
    ("empty_data", "FAILED", "InvalidResponseError", "'data' empty"),
    ("empty_item", "FAILED", "InvalidResponseError", "neither 'b64_json' nor 'url'"),
    ("corrupt_base64", "FAILED", "InvalidResponseError", "not valid base64"),
    ("not_an_image", "FAILED", "InvalidResponseError", "not an image"),
    ("truncated_image", "FAILED", "InvalidResponseError", "does not decode"),
]


@pytest.mark.parametrize(("fault", "status", "error_type", "message"), PER_REQUEST,
                         ids=lambda v: v if isinstance(v, str) else None)
def test_per_request_faults_return_results(backend: OpenAIBackend, openai_env: OpenAIStandin, fault: Any,
                                           status: str, error_type: str, message: str) -> None:
    outcome = run_fault(backend, openai_env, fault)
    assert isinstance(outcome, GenerationFailure), outcome
    assert (outcome.status, outcome.error_type) == (status, error_type)
    assert message in outcome.reason
    assert outcome.backend_ids["request_id"].startswith("req_")
    if error_type == "InvalidResponseError":
        assert outcome.reason.startswith("InvalidResponse: ")
    if status in ("BLOCKED", "FAILED") and error_type != "InvalidResponseError":
        assert outcome.backend_ids["request_id"] in outcome.reason  # the reason says which call, and where


def test_a_moderation_block_says_where_it_happened(backend: OpenAIBackend, openai_env: OpenAIStandin) -> None:
    outcome = run_fault(backend, openai_env, "moderation_blocked")
    assert outcome.status == "BLOCKED"
    assert "at the input stage" in outcome.reason and "HTTP 400 moderation_blocked" in outcome.reason


def test_a_missing_model_is_fatal_not_a_failed_run(backend: OpenAIBackend, openai_env: OpenAIStandin) -> None:
    outcome = run_fault(backend, openai_env, "model_not_found", model="gpt-image-2")
    assert isinstance(outcome, ModelNotFoundError) and outcome.fatal and not outcome.retryable
    assert "model 'gpt-image-2'" in str(outcome) and "retired or unknown" in str(outcome)
    for current in backend.current_models():  # says what to use instead
        assert current in str(outcome)
    # 403 model_not_found is "this project has no access": still the key's problem, not the model's
    assert isinstance(run_fault(backend, openai_env, "403"), AuthenticationError)


def test_server_side_validation_errors_fail_only_that_run(backend: OpenAIBackend, openai_env: OpenAIStandin) -> None:
    # Skipping validate(): the stand-in's own n=1 / unknown-parameter checks answer 400.
    bad = req("gpt-image-1.5", options={"style": "vivid"})
    outcome = only(backend.generate([bad]))
    assert isinstance(outcome, GenerationFailure) and "Unknown parameter: 'style'" in outcome.reason
    assert "(parameter 'style')" in outcome.reason


def test_wrong_size_is_flagged_not_hidden(backend: OpenAIBackend, openai_env: OpenAIStandin) -> None:
    outcome = run_fault(backend, openai_env, "wrong_size")
    assert isinstance(outcome, GeneratedImage)
    assert "size_mismatch" in outcome.flags and outcome.notes["size_mismatch"] == "asked 1024x1024, got 64x64"


def test_url_answers_are_downloaded_at_once_without_the_key(openai_env: OpenAIStandin) -> None:
    openai_env.force_url = True
    backend = OpenAIBackend(timeout_s=2.0)
    result = only(backend.generate([req("gpt-image-1.5")]))
    assert isinstance(result, GeneratedImage) and result.image.size == (1024, 1024)
    assert "downloaded" in result.notes["download"]
    download = only(openai_env.requests_to("files"))
    assert "authorization" not in download.headers  # the key goes to the API only

    openai_env.script("url_expired")
    expired = only(backend.generate([req("gpt-image-1.5")]))
    assert isinstance(expired, GenerationFailure) and "expired" in expired.reason
    backend.close()


def test_control_route_scripts_faults(openai_env: OpenAIStandin, backend: OpenAIBackend) -> None:
    answer = httpx.post(f"{openai_env.url}/__control/script", json={"faults": ["500", {"fault": "503"}]})
    assert answer.json() == {"queued": 2}
    assert httpx.post(f"{openai_env.url}/__control/script", json={"faults": ["nope"]}).status_code == 400
    for _ in range(2):
        with pytest.raises(TransientBackendError):
            backend.generate([req()])
    assert isinstance(only(backend.generate([req()])), GeneratedImage)
    recorded = httpx.get(f"{openai_env.url}/__control/requests").json()
    assert [r["route"] for r in recorded] == ["generate"] * 3


# ------------------------------------------------------------------------------------------ keys and setup
def test_missing_key_fails_before_any_request(openai_standin: OpenAIStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = OpenAIBackend(base_url=openai_standin.base_url)
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        backend.preflight({"gpt-image-1.5"})
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        backend.generate([req()])
    assert openai_standin.requests == []


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    monkeypatch.setitem(sys.modules, "openai", None)  # import openai -> ImportError
    backend = OpenAIBackend(base_url="http://127.0.0.1:1/v1")
    with pytest.raises(MissingDependencyError, match=r"pip install 'workbench\[openai\]'"):
        backend.preflight({"gpt-image-1.5"})


def test_preflight_passes_with_key_and_rejects_unknown_models(backend: OpenAIBackend) -> None:
    backend.preflight({"gpt-image-1.5", "dall-e-3"})
    with pytest.raises(UnsupportedRequestError):
        backend.preflight({"gpt-image-9"})


def test_the_key_never_appears_in_errors_results_notes_or_environment(openai_env: OpenAIStandin) -> None:
    backend = OpenAIBackend(timeout_s=0.5)
    texts: list[str] = []
    faults = [f for f, *_ in RAISED] + [f for f, *_ in PER_REQUEST] + [None, "wrong_size"]
    for fault in faults:
        for model in ("gpt-image-1.5", "dall-e-3"):
            outcome = run_fault(backend, openai_env, fault, model) if fault else only(backend.generate([req(model)]))
            texts += [str(outcome), repr(outcome)]
            exc: BaseException | None = outcome if isinstance(outcome, BaseException) else None
            while exc is not None:  # the whole chain, as a traceback would show it
                texts += [str(exc), repr(exc)]
                exc = exc.__cause__ or exc.__context__
            if not isinstance(outcome, BaseException):
                texts += [json.dumps(dict(getattr(outcome, "notes", {}))), json.dumps(dict(outcome.environment)),
                          json.dumps(dict(outcome.backend_ids))]
    texts.append(json.dumps(backend.environment("gpt-image-1.5")))
    blob = "\n".join(texts)
    assert FAKE_OPENAI_KEY not in blob
    assert "WORKBENCHFAKEKEY" not in blob
    # ...while the key did reach the server, in the Authorization header only
    assert f"Bearer {FAKE_OPENAI_KEY}" in openai_env.all_text()
    backend.close()


def test_environment_fingerprint(backend: OpenAIBackend, openai_env: OpenAIStandin) -> None:
    env = backend.environment("dall-e-3")
    assert env["backend"] == "openai" and env["sdk"] == "openai"
    assert env["sdk_version"] in declared_range("openai")  # the range pyproject promises works
    assert "2.30.0" not in declared_range("openai")  # openai 2.x has no httpx2, which _download imports
    assert env["api_host"] == openai_env.url.removeprefix("http://")
    assert env["legacy_profile"] is True


def test_base_url_from_the_constructor_wins(openai_standin: OpenAIStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    backend = OpenAIBackend(base_url=openai_standin.base_url, timeout_s=2.0)
    assert isinstance(only(backend.generate([req()])), GeneratedImage)
    assert only(openai_standin.requests).headers["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"


def test_registry_backend_follows_the_environment(openai_env: OpenAIStandin) -> None:
    backend = get_backend("openai")
    assert isinstance(backend, OpenAIBackend)
    assert isinstance(only(backend.generate([req()])), GeneratedImage)


def test_calls_run_concurrently_and_thread_safely(backend: OpenAIBackend, openai_env: OpenAIStandin) -> None:
    requests = [req(prompt=f"a fox number {i}") for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda r: only(backend.generate([r])), requests))
    assert all(isinstance(r, GeneratedImage) for r in results)
    for request, result in zip(requests, results, strict=True):
        (drawn,) = openai_env.image_seeds[result.backend_ids["request_id"]]
        assert quadrant_colours(result.image) == expected_colours(request.prompt, drawn)
    assert len(openai_env.requests_to("generate")) == 8


def test_replicates_of_one_request_are_different_draws(backend: OpenAIBackend, openai_env: OpenAIStandin) -> None:
    first, second = (only(backend.generate([req(replicate=i)])) for i in range(2))
    assert first.image.tobytes() != second.image.tobytes()  # no seed: each call is a new draw
    assert first.backend_ids["request_id"] != second.backend_ids["request_id"]


def test_standin_speaks_openai_auth_and_errors(openai_standin: OpenAIStandin) -> None:
    url = f"{openai_standin.base_url}/images/generations"
    no_key = httpx.post(url, json={"model": "gpt-image-1.5", "prompt": "x"})
    assert no_key.status_code == 401 and "didn't provide an API key" in no_key.json()["error"]["message"]
    auth = {"Authorization": "Bearer sk-anything"}
    ok = httpx.post(url, headers=auth, json={"model": "gpt-image-1.5", "prompt": "x"})
    assert ok.status_code == 200 and ok.headers["x-request-id"].startswith("req_")
    assert set(ok.json()) >= {"created", "data", "usage", "output_format", "quality", "size", "background"}
    dalle = httpx.post(url, headers=auth, json={"model": "dall-e-3", "prompt": "x, y"}).json()
    assert dalle["data"][0]["url"].startswith(openai_standin.url) and "revised_prompt" in dalle["data"][0]
    retired = httpx.post(url, headers=auth, json={"model": "dall-e-2", "prompt": "x"})
    assert retired.status_code == 404 and retired.json()["error"]["code"] == "model_not_found"


# ------------------------------------------------------------------------------------------ the SDK's catalogue
def test_the_catalogue_is_the_installed_sdks() -> None:
    import typing

    from openai.types import ImageModel
    from openai.types.image_generate_params import ImageGenerateParamsBase

    from workbench.backends.openai_catalogue import sdk_models, sdk_parameter_values

    assert sdk_models() == typing.get_args(ImageModel)
    hints = typing.get_type_hints(ImageGenerateParamsBase)
    assert set(sdk_parameter_values()["quality"]) == {
        v for arg in typing.get_args(hints["quality"]) for v in typing.get_args(arg)}
    # every value a profile allows is one the SDK knows (a profile cannot drift from the API's spec)
    values = sdk_parameter_values()
    for profile in PROFILES.values():
        assert profile.name in sdk_models(), profile.name
        for option, allowed in profile.options.items():
            if allowed is not None and option in values:
                assert set(allowed) <= set(values[option]), (profile.name, option)


def test_every_model_the_sdk_lists_is_known_none_refused_as_unknown(backend: OpenAIBackend) -> None:
    from workbench.backends.openai_catalogue import sdk_models

    for model in sdk_models():
        try:
            backend.validate(req(model))
        except UnsupportedRequestError as exc:  # only the shut-down ones, and never "unknown"
            assert "unknown model" not in str(exc) and "shut down" in str(exc), (model, exc)
            assert model in ("dall-e-2", "gpt-image-1"), model
    with pytest.raises(UnsupportedRequestError, match="neither the installed openai SDK nor a workbench profile"):
        backend.validate(req("gpt-image-9"))


@pytest.mark.parametrize("model", ["gpt-image-2.6-flare", "gpt-image-2.5-sunburst", "gpt-image-2.5-flare-2026-09-08"])
def test_a_model_without_a_profile_is_sent_as_asked_with_a_warning(backend: OpenAIBackend,
                                                                   openai_env: OpenAIStandin, model: str) -> None:
    request = req(model, options={"quality": "high", "output_format": "webp", "output_compression": 70})
    backend.validate(request)
    (warning,) = backend.warnings(request)
    assert f"'{model}' has no workbench profile" in warning and "cost and limits" in warning
    assert backend.estimate_cost(request) is None
    result = only(backend.generate([request]))
    assert isinstance(result, GeneratedImage) and result.cost_usd is None and result.original_format == "webp"
    body = only(openai_env.requests_to("generate")).json
    assert body == {"model": model, "prompt": request.prompt, "size": "1024x1024", "n": 1, "quality": "high",
                    "output_format": "webp", "output_compression": 70}  # no response_format: GPT image models refuse it


def test_a_model_without_a_profile_is_checked_against_the_sdk(backend: OpenAIBackend) -> None:
    backend.validate(req("gpt-image-2.5-flare", options={"quality": "max", "complexity": "low"}))  # the SDK's values
    for options, message in (({"quality": "ultra"}, "quality='ultra' is not a value the installed SDK knows"),
                             ({"colour": "red"}, "no parameter 'colour'"),
                             ({"output_format": "gif"}, "output_format 'gif' is not an image the workbench can "),
                             ({"output_format": "svg"}, "use one of png, jpeg, webp"),
                             ({"n": 2}, "option 'n' is not supported"),
                             ({"size": "auto"}, "option 'size' is set by the backend")):
        with pytest.raises(UnsupportedRequestError, match=re.escape(message)):
            backend.validate(req("gpt-image-2.5-flare", options=options))


def test_shutdown_dates_warn_before_and_refuse_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    before = OpenAIBackend(today=date(2026, 11, 20))
    before.validate(req("gpt-image-1.5"))
    (warning,) = before.warnings(req("gpt-image-1.5"))
    assert "shuts down on 2026-12-01 (in 11 days" in warning and "gpt-image-2.6-sunburst" in warning
    after = OpenAIBackend(today=date(2026, 12, 1))
    for model in ("gpt-image-1.5", "gpt-image-1-mini", "chatgpt-image-latest"):
        with pytest.raises(UnsupportedRequestError, match="shut down on api.openai.com on 2026-12-01"):
            after.validate(req(model))
    compatible = OpenAIBackend(base_url="http://127.0.0.1:1/v1", today=date(2026, 12, 1))
    compatible.validate(req("gpt-image-1.5"))  # a compatible server may still serve it: sent, with a warning
    assert "was shut down on api.openai.com on 2026-12-01; sent to 127.0.0.1:1 as asked" in compatible.warnings(
        req("gpt-image-1.5"))[0]
    assert OpenAIBackend(today=date(2026, 12, 1)).warnings(req("gpt-image-2")) == []


ONE_CELL = """
name: catalogue
prompt: a red fox in the snow
backend: openai
model: {model}
seeds: [1, 2]
params: {{width: {width}, height: {height}}}
"""


def plan_for(tmp_path: Path, tracking_uri: str, backend: OpenAIBackend, model: str, width: int = 1024,
             height: int = 1024) -> Any:
    from workbench.backends import registry
    from workbench.cli import cli

    spec = tmp_path / "spec.yaml"
    spec.write_text(ONE_CELL.format(model=model, width=width, height=height))
    registry._instances["openai"] = backend
    try:
        from click.testing import CliRunner

        text = CliRunner().invoke(cli, ["plan", str(spec), "--tracking-uri", tracking_uri], catch_exceptions=False)
        as_json = CliRunner().invoke(cli, ["plan", str(spec), "--tracking-uri", tracking_uri, "--json"],
                                     catch_exceptions=False)
    finally:
        registry._instances.pop("openai", None)
    return text, as_json


def test_plan_warns_before_a_shut_down_model_is_called(tmp_path: Path, tracking_uri: str,
                                                       openai_env: OpenAIStandin) -> None:
    backend = OpenAIBackend(today=date(2026, 12, 2))  # the stand-in: a compatible server
    text, as_json = plan_for(tmp_path, tracking_uri, backend, "gpt-image-1.5")
    assert text.exit_code == 0, text.output
    assert "warning:" in text.output and "was shut down on api.openai.com on 2026-12-01" in text.output
    assert json.loads(as_json.output)["warnings"][0].startswith("openai model 'gpt-image-1.5' was shut down")
    soon = plan_for(tmp_path, tracking_uri, OpenAIBackend(today=date(2026, 11, 1)), "gpt-image-1-mini")[0]
    assert "shuts down on 2026-12-01 (in 30 days" in soon.output
    assert openai_env.requests == []  # planning sends nothing


def test_plan_shows_the_cost_of_a_model_without_a_profile_as_unknown(tmp_path: Path, tracking_uri: str,
                                                                     openai_env: OpenAIStandin) -> None:
    text, as_json = plan_for(tmp_path, tracking_uri, OpenAIBackend(), "gpt-image-2.6-sunburst")
    assert text.exit_code == 0, text.output
    assert "unknown" in text.output and "has no workbench profile" in text.output
    assert "cost unknown for openai:gpt-image-2.6-sunburst" in text.output
    plan = json.loads(as_json.output)
    assert plan["cost_unknown"] == ["openai:gpt-image-2.6-sunburst"] and plan["cells"][0]["est_cost_usd"] is None
    assert plan["est_cost_usd"] == 0.0
    priced = json.loads(plan_for(tmp_path, tracking_uri, OpenAIBackend(), "gpt-image-2", 1536, 1024)[1].output)
    assert priced["est_cost_usd"] == pytest.approx(2 * 0.165) and priced["cost_unknown"] == []
    odd = json.loads(plan_for(tmp_path, tracking_uri, OpenAIBackend(), "gpt-image-2", 1536, 864)[1].output)
    assert odd["cost_unknown"] == ["openai:gpt-image-2"] and "no price is published for 1536x864" in odd["warnings"][0]


def test_plan_refuses_bad_input_with_exit_2(tmp_path: Path, tracking_uri: str, openai_env: OpenAIStandin) -> None:
    for model, width, height, message in (("gpt-image-2", 640, 640, "outside the budget of 655,360"),
                                          ("gpt-image-9", 1024, 1024, "unknown model 'gpt-image-9'"),
                                          ("gpt-image-1", 1024, 1024, "was shut down (retired) on 2026-10-23")):
        text, _ = plan_for(tmp_path, tracking_uri, OpenAIBackend(), model, width, height)
        assert text.exit_code == 2 and "error:" in text.output and message in text.output, text.output
