"""Reproduction on CPU with the real embedded pipeline, against a real MLflow store: no mocks.

One small sweep (3 seeds in one batch of 3) per test; each regeneration is a 64x64, 4-step call.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image, PngImagePlugin

from workbench.backends import registry
from workbench.backends.base import Capabilities
from workbench.backends.diffusers import DiffusersBackend
from workbench.backends.fake import FakeBackend
from workbench.cli import cli
from workbench.errors import (
    MetadataError,
    NotReproducibleError,
    UnknownBackendError,
    UnknownRunError,
    UserInputError,
)
from workbench.experiments.spec import parse_spec
from workbench.hashing import canonical_json
from workbench.provenance.a1111 import a1111_parameters
from workbench.provenance.png import encode_png, read_png_metadata
from workbench.reproduce.regenerate import reproduce
from workbench.reproduce.report import compare_images
from workbench.run.runner import run_experiment
from workbench.tracking.store import Tracker
from workbench.types import GenerationFailure, GenerationRequest, GenerationResult

from .test_metadata import rewrite_chunk

SPEC = {"name": "repro", "prompt": "a red lighthouse, at dusk", "negative_prompt": "blurry",
        "backend": "diffusers", "model": "embedded:tiny-sd",
        "params": {"width": 64, "height": 64, "steps": 4, "guidance": 7.5}, "seeds": [1, 2, 3]}


def invoke(*args: Any):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def sweep_runs(tracking_uri: str, max_batch: int = 3, **changes: Any) -> list[str]:
    """Run ids of a fresh sweep, in batch order (then seed order)."""
    summary = run_experiment(parse_spec({**SPEC, **changes}), tracking_uri=tracking_uri, progress=False,
                             make_grids=False, max_batch=max_batch)
    assert summary.ok and summary.finished == 3, summary
    records = Tracker(tracking_uri).records(changes.get("name", SPEC["name"]))
    return [r.run_id for r in sorted(records, key=lambda r: (r.metrics.get("batch_index", 0), r.params["seed"]))]


def batch_ids(tracking_uri: str, runs: list[str]) -> set[str]:
    return {Tracker(tracking_uri).client.get_run(r).data.tags["workbench.batch_id"] for r in runs}


@pytest.fixture
def sweep(tracking_uri: str, embedded_model: Path) -> list[str]:
    """Three images made in one backend call (a batch of 3)."""
    runs = sweep_runs(tracking_uri)
    assert len(batch_ids(tracking_uri, runs)) == 1
    return runs


@pytest.fixture
def singles(tracking_uri: str, embedded_model: Path) -> list[str]:
    """Three images, each made alone (batches of 1)."""
    runs = sweep_runs(tracking_uri, max_batch=1, name="singles")
    assert len(batch_ids(tracking_uri, runs)) == 3
    return runs


def download_png(tracking_uri: str, run_id: str, folder: Path) -> Path:
    path = folder / f"{run_id}.png"
    path.write_bytes(Tracker(tracking_uri).load_bytes(run_id, "image.png"))
    return path


class CountingDiffusers(DiffusersBackend):
    """The real diffusers backend, recording the size of every ``generate`` call."""

    def __init__(self, torch_version: str | None = None) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.torch_version = torch_version

    def environment(self, model: str, request: GenerationRequest | None = None) -> dict[str, Any]:
        env = super().environment(model, request)
        if self.torch_version:  # as if run on another install
            env["torch"] = self.torch_version
        return env

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(len(batch))
        return super().generate(batch)


class BatchShapeSensitiveDiffusers(CountingDiffusers):
    """A simulated device whose kernels depend on the batch shape, as many CPUs' and GPUs' do: alone, one
    channel of one pixel lands one 8-bit level away. Whether the real kernels here do is up to the CPU."""

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results = super().generate(batch)
        if len(batch) > 1:
            return results
        image = results[0].image.copy()
        red, green, blue = image.getpixel((0, 0))
        image.putpixel((0, 0), (red + 1 if red < 255 else red - 1, green, blue))
        return [dataclasses.replace(results[0], image=image)]


@pytest.fixture(scope="module")
def counting(embedded_model: Path) -> CountingDiffusers:
    return CountingDiffusers()  # one per module: its pipeline is loaded once


@pytest.fixture
def backend(counting: CountingDiffusers) -> CountingDiffusers:
    counting.calls.clear()
    counting.torch_version = None
    return counting


def test_reproduce_by_run_id_is_bit_exact(tracking_uri: str, singles: list[str]) -> None:
    report = reproduce(singles[1], tracking_uri=tracking_uri, log=False)
    assert report.bit_exact and report.verdict == "bit-exact"
    assert (report.max_abs_diff, report.fraction_differing, report.psnr) == (0, 0.0, math.inf)
    assert report.environment_diff == {} and report.seed_controlled and report.notes == []
    assert (report.original_batch_size, report.original_batch_index, report.batch_size, report.batch_index) == (
        1, 0, 1, 0)
    assert report.source_kind == "run" and report.original_run_id == singles[1] and report.reproduction_run_id is None
    assert report.request.seed == 2 and report.request.prompt == SPEC["prompt"]
    text = report.to_text()
    assert f"reproduction of run {singles[1]}" in text and "verdict:      bit-exact" in text
    assert "original image 1 of 1; regenerated alone" in text
    data = json.loads(report.to_json())
    assert data["verdict"] == "bit-exact" and data["psnr_db"] is None and data["run_key"] == report.request.run_key
    client = MlflowClient(tracking_uri)
    experiment = client.get_run(singles[1]).info.experiment_id
    assert client.search_runs([experiment], "tags.`workbench.kind` = 'reproduction'") == []  # log=False


def test_reproduce_by_png_alone_is_bit_exact(tracking_uri: str, singles: list[str], tmp_path: Path) -> None:
    png = download_png(tracking_uri, singles[2], tmp_path)
    report = reproduce(png, log=False)  # no store needed: the PNG holds everything
    assert report.bit_exact and report.source_kind == "png" and report.original_run_id == singles[2]
    assert report.tracking_uri is None and report.environment_diff == {}
    assert report.request.seed == 3 and report.original_batch_size == 1
    assert str(png) in report.to_text()


def test_an_image_of_a_batch_is_regenerated_with_its_whole_batch_by_default(
        tracking_uri: str, sweep: list[str], tmp_path: Path, backend: CountingDiffusers) -> None:
    for index, run_id in enumerate(sweep):
        # by default: the whole batch, read from the store, in one call of 3, in the original order: bit-exact
        report = reproduce(run_id, tracking_uri=tracking_uri, backend=backend, log=False)
        assert report.bit_exact, report.to_text()
        assert (report.exact_batch, report.batch_size, report.batch_index) == (True, 3, index)
        assert report.alone_why is None
        assert (f"regenerated with its whole batch (image {index + 1} of 3), read from the store"
                in report.to_text())
        assert report.environment_diff == report.informational_diff == {} and report.notes == []
        # exact_batch=True insists on the batch: the same call
        insisted = reproduce(run_id, tracking_uri=tracking_uri, exact_batch=True, backend=backend, log=False)
        assert insisted.bit_exact and insisted.batch_size == 3
    assert backend.calls == [3, 3] * 3
    # from the PNG too: the other images of its batch come from the store
    png = download_png(tracking_uri, sweep[1], tmp_path)
    report = reproduce(png, tracking_uri=tracking_uri, backend=backend, log=False)
    assert backend.calls[-1] == 3 and report.bit_exact and report.batch_index == 1
    # without --tracking-uri, the batch is looked up in the store the PNG names
    named = reproduce(png, backend=backend, log=False)
    assert named.bit_exact and named.exact_batch
    assert any("the store the PNG names" in note for note in named.notes)
    # a store that does not hold the run: alone, saying why (and no empty store is created to find that out)
    empty = tmp_path / "other" / "mlflow.db"
    fallback = reproduce(png, tracking_uri=f"sqlite:///{empty}", backend=backend, log=False)
    assert (fallback.exact_batch, fallback.batch_size, backend.calls[-1]) == (False, 1, 1)
    assert fallback.alone_why.startswith("because its batch cannot be rebuilt: ") and not empty.exists()
    assert "pass --tracking-uri for the store it was logged to" in fallback.to_text()
    # ... and exact_batch=True makes that an error naming the fix
    with pytest.raises(NotReproducibleError, match="pass --tracking-uri for the store it was logged to"):
        reproduce(png, tracking_uri=f"sqlite:///{empty}", exact_batch=True, backend=backend, log=False)


def test_alone_on_request_reports_the_batch_shape(tracking_uri: str, sweep: list[str],
                                                  backend: CountingDiffusers) -> None:
    for run_id in sweep:  # whether these kernels depend on the batch shape is up to the CPU
        alone = reproduce(run_id, tracking_uri=tracking_uri, exact_batch=False, backend=backend, log=False)
        assert (alone.exact_batch, alone.batch_size, alone.original_batch_size) == (False, 1, 3)
        assert alone.alone_why == "as asked (--alone)" and "regenerated alone (image 1 of 1), as asked" in \
            alone.to_text()
        # a different batch shape may move the last bit, never more; the note says why exactly when it does
        assert alone.max_abs_diff <= 1
        shape_note = [n for n in alone.notes if "A different batch shape can change pixels" in n]
        assert len(shape_note) == (0 if alone.bit_exact else 1), alone.notes
        assert alone.verdict == ("bit-exact" if alone.bit_exact else f"differs: max diff 1, PSNR {alone.psnr:.2f} "
                                 f"dB, fraction {alone.fraction_differing:.4f}")
        # the batch shape is reported, apart from the fields that name libraries and devices
        assert alone.environment_diff == {} and alone.informational_diff["batch_size"] == (3, 1)
        also = next(line for line in alone.to_text().splitlines() if line.startswith("  also differ:"))
        assert "batch_size 3 → 1" in also
        assert "environment:  the same libraries, device, dtype, model and scheduler" in alone.to_text()
    assert backend.calls == [1, 1, 1]


def test_a_batch_shape_that_moves_pixels_is_explained(tracking_uri: str, sweep: list[str]) -> None:
    """Why the default is the whole batch: on a device whose kernels depend on the batch shape, alone differs
    by one level and the report says why; with its batch, the same image is bit-exact."""
    device = BatchShapeSensitiveDiffusers()
    alone = reproduce(sweep[1], tracking_uri=tracking_uri, exact_batch=False, backend=device, log=False)
    assert not alone.bit_exact and (alone.max_abs_diff, alone.batch_size) == (1, 1)
    assert alone.fraction_differing == pytest.approx(1 / (64 * 64))
    assert alone.verdict == f"differs: max diff 1, PSNR {alone.psnr:.2f} dB, fraction {alone.fraction_differing:.4f}"
    shape_note, = [n for n in alone.notes if "A different batch shape can change pixels" in n]
    assert "image 2 of a batch of 3; it was regenerated in a batch of 1" in shape_note
    with_batch = reproduce(sweep[1], tracking_uri=tracking_uri, backend=device, log=False)
    assert with_batch.bit_exact and with_batch.batch_size == 3 and with_batch.notes == []
    assert device.calls == [1, 3]


def test_a_changed_environment_field_is_reported(tracking_uri: str, singles: list[str], tmp_path: Path,
                                                 backend: CountingDiffusers) -> None:
    backend.torch_version = "0.0.0-elsewhere"  # as if regenerated on another install
    report = reproduce(singles[0], tracking_uri=tracking_uri, backend=backend, log=False)
    assert report.environment_diff == {"torch": (torch.__version__, "0.0.0-elsewhere")}
    assert report.bit_exact  # pixels can agree anyway; the report still says what differs
    assert f"torch: {torch.__version__} → 0.0.0-elsewhere" in report.to_text()
    # a PNG whose recorded environment says it was made in fp16 on a GPU: the CLI lists both fields
    png = download_png(tracking_uri, singles[0], tmp_path)
    chunk = json.loads(read_png_metadata(png).texts["workbench"])
    chunk["environment"].update(dtype="float16", device="cuda")
    edited = tmp_path / "edited.png"
    with Image.open(png) as made_elsewhere:  # written, with its digest, as the GPU machine would have
        edited.write_bytes(encode_png(made_elsewhere, parameters=made_elsewhere.text["parameters"],
                                      workbench=chunk))
    result = invoke("reproduce", edited, "--no-log")
    assert result.exit_code == 0, result.output
    assert "2 field(s) differ" in result.output
    assert "device: cuda → cpu" in result.output and "dtype: float16 → float32" in result.output


def test_the_reproduction_is_logged_as_a_new_run(tracking_uri: str, sweep: list[str]) -> None:
    report = reproduce(sweep[1], tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri)
    new = client.get_run(report.reproduction_run_id)
    original = client.get_run(sweep[1])
    assert new.info.experiment_id == original.info.experiment_id and new.info.status == "FINISHED"
    tags = new.data.tags
    assert tags["workbench.kind"] == "reproduction" and tags["workbench.reproduces"] == sweep[1]
    assert tags["workbench.reproduction.verdict"] == "bit-exact"
    assert tags["workbench.run_key"] == report.request.run_key
    assert "workbench.batch_id" not in tags and tags["mlflow.runName"] == f"reproduce {sweep[1]}"
    assert tags["workbench.exact_batch"] == "true" and tags["workbench.reproduction.source"] == "run"
    assert new.data.metrics["bit_exact"] == 1.0 and new.data.metrics["max_abs_diff"] == 0.0
    # bit-exact, so its image statistics are the original's
    assert {k: v for k, v in new.data.metrics.items() if k.startswith("image.")} == \
        {k: v for k, v in original.data.metrics.items() if k.startswith("image.")} != {}
    names = {a.path for a in client.list_artifacts(new.info.run_id)}
    assert {"image.png", "request.json", "environment.json", "reproduction.json", "reproduction.txt"} <= names
    tracker = Tracker(tracking_uri)
    logged = json.loads(tracker.load_bytes(new.info.run_id, "reproduction.json"))
    assert logged["original_run_id"] == sweep[1] and logged["reproduction_run_id"] == new.info.run_id
    assert "bit-exact" in tracker.load_bytes(new.info.run_id, "reproduction.txt").decode()
    # the reproduction's own PNG names the reproduction run
    assert read_png_metadata(tracker.load_bytes(new.info.run_id, "image.png")).run_id == new.info.run_id
    # sweeps do not count reproductions as images: a re-run still skips all three, and they stay three
    assert sorted(r.run_id for r in tracker.records("repro")) == sorted(sweep)
    assert [r.run_id for r in tracker.records("repro", kind="reproduction")] == [new.info.run_id]
    again = run_experiment(parse_spec(SPEC), tracking_uri=tracking_uri, progress=False, make_grids=False)
    assert (again.skipped, again.finished) == (3, 0)
    # and a reproduction can itself be reproduced (it was image 2 of a batch of 3 too)
    again = reproduce(new.info.run_id, tracking_uri=tracking_uri, log=False)
    assert again.original_run_id == new.info.run_id and again.original_batch_size == 3


class SeedlessFake(FakeBackend):
    name = "seedless"

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(seeds=False, max_batch=4)


class RefusingFake(FakeBackend):
    name = "refusing"

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [GenerationFailure(r, "moderation_blocked: refused", status="BLOCKED") for r in batch]


@pytest.fixture
def other_backends():  # type: ignore[no-untyped-def]
    for backend in (SeedlessFake, RefusingFake):
        registry.register_backend(backend.name, backend)
    yield
    for backend in (SeedlessFake, RefusingFake):
        registry._registered.pop(backend.name, None)
        registry._instances.pop(backend.name, None)


def test_a_backend_without_seeds_says_so_and_still_regenerates(tracking_uri: str, other_backends: None) -> None:
    runs = sweep_runs(tracking_uri, name="seedless", backend="seedless", model="m", seeds=[1, 2, 3])
    report = reproduce(runs[0], tracking_uri=tracking_uri, log=False)
    assert report.request.seed is None and not report.seed_controlled
    assert any("cannot be reproduced exactly" in note for note in report.notes)
    assert "seed:         not controlled by the backend" in report.to_text()
    # it regenerated all the same, alone (a batch shape cannot make a seedless draw exact), and the fake backend
    # draws from the request alone, so the pixels agree
    assert report.image is not None and report.verdict == "bit-exact"
    assert (report.original_batch_size, report.batch_size) == (3, 1)
    assert report.alone_why == "because the backend does not honour seeds (the batch shape cannot make it exact)"


def test_bad_sources_are_clear_user_errors(tracking_uri: str, sweep: list[str], other_backends: None,
                                           tmp_path: Path) -> None:
    missing = uuid.uuid4().hex
    with pytest.raises(UnknownRunError, match=f"no run '{missing}' in the MLflow store"):
        reproduce(missing, tracking_uri=tracking_uri, log=False)
    with pytest.raises(UnknownRunError, match="'yesterday' is neither a PNG file nor an MLflow run id"):
        reproduce("yesterday", tracking_uri=tracking_uri, log=False)
    with pytest.raises(MetadataError, match="no such file: 'gone.png'"):
        reproduce("gone.png", log=False)
    parent = MlflowClient(tracking_uri).get_run(sweep[0]).data.tags["mlflow.parentRunId"]
    with pytest.raises(NotReproducibleError, match="is a 'parent' run.*reproduce one of its image runs"):
        reproduce(parent, tracking_uri=tracking_uri, log=False)
    summary = run_experiment(parse_spec({**SPEC, "name": "refused", "backend": "refusing", "model": "m"}),
                             tracking_uri=tracking_uri, progress=False, make_grids=False)
    assert summary.blocked == 3
    blocked = Tracker(tracking_uri).records("refused")[0].run_id
    with pytest.raises(NotReproducibleError, match=f"run {blocked} has no image to compare with "
                                                   r"\(status BLOCKED: moderation_blocked: refused\)"):
        reproduce(blocked, tracking_uri=tracking_uri, log=False)
    with pytest.raises(UnknownBackendError, match="unknown backend 'nope'"):
        reproduce(sweep[0], tracking_uri=tracking_uri, backend="nope", log=False)
    stripped = tmp_path / "stripped.png"
    Image.open(download_png(tracking_uri, sweep[0], tmp_path)).save(stripped)
    with pytest.raises(MetadataError, match="holds no generation metadata"):
        reproduce(stripped, log=False)
    assert all(issubclass(e, UserInputError) for e in (UnknownRunError, NotReproducibleError, MetadataError))


def test_cli_inspect_shows_both_chunks(tracking_uri: str, sweep: list[str], tmp_path: Path) -> None:
    png = download_png(tracking_uri, sweep[1], tmp_path)
    result = invoke("inspect", png)
    assert result.exit_code == 0, result.output
    for text in ("workbench metadata (verified)", "a red lighthouse, at dusk", "blurry", "embedded:tiny-sd",
                 sweep[1], "tracking URI", "image 2 of 3", "environment", "float32", "weights_hash",
                 "A1111 parameters", "CFG scale", "7.5", "64x64"):
        assert text in result.output, text
    as_json = json.loads(invoke("inspect", png, "--json").output)
    assert as_json["source"] == "workbench" and as_json["workbench"]["run_id"] == sweep[1]
    assert as_json["a1111"]["Seed"] == "2" and as_json["request"]["seed"] == 2 and as_json["problem"] is None


def test_cli_errors_exit_2_with_a_clear_message(tracking_uri: str, sweep: list[str], tmp_path: Path) -> None:
    png = download_png(tracking_uri, sweep[0], tmp_path)
    data = png.read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    chunk = json.loads(read_png_metadata(data).texts["workbench"])
    chunk["request"]["prompt"] = "a blue lighthouse"
    tampered = tmp_path / "tampered.png"
    tampered.write_bytes(rewrite_chunk(data, "workbench", canonical_json(chunk)))
    stripped = tmp_path / "stripped.png"
    Image.open(png).save(stripped)
    cases = [(truncated, "is truncated"), (tampered, "was tampered with"), (stripped, "holds no generation metadata")]
    for path, message in cases:
        for command in ("inspect", "reproduce"):
            result = invoke(command, path, *(["--no-log"] if command == "reproduce" else []))
            assert result.exit_code == 2 and message in result.output, (command, path, result.output)
    unknown = invoke("reproduce", uuid.uuid4().hex, "--tracking-uri", tracking_uri)
    assert unknown.exit_code == 2 and "no run" in unknown.output
    assert invoke("inspect", tmp_path / "nope.png").exit_code == 2


def test_cli_reproduce_prints_the_verdict_and_logs(tracking_uri: str, sweep: list[str]) -> None:
    result = invoke("reproduce", sweep[2], "--tracking-uri", tracking_uri, "--check")
    assert result.exit_code == 0, result.output
    assert "verdict:      bit-exact" in result.output and "logged as:    run" in result.output
    assert "regenerated with its whole batch (image 3 of 3), read from the store" in result.output
    as_json = json.loads(invoke("reproduce", sweep[2], "--tracking-uri", tracking_uri, "--no-log", "--json",
                             "--exact-batch").output)
    assert as_json["bit_exact"] and as_json["exact_batch"] and as_json["reproduction_run_id"] is None
    alone = json.loads(invoke("reproduce", sweep[2], "--tracking-uri", tracking_uri, "--no-log", "--json",
                              "--alone").output)
    assert (alone["exact_batch"], alone["reproduction_batch"], alone["alone_why"]) == (
        False, {"size": 1, "index": 0}, "as asked (--alone)")
    both = invoke("reproduce", sweep[2], "--tracking-uri", tracking_uri, "--alone", "--exact-batch")
    assert both.exit_code == 2 and "--alone and --exact-batch contradict each other" in both.output


def test_cli_reproduce_check_exits_1_unless_bit_exact(tracking_uri: str) -> None:
    spec = parse_spec({"name": "check", "prompt": "a cat", "backend": "fake", "model": "m", "seeds": [1],
                       "params": {"width": 16, "height": 16}})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, make_grids=False)
    (record,) = Tracker(tracking_uri).records("check")
    same = invoke("reproduce", record.run_id, "--tracking-uri", tracking_uri, "--no-log", "--check")
    assert summary.ok and same.exit_code == 0 and "bit-exact" in same.output, same.output
    other = invoke("reproduce", record.run_id, "--tracking-uri", tracking_uri, "--no-log", "--check",
                   "--model", "another-model")
    assert other.exit_code == 1 and "check failed: the reproduction differs" in other.output, other.output


def a1111_png(path: Path, request: GenerationRequest, **extra: str) -> Path:
    """A PNG as an A1111-style tool writes it: the image, and a ``parameters`` text chunk only."""
    (result,) = registry.get_backend("diffusers").generate([request])
    text = a1111_parameters(request)
    if extra:
        text += "".join(f", {k}: {v}" for k, v in extra.items())
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    result.image.save(path, pnginfo=info)
    return path


def test_an_a1111_only_png_is_inspected_and_reproduced(tracking_uri: str, embedded_model: Path,
                                                       tmp_path: Path) -> None:
    request = GenerationRequest(backend="diffusers", model="embedded:tiny-sd", prompt="a lighthouse, 50mm: golden",
                                negative_prompt="blurry", seed=11, width=64, height=64, steps=4, guidance=6.0,
                                scheduler="euler")
    png = a1111_png(tmp_path / "a1111.png", request, **{"Model hash": "6ce0161689", "Version": "v1.10.1"})
    meta = read_png_metadata(png)
    assert meta.source == "a1111" and meta.request().run_key == request.run_key
    shown = invoke("inspect", png)
    assert shown.exit_code == 0, shown.output
    for text in ("no workbench metadata", "A1111 parameters", "Euler", "6ce0161689", "the request we would run",
                 "euler", request.run_key, "reproduce it with"):
        assert text in shown.output, text
    # same parameters, same backend and model: the A1111 text alone is enough for a bit-exact image
    report = reproduce(png, tracking_uri=tracking_uri)
    assert report.bit_exact and report.source_kind == "a1111" and report.original_run_id is None
    assert report.environment_diff == {} and "A1111 parameters only" in report.to_text()
    new = MlflowClient(tracking_uri).get_run(report.reproduction_run_id)
    assert new.data.tags["workbench.reproduces_file"] == "a1111.png"
    assert MlflowClient(tracking_uri).get_experiment(new.info.experiment_id).name == "reproductions"


def test_an_a1111_png_naming_an_unknown_checkpoint_needs_model(tracking_uri: str, embedded_model: Path,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "civitai.png"
    image = Image.new("RGB", (64, 64), "gray")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a lighthouse\nNegative prompt: blurry\nSteps: 4, Sampler: DPM++ 2M, Schedule type: "
                  "Karras, CFG scale: 7, Seed: 5, Size: 64x64, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, "
                  "Hires upscale: 2, Version: v1.10.1")
    image.save(path, pnginfo=info)
    refused = invoke("reproduce", path, "--no-log")
    assert refused.exit_code == 2 and "v1-5-pruned-emaonly" in refused.output and "--model" in refused.output
    result = invoke("reproduce", path, "--no-log", "--model", "embedded:tiny-sd")
    assert result.exit_code == 0, result.output
    assert "differs: max diff" in result.output and "PSNR" in result.output
    assert "A1111 parameters not reproduced: Hires upscale: 2" in result.output
    shown = invoke("inspect", path)
    assert shown.exit_code == 0 and "dpm++_2m_karras" in shown.output and "[--model MODEL]" in shown.output


def test_compare_images_measures_differences() -> None:
    a = Image.new("RGB", (10, 10), (100, 100, 100))
    b = a.copy()
    b.putpixel((0, 0), (100, 103, 100))
    b.putpixel((1, 0), (99, 100, 100))
    c = compare_images(a, b)
    assert (c["bit_exact"], c["max_abs_diff"], c["fraction_differing"]) == (False, 3, 0.02)
    assert c["psnr"] == pytest.approx(10 * math.log10(255**2 / ((9 + 1) / 300)))
    assert compare_images(a, a.copy())["psnr"] == math.inf
    assert compare_images(a, Image.new("RGB", (5, 5)))["size_matches"] is False
    assert compare_images(Image.new("RGBA", (2, 2)), Image.new("RGB", (2, 2)))["size_matches"] is True
