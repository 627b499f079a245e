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
from workbench.evaluate.image_stats import IMAGE_STATS

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


def embedded_model_path() -> Path:
    from workbench.models import embedded

    return embedded.embedded_path("embedded:shapes")


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def quickstart_store(tracking_uri: str, embedded_model: Path, tmp_path: Path) -> tuple[str, Path]:
    grids = tmp_path / "grids"
    result = invoke("run", QUICKSTART, "--tracking-uri", tracking_uri, "--grids-dir", grids, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "27 planned: 27 generated, 0 already logged (skipped), 0 failed" in result.output
    assert tracking_uri in result.output and "workbench ui --tracking-uri" in result.output
    assert str(grids / "grid-guidance.png") in result.output
    return tracking_uri, grids


def test_quickstart_run_then_rerun_skips(quickstart_store: tuple[str, Path]) -> None:
    uri, grids = quickstart_store
    for name in ("grid-guidance.png", "grid-var.colour.png", "grid-var.position.png", "grid-var.shape.png"):
        with Image.open(grids / name) as grid:
            assert grid.width > 3 * 64 and grid.height > 3 * 64
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([experiment.experiment_id], "tags.`workbench.kind` = 'image'")
    assert len(runs) == 27 and {r.data.params["template"] for r in runs} == {"shapes"}
    parent = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parent) == 1 and client.get_run(parent.pop()).data.tags["workbench.kind"] == "parent"
    blue = next(r for r in runs if r.data.params.get("var.colour") == "blue" and r.data.params["seed"] == "2")
    params, tags = blue.data.params, blue.data.tags
    assert (params["guidance"], params["steps"], params["size"], params["model"]) == ("3.0", "20", "64x64",
                                                                                      "embedded:shapes")
    assert len(params["template_version"]) == 16 and len(params["model_hash"]) == 16
    assert tags["workbench.factor"] == "var.colour" and tags["workbench.level"] == "blue"
    assert tags["workbench.run_key"] == params["run_key"] and tags["workbench.outcome"] == "FINISHED"
    assert {"latency_s", "batch_size", "batch_index", "adherence.colour", *IMAGE_STATS} <= set(blue.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(blue.info.run_id)}
    assert {"image.png", "request.json", "prompt.txt", "negative_prompt.txt", "environment.json"} <= artifacts
    # the logged PNG is the image a plain diffusers call gives for the same request, batch and seed
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    from workbench.tracking.store import Tracker

    tracker = Tracker(uri)
    batch = sorted((r for r in runs if r.data.tags["workbench.batch_id"] == tags["workbench.batch_id"]),
                   key=lambda r: r.data.metrics["batch_index"])
    requests = [json.loads(tracker.load_bytes(r.info.run_id, "request.json")) for r in batch]
    plain = StableDiffusionPipeline.from_pretrained(str(embedded_model_path()), dtype=torch.float32)  # fp16 on disk
    plain.set_progress_bar_config(disable=True)
    import diffusers

    from workbench.provenance.schedulers import scheduler_spec

    if requests[0]["scheduler"]:
        name, overrides = scheduler_spec(requests[0]["scheduler"])
        plain.scheduler = getattr(diffusers, name).from_config(plain.scheduler.config, **overrides)
    images = plain([q["prompt"] for q in requests], negative_prompt=[q["negative_prompt"] for q in requests],
                   num_inference_steps=20, guidance_scale=requests[0]["guidance"], width=64, height=64,
                   generator=[torch.Generator("cpu").manual_seed(q["seed"]) for q in requests]).images
    for run, image in zip(batch, images, strict=True):
        assert np.array_equal(np.asarray(tracker.load_image(run.info.run_id).convert("RGB")), np.asarray(image))
    again = invoke("run", QUICKSTART, "--tracking-uri", uri, "--grids-dir", grids, "--no-progress")
    assert again.exit_code == 0
    assert "0 generated, 27 already logged (skipped)" in again.output
    assert "nothing to generate" in again.output
    plan = invoke("plan", QUICKSTART, "--tracking-uri", uri)
    assert plan.exit_code == 0 and "Nothing was generated" in plan.output
    assert re.search(r"total\s*│\s*9 cells × 3 seeds\s*│\s*27\s*│\s*27\s*│\s*0\s*│", plan.output), plan.output
    as_json = json.loads(invoke("plan", QUICKSTART, "--tracking-uri", uri, "--json").output)
    assert (as_json["images"], as_json["done"], as_json["to_run"]) == (27, 27, 0)


