"""Replicate backend: predictions through the official ``replicate`` SDK, under our own deadline.

Models are ``owner/name`` (official models, the model route; default ``black-forest-labs/flux-schnell``)
or ``owner/name:VERSION`` (the version route). Known models have a profile (``PROFILES``, in
``replicate_models.py`` with the input mapping) that maps our parameters to the model's inputs and checks
them at plan time; any other model gets ``prompt`` and ``seed``, and its other inputs pass through from
``request.options`` verbatim.

One request is one prediction (``replicate_api.Prediction``): a create with ``Prefer: wait``, then polls
under our own deadline (``deadline_s``); past it the prediction is canceled and the request FAILS. This
module turns what the prediction said into a result: the image, its flags (seed, size, ``go_fast``) and,
for every outcome, failures included, the prediction id, model version, logs (``notes["logs"]``) and
Replicate's timings (``metrics["predict_time_s"]``, ``metrics["total_time_s"]``).

The create is a POST: the SDK never retries it and neither does this backend. Each create is noted
(``replicate_journal.py``) before it is sent and its prediction's id recorded as soon as it answers, so
nothing is paid twice: a run killed mid-sweep is followed by one that fetches those predictions, and a
create that never answered (killed inside ``Prefer: wait``, timed out, cut off: the runner retries a
``TransientBackendError``) is looked for in the account's list of predictions before a new one is made
(``replicate_recovery.py``). ``Cancel-After`` stops any orphan at the deadline all the same.

Example:
    >>> backend = ReplicateBackend(base_url="http://127.0.0.1:9")
    >>> backend.estimate_cost(GenerationRequest(backend="replicate", model=DEFAULT_MODEL, prompt="a fox",
    ...                                         seed=1, width=1024, height=1024, steps=4))
    0.003
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from ..errors import MissingDependencyError, TransientBackendError, UnsupportedRequestError
from ..types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult
from ._http import (
    RequestFailed,
    base_url,
    decode_image,
    float_setting,
    host_of,
    missing_secret_error,
    secret_from_env,
)
from .base import Backend, Capabilities
from .replicate_api import ApiSettings, Connections, Prediction
from .replicate_journal import PredictionJournal
from .replicate_recovery import find_unanswered
from .replicate_models import (
    DEFAULT_MODEL,
    FLUX_ASPECT_RATIOS,
    GENERIC_PROFILE,
    PRICES_AS_OF,
    PROFILES,
    ReplicateModelProfile,
    aspect_ratio_value,
    build_input,
    nearest_aspect_ratio,
    parse_model_ref,
    validate_options,
)
from .replicate_results import Reported, first_output, image_flags

__all__ = ["ReplicateBackend", "ReplicateModelProfile", "PROFILES", "DEFAULT_MODEL", "DEFAULT_BASE_URL",
           "PRICES_AS_OF", "FLUX_ASPECT_RATIOS", "parse_model_ref", "nearest_aspect_ratio"]

DEFAULT_BASE_URL = "https://api.replicate.com"


class ReplicateBackend(Backend):
    """Images from Replicate predictions.

    Args:
        base_url: API root without ``/v1``; default ``$REPLICATE_BASE_URL``, else ``https://api.replicate.com``.
        timeout_s: per-HTTP-call timeout; default ``$WORKBENCH_REPLICATE_TIMEOUT_S``, else 120 s.
        deadline_s: total time for one prediction (create, wait, polls) before it is canceled; default
            ``$WORKBENCH_REPLICATE_DEADLINE_S``, else 300 s. A request may override it with option ``deadline_s``.
        poll_interval_s: time between polls; default ``$REPLICATE_POLL_INTERVAL``, else 0.5 s.
        prefer_wait_s: seconds the create may hold for a finished prediction (``Prefer: wait=N``, 1..60;
            0: no wait, poll from the start); default 10.
        concurrency: predictions in flight at once (read by the runner); default 4.
        profiles: extra or replacement model profiles, merged over ``PROFILES``.
        journal: where created predictions are recorded, so a re-run fetches them instead of paying again
            (``replicate_journal.py``); default: the workbench home's.

    Request options for flux models: ``aspect_ratio``, ``megapixels``, ``output_format``, ``output_quality``,
    ``go_fast``, ``disable_safety_checker``; for unknown models any input name passes through.
    """

    name = "replicate"

    def __init__(self, *, base_url: str | None = None, timeout_s: float | None = None,
                 deadline_s: float | None = None, poll_interval_s: float | None = None, prefer_wait_s: int = 10,
                 concurrency: int = 4, profiles: Mapping[str, ReplicateModelProfile] | None = None,
                 journal: PredictionJournal | None = None) -> None:
        self._base_url = base_url
        self.timeout_s = float_setting(timeout_s, "WORKBENCH_REPLICATE_TIMEOUT_S", 120.0)
        self.deadline_s = float_setting(deadline_s, "WORKBENCH_REPLICATE_DEADLINE_S", 300.0)
        self.poll_interval_s = float_setting(poll_interval_s, "REPLICATE_POLL_INTERVAL", 0.5)
        if not 0 <= prefer_wait_s <= 60:
            raise ValueError(f"prefer_wait_s must be 0..60 seconds, got {prefer_wait_s}")
        self.prefer_wait_s = int(prefer_wait_s)
        self.concurrency = concurrency
        self.profiles: dict[str, ReplicateModelProfile] = {**PROFILES, **(profiles or {})}
        self._connections = Connections(self.timeout_s)
        self.journal = journal or PredictionJournal()

    # configuration ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return base_url(self._base_url, "REPLICATE_BASE_URL", DEFAULT_BASE_URL)

    @property
    def host(self) -> str:
        return host_of(self.base_url)

    @staticmethod
    def _token() -> str | None:
        return secret_from_env("REPLICATE_API_TOKEN")

    def _profile(self, model: str) -> tuple[ReplicateModelProfile, str, str | None]:
        name, version = parse_model_ref(model)
        return self.profiles.get(name, GENERIC_PROFILE), name, version

    def _settings(self) -> ApiSettings:
        """How to call Replicate now; raises ``MissingDependencyError`` / ``AuthenticationError`` first."""
        try:
            import httpx  # noqa: F401
            import replicate  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("replicate", "replicate") from exc
        token = self._token()
        if token is None:
            raise missing_secret_error("replicate", "REPLICATE_API_TOKEN", "API token")
        return ApiSettings(token=token, base_url=self.base_url, host=self.host, timeout_s=self.timeout_s,
                           poll_interval_s=self.poll_interval_s, prefer_wait_s=self.prefer_wait_s)

    # contract ----------------------------------------------------------------------------------------
    def capabilities(self, model: str) -> Capabilities:
        try:
            profile, _, _ = self._profile(model)
        except UnsupportedRequestError:
            profile = GENERIC_PROFILE
        return Capabilities(
            seeds=profile.seed_input is not None, max_batch=1,
            negative_prompt=profile.negative_prompt_input is not None,
            guidance=profile.guidance_input is not None, steps=profile.steps_input is not None,
            schedulers=bool(profile.schedulers), revised_prompt=False, sizes=None,
            size_multiple=8 if profile.sizing == "width_height" else 1, concurrency=self.concurrency,
            seconds_per_image=profile.seconds_per_image)

    def validate(self, request: GenerationRequest) -> None:
        profile, name, version = self._profile(request.model)
        if not profile.official and version is None:
            raise UnsupportedRequestError(
                f"replicate model '{name}' is not an official model: give its version, "
                f"'{name}:VERSION' (the version id is on the model's API page)")
        if not request.prompt.strip():
            raise UnsupportedRequestError("replicate: the prompt is empty")
        if request.width <= 0 or request.height <= 0:
            raise UnsupportedRequestError(f"replicate: bad size {request.width}x{request.height}")
        if request.scheduler:
            if not profile.schedulers:
                raise UnsupportedRequestError(
                    f"replicate model '{name}' has no choice of scheduler; remove "
                    f"'scheduler: {request.scheduler}' from the spec")
            if request.scheduler not in profile.schedulers:
                raise UnsupportedRequestError(
                    f"replicate model '{name}' has no scheduler '{request.scheduler}'; allowed: "
                    f"{', '.join(profile.schedulers)}")
        if profile.steps_input and profile.steps_range:
            low, high = profile.steps_range
            if not low <= request.steps <= high:
                raise UnsupportedRequestError(
                    f"replicate model '{name}' takes steps {low}..{high}, got {request.steps}; set steps in the spec")
        if profile.guidance_input and profile.guidance_range:
            low_g, high_g = profile.guidance_range
            if not low_g <= request.guidance <= high_g:
                raise UnsupportedRequestError(
                    f"replicate model '{name}' takes guidance {low_g:g}..{high_g:g}, got {request.guidance:g}")
        if profile.sizing == "width_height":
            low_s, high_s = profile.size_range
            if (request.width % 8 or request.height % 8 or not low_s <= request.width <= high_s
                    or not low_s <= request.height <= high_s):
                raise UnsupportedRequestError(
                    f"replicate model '{name}' takes width and height {low_s}..{high_s} in multiples of 8, "
                    f"got {request.width}x{request.height}")
        validate_options(profile, name, dict(request.options))

    def uncontrolled(self, request: GenerationRequest) -> dict[str, str]:
        out = super().uncontrolled(request)
        profile, _, _ = self._profile(request.model)
        if request.seed is None:
            out["seed"] = "no seed given: the model picks one (recorded from its logs when it says)"
        elif request.options.get("go_fast") is True:
            out["seed"] = "go_fast=true runs fp8 kernels that are not deterministic even with a fixed seed"
        if profile.sizing == "aspect_ratio":
            if "aspect_ratio" in request.options:
                out["size"] = (f"set by aspect_ratio {request.options['aspect_ratio']} and megapixels; "
                               f"{request.width}x{request.height} is not sent")
            else:
                sent = nearest_aspect_ratio(request.width, request.height, profile.aspect_ratios)
                if abs(aspect_ratio_value(sent) - request.width / request.height) > 1e-3:
                    out["size"] = (f"the model takes aspect ratios only: {request.width}x{request.height} is sent "
                                   f"as the nearest, {sent}")
                else:
                    out["size"] = f"sent as aspect_ratio {sent}; the model picks the exact pixel size"
        elif profile.sizing == "none":
            out["size"] = "not sent: the model's size inputs are unknown (set them in options)"
        if not profile.known:
            for field_name in ("steps", "guidance"):
                out[field_name] = "not sent: the model's inputs are unknown (set them in options)"
        return out

    def estimate_cost(self, request: GenerationRequest) -> float:
        try:
            profile, _, _ = self._profile(request.model)
        except UnsupportedRequestError:
            return 0.0
        return profile.price_per_image or 0.0

    def setup_warnings(self) -> list[str]:
        if self._token() is None:
            error = missing_secret_error("replicate", "REPLICATE_API_TOKEN", "API token")
            return [f"{error}; `workbench run` refuses to start without it"]
        return []

    def preflight(self, models: set[str]) -> None:
        try:
            import replicate  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError("replicate", "replicate") from exc
        if self._token() is None:
            raise missing_secret_error("replicate", "REPLICATE_API_TOKEN", "API token")
        for model in sorted(models):
            parse_model_ref(model)

    def environment(self, model: str) -> dict[str, Any]:
        try:
            sdk_version = metadata.version("replicate")
        except metadata.PackageNotFoundError:
            sdk_version = None
        try:
            _, name, version = self._profile(model)
        except UnsupportedRequestError:
            name, version = model, None
        env: dict[str, Any] = {"backend": self.name, "model": name, "sdk": "replicate",
                               "sdk_version": sdk_version, "api_host": self.host, "api": "predictions"}
        if version:
            env["model_version"] = version
        return env

    def close(self) -> None:
        self._connections.close()

    # inputs --------------------------------------------------------------------------------------------
    def build_input(self, request: GenerationRequest) -> tuple[dict[str, Any], dict[str, str]]:
        """The model input for ``request`` and notes on how parameters were mapped (see ``build_input`` in
        ``replicate_models.py``)."""
        profile, _, _ = self._profile(request.model)
        return build_input(profile, request)

    # generation ----------------------------------------------------------------------------------------
    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [self._generate_one(request) for request in batch]

    def _earlier(self, prediction: Prediction, key: str, name: str, version: str | None,
                 inputs: dict[str, Any]) -> str | None:
        """The prediction an earlier run started for ``key``: the journal's id, or, where that run died inside
        an unanswered create (``Prefer: wait``), the one found in the account's list; None when there is none."""
        import httpx

        noted = self.journal.entry(key)
        if noted is None:
            return None
        if noted.prediction_id is not None:  # the create answered: the prediction it started
            return noted.prediction_id
        try:
            return find_unanswered(prediction.call, prediction.settings.host, model=name, version=version,
                                   inputs=inputs, sent_at=noted.sent_at, exclude=self.journal.known_ids())
        except httpx.TransportError:
            return None  # the search is a courtesy; the create that follows reports an unreachable API

    def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        profile, name, version = self._profile(request.model)
        settings = self._settings()  # MissingDependencyError / AuthenticationError before anything else
        inputs, notes = self.build_input(request)
        notes["input"] = json.dumps(inputs, sort_keys=True)
        deadline_s = float(request.options.get("deadline_s", self.deadline_s))
        env = self.environment(request.model)
        start = time.monotonic()
        prediction = Prediction(settings, self._connections, deadline=start + deadline_s, deadline_s=deadline_s)
        key = self.journal.key(settings.base_url, request.run_key, {"model": request.model, **inputs})
        earlier = self._earlier(prediction, key, name, version, inputs)
        resumed = earlier is not None and prediction.resume(earlier)
        try:
            if resumed:  # a run that died left it running or finished: fetch it, do not pay for it again
                notes["resumed"] = f"prediction {earlier} was created by an earlier run; its output was fetched"
            else:
                self.journal.intend(key)  # a kill inside the create (Prefer: wait) is found again from this
                try:
                    created = prediction.create(name, version, inputs)
                except TransientBackendError:
                    raise  # timed out or cut off: a prediction may have started; the retry looks for it first
                except BaseException:
                    self.journal.drop(key)  # refused: nothing is running for it
                    raise
                if created.get("id"):
                    self.journal.put(key, str(created["id"]))  # before waiting: a kill now loses nothing
            finished = prediction.wait()
            output, count = first_output(finished, settings.token)
            if count > 1:
                notes["outputs"] = f"{count} outputs; the first was kept"
            payload = prediction.download(output)
            try:
                image, fmt = decode_image(payload)
            except ValueError as exc:
                raise RequestFailed(f"InvalidResponse: output of prediction {prediction.state.prediction_id}: "
                                    f"{exc}", error_type="InvalidResponseError") from exc
        except RequestFailed as failed:
            self.journal.drop(key)  # failed (or its output is gone): the next run creates a new one
            if resumed:  # the earlier prediction cannot give the image after all: make it now, once
                return self._generate_one(request)
            reported = Reported.of(prediction.state, settings.token)
            return GenerationFailure(request=request, reason=failed.reason, status=failed.status,
                                     error_type=failed.error_type, backend_ids=reported.ids,
                                     notes={**notes, **reported.notes}, metrics=reported.metrics,
                                     latency_s=time.monotonic() - start, environment={**env, **reported.env})
        # Fetched: forget it, so a later request for the same image (a reproduction) makes a new one.
        self.journal.drop(key)
        reported = Reported.of(prediction.state, settings.token)
        notes.update(reported.notes)
        flags = image_flags(request, profile, image.size, inputs, reported.ids, notes)
        return GeneratedImage(request=request, image=image, backend_ids=reported.ids,
                              latency_s=time.monotonic() - start, cost_usd=profile.price_per_image,
                              flags=frozenset(flags), notes=notes, environment={**env, **reported.env},
                              metrics=reported.metrics, original_bytes=payload, original_format=fmt)
