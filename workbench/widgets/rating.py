"""Rating in the comparison grid: a 1–5 control and a "best of the row" button under each image.

Every click is written to MLflow at once (``evaluate.ratings``: ``rating.<rater>`` and ``best_pick.<rater>``
on the image's run), and the controls start from what the store holds, so a grid reopened on the same store
shows the ratings again. ``RatingBook`` keeps one rater's ratings of one grid; its state is plain attributes
(``ratings``, ``picks``, ``controls``), tested without a browser.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import ipywidgets as w

from ..errors import UserInputError
from ..evaluate.ratings import (
    MAX_RATING,
    MIN_RATING,
    check_rater,
    default_rater,
    pick_best,
    picked_by,
    rate,
    rating_of,
)
from ..tracking.schema import RunRecord
from ..tracking.store import Tracker

__all__ = ["RatingBook", "RatingControls"]


class RatingControls:
    """The controls under one tile: ``stars`` (ToggleButtons 1–5) and ``best`` (a Button)."""

    def __init__(self, run_id: str, rating: int | None, picked: bool, *, width: int,
                 on_rate: Callable[[str, int], None], on_pick: Callable[[str], None]) -> None:
        self.run_id = run_id
        self._quiet = False
        values = range(MIN_RATING, MAX_RATING + 1)
        self.stars = w.ToggleButtons(options=[(str(v), v) for v in values], value=rating,
                                     tooltips=[f"rate {v}/{MAX_RATING}" for v in values],
                                     style={"button_width": f"{max(16, (width - 12) // 5)}px"},
                                     layout=w.Layout(width=f"{width}px", margin="0"))
        self.best = w.Button(description="best of row", tooltip="pick this image as the best of its row "
                                                                 "(written to MLflow at once)",
                             layout=w.Layout(width=f"{width}px", margin="2px 0 0 0"))
        self.set_picked(picked)
        self.stars.observe(lambda change: self._rated(change["new"], on_rate), "value")
        self.best.on_click(lambda _: on_pick(run_id))
        self.widget = w.VBox([self.stars, self.best], layout=w.Layout(width=f"{width + 4}px"))
        self.widget.add_class("wb-rating")

    def _rated(self, value: int | None, on_rate: Callable[[str, int], None]) -> None:
        if not self._quiet and value is not None:
            on_rate(self.run_id, value)

    def set_rating(self, value: int | None) -> None:
        """Show ``value`` without writing it again."""
        self._quiet = True
        try:
            self.stars.value = value
        finally:
            self._quiet = False

    def set_picked(self, picked: bool) -> None:
        self.best.icon = "star" if picked else ""
        self.best.button_style = "warning" if picked else ""
        self.best.description = "best of row" if not picked else "best ✓"


class RatingBook:
    """One rater's ratings and picks in one comparison grid, read from the runs and written at once."""

    def __init__(self, tracker: Tracker, rater: str, records: Sequence[RunRecord]) -> None:
        self.tracker = tracker
        self.rater = rater
        self.status = w.HTML()
        self.controls: dict[str, RatingControls] = {}
        self.ratings: dict[str, int] = {}
        self.picks: set[str] = set()
        self.load(records)

    @classmethod
    def open(cls, tracker: Tracker, rater: str | None, records: Sequence[RunRecord]
             ) -> tuple[RatingBook | None, str]:
        """(the book, "") for ``rater`` (default: ``default_rater()``); (None, why) when there is no default
        rater here (an OS user name that cannot be one): the grid opens with its ratings off and says why."""
        if rater is not None:
            return cls(tracker, check_rater(rater), records), ""  # a name given that cannot work is an error
        try:
            return cls(tracker, default_rater(), records), ""
        except UserInputError as exc:
            return None, f"ratings are off: {exc}"

    def load(self, records: Sequence[RunRecord]) -> None:
        """What the store holds for this rater (the grid's ``refresh`` calls it again)."""
        self.ratings = {r.run_id: v for r in records if (v := rating_of(r, self.rater)) is not None}
        self.picks = {r.run_id for r in records if picked_by(r, self.rater)}

    def widget_for(self, run_id: str, row: Callable[[], list[str]], *, width: int) -> w.Widget:
        """The controls of one tile; ``row()`` gives the run ids of its row when a pick is made."""
        controls = RatingControls(run_id, self.ratings.get(run_id), run_id in self.picks, width=width,
                                  on_rate=self.rate, on_pick=lambda run: self.pick(run, row()))
        self.controls[run_id] = controls
        return controls.widget

    def rate(self, run_id: str, value: int) -> None:
        """Write ``rating.<rater>`` = ``value`` on ``run_id`` (a failure is shown; the control reverts)."""
        try:
            result = rate(run_id, value, rater=self.rater, tracker=self.tracker)
        except Exception as exc:  # shown beside the grid, never raised into the notebook
            self._failed(exc)
            if run_id in self.controls:
                self.controls[run_id].set_rating(self.ratings.get(run_id))
            return
        self.ratings[run_id] = value
        if run_id in self.controls:
            self.controls[run_id].set_rating(value)
        self._say(f"saved: {html.escape(self.rater)} rated <code>{run_id[:8]}</code> {value}/{MAX_RATING} "
                  f"(mean over {result.raters} rater(s): {result.mean:g})")

    def pick(self, run_id: str, row: Sequence[str]) -> None:
        """Write ``run_id`` as the best of ``row`` (1 on it, 0 on the rest of the row)."""
        try:
            written = pick_best(run_id, row, rater=self.rater, tracker=self.tracker)
        except Exception as exc:
            self._failed(exc)
            return
        for member, value in written.items():
            self.picks.discard(member)
            if value == 1.0:
                self.picks.add(member)
            if member in self.controls:
                self.controls[member].set_picked(value == 1.0)
        self._say(f"saved: {html.escape(self.rater)} picked <code>{run_id[:8]}</code> as the best of its row "
                  f"of {len(written)}")

    def _failed(self, exc: Exception) -> None:
        self._say(f"<span style='color:#b00'>not saved: {html.escape(f'{type(exc).__name__}: {exc}')}</span>")

    def _say(self, text: str) -> None:
        self.status.value = f"<span style='font-size:12px'>{text}</span>"
