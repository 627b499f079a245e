"""The effects report against numbers worked out by hand: a backend whose brightness follows guidance (and
steps), run for real into a real store, then `report()`, `workbench report` and its artifacts."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from workbench import report
from workbench.backends import registry
from workbench.backends.base import Backend, Capabilities
from workbench.cli import cli
from workbench.errors import UserInputError
from workbench.evaluate.effects import effects
from workbench.evaluate.stats import mean_interval, paired_difference, t_quantile, welch_difference
from workbench.experiments.spec import parse_spec
from workbench.run.runner import run_experiment
from workbench.tracking.store import Tracker
from workbench.types import GeneratedImage, GenerationRequest, GenerationResult

# Student's t, 97.5% quantiles, from the printed table
T_TABLE = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 10: 2.2281, 30: 2.0423}
SEED_OFFSET = {1: 0, 2: 30, 3: -20}  # a big seed effect: pairing on seeds removes it
WOBBLE = {(2.0, 1): 1, (2.0, 2): -2, (2.0, 3): 0, (9.0, 1): 2, (9.0, 2): 0, (9.0, 3): -1}  # level × seed noise


def grey_level(request: GenerationRequest) -> float:
    """Mean luma of the image the brightness backend draws for ``request`` (0–255)."""
    seed = request.seed if request.seed is not None else request.replicate + 1
    return 60 + 10 * request.guidance + 3 * request.steps + SEED_OFFSET[seed] + WOBBLE.get((request.guidance, seed), 0)


class BrightnessBackend(Backend):
    """A ±20 checkerboard around ``grey_level``: its mean luma, hence image.brightness, is exactly that / 255."""

    name = "brightness"
    seeds = True

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(seeds=self.seeds, max_batch=8)

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out: list[GenerationResult] = []
        for i, request in enumerate(batch):
            board = np.indices((request.height, request.width)).sum(0) % 2 * 40 - 20
            pixels = np.clip(grey_level(request) + board, 0, 255).astype(np.uint8)
            out.append(GeneratedImage(request=request, image=Image.fromarray(pixels).convert("RGB"), batch_size=len(batch),
                                      batch_index=i))
        return out


class SeedlessBrightness(BrightnessBackend):
    name = "brightness-seedless"
    seeds = False


@pytest.fixture
def brightness():  # type: ignore[no-untyped-def]
    for cls in (BrightnessBackend, SeedlessBrightness):
        registry.register_backend(cls.name, cls)
    yield
    for cls in (BrightnessBackend, SeedlessBrightness):
        registry._registered.pop(cls.name, None)
        registry._instances.pop(cls.name, None)


def sweep(tracking_uri: str, tmp_path: Path, name: str = "bright", backend: str = "brightness", **extra):  # type: ignore[no-untyped-def]
    spec = parse_spec({"name": name, "prompt": "a {{ colour }} circle", "variables": {"colour": "red"},
                       "backend": backend, "model": "m", "params": {"width": 8, "height": 8, "steps": 4,
                                                                    "guidance": 5}, "seeds": [1, 2, 3],
                       "vary": {"guidance": [2, 9], "var.colour": ["blue"]}, **extra})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / name)
    assert summary.ok, summary.stopped
    return summary


def test_the_t_quantile_matches_the_table_and_the_intervals_the_formulas() -> None:
    for df, value in T_TABLE.items():
        assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-4)
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.95996, abs=1e-4)
    e = mean_interval([2.0, 4.0, 9.0])
    sd = math.sqrt(((2 - 5) ** 2 + (4 - 5) ** 2 + (9 - 5) ** 2) / 2)
    assert (e.n, e.mean, e.sd) == (3, 5.0, pytest.approx(sd))
    assert (e.low, e.high) == (pytest.approx(5 - 4.302653 * sd / math.sqrt(3)), pytest.approx(5 + 4.302653 * sd / math.sqrt(3)))
    assert mean_interval([7.0]).low is None and mean_interval([7.0]).includes(0) is None
    d = paired_difference([3.0, 5.0, 4.0], [1.0, 2.0, 2.0])  # differences 2, 3, 2
    assert d.mean == pytest.approx(7 / 3) and d.sd == pytest.approx(math.sqrt(1 / 3)) and d.includes(0) is False
    # Welch, against the reference values of scipy.stats.ttest_ind(a, b, equal_var=False)
    w = welch_difference([1.0, 2.5, 4.0], [2.0, 2.0, 7.0, 1.0])
    assert (w.mean, w.df) == (pytest.approx(-0.5), pytest.approx(4.761354252683732))
    assert (w.low, w.high) == (pytest.approx(-4.694701962756078), pytest.approx(3.6947019627560778))


def test_the_report_ranks_levels_with_the_paired_difference_worked_by_hand(tracking_uri: str, brightness,
                                                                           tmp_path: Path) -> None:
    sweep(tracking_uri, tmp_path)
    rep = report("bright", metric="image.brightness", tracking_uri=tracking_uri)
    guidance = rep.factor("guidance")
    assert [le.level for le in guidance.levels] == ["2.0", "5.0", "9.0"] and guidance.base_level == "5.0"
    assert guidance.best == "9.0" and guidance.paired
    nine = guidance.level("9.0")
    base_values = [(60 + 50 + 12 + SEED_OFFSET[s]) / 255 for s in (1, 2, 3)]
    assert nine.estimate.n == 3
    assert nine.estimate.mean == pytest.approx(np.mean([(60 + 90 + 12 + SEED_OFFSET[s] + WOBBLE[(9.0, s)]) / 255
                                                        for s in (1, 2, 3)]))
    assert guidance.level("5.0").estimate.mean == pytest.approx(np.mean(base_values))
    # by hand: per seed, level 9 minus base: (40 + 2, 40 + 0, 40 - 1) grey levels
    diffs = np.array([42.0, 40.0, 39.0]) / 255
    half = 4.3027 * diffs.std(ddof=1) / math.sqrt(3)
    assert nine.paired and nine.difference.n == 3
    assert nine.difference.mean == pytest.approx(diffs.mean())
    assert nine.difference.sd == pytest.approx(diffs.std(ddof=1))
    assert (nine.difference.low, nine.difference.high) == (pytest.approx(diffs.mean() - half, abs=1e-5),
                                                           pytest.approx(diffs.mean() + half, abs=1e-5))
    assert nine.within_noise is False
    two = guidance.level("2.0")
    assert two.difference.mean == pytest.approx(np.mean([-29, -32, -30]) / 255) and two.within_noise is False
    # unpaired, the seed effect (±25 grey levels) would swamp a 40-level difference's interval
    unpaired = welch_difference([v + d for v, d in zip(base_values, diffs, strict=True)], base_values)
    assert unpaired.includes(0.0) is True
    # the colour changes nothing in this backend: exactly zero per seed, within noise
    blue = rep.factor("var.colour").level("blue")
    assert blue.difference.mean == pytest.approx(0.0, abs=1e-12) and blue.within_noise is True
    assert rep.factor("var.colour").base_level == "red"
    # lower is better flips the winner
    assert report("bright", metric="image.brightness", higher=False, tracking_uri=tracking_uri,
                  log=False).factor("guidance").best == "2.0"
    # latency is known lower-is-better
    assert not report("bright", metric="latency_s", tracking_uri=tracking_uri, log=False).higher_is_better


def test_the_json_and_the_chart_are_logged_to_the_latest_parent_run(tracking_uri: str, brightness,
                                                                    tmp_path: Path) -> None:
    latest = sweep(tracking_uri, tmp_path)
    again = sweep(tracking_uri, tmp_path)  # a second `run` with nothing to generate leaves no parent run
    assert again.parent_run_id is None and again.skipped == latest.finished
    rep = report("bright", metric="image.brightness", tracking_uri=tracking_uri)
    assert rep.parent_run_id == latest.parent_run_id
    assert rep.artifacts == ["report/effects-image.brightness.json", "report/effects-image.brightness.png"]
    client = MlflowClient(tracking_uri)
    assert {a.path for a in client.list_artifacts(latest.parent_run_id, "report")} == set(rep.artifacts)
    tracker = Tracker(tracking_uri)
    data = json.loads(tracker.load_bytes(latest.parent_run_id, rep.artifacts[0]))
    assert data["metric"] == "image.brightness" and data["direction"] == "higher is better"
    nine = next(level for f in data["factors"] if f["factor"] == "guidance" for level in f["levels"]
                if level["level"] == "9.0")
    assert nine["difference"]["mean"] == pytest.approx(rep.factor("guidance").level("9.0").difference.mean)
    assert nine["difference"]["paired"] is True and nine["difference"]["within_noise"] is False
    png = tracker.load_bytes(latest.parent_run_id, rep.artifacts[1])
    with Image.open(__import__("io").BytesIO(png)) as chart:
        assert chart.format == "PNG" and chart.width > 400


def test_a_grid_gets_a_cell_table_and_main_effects(tracking_uri: str, brightness, tmp_path: Path) -> None:
    sweep(tracking_uri, tmp_path, name="crossed",
          grid={"rows": {"factor": "guidance", "levels": [2, 5]}, "cols": {"factor": "steps", "levels": [4, 8]}})
    rep = report("crossed", metric="image.brightness", tracking_uri=tracking_uri)
    [grid] = rep.grids
    # steps=4 is the base value: its cells were logged once, as the base and the guidance=2 cells
    assert (grid.rows, grid.cols, grid.row_levels, grid.col_levels) == ("guidance", "steps", ["2.0", "5.0"],
                                                                        ["4", "8"])
    for g in (2.0, 5.0):
        for steps in (4, 8):
            cell = grid.cell(f"{g}", str(steps))
            expected = [(60 + 10 * g + 3 * steps + SEED_OFFSET[s] + WOBBLE.get((g, s), 0)) / 255 for s in (1, 2, 3)]
            assert cell.estimate.n == 3 and cell.estimate.mean == pytest.approx(np.mean(expected))
    steps = grid.col_effect
    assert steps.base_level == "4" and steps.best == "8"
    eight = steps.level("8")
    # per seed, the mean over both guidance rows differs by exactly 3 * 4 grey levels: no noise at all
    assert eight.paired and eight.difference.mean == pytest.approx(12 / 255)
    assert eight.difference.sd == pytest.approx(0.0, abs=1e-12) and eight.within_noise is False
    rows = grid.row_effect
    assert rows.base_level == "5.0" and rows.level("2.0").difference.mean == pytest.approx(np.mean([-29, -32, -30]) / 255)
    data = rep.to_dict()["grids"][0]
    assert len(data["cells"]) == 4 and data["main_effects"]["cols"]["best"] == "8"


def test_seedless_replicates_are_compared_unpaired(tracking_uri: str, brightness, tmp_path: Path) -> None:
    sweep(tracking_uri, tmp_path, name="apis", backend="brightness-seedless")
    rep = report("apis", metric="image.brightness", tracking_uri=tracking_uri, log=False)
    guidance = rep.factor("guidance")
    assert not guidance.paired and any("unpaired" in note for note in guidance.notes)
    nine = guidance.level("9.0")
    base = [(60 + 50 + 12 + SEED_OFFSET[s]) / 255 for s in (1, 2, 3)]
    level = [(60 + 90 + 12 + SEED_OFFSET[s] + WOBBLE[(9.0, s)]) / 255 for s in (1, 2, 3)]
    reference = welch_difference(level, base)
    assert not nine.paired and (nine.difference.low, nine.difference.high) == (pytest.approx(reference.low),
                                                                               pytest.approx(reference.high))


def test_bad_input_is_exit_code_2_with_what_exists(tracking_uri: str, brightness, tmp_path: Path) -> None:
    sweep(tracking_uri, tmp_path)
    runner = CliRunner()
    unknown = runner.invoke(cli, ["report", "nope", "--tracking-uri", tracking_uri])
    assert unknown.exit_code == 2 and "no experiment 'nope'" in unknown.output and "bright" in unknown.output
    metric = runner.invoke(cli, ["report", "bright", "--metric", "beauty", "--tracking-uri", tracking_uri])
    assert metric.exit_code == 2
    assert "no run of experiment 'bright' has the metric 'beauty'" in metric.output
    assert "image.brightness" in metric.output and "latency_s" in metric.output
    with pytest.raises(UserInputError, match="has the metric 'beauty'"):
        effects(Tracker(tracking_uri).records("bright"), "beauty")
    Tracker(tracking_uri).experiment_id("empty")
    empty = runner.invoke(cli, ["report", "empty", "--tracking-uri", tracking_uri])
    assert empty.exit_code == 2 and "no finished image runs" in empty.output


def test_the_cli_prints_the_tables_and_writes_the_chart(tracking_uri: str, brightness, tmp_path: Path) -> None:
    sweep(tracking_uri, tmp_path)
    chart = tmp_path / "out" / "chart.png"
    result = CliRunner().invoke(cli, ["report", "bright", "--metric", "image.brightness", "--tracking-uri",
                                      tracking_uri, "--chart", str(chart)])
    assert result.exit_code == 0, result.output
    assert "image.brightness (higher is better), 12 finished runs" in result.output
    assert "guidance: best 9.0" in result.output and "9.0 ★" in result.output
    assert "better than base" in result.output and "within noise" in result.output
    assert "logged to parent run" in result.output and chart.read_bytes()[:4] == b"\x89PNG"
    as_json = json.loads(CliRunner().invoke(cli, ["report", "bright", "--metric", "image.brightness",
                                                  "--tracking-uri", tracking_uri, "--json", "--no-log"]).output)
    assert as_json["parent_run_id"] is None and {f["factor"] for f in as_json["factors"]} == {"guidance", "var.colour"}
    default = CliRunner().invoke(cli, ["report", "bright", "--tracking-uri", tracking_uri, "--no-log"])
    assert default.exit_code == 0 and "no --metric given: reporting image.sharpness" in default.output