def test_grid_is_rebuilt_from_mlflow(quickstart_store: tuple[str, Path], tmp_path: Path) -> None:
    uri, _ = quickstart_store
    out = tmp_path / "rebuilt.png"
    result = invoke("grid", "quickstart", "--tracking-uri", uri, "--cols", "var.colour", "-o", out)
    assert result.exit_code == 0, result.output
    assert "3 rows × 3 columns, 9 images" in result.output and "guidance=3.0" in result.output
    assert Image.open(out).size[0] > 3 * 64
    both = invoke("grid", "quickstart", "--tracking-uri", uri, "--rows", "guidance", "--cols", "var.colour",
                  "--where", "seed=1", "-o", out)
    # one factor at a time: only the base row and the base column of guidance × colour were run
    assert both.exit_code == 0, both.output
    assert "3 rows × 3 columns, 5 images" in both.output
    # the grid PNG names the run in each cell; `inspect` and `reproduce` say so instead of "no metadata"
    with Image.open(out) as saved:
        cells = json.loads(saved.text["workbench-grid"])
    assert cells["rows"] == "guidance" and cells["cols"] == "var.colour" and cells["fixed"] == {"seed": "1", "var.position": "center", "var.shape": "circle"}
    run_ids = {c["run_id"] for c in cells["cells"]}
    assert len(run_ids) == 5 and run_ids <= {r.info.run_id for r in MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("quickstart").experiment_id])}
    for command in ("inspect", "reproduce"):
        told = invoke(command, out)
        assert told.exit_code == 2 and "is a comparison grid" in told.output and next(iter(run_ids)) in told.output
    bad = invoke("grid", "quickstart", "--tracking-uri", uri, "--cols", "nonsense", "-o", out)
    assert bad.exit_code == 2 and "'nonsense' is not a parameter" in bad.output
    # neither axis on the seeds: the first seed is shown, and said so
    held = invoke("grid", "quickstart", "--tracking-uri", uri, "--rows", "guidance", "--cols", "var.colour",
                  "-o", out)
    assert held.exit_code == 0 and "5 images" in held.output and "seed=1" in held.output, held.output
    # --where as users type it (guidance=12 for 12.0); a key or value no run has is an error, not an empty grid
    typed = invoke("grid", "quickstart", "--tracking-uri", uri, "--cols", "seed", "--rows", "var.colour",
                   "--where", "guidance=3", "-o", out)
    assert typed.exit_code == 0 and "guidance=3.0" in typed.output, typed.output
    for where, message in (("bogus=1", "'bogus' is not a parameter of these runs"),
                           ("guidance=99", "no run has guidance=99; its values are: 1.0, 3.0, 7.5"),
                           ("seed", "is not KEY=VALUE")):
        result = invoke("grid", "quickstart", "--tracking-uri", uri, "--cols", "var.colour", "--where", where,
                        "-o", tmp_path / "never.png")
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "never.png").exists()
    exclusive = invoke("grid", "quickstart", "--tracking-uri", uri, "--cols", "seed", "--rows", "var.colour",
                       "--where", "guidance=1", "--where", "var.colour=blue", "-o", out)
    assert exclusive.exit_code == 2 and "all at once" in exclusive.output
    missing = invoke("grid", "nope", "--tracking-uri", uri, "--cols", "guidance", "-o", out)
    assert missing.exit_code == 2 and "no experiment 'nope'" in missing.output


