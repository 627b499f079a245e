"""Human ratings, stored in MLflow on each image's run, per rater, as metrics like any other score.

- ``rating.<rater>``: a 1–5 rating; ``rating``: the mean over the raters of that run.
- ``best_pick.<rater>``: 1 on the run a rater picked as the best of a row (a seed across the levels, in
  the comparison grid), 0 on the other runs of that row; ``best_pick``: the mean over the raters. Per
  level, its mean is the share of rows in which the level was picked.

A rater is ``--rater NAME``, else ``$WORKBENCH_RATER``, else the OS user; names are letters, digits, ``_``,
``-`` and ``.`` (``john.doe``; they become part of a metric name). Writing again replaces a rater's value
(MLflow keeps the history); the aggregate is recomputed from every rater's metric each time, and the
report recomputes it too, so two people rating at once never leave it stale.

    >>> check_rater("alice")
    'alice'
    >>> aggregate({"rating.alice": 4.0, "rating.bob": 2.0, "latency_s": 1.0}, RATING_PREFIX)
    3.0
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import UserInputError
from ..tracking.schema import (
    BEST_PICK_METRIC,
    BEST_PICK_PREFIX,
    IMAGE,
    RATING_METRIC,
    RATING_PREFIX,
    RunRecord,
)
from ..tracking.store import Tracker

__all__ = ["RATER_ENV", "MIN_RATING", "MAX_RATING", "Rating", "default_rater", "check_rater", "rate",
           "pick_best", "rating_of", "picked_by", "aggregate"]

RATER_ENV = "WORKBENCH_RATER"
MIN_RATING, MAX_RATING = 1, 5
_RATER = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")  # a metric name's characters, but "/" and " "


@dataclass(frozen=True)
class Rating:
    """What a rating wrote: the run, the rater and value, and the run's mean rating over ``raters`` raters."""

    run_id: str
    rater: str
    value: int
    mean: float
    raters: int


def check_rater(name: str) -> str:
    """``name`` if it can be a rater (it becomes part of a metric name), else ``UserInputError``."""
    if not _RATER.match(name or ""):
        raise UserInputError(f"rater name {name!r} is not valid: use 1 to 64 letters, digits, '_', '-' or "
                             f"'.', not starting with '.' (it becomes part of the metric name "
                             f"rating.<rater>); pass --rater NAME or set ${RATER_ENV}")
    return name


def default_rater() -> str:
    """``$WORKBENCH_RATER``, else the OS user name; checked by ``check_rater``.

    Example:
        >>> default_rater()  # with WORKBENCH_RATER=alice  # doctest: +SKIP
        'alice'
    """
    name = os.environ.get(RATER_ENV, "").strip()
    if not name:
        try:
            name = getpass.getuser()
        except Exception:  # no user name in this environment (some containers)
            raise UserInputError(f"no rater name: the OS user is unknown here; pass --rater NAME or set "
                                 f"${RATER_ENV}") from None
    return check_rater(name)


def aggregate(metrics: Mapping[str, float], prefix: str) -> float | None:
    """The mean of every ``prefix<rater>`` metric in ``metrics`` (None when no rater has one)."""
    values = [v for k, v in metrics.items() if k.startswith(prefix) and len(k) > len(prefix)]
    return sum(values) / len(values) if values else None


def rating_of(record: RunRecord, rater: str) -> int | None:
    """``rater``'s rating of ``record`` (None when not rated)."""
    value = record.metrics.get(RATING_PREFIX + rater)
    return None if value is None else int(round(value))


def picked_by(record: RunRecord, rater: str) -> bool:
    """Whether ``rater`` picked ``record`` as the best of its row."""
    return record.metrics.get(BEST_PICK_PREFIX + rater) == 1.0


def _rateable(tracker: Tracker, run_id: str) -> RunRecord:
    record = tracker.run(run_id)
    if record.kind != IMAGE:
        raise UserInputError(f"run {run_id} is not an image run (it is a {record.kind or 'foreign'} run); "
                             f"rate the image runs of an experiment (the comparison grid or the MLflow UI "
                             f"shows them)")
    if record.outcome != "FINISHED":
        raise UserInputError(f"run {run_id} is {record.outcome}: it has no image to rate")
    return record


def _value(rating: object) -> int:
    if isinstance(rating, bool) or not isinstance(rating, int) or not MIN_RATING <= rating <= MAX_RATING:
        raise UserInputError(f"a rating is a whole number from {MIN_RATING} to {MAX_RATING}, got {rating!r}")
    return rating


def rate(run_id: str, rating: int, *, rater: str | None = None, tracking_uri: str | None = None,
         tracker: Tracker | None = None) -> Rating:
    """Store ``rater``'s 1–5 ``rating`` of the image run ``run_id`` and update the run's mean rating.

    Example:
        >>> rate("3f2c…", 4, rater="alice")  # doctest: +SKIP
        Rating(run_id='3f2c…', rater='alice', value=4, mean=3.5, raters=2)
    """
    value = _value(rating)
    rater = check_rater(rater) if rater is not None else default_rater()
    tracker = tracker or Tracker(tracking_uri, create=False)  # its runs must be there: never make a store
    record = _rateable(tracker, run_id)
    ratings = {k: v for k, v in record.metrics.items() if k.startswith(RATING_PREFIX)}
    ratings[RATING_PREFIX + rater] = float(value)
    mean = aggregate(ratings, RATING_PREFIX)
    assert mean is not None
    tracker.log_metrics(run_id, {RATING_PREFIX + rater: float(value), RATING_METRIC: mean})
    return Rating(run_id=run_id, rater=rater, value=value, mean=mean, raters=len(ratings))


def pick_best(run_id: str, row: Sequence[str], *, rater: str | None = None, tracking_uri: str | None = None,
              tracker: Tracker | None = None) -> dict[str, float]:
    """Store ``rater``'s pick of ``run_id`` as the best of ``row`` (the run ids compared with it).

    ``run_id`` gets ``best_pick.<rater>`` = 1, every other run of ``row`` 0; each run's ``best_pick`` mean
    is updated. Returns run id -> the value written.

    Example:
        >>> pick_best(runs[1], runs, rater="alice")  # doctest: +SKIP
        {'a1…': 0.0, 'b2…': 1.0, 'c3…': 0.0}
    """
    rater = check_rater(rater) if rater is not None else default_rater()
    tracker = tracker or Tracker(tracking_uri, create=False)  # its runs must be there: never make a store
    members = list(dict.fromkeys([*row, run_id]))
    records = [_rateable(tracker, member) for member in members]  # all checked before anything is written
    written = {}
    for record in records:
        value = 1.0 if record.run_id == run_id else 0.0
        picks = {k: v for k, v in record.metrics.items() if k.startswith(BEST_PICK_PREFIX)}
        picks[BEST_PICK_PREFIX + rater] = value
        tracker.log_metrics(record.run_id, {BEST_PICK_PREFIX + rater: value,
                                            BEST_PICK_METRIC: aggregate(picks, BEST_PICK_PREFIX) or 0.0})
        written[record.run_id] = value
    return written
