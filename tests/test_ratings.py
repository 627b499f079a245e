"""Human ratings: written from the comparison widget (real widgets, real store), read back when it is reopened,
per rater; `workbench rate` and its errors; best-of-row picks; ratings in the report and the report tab."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from workbench import pick_best, rate
from workbench.cli import cli
from workbench.errors import UserInputError
from workbench.evaluate.ratings import default_rater
from workbench.experiments.spec import parse_spec
from workbench.run.runner import run_experiment
from workbench.tracking.store import Tracker
from workbench.widgets import ComparisonGrid


@pytest.fixture
def rated(tracking_uri: str, fake_backend, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    spec = parse_spec({"name": "rated", "prompt": "a red circle", "backend": "fake", "model": "m",
                       "params": {"width": 16, "height": 16, "steps": 2, "guidance": 5}, "seeds": [1, 2],
                       "vary": {"guidance": [2, 9], "option.fault": ["error"]}})
    run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    return tracking_uri


def run_at(grid: ComparisonGrid, seed: int, guidance: str) -> str:
    run_id = grid.view.cell(f"seed {seed}", guidance).run_id
    assert run_id
    return run_id


def test_ratings_from_the_widget_are_stored_and_shown_again_on_reopening(rated: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    grid = ComparisonGrid("rated", rated, rows="seed", cols="guidance", rater="alice")
    nine, base, two = (run_at(grid, 1, g) for g in ("9.0", "5.0", "2.0"))
    controls = grid.rating_book.controls
    assert set(controls) >= {nine, base, two} and controls[nine].stars.value is None
    controls[nine].stars.value = 4  # what clicking "4" under the tile does
    controls[base].best.click()  # "best of row": seed 1 across the guidance levels
    controls[nine].best.click()  # changed her mind
    tracker = Tracker(rated)
    assert tracker.run(nine).metrics["rating.alice"] == 4.0 and tracker.run(nine).metrics["rating"] == 4.0
    assert [tracker.run(r).metrics["best_pick.alice"] for r in (nine, base, two)] == [1.0, 0.0, 0.0]
    assert "saved: alice picked" in grid.rating_book.status.value
    reopened = ComparisonGrid("rated", rated, rows="seed", cols="guidance", rater="alice")
    again = reopened.rating_book.controls
    assert again[nine].stars.value == 4 and again[nine].best.description == "best ✓"
    assert again[base].best.description == "best of row" and again[two].stars.value is None
    # another rater sees her own (empty) ratings; the run's mean covers both
    bob = ComparisonGrid("rated", rated, rows="seed", cols="guidance", rater="bob")
    assert bob.rating_book.controls[nine].stars.value is None
    bob.rate(nine, 2)
    assert tracker.run(nine).metrics["rating"] == 3.0
    bob.pick_best(two)
    assert tracker.run(two).metrics["best_pick"] == 0.5 and tracker.run(nine).metrics["best_pick"] == 0.5
    # no usable default rater here: the grid still opens, with its ratings off, and says why
    monkeypatch.setenv("WORKBENCH_RATER", "no spaces please")
    off = ComparisonGrid("rated", rated, rows="seed", cols="guidance")
    assert off.rating_book is None and "ratings are off: rater name 'no spaces please'" in off.ratings_off
    with pytest.raises(UserInputError, match="ratings are off"):
        off.rate(nine, 3)
    assert ComparisonGrid("rated", rated, rater="john.doe").rating_book.rater == "john.doe"  # dots are fine


def test_the_report_tab_uses_ratings_like_any_metric(rated: str) -> None:
    grid = ComparisonGrid("rated", rated, rows="seed", cols="guidance", rater="alice")
    for seed, scores in ((1, {"2.0": 2, "5.0": 3, "9.0": 5}), (2, {"2.0": 1, "5.0": 3, "9.0": 4})):
        for guidance, value in scores.items():
            grid.rate(run_at(grid, seed, guidance), value)
    grid.refresh()  # the grid reads the runs again; the report tab recomputes when shown
    assert grid.report_tab.report is None
    grid.tabs.selected_index = 1  # opening the tab computes the report
    assert grid.report_tab.report is not None
    rep = grid.report_tab.show("rating")
    guidance = rep.factor("guidance")
    assert guidance.best == "9.0" and guidance.level("9.0").difference.mean == pytest.approx(1.5)
    assert guidance.level("2.0").difference.mean == pytest.approx(-1.5) and guidance.paired
    assert "<h4>guidance: best 9.0</h4>" in grid.report_tab.tables.value
    assert grid.report_tab.chart.value[:4] == b"\x89PNG"
    grid.report_tab.log_button.click()
    parent = Tracker(rated).latest_parent("rated")
    assert grid.report_tab.logged == parent.run_id and "logged to parent run" in grid.report_tab.status.value
    assert {a.path for a in MlflowClient(rated).list_artifacts(parent.run_id, "report")} == {
        "report/effects-rating.json", "report/effects-rating.png"}


def test_rate_from_the_cli_and_python(rated: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = Tracker(rated)
    records = {(r.params["guidance"], r.params["seed"], r.params.get("option.fault")): r
               for r in tracker.records("rated")}
    run_id = records[("5.0", "1", None)].run_id
    runner = CliRunner()
    said = runner.invoke(cli, ["rate", run_id, "4", "--rater", "carol", "--tracking-uri", rated])
    assert said.exit_code == 0, said.output
    assert f"run {run_id}: carol rated it 4/5; its rating (the mean) is now 4" in said.output
    monkeypatch.setenv("WORKBENCH_RATER", "dave")
    assert default_rater() == "dave"
    said = runner.invoke(cli, ["rate", run_id, "2", "--tracking-uri", rated])
    assert "dave rated it 2/5; its rating (the mean over 2 raters) is now 3" in said.output
    assert tracker.run(run_id).metrics["rating.dave"] == 2.0
    again = rate(run_id, 5, rater="dave", tracker=tracker)  # a rater changes their mind: replaced
    assert (again.value, again.mean, again.raters) == (5, 4.5, 2)
    for args, message in ((["rate", run_id, "6"], "6 is not in the range 1<=x<=5"),
                          (["rate", run_id, "3", "--rater", "d/ve"], "rater name 'd/ve' is not valid"),
                          (["rate", "0" * 32, "3"], "no run '" + "0" * 32 + "'"),
                          (["rate", records[("5.0", "1", "error")].run_id, "3"], "is FAILED: it has no image to rate")):
        bad = runner.invoke(cli, [*args, "--tracking-uri", rated])
        assert bad.exit_code == 2 and message in bad.output, bad.output
    monkeypatch.setenv("WORKBENCH_RATER", "no spaces please")
    with pytest.raises(UserInputError, match="set \\$WORKBENCH_RATER"):
        default_rater()
    with pytest.raises(UserInputError, match="a whole number from 1 to 5, got True"):
        rate(run_id, True, rater="dave", tracker=tracker)  # type: ignore[arg-type]
    row = [records[(g, "2", None)].run_id for g in ("2.0", "5.0", "9.0")]
    assert pick_best(row[0], row, rater="erin", tracker=tracker) == {row[0]: 1.0, row[1]: 0.0, row[2]: 0.0}
    assert tracker.run(row[0]).metrics["best_pick"] == 1.0