def test_plan_is_a_table_and_generates_nothing(tracking_uri: str) -> None:
    result = invoke("plan", QUICKSTART, "--tracking-uri", tracking_uri)
    assert result.exit_code == 0, result.output
    for text in ("guidance", "var.colour", "triangle", "9 cells × 3 seeds", "27", "Nothing was generated"):
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
    ("just a string\n", "must be a YAML mapping"),
    ("", "must be a YAML mapping"),
    ("name: x\nprompt: '{{ oops'\nmodel: embedded:tiny-sd\nseeds: [1]\n", "line 1: Jinja2 syntax error"),
    ("name: x\nprompt: 'a {{ colour }} cat'\nmodel: embedded:tiny-sd\nseeds: [1]\n", "'colour' is undefined"),
    ("name: x\ntemplate: photoreal\nmodel: embedded:tiny-sd\nseeds: [1]\nvariables: {colour: red}\n",
     "has no variable(s) ['colour']"),
    ("name: x\ntemplate: photoreal\nmodel: embedded:tiny-sd\nseeds: [1]\nvary: {var.colour: [red]}\n",
     "vary.var.colour: template 'photoreal' has no variable 'colour'"),
    ("name: x\nprompt: p\nmodel: m\nseeds: [1]\nbackend: fake\nvary: {size: [64x64], width: [32]}\n",
     "both change 'width', so one comparison would differ in two things"),
    ("name: x\nprompt: p\nmodel: embedded:nosuch\nseeds: [1]\n", "unknown embedded model 'embedded:nosuch'"),
    ("name: x\nprompt: p\nbackend: openai\nmodel: gpt-image-1.5\nseeds: [1]\nparams: {width: 100, height: 100}\n",
     "cannot make 100x100 images; allowed sizes: 1024x1024"),
    ("name: x\nprompt: p\nmodel: m\nbackend: fake\nseeds: [1]\nvary: {guidance: []}\n", "no levels given"),
    ("name: x\nprompt: p\nmodel: m\nbackend: fake\nseeds: [1, 2, 3]\nmax_images: 5\nvary: {guidance: [1, 2]}\n",
     "3 cells × 3 seeds = 9 images, over max_images=5"),
    ("name: x\nprompt: p\nmodel: m\nbackend: fake\nseeds: [1]\nvary: {steps: [2.5]}\n",
     "at 'vary.steps': level 2.5 is not a positive whole number"),
    ("name: x\nprompt: p\nmodel: m\nbackend: fake\nseeds: [1]\ncolour: red\n", "at 'colour': unknown key"),
    ("name: x\nprompt: p\nmodel: m\nbackend: fake\nseeds: [1]\nvary: {option.../../evil: [1]}\n",
     "is not a valid option name"),
    ("name: x\nprompt: p\nmodel: m\nbackend: fake\nseeds: [1]\nbackend_options: {replicate: {deadline_s: 5}}\n",
     "the spec never runs on backend 'replicate'"),
])
def test_bad_input_exits_2_and_generates_nothing(spec: str, message: str, tmp_path: Path, tracking_uri: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(spec)
    store = Path(tracking_uri.removeprefix("sqlite:///")).parent
    def files() -> list[str]:  # SQLite's own journal files (-wal, -shm) come and go with any reader
        return sorted(p.name for p in store.iterdir() if not p.name.endswith(("-wal", "-shm")))

    before = files()
    fresh = tmp_path / "fresh"  # a store not created yet: bad input must not create it either
    for command in ("plan", "run"):
        for uri in (tracking_uri, f"sqlite:///{fresh}/mlflow.db"):
            result = invoke(command, path, "--tracking-uri", uri)
            assert result.exit_code == 2, result.output
            assert "error:" in result.output and message in result.output
    client = MlflowClient(tracking_uri)
    assert client.search_experiments() == [] or all(e.name == "Default" for e in client.search_experiments())
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    assert files() == before  # no artifacts folder, no spool, nothing
    assert not fresh.exists()


@pytest.mark.parametrize("args, message", [
    (["plan", QUICKSTART, "--tracking-uri", "foo"], "tracking URI 'foo' has no scheme"),
    (["ui", "--tracking-uri", "foo"], "tracking URI 'foo' has no scheme"),
    (["run", QUICKSTART, "--max-batch", "-3"], "-3 is not in the range x>=1"),
    (["run", QUICKSTART, "--max-cost", "-1"], "-1.0 is not in the range x>=0"),
])
def test_bad_options_exit_2(args: list, message: str, tracking_uri: str) -> None:  # type: ignore[type-arg]
    result = invoke(*args, *(["--tracking-uri", tracking_uri] if "--tracking-uri" not in args else []))
    assert result.exit_code == 2 and message in result.output, result.output
    client = MlflowClient(tracking_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_ui_on_a_tracking_server_points_at_it() -> None:
    result = invoke("ui", "--tracking-uri", "http://alice:secret@mlflow.team:5000")
    assert result.exit_code == 0 and "http://mlflow.team:5000 is a tracking server" in result.output
    assert "secret" not in result.output


def test_unreachable_store_is_a_clear_error_before_anything_runs(tmp_path: Path, fake_backend) -> None:
    result = invoke("plan", QUICKSTART, "--tracking-uri", "http://127.0.0.1:9")
    assert result.exit_code == 1 and "cannot reach the MLflow tracking server at http://127.0.0.1:9" in result.output
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nprompt: a cat\nbackend: fake\nmodel: m\nseeds: [1, 2]\n")
    result = invoke("run", spec, "--tracking-uri", "http://127.0.0.1:9")
    assert result.exit_code == 1 and "cannot reach the MLflow tracking server" in result.output
    assert fake_backend.calls == []  # nothing was generated


def test_the_console_script_itself_runs_and_exits_with_the_codes(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("workbench")  # what `pip install` puts on PATH
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and "version" in version.stdout
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("name: s\nprompt: a cat\nbackend: fake\nmodel: m\nseeds: [1, 2]\n")
    bad.write_text("name: s\nprompt: a cat\nbackend: fake\nmodel: m\nseeds: ['2']\n")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    planned = subprocess.run([str(script), "plan", str(good), "--tracking-uri", uri], capture_output=True, text=True,
                             timeout=120)
    assert planned.returncode == 0 and "Nothing was generated" in planned.stdout, planned.stderr
    refused = subprocess.run([str(script), "run", str(bad), "--tracking-uri", uri], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "at 'seeds.0': Input should be a valid integer" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "store").exists()


def test_console_script_and_module_entry_points() -> None:
    out = subprocess.run([sys.executable, "-m", "workbench", "--help"], capture_output=True, text=True, check=True)
    for command in ("plan", "run", "grid", "templates", "ui", "embedded"):
        assert command in out.stdout


def test_run_prints_the_plans_warnings_as_plan_does(tmp_path: Path, tracking_uri: str) -> None:
    spec = tmp_path / "base-level.yaml"
    spec.write_text("name: base-level\nprompt: a red circle\nbackend: fake\nmodel: m\n"
                    "params: {width: 16, height: 16, steps: 2, guidance: 5}\nseeds: [1]\nvary: {guidance: [5, 9]}\n")
    warning = "warning: vary.guidance: level 5 is the base value, so its images are the base cell's"
    planned = invoke("plan", spec, "--tracking-uri", tracking_uri)
    ran = invoke("run", spec, "--tracking-uri", tracking_uri, "--no-progress", "--grids-dir", tmp_path / "g")
    assert planned.exit_code == 0 and warning in " ".join(planned.output.split()), planned.output
    assert ran.exit_code == 0 and warning in " ".join(ran.output.split()), ran.output
    assert "2 planned: 2 generated" in ran.output
