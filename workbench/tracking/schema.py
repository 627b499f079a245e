"""The run schema: every tag, metric and artifact name the workbench writes to MLflow, defined once.

Writers (the store, the runner, reproduce, the Ray executor) and readers (``RunRecord``, grids, widgets)
import these names; no other module spells a ``workbench.*`` tag. Params are named after the request's
own fields (``GenerationRequest.factor_values``: ``guidance``, ``size``, ``var.NAME``, ``option.NAME``...),
so a factor, a grid axis and a param share one name; ``request_params`` adds the few that are not factors.

``RunRecord`` is one run read back. It lives here, not in ``types``, because it is the store's shape of a
run (its MLflow status, its tags): the ground floor stays free of MLflow's vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..types import GenerationFailure, GenerationRequest, GenerationResult

__all__ = ["RunRecord", "request_params", "image_tags", "run_name", "MAX_PARAM"]  # and the names below

MAX_PARAM = 6000  # MLflow's cap on a param value
MAX_TAG = 7000  # what we keep of a long tag value (MLflow allows 8000)

# -- what a run is ---------------------------------------------------------------------------------------
KIND_TAG = "workbench.kind"
IMAGE, PARENT, REPRODUCTION = "image", "parent", "reproduction"  # its values
REPRODUCTIONS = "reproductions"  # the one run per experiment that its reproduction runs are nested under
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: nests image runs under their sweep in the UI
RUN_NAME_TAG = "mlflow.runName"
NOTE_TAG = "mlflow.note.content"  # MLflow's own: the run's description in the UI
# MLflow 3's UI opens experiments without this tag in its GenAI (traces) view; ours are runs to compare.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"

# -- image runs ------------------------------------------------------------------------------------------
RUN_KEY_TAG = "workbench.run_key"
RUN_ID_TAG = "workbench.run_id"
OUTCOME_TAG = "workbench.outcome"  # FINISHED, FAILED, BLOCKED, KILLED: MLflow's status cannot say BLOCKED
STATUS_REASON_TAG = "workbench.status_reason"
ERROR_TYPE_TAG = "workbench.error_type"
FLAGS_TAG = "workbench.flags"
BACKEND_TAG, MODEL_TAG = "workbench.backend", "workbench.model"
SPEC_TAG = "workbench.spec"
FACTOR_TAG, LEVEL_TAG = "workbench.factor", "workbench.level"
BATCH_ID_TAG = "workbench.batch_id"  # shared by every image of one backend call
BACKEND_ID_TAG = "workbench.id."  # + request_id, prediction_id, model_version...: what the backend called it
WORKER_TAG = "workbench.worker"  # host:pid of the Ray worker that generated and logged an image run
SPOOLED_TAG = "workbench.spooled"  # logged from the local spool, after the store came back

# -- parent runs (one per `workbench run`) ---------------------------------------------------------------
PID_TAG, HOST_TAG = "workbench.pid", "workbench.host"  # who writes it: a dead writer's runs are reaped
STARTED_TAG = "workbench.started"
SPEC_HASH_TAG = "workbench.spec_hash"
EXECUTOR_TAG = "workbench.executor"
FINISHED_TAG, FAILED_TAG = "workbench.finished", "workbench.failed"  # counts, set when the sweep ends
BLOCKED_TAG, SKIPPED_TAG = "workbench.blocked", "workbench.skipped"
RAY_WORKERS_TAG = "workbench.ray_workers"
RAY_NOTE_TAG = "workbench.ray_note"
# The experiment's writer lease (tracking/lease.py): one `workbench run` generates into an experiment at a time.
LEASE_TAG = "workbench.lease"
LEASE_TRYING, LEASE_HELD, LEASE_WAITING = "trying", "held", "waiting"  # its values
HEARTBEAT_TAG = "workbench.heartbeat"  # unix seconds, refreshed while the run lives (another host's runs)

# -- reproduction runs -----------------------------------------------------------------------------------
REPRODUCES_TAG = "workbench.reproduces"  # the run id of the original
REPRODUCES_FILE_TAG = "workbench.reproduces_file"  # or the PNG's file name, where no run is known
REPRODUCTION_SOURCE_TAG = "workbench.reproduction.source"
REPRODUCTION_VERDICT_TAG = "workbench.reproduction.verdict"
EXACT_BATCH_TAG = "workbench.exact_batch"

# -- metrics and artifacts of an image run -----------------------------------------------------------------
LATENCY_METRIC = "latency_s"
COST_METRIC = "cost_usd"
PROMPT_DRIFT_METRIC = "prompt_drift"  # how far a backend rewrote the prompt (0: not at all)
BATCH_SIZE_METRIC, BATCH_INDEX_METRIC = "batch_size", "batch_index"
IMAGE_ARTIFACT = "image.png"  # with the workbench and A1111 text chunks
REQUEST_ARTIFACT = "request.json"
ENVIRONMENT_ARTIFACT = "environment.json"
PROMPT_ARTIFACT, NEGATIVE_PROMPT_ARTIFACT = "prompt.txt", "negative_prompt.txt"
REVISED_PROMPT_ARTIFACT, PROMPT_DIFF_ARTIFACT = "revised_prompt.txt", "prompt_diff.txt"
FAILURE_ARTIFACT = "failure.txt"
NOTES_FOLDER = "notes"  # one text file per backend note (logs, truncation details...)

# -- scores (workbench/evaluate/ computes them; the logger's prepare hook or `workbench score` writes them) --
IMAGE_STAT_PREFIX = "image."  # image.brightness, image.contrast, image.colourfulness, image.sharpness...
CLIP_SCORE_METRIC = "clip_score"  # 100 * max(cos(image, prompt), 0) under the CLIP model named below
CLIP_MODEL_TAG, CLIP_HASH_TAG = "workbench.score.clip_model", "workbench.score.clip_weights_hash"
CLIP_MODEL_PARAM, CLIP_HASH_PARAM = "clip_model", "clip_weights_hash"  # on the parent run of a sweep
ADHERENCE_PREFIX = "adherence."  # adherence.<attribute> (1 or 0) and adherence.overall (their mean)
SCORING_NOTE = "scoring"  # the note (notes/scoring.txt) of an image whose scores could not all be computed
# Human ratings: RATING_PREFIX + rater (1-5) and their mean under RATING_METRIC; best-of-row picks
# (1 on the run picked, 0 on the other runs of its row) likewise.
RATING_METRIC, RATING_PREFIX = "rating", "rating."
BEST_PICK_METRIC, BEST_PICK_PREFIX = "best_pick", "best_pick."
# Bookkeeping numbers that are no measure of an image: never offered as a report's metric.
NOT_SCORES = frozenset({BATCH_SIZE_METRIC, BATCH_INDEX_METRIC})

# -- artifacts of a parent run ------------------------------------------------------------------------------
SPEC_ARTIFACT, PLAN_ARTIFACT, SUMMARY_ARTIFACT = "spec.yaml", "plan.json", "summary.json"

# -- the effects report (logged to the experiment's latest parent run) ------------------------------------
REPORT_FOLDER = "report"  # report/effects-<metric>.json and report/effects-<metric>.png

# (MLflow status, outcome tag) of a run written to the end; a FAILED run whose outcome says FINISHED is an
# image whose logging broke half-way.
_COMPLETE = {("FINISHED", "FINISHED"), ("FAILED", "FAILED"), ("FAILED", "BLOCKED")}


@dataclass(frozen=True)
class RunRecord:
    """One run as read back from MLflow (no image bytes: fetch them lazily with ``Tracker.load_image``)."""

    run_id: str
    status: str  # MLflow's: FINISHED, FAILED, KILLED, RUNNING
    run_key: str
    params: Mapping[str, str]
    tags: Mapping[str, str]
    metrics: Mapping[str, float]
    artifact_uri: str
    start_time: int = 0
    experiment_id: str = ""

    @property
    def outcome(self) -> str:
        """FINISHED, FAILED, BLOCKED, KILLED or RUNNING: what a grid cell should say.

        The MLflow status decides; the tag only tells a BLOCKED run (a safety filter) from a FAILED one.
        """
        if self.status == "FAILED" and self.tags.get(OUTCOME_TAG) == "BLOCKED":
            return "BLOCKED"
        return self.status

    @property
    def reason(self) -> str:
        return self.tags.get(STATUS_REASON_TAG, "")

    @property
    def kind(self) -> str | None:
        return self.tags.get(KIND_TAG)

    @property
    def complete(self) -> bool:
        """Written to the end: its MLflow status agrees with the outcome the workbench meant to log."""
        return (self.status, self.tags.get(OUTCOME_TAG)) in _COMPLETE


def request_params(request: GenerationRequest) -> dict[str, str]:
    """The MLflow params of an image run: every generation parameter, flat (``var.NAME``...)."""
    values = request.factor_values()
    values["seed"] = request.seed if request.seed is not None else "not controlled"
    values["scheduler"] = request.scheduler or "default"
    values["template_version"] = request.template_version
    values["model_hash"] = request.model_hash
    values["run_key"] = request.run_key
    out: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        text = str(value)
        if len(text) > MAX_PARAM:  # the full text is in prompt.txt / request.json
            text = text[:MAX_PARAM - 40] + f"… [{len(text)} chars, see artifacts]"
        out[key] = text
    return out


def image_tags(result: GenerationResult, parent_run_id: str | None) -> dict[str, str]:
    """The tags of an image run: what it is, where it came from, and how it ended."""
    request = result.request
    tags = {KIND_TAG: IMAGE, RUN_KEY_TAG: request.run_key, BACKEND_TAG: request.backend, MODEL_TAG: request.model,
            SPEC_TAG: request.experiment or "", FACTOR_TAG: request.factor or "base",
            LEVEL_TAG: "" if request.level is None else str(request.level), **_status_tags(result)}
    if parent_run_id:
        tags[PARENT_RUN_TAG] = parent_run_id
    if result.batch_id:
        tags[BATCH_ID_TAG] = result.batch_id
    return tags


def _status_tags(result: GenerationResult) -> dict[str, str]:
    # The backend's own ids on every outcome: a blocked or failed call is the one a support ticket asks about.
    ids = {BACKEND_ID_TAG + re.sub(r"[^\w.-]", "_", str(k))[:200]: str(v)[:5000]
           for k, v in result.backend_ids.items() if v not in (None, "")}
    if isinstance(result, GenerationFailure):
        return {OUTCOME_TAG: result.status, STATUS_REASON_TAG: result.reason[:MAX_TAG],
                ERROR_TYPE_TAG: result.error_type, **ids}
    tags = {OUTCOME_TAG: "FINISHED", **ids}
    if result.flags:
        tags[FLAGS_TAG] = ",".join(sorted(result.flags))
        tags[STATUS_REASON_TAG] = "; ".join(
            f"{k}: {v}" for k, v in sorted(result.notes.items()) if k in result.flags)[:MAX_TAG]
    return tags


def run_name(result: GenerationResult) -> str:
    """``guidance=7.0 · seed 3``: what the MLflow UI lists an image run as."""
    r = result.request
    cell = f"{r.factor}={r.level}" if r.factor else "base"
    rep = f"seed {r.seed}" if r.seed is not None else f"replicate {r.replicate + 1}"
    return f"{cell} · {rep}"[:250]
