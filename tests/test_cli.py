"""The CLI end to end: quick start on the embedded model into a real SQLite store."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from workbench.cli import cli

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def quickstart_store(tracking_uri: str, embedded_model: Path, tmp_path: Path) -> tuple[str, Path]:
    grids = tmp_path / "grids"
    result = invoke("run", QUICKSTART, "--tracking-uri", tracking_uri, "--grids-dir", grids, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "15 planned: 15 generated, 0 already logged (skipped), 0 failed" in result.output
    assert tracking_uri in result.output and "workbench ui --tracking-uri" in result.output
    assert str(grids / "grid-guidance.png") in result.output
    return tracking_uri, grids


def test_quickstart_run_then_rerun_skips(quickstart_store: tuple[str, Path]) -> None:
    uri, grids = quickstart_store
    for name in ("grid-guidance.png", "grid-var.lighting.png"):
        with Image.open(grids / name) as grid:
            assert grid.width > 3 * 160 and grid.height > 3 * 160
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([experiment.experiment_id], "tags.`workbench.kind` = 'image'")
    assert len(runs) == 15 and {r.data.params["template"] for r in runs} == {"photoreal"}
    again = invoke("run", QUICKSTART, "--tracking-uri", uri, "--grids-dir", grids, "--no-progress")
    assert again.exit_code == 0
    assert "0 generated, 15 already logged (skipped)" in again.output
    assert "nothing to generate" in again.output
    plan = invoke("plan", QUICKSTART, "--tracking-uri", uri)
    assert plan.exit_code == 0 and "Nothing was generated" in plan.output
    assert re.search(r"total\s*│\s*5 cells × 3 seeds\s*│\s*15\s*│\s*15\s*│\s*0\s*│", plan.output), plan.output
    as_json = json.loads(invoke("plan", QUICKSTART, "--tracking-uri", uri, "--json").output)
    assert (as_json["images"], as_json["done"], as_json["to_run"]) == (15, 15, 0)


def test_grid_is_rebuilt_from_mlflow(quickstart_store: tuple[str, Path], tmp_path: Path) -> None:
    uri, _ = quickstart_store
    out = tmp_path / "rebuilt.png"
    result = invoke("grid", "quickstart", "--tracking-uri", uri, "--cols", "var.lighting", "-o", out)
    assert result.exit_code == 0, result.output
    assert "3 rows × 3 columns, 9 images" in result.output and "guidance=7.0" in result.output
    assert Image.open(out).size[0] > 500
    both = invoke("grid", "quickstart", "--tracking-uri", uri, "--rows", "guidance", "--cols", "var.lighting",
                  "--where", "seed=1", "-o", out)
    # one factor at a time: only the base row and the base column of guidance × lighting were run
    assert both.exit_code == 0, both.output
    assert "3 rows × 3 columns, 5 images" in both.output
    bad = invoke("grid", "quickstart", "--tracking-uri", uri, "--cols", "nonsense", "-o", out)
    assert bad.exit_code == 2 and "'nonsense' is not a parameter" in bad.output
    missing = invoke("grid", "nope", "--tracking-uri", uri, "--cols", "guidance", "-o", out)
    assert missing.exit_code == 2 and "no experiment 'nope'" in missing.output


def test_plan_is_a_table_and_generates_nothing(tracking_uri: str) -> None:
    result = invoke("plan", QUICKSTART, "--tracking-uri", tracking_uri)
    assert result.exit_code == 0, result.output
    for text in ("guidance", "var.lighting", "neon night", "5 cells × 3 seeds", "15", "Nothing was generated"):
        assert text in result.output
    assert MlflowClient(tracking_uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri).search_experiments()]) == []


@pytest.mark.parametrize("spec, message", [
    ("name: x\nprompt: p\nmodel: m\nseeds: [1, 1]\n", "seed 1 appears twice"),
    ("name: x\nprompt: p\nmodel: m\nseeds: [1]\nbackend: dalle\n", "unknown backend 'dalle'; available backends"),
    ("name: x\ntemplate: photoreal\nmodel: embedded:tiny-sd\nseeds: [1]\nvariables: {lighting: disco}\n",
     "'disco'"),
    ("name: x\ntemplate: nosuch\nmodel: embedded:tiny-sd\nseeds: [1]\n", "nosuch"),
    ("name: x\nprompt: '{{ oops'\nmodel: embedded:tiny-sd\nseeds: [1]\n", "prompt"),
    ("name: x\nprompt: p\nmodel: embedded:tiny-sd\nseeds: [1]\nparams: {scheduler: warp}\n", "unknown scheduler"),
    ("name: x\nprompt: p\nmodel: embedded:tiny-sd\nseeds: [1]\nparams: {width: 100, height: 64}\n",
     "multiples of 8"),
    ("- just\n- a list\n", "must be a YAML mapping"),
])
def test_bad_input_exits_2_and_generates_nothing(spec: str, message: str, tmp_path: Path, tracking_uri: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(spec)
    for command in ("plan", "run"):
        result = invoke(command, path, "--tracking-uri", tracking_uri)
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and message in result.output
    client = MlflowClient(tracking_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_unreachable_store_is_a_clear_error_before_anything_runs(tmp_path: Path) -> None:
    result = invoke("plan", QUICKSTART, "--tracking-uri", "http://127.0.0.1:9")
    assert result.exit_code == 1 and "cannot reach the MLflow tracking server at http://127.0.0.1:9" in result.output


def test_console_script_and_module_entry_points() -> None:
    out = subprocess.run([sys.executable, "-m", "workbench", "--help"], capture_output=True, text=True, check=True)
    for command in ("plan", "run", "grid", "templates", "ui", "embedded"):
        assert command in out.stdout
