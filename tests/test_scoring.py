"""Scores on every image: the image statistics by hand, adherence on shapes images, the logger's prepare hook
(off the generating thread, one call per backend batch, never losing an image), and what `plan` says."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from workbench.backends import registry
from workbench.backends.base import Backend, Capabilities
from workbench.cli import cli
from workbench.errors import ScoringModelError, SpecError
from workbench.evaluate import scoring as scoring_module
from workbench.evaluate.adherence import AdherenceScorer
from workbench.evaluate.image_stats import IMAGE_STATS, image_statistics
from workbench.evaluate.scoring import ScoreConfig, Scoring, describe, scoring_for
from workbench.experiments.spec import parse_spec
from workbench.models.shapes.dataset import draw, parse_prompt
from workbench.run.plan import make_plan
from workbench.run.runner import run_experiment
from workbench.tracking.logger import BackgroundLogger
from workbench.tracking.spool import load_entry, spool_result
from workbench.tracking.store import Tracker
from workbench.types import GeneratedImage, GenerationRequest, GenerationResult


def test_image_statistics_by_hand() -> None:
    # a 4x4 checkerboard of black and white: luma 0 and 255, half each
    board = np.zeros((4, 4, 3), np.uint8)
    board[::2, ::2] = board[1::2, 1::2] = 255
    stats = image_statistics(Image.fromarray(board))
    assert set(stats) == set(IMAGE_STATS)
    assert stats["image.brightness"] == pytest.approx(0.5)
    assert stats["image.contrast"] == pytest.approx(0.5)  # RMS contrast: sd of luma / 255
    assert stats["image.clipped"] == 1.0 and stats["image.blank"] == 0.0
    assert stats["image.colourfulness"] == pytest.approx(0.0, abs=1e-9)  # grey: rg = yb = 0
    # the Laplacian of the 2x2 interior: each pixel differs from its 4 neighbours by 255 → ±1020
    assert stats["image.sharpness"] == pytest.approx(1020.0 ** 2)
    # pure red: rg = 255, yb = 127.5, no spread → M = 0.3 * sqrt(255² + 127.5²)
    red = image_statistics(Image.new("RGB", (8, 8), (255, 0, 0)))
    assert red["image.colourfulness"] == pytest.approx(0.3 * np.hypot(255, 127.5))
    assert red["image.brightness"] == pytest.approx(0.299) and red["image.blank"] == 1.0
    assert red["image.sharpness"] == 0.0 and red["image.clipped"] == 0.0
    # a gentle gradient is not blank; a flat grey with one-level noise is
    gradient = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    assert image_statistics(Image.fromarray(gradient).convert("RGB"))["image.blank"] == 0.0
    noise = (np.random.default_rng(0).integers(0, 2, (16, 16)) + 120).astype(np.uint8)
    assert image_statistics(Image.fromarray(noise).convert("RGB"))["image.blank"] == 1.0


def test_adherence_scores_shapes_images_only() -> None:
    scorer = AdherenceScorer()
    prompt = "a small blue square at the top, gray background"
    attrs = parse_prompt(prompt)
    shapes = GenerationRequest(backend="fake", model="m", prompt=prompt, template="shapes")
    assert scorer.applies(shapes)
    assert scorer.applies(shapes.replace(template=None, model="embedded:shapes"))
    assert not scorer.applies(shapes.replace(template="photoreal"))  # another model and template
    assert not scorer.applies(shapes.replace(prompt="a lighthouse at dusk"))  # names no shape
    right, wrong = draw(attrs), draw({**attrs, "colour": "red", "position": "bottom"})
    scores = scorer.score([shapes, shapes], [right, wrong])
    assert scores[0] == {f"adherence.{k}": 1.0 for k in ("shape", "colour", "size", "position", "background",
                                                         "overall")}
    assert scores[1]["adherence.colour"] == 0.0 and scores[1]["adherence.position"] == 0.0
    assert scores[1]["adherence.overall"] == pytest.approx(3 / 5)


class ShapesBackend(Backend):
    """Draws what a shapes prompt says (the dataset's own renderer): adherence 1 on every image."""

    name = "shapes-drawer"

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(seeds=True, max_batch=4)

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        full = {"shape": "circle", "colour": "red", "size": "large", "position": "center", "background": "white"}
        return [GeneratedImage(request=r, image=draw({**full, **(parse_prompt(r.prompt) or {})}), batch_size=len(batch),
                               batch_index=i) for i, r in enumerate(batch)]


@pytest.fixture
def shapes_backend():  # type: ignore[no-untyped-def]
    registry.register_backend("shapes-drawer", ShapesBackend)
    yield registry.get_backend("shapes-drawer")
    registry._registered.pop("shapes-drawer", None)
    registry._instances.pop("shapes-drawer", None)


def test_a_sweep_scores_every_batch_once_on_a_logging_thread(tracking_uri: str, shapes_backend, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    real = Scoring.prepare

    def prepare(self, results):  # type: ignore[no-untyped-def]
        calls.append((threading.current_thread().name, len(results)))
        return real(self, results)

    monkeypatch.setattr(Scoring, "prepare", prepare)
    spec = parse_spec({"name": "drawn", "template": "shapes", "backend": "shapes-drawer", "model": "m",
                       "seeds": [1, 2, 3, 4], "vary": {"var.colour": ["blue"], "var.position": ["left"]}})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    assert summary.ok and summary.finished == 12
    assert sorted(n for _, n in calls) == [4, 4, 4]  # one call per backend batch of 4, never per image
    assert all(name.startswith("workbench-log-") for name, _ in calls), calls
    for record in Tracker(tracking_uri).records("drawn"):
        assert record.metrics["adherence.overall"] == 1.0 and record.metrics["adherence.position"] == 1.0
        assert set(IMAGE_STATS) <= set(record.metrics) and "clip_score" not in record.metrics


def test_a_failing_scorer_costs_its_scores_never_the_image(tracking_uri: str, fake_backend, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self, requests, images):  # type: ignore[no-untyped-def]
        raise RuntimeError("the scorer fell over")

    monkeypatch.setattr(scoring_module.ImageStatsScorer, "score", broken)
    spec = parse_spec({"name": "broken", "prompt": "a red circle", "backend": "fake", "model": "m",
                       "params": {"width": 16, "height": 16}, "seeds": [1, 2]})
    summary = run_experiment(spec, tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    assert summary.ok and summary.finished == 2
    tracker = Tracker(tracking_uri)
    for record in tracker.records("broken"):
        assert record.outcome == "FINISHED" and "image.brightness" not in record.metrics
        note = tracker.load_bytes(record.run_id, "notes/scoring.txt").decode()
        assert "image statistics not computed: RuntimeError: the scorer fell over" in note
    # and a prepare hook that raises outright: the logger still writes every image, with the reason
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment_id("broken")
    request = GenerationRequest(backend="fake", model="m", prompt="x", seed=9, width=8, height=8)

    def explode(results):  # type: ignore[no-untyped-def]
        raise ValueError("no scores today")

    logger = BackgroundLogger(tracker, experiment_id, None, experiment="broken", prepare=explode)
    logger.submit_batch([GeneratedImage(request=request, image=Image.new("RGB", (8, 8)))])
    [logged] = logger.close()
    assert logged.outcome == "FINISHED"
    assert "ValueError: no scores today" in tracker.load_bytes(logged.run_id, "notes/scoring.txt").decode()


def test_spooled_images_keep_their_scores(tracking_uri: str) -> None:
    request = GenerationRequest(backend="fake", model="m", prompt="x", seed=1, width=8, height=8)
    image = GeneratedImage(request=request, image=Image.new("RGB", (8, 8), (10, 20, 30)))
    [scored] = scoring_for(ScoreConfig()).prepare([image])
    folder = spool_result(scored, tracking_uri=tracking_uri, experiment="spooled", parent_run_id=None)
    back, _, _ = load_entry(folder)
    assert back.metrics == scored.metrics and "image.brightness" in back.metrics


def test_the_plan_says_what_is_scored(fake_backend, tracking_uri: str, tmp_path: Path) -> None:
    spec = parse_spec({"name": "p", "prompt": "a red circle", "backend": "fake", "model": "m", "seeds": [1, 2]})
    lines = {line.name: line for line in make_plan(spec).scores}
    assert lines["image statistics"].images == 2 and lines["image statistics"].metrics == IMAGE_STATS
    assert lines["adherence"].images == 0 and "not computed" in lines["adherence"].note
    assert lines["CLIP score"].images == 0 and "no CLIP model named" in lines["CLIP score"].note
    named = describe(ScoreConfig(clip="openai/clip-vit-base-patch32"), make_plan(spec).todo)
    assert [(line.name, line.images) for line in named][-1] == ("CLIP score (openai/clip-vit-base-patch32)", 2)
    path = tmp_path / "spec.yaml"
    path.write_text("name: p\nprompt: a red circle\nbackend: fake\nmodel: m\nseeds: [1, 2]\n")
    result = CliRunner().invoke(cli, ["plan", str(path), "--tracking-uri", tracking_uri])
    assert result.exit_code == 0, result.output
    assert "scores: image statistics: image.brightness, image.contrast" in result.output
    assert "scores: CLIP score: not computed: no CLIP model named" in result.output
    as_json = json.loads(CliRunner().invoke(cli, ["plan", str(path), "--tracking-uri", tracking_uri, "--json",
                                                  "--clip", "openai/clip-vit-base-patch32"]).output)
    assert {s["scorer"]: s["images"] for s in as_json["scores"]}["CLIP score (openai/clip-vit-base-patch32)"] == 2


def test_the_evaluate_section_is_checked_like_the_rest_of_the_spec(fake_backend) -> None:
    base = {"name": "p", "prompt": "a red circle", "backend": "fake", "model": "m", "seeds": [1]}
    with pytest.raises(SpecError, match=r"at 'evaluate.clpi': unknown key; allowed keys here: clip"):
        parse_spec({**base, "evaluate": {"clpi": "openai/clip-vit-base-patch32"}})
    assert parse_spec({**base, "evaluate": {"clip": "a/b"}}).evaluate.clip == "a/b"
    with pytest.raises(ScoringModelError, match=r"'not a model' is neither a local folder nor a hub id"):
        make_plan(parse_spec({**base, "evaluate": {"clip": "not a model"}}))
    with pytest.raises(ScoringModelError, match="neither a local folder nor a hub id"):
        make_plan(parse_spec(base), clip="x/y/z")  # --clip overrides the spec, and is checked the same way
