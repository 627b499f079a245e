"""``report()``: an experiment's effects report, read from the store, drawn, and logged to its parent run.

Reads every finished image run of the experiment, computes ``effects.effects`` for one metric, and logs the
numbers (``report/effects-<metric>.json``) and the chart (``report/effects-<metric>.png``) to the
experiment's latest parent run (the last ``workbench run``), so the answer sits next to the grids it
explains. Nothing is generated; running it again replaces the two artifacts.
"""

from __future__ import annotations

import dataclasses
import json
import re
import yaml

from ..errors import UserInputError
from ..experiments.spec import ExperimentSpec, parse_spec
from ..tracking.schema import REPORT_FOLDER, SPEC_ARTIFACT, RunRecord
from ..tracking.store import Tracker
from .chart import effects_chart
from .effects import EffectsReport, default_metric, effects

__all__ = ["report", "artifact_names", "finished_records", "logged_spec"]


def artifact_names(metric: str) -> tuple[str, str]:
    """(JSON, PNG) artifact paths of the report of ``metric`` on the parent run."""
    safe = re.sub(r"[^\w.-]", "_", metric)
    return f"{REPORT_FOLDER}/effects-{safe}.json", f"{REPORT_FOLDER}/effects-{safe}.png"


def finished_records(tracker: Tracker, experiment: str) -> list[RunRecord]:
    """The experiment's image runs; ``UserInputError`` (listing what exists) when there is no such experiment
    or it holds no finished image."""
    if tracker.experiment_id(experiment, create=False) is None:
        names = tracker.experiment_names()
        raise UserInputError(f"no experiment '{experiment}' in {tracker.display_uri}; experiments: "
                             f"{', '.join(names) or '(none)'}")
    records = tracker.records(experiment)
    if not any(r.outcome == "FINISHED" for r in records):
        raise UserInputError(f"experiment '{experiment}' has no finished image runs yet; run its spec first "
                             f"(workbench run SPEC)")
    return records


def logged_spec(tracker: Tracker, experiment: str, parent: RunRecord | None = None) -> ExperimentSpec | None:
    """The spec the latest parent run of ``experiment`` ran (None: no parent run, or an unreadable spec).

    It orders the factors as the spec does and gives the grid's levels: a grid cell equal to the base (or
    to a varied level) is logged once, under that cell's tag, so the runs alone cannot tell whether the
    grid crossed the base value.
    """
    parent = parent or tracker.latest_parent(experiment)
    if parent is None:
        return None
    try:
        return parse_spec(yaml.safe_load(tracker.load_bytes(parent.run_id, SPEC_ARTIFACT)))
    except Exception:  # no spec logged, or an older one: the order and levels come from the runs
        return None


def report(experiment: str, *, metric: str | None = None, higher: bool | None = None,
           tracking_uri: str | None = None, tracker: Tracker | None = None, log: bool = True,
           chart: bool = True) -> EffectsReport:
    """Which level of each factor wins on ``metric`` (default: CLIP score, else adherence, else ratings).

    ``higher`` overrides the metric's direction (lower is better for latency, cost, drift, clipping). With
    ``log``, the JSON and the chart go to the experiment's latest parent run (``EffectsReport.parent_run_id``,
    ``artifacts``).

    Example:
        >>> from workbench import report
        >>> rep = report("quickstart", metric="image.sharpness")  # doctest: +SKIP
        >>> rep.factor("guidance").best, rep.artifacts  # doctest: +SKIP
        ('12.0', ['report/effects-image.sharpness.json', 'report/effects-image.sharpness.png'])
    """
    tracker = tracker or Tracker(tracking_uri, create=False)  # its runs must be there: never make a store
    tracker.check()
    records = finished_records(tracker, experiment)
    chosen = metric or default_metric([r for r in records if r.outcome == "FINISHED"])
    parent = tracker.latest_parent(experiment)
    result = effects(records, chosen, experiment=experiment, higher=higher,
                     spec=logged_spec(tracker, experiment, parent))
    if metric is None:
        result = dataclasses.replace(result, notes=[f"no --metric given: reporting {chosen}", *result.notes])
    if not log:
        return result
    if parent is None:
        note = "the experiment has no parent run (no `workbench run` logged it): the report was not logged"
        return dataclasses.replace(result, notes=[*result.notes, note])
    json_name, png_name = artifact_names(chosen)
    result = dataclasses.replace(result, parent_run_id=parent.run_id,
                                 artifacts=[json_name, *([png_name] if chart else [])])
    tracker.log_text(parent.run_id, json.dumps(result.to_dict(), indent=2), json_name)
    if chart:
        tracker.log_bytes(parent.run_id, effects_chart(result), png_name)
    return result
