"""The CLIP score with a real (tiny) CLIPModel built here: config + our own tokenizer files, trained for a few
seconds on drawn shapes so that a caption that matches scores higher than one that does not; then a sweep
scored with it, `workbench score` adding it to old runs without generating, and the errors for models that
are not there."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from workbench.cli import cli
from workbench.errors import ScoringModelError
from workbench.evaluate import clip as clip_module
from workbench.evaluate.clip import ClipScorer, clip_scores
from workbench.experiments.spec import parse_spec
from workbench.models.shapes.dataset import caption, draw
from workbench.models.weights import weights_hash
from workbench.run.runner import run_experiment
from workbench.tracking.store import Tracker

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle", "cross")


def attrs(colour: str, shape: str) -> dict[str, str]:
    return {"shape": shape, "colour": colour, "size": "large", "position": "center", "background": "white"}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer CLIP (32-wide towers, 32x32 images), trained contrastively on 16 drawn shapes; ~4 s on a CPU."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    from workbench.models.tokenizer import LIBRARY_WORDS, tokenizer_files

    torch.set_num_threads(1)
    vocab, merges = tokenizer_files(LIBRARY_WORDS)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    torch.manual_seed(0)
    towers = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1}
    model = CLIPModel(CLIPConfig(
        text_config={**towers, "vocab_size": len(vocab), "max_position_embeddings": 77, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**towers, "image_size": 32, "patch_size": 8}, projection_dim=16))
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    items = [attrs(c, s) for c in COLOURS for s in SHAPES]
    pixels = processor(images=[draw(a) for a in items], return_tensors="pt")["pixel_values"]
    text = tokenizer([caption(a) for a in items], padding=True, return_tensors="pt")
    labels = torch.arange(len(items))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels)
        loss = (torch.nn.functional.cross_entropy(out.logits_per_image, labels)
                + torch.nn.functional.cross_entropy(out.logits_per_text, labels)) / 2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    folder = tmp_path_factory.mktemp("tiny-clip") / "clip"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_a_matching_caption_scores_higher_than_a_deranged_one(tiny_clip: Path) -> None:
    items = [attrs(c, s) for c in COLOURS for s in SHAPES]
    images = [draw(a) for a in items]
    matched = clip_scores(str(tiny_clip), [caption(a) for a in items], images)
    # deranged: each image against the caption of the same shape in the next colour
    deranged = clip_scores(str(tiny_clip), [caption(attrs(COLOURS[(COLOURS.index(a["colour"]) + 1) % 4],
                                                           a["shape"])) for a in items], images)
    assert all(0.0 <= s <= 100.0 for s in matched + deranged)
    assert all(m > d for m, d in zip(matched, deranged, strict=True)), (matched, deranged)
    assert len({round(s, 6) for s in deranged}) > 1  # scores differ by prompt


def test_the_model_is_loaded_once_and_shared_by_threads(tiny_clip: Path) -> None:
    images = [draw(attrs(c, "circle")) for c in COLOURS]
    prompts = [caption(attrs(c, "circle")) for c in COLOURS]
    alone = clip_scores(str(tiny_clip), prompts, images)
    loaded = clip_module._load(str(tiny_clip))
    results: list[list[float]] = []
    threads = [threading.Thread(target=lambda: results.append(clip_scores(str(tiny_clip), prompts, images)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [alone] * 4
    assert clip_module._load(str(tiny_clip)) is loaded  # the same model object: loaded once per process
    scorer = ClipScorer(str(tiny_clip))
    scorer.load()
    assert scorer.weights_hash == weights_hash(tiny_clip) and len(scorer.weights_hash or "") == 16


def test_models_that_are_not_there_fail_naming_the_model_and_the_fix(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ScoringModelError, match=r"is a path but not a folder with a config\.json"):
        ClipScorer(str(tmp_path)).load()
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ScoringModelError, match=r"is a 'bert' model, not a CLIP model"):
        ClipScorer(str(bert)).load()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(ScoringModelError) as caught:
        ClipScorer("nobody/no-such-clip").load()
    message = str(caught.value)
    assert "'nobody/no-such-clip' is not in the local Hugging Face cache" in message
    assert "huggingface-cli download nobody/no-such-clip" in message and "save_pretrained" in message


def shapes_spec(name: str, **extra):  # type: ignore[no-untyped-def]
    return parse_spec({"name": name, "template": "shapes", "backend": "fake", "model": "m",
                       "params": {"width": 32, "height": 32}, "seeds": [1, 2], "vary": {"var.colour": ["blue"]},
                       **extra})


def test_a_sweep_with_clip_records_score_model_and_hash(tiny_clip: Path, tracking_uri: str, fake_backend,
                                                         tmp_path: Path) -> None:
    summary = run_experiment(shapes_spec("clipped", evaluate={"clip": str(tiny_clip)}), tracking_uri=tracking_uri,
                             progress=False, grids_dir=tmp_path)
    assert summary.ok and summary.finished == 4
    digest = weights_hash(tiny_clip)
    records = Tracker(tracking_uri).records("clipped")
    for record in records:
        assert 0.0 <= record.metrics["clip_score"] <= 100.0
        assert record.tags["workbench.score.clip_model"] == str(tiny_clip)
        assert record.tags["workbench.score.clip_weights_hash"] == digest
    assert len({r.metrics["clip_score"] for r in records}) > 1
    parent = MlflowClient(tracking_uri).get_run(summary.parent_run_id)
    assert parent.data.params["clip_model"] == str(tiny_clip) and parent.data.params["clip_weights_hash"] == digest


def test_score_adds_clip_to_old_runs_and_generates_nothing(tiny_clip: Path, tracking_uri: str, fake_backend,
                                                            tmp_path: Path) -> None:
    summary = run_experiment(shapes_spec("later"), tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path)
    assert summary.ok
    tracker = Tracker(tracking_uri)
    before = {r.run_id: r for r in tracker.records("later")}
    calls = len(fake_backend.calls)
    assert not any("clip_score" in r.metrics for r in before.values())
    runner = CliRunner()
    first = runner.invoke(cli, ["score", "later", "--clip", str(tiny_clip), "--tracking-uri", tracking_uri])
    assert first.exit_code == 0, first.output
    assert "4 finished image run(s) of 'later': 4 scored, 0 already scored" in first.output
    assert "metrics written: clip_score" in first.output and "Nothing was generated" in first.output
    after = {r.run_id: r for r in tracker.records("later")}
    assert after.keys() == before.keys() and len(fake_backend.calls) == calls  # no new run, no backend call
    assert all(0.0 <= r.metrics["clip_score"] <= 100.0 for r in after.values())
    assert all(r.tags["workbench.score.clip_weights_hash"] == weights_hash(tiny_clip) for r in after.values())
    # the same scores a sweep computes on the same images
    direct = clip_scores(str(tiny_clip), [tracker.load_bytes(i, "prompt.txt").decode().strip() for i in after],
                         [tracker.load_image(i) for i in after])
    assert [after[i].metrics["clip_score"] for i in after] == pytest.approx(direct, abs=1e-4)
    again = runner.invoke(cli, ["score", "later", "--clip", str(tiny_clip), "--tracking-uri", tracking_uri])
    assert again.exit_code == 0 and "0 scored, 4 already scored (skipped)" in again.output
    assert {i: r.metrics for i, r in after.items()} == {r.run_id: r.metrics for r in tracker.records("later")}
    missing = runner.invoke(cli, ["score", "nope", "--tracking-uri", tracking_uri])
    assert missing.exit_code == 2 and "no experiment 'nope'" in missing.output and "later" in missing.output
    bad = runner.invoke(cli, ["score", "later", "--clip", str(tmp_path / "nothing-here"), "--tracking-uri",
                              tracking_uri])
    assert bad.exit_code == 2 and "neither a local folder nor a hub id" in bad.output


def test_run_takes_clip_from_the_command_line(tiny_clip: Path, tracking_uri: str, fake_backend,
                                              tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: flagged\ntemplate: shapes\nbackend: fake\nmodel: m\nparams: {width: 32, height: 32}\n"
                    "seeds: [1]\n")
    planned = CliRunner().invoke(cli, ["plan", str(spec), "--tracking-uri", tracking_uri, "--clip", str(tiny_clip)])
    assert planned.exit_code == 0 and f"scores: CLIP score ({tiny_clip}): clip_score on 1 image(s)" in planned.output
    ran = CliRunner().invoke(cli, ["run", str(spec), "--tracking-uri", tracking_uri, "--clip", str(tiny_clip),
                                   "--no-progress", "--grids-dir", str(tmp_path / "g")])
    assert ran.exit_code == 0, ran.output
    [record] = Tracker(tracking_uri).records("flagged")
    assert "clip_score" in record.metrics and "adherence.overall" in record.metrics  # template shapes: adherence too
