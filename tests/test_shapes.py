"""The shapes visual language: dataset, caption grammar, scorer, template, and the trainer's whole path
(``--tiny`` on CPU: a real save_pretrained folder, loaded by the diffusers backend)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from workbench.models.shapes import dataset, scorer
from workbench.models.shapes.dataset import ATTRIBUTES, HELD_OUT, caption, parse_prompt, sample
from workbench.prompts.templates import TemplateLibrary


@pytest.fixture(scope="module")
def ground_truth() -> tuple[np.ndarray, list[str], list[dict]]:
    return sample(400, seed=7, include_held_out=True)


# ----------------------------------------------------------------------------------------------- dataset

def test_sample_is_deterministic_and_seed_dependent() -> None:
    images, captions, attrs = sample(64, seed=3)
    again = sample(64, seed=3)
    assert images.shape == (64, 64, 64, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again[0]) and captions == again[1] and attrs == again[2]
    other = sample(64, seed=4)
    assert not np.array_equal(images, other[0]) and captions != other[1]


def test_training_never_draws_a_held_out_triple_and_covers_every_value() -> None:
    _, captions, attrs = sample(3000, seed=0)
    assert not any((a["shape"], a["colour"], a["position"]) in HELD_OUT for a in attrs)
    for key, values in (("shape", dataset.SHAPES), ("colour", dataset.COLOURS), ("size", dataset.SIZES),
                        ("position", dataset.POSITIONS), ("background", dataset.BACKGROUNDS)):
        assert {a[key] for a in attrs} == set(values), key
    assert len({c.split()[0] for c in captions}) > 2  # several paraphrases
    held = dataset.held_out_attrs()
    assert len(held) == 48 and all(dataset.is_held_out(a) for a in held)
    # each held-out triple's shape, colour and position still appear in training, in other combinations
    for shape, colour, position in HELD_OUT:
        assert any(a["shape"] == shape and a["colour"] == colour for a in attrs)
        assert any(a["colour"] == colour and a["position"] == position for a in attrs)


def test_palette_colours_stay_far_from_backgrounds() -> None:
    for (name, c), (bg, b) in itertools.product(dataset.COLOURS.items(), dataset.BACKGROUNDS.items()):
        assert np.abs(np.subtract(c, b)).sum() > 2 * scorer.FOREGROUND, (name, bg)
    for (a, c), (b, d) in itertools.combinations(dataset.COLOURS.items(), 2):
        assert np.abs(np.subtract(c, d)).sum() > 120, (a, b)


def test_parse_prompt_round_trips_every_caption() -> None:
    for attrs in dataset.all_attrs():
        for style in range(dataset.STYLES):
            assert parse_prompt(caption(attrs, style)) == attrs, caption(attrs, style)
    assert parse_prompt("A  Small BLUE square at the top, sky blue background") == {
        "shape": "square", "colour": "blue", "size": "small", "position": "top", "background": "sky blue"}
    assert parse_prompt("a red circle") == {"shape": "circle", "colour": "red"}
    assert parse_prompt("a photo of a cat") is None


def test_caption_words_are_single_tokens() -> None:
    from workbench.models.shapes.recipe import build_tokenizer

    tokenizer = build_tokenizer(16)
    for word in dataset.WORDS:
        assert len(tokenizer(word).input_ids) == 3, word  # start, the word, end
    words = {w for a in dataset.all_attrs() for s in range(dataset.STYLES) for w in caption(a, s).replace(",", "").split()}
    assert words <= set(dataset.WORDS)


# ------------------------------------------------------------------------------------------------ scorer

def test_scorer_reads_the_ground_truth(ground_truth) -> None:  # type: ignore[no-untyped-def]
    images, captions, attrs = ground_truth
    by_attrs = scorer.score_many(images, attrs)
    by_prompt = scorer.score_many(images, captions)
    for key in (*ATTRIBUTES, "overall"):
        assert by_attrs[key] >= 0.99 and by_prompt[key] >= 0.99, (key, by_attrs, by_prompt)
    # PIL images and float arrays in [0, 1] (diffusers' output_type="np") read the same
    from PIL import Image

    assert scorer.score(Image.fromarray(images[0]), captions[0])["overall"] == 1.0
    assert scorer.score(images[0].astype(np.float32) / 255, captions[0])["overall"] == 1.0


def test_scorer_fails_noise_and_empty_images(ground_truth) -> None:  # type: ignore[no-untyped-def]
    _, captions, _ = ground_truth
    noise = np.random.default_rng(0).integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)
    assert scorer.score_many(noise, captions[:50])["overall"] <= 0.1
    blank = np.full((64, 64, 3), dataset.BACKGROUNDS["gray"], np.uint8)
    result = scorer.score(blank, "a large red circle on the left, gray background")
    assert result["background"] is True and not any(result[k] for k in ("colour", "shape", "size", "position"))
    assert result["overall"] == pytest.approx(0.2)


def test_scorer_scores_only_what_the_prompt_names() -> None:
    image = np.asarray(dataset.draw({"shape": "triangle", "colour": "green", "size": "large",
                                     "position": "right", "background": "black"}))
    assert scorer.score(image, "a green triangle") == {"shape": True, "colour": True, "overall": 1.0}
    assert scorer.score(image, "a red triangle")["overall"] == 0.5
    with pytest.raises(ValueError, match="names no shape"):
        scorer.score(image, "a photo of a cat")


# ---------------------------------------------------------------------------------------------- template

def test_shapes_template_renders_the_caption_grammar() -> None:
    library = TemplateLibrary()
    template = library.get("shapes")
    assert template.defaults["width"] == template.defaults["height"] == 64 and template.defaults["steps"] == 20
    for name, values in (("colour", dataset.COLOURS), ("shape", dataset.SHAPES), ("size", dataset.SIZES),
                         ("position", dataset.POSITIONS), ("background", dataset.BACKGROUNDS)):
        assert template.variables[name].allowed is not None
        assert list(template.variables[name].allowed) == list(values), name
    for attrs in dataset.all_attrs():
        rendered = library.render("shapes", attrs)
        assert rendered.prompt == caption(attrs) and parse_prompt(rendered.prompt) == attrs
        assert rendered.negative_prompt == dataset.NEGATIVE_PROMPT


# ---------------------------------------------------------------------------------------------- training

def _weights(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*.safetensors"))}


@pytest.mark.slow
def test_tiny_training_writes_a_pipeline_the_backend_loads(tmp_path: Path) -> None:
    import yaml

    from workbench.backends.diffusers import DiffusersBackend
    from workbench.models.shapes import train
    from workbench.types import GeneratedImage, GenerationRequest

    out, checkpoints = tmp_path / "shapes-tiny", tmp_path / "checkpoints"
    assert train.main(["--tiny", "--out", str(out), "--seed", "1", "--checkpoint-dir", str(checkpoints),
                       "--threads", "1"]) == 0
    assert (out / "model_index.json").is_file() and (out / "samples.png").is_file()
    assert not checkpoints.exists()  # the weights are saved: the checkpoint is gone
    card = (out / "README.md").read_text()
    assert "| guidance | colour | shape | size | position | background | overall |" in card
    for guidance in ("1", "3", "5", "7.5"):
        assert f"\n| {guidance} | " in card
    report = yaml.safe_load((out / "training.yaml").read_text())
    assert set(report["scores"]) == {"1", "3", "5", "7.5"} and report["seed"] == 1
    assert all(0 <= v <= 1 for row in report["scores"].values() for v in row.values())
    assert report["config"]["unet_steps"] == 20 and len(report["score_prompts"]) == 8
    assert set(report["seconds"]) == {"vae", "decoder", "denoiser", "guidance"} and report["seconds_per_image"] > 0
    scheduler = yaml.safe_load((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "v_prediction" and scheduler["rescale_betas_zero_snr"] is True

    backend = DiffusersBackend(device="cpu")
    prompt = TemplateLibrary().render("shapes", {"colour": "blue", "position": "left"})
    request = GenerationRequest(backend="diffusers", model=str(out), prompt=prompt.prompt,
                                negative_prompt=prompt.negative_prompt, seed=0, width=64, height=64, steps=20,
                                guidance=5.0)
    [result] = backend.generate([request])
    assert isinstance(result, GeneratedImage), result
    assert result.image.size == (64, 64)
    assert set(scorer.score(result.image, request.prompt)) == {*ATTRIBUTES, "overall"}
    backend.close()


def _small_config() -> dict:
    import copy

    from workbench.models.shapes import train

    cfg = copy.deepcopy(train.CONFIGS["tiny"])
    cfg.update(images=64, vae_steps=4, decoder_steps=3, unet_steps=6, swap_steps=4, score_prompts=1, score_steps=2)
    return cfg


@pytest.mark.slow
def test_training_is_deterministic_given_its_seed(tmp_path: Path) -> None:
    import torch

    from workbench.models.shapes import train

    torch.set_num_threads(1)
    cfg = _small_config()
    first = train.train(tmp_path / "a", cfg=cfg, seed=5, checkpoint_dir=tmp_path / "ck", score=False)
    second = train.train(tmp_path / "b", cfg=cfg, seed=5, checkpoint_dir=tmp_path / "ck", score=False)
    assert _weights(tmp_path / "a") == _weights(tmp_path / "b") and len(_weights(tmp_path / "a")) == 3
    assert first["losses"] == second["losses"] and set(first["losses"]) == {"vae", "decoder", "denoiser", "guidance"}
    train.train(tmp_path / "c", cfg=cfg, seed=6, checkpoint_dir=tmp_path / "ck", score=False)
    assert _weights(tmp_path / "c") != _weights(tmp_path / "a")


@pytest.mark.slow
def test_phase_4_from_a_pipeline_saved_after_phase_3_equals_a_whole_run(tmp_path: Path) -> None:
    """``--from``: phase 4 depends only on the fp16 weights phase 3 left and the seed."""
    import torch
    import yaml

    from workbench.models.shapes import train

    torch.set_num_threads(1)
    cfg = _small_config()
    train.train(tmp_path / "whole", cfg=cfg, seed=2, checkpoint_dir=tmp_path / "ck-whole", score=False)
    # a run with no phase-4 steps saves what phase 3 left (as the shipped model of 2026-12-03 was)
    train.train(tmp_path / "phase3", cfg={**cfg, "swap_steps": 0}, seed=2, checkpoint_dir=tmp_path / "ck-3")
    assert _weights(tmp_path / "phase3") != _weights(tmp_path / "whole")
    report = train.train(tmp_path / "from", cfg=cfg, seed=2, checkpoint_dir=tmp_path / "ck-from",
                         start_from=tmp_path / "phase3")
    assert _weights(tmp_path / "from") == _weights(tmp_path / "whole")  # bit for bit
    assert set(report["seconds"]) == {"vae", "decoder", "denoiser", "guidance"}
    assert report["phases_1_3_from"] == str(tmp_path / "phase3")
    card = (tmp_path / "from" / "README.md").read_text()
    assert "this run did phase 4 from its fp16 weights (`--from`)" in card
    assert report["run"] != report["phases_1_3_run"] and f"run `{report['phases_1_3_run']}`" in card
    saved = yaml.safe_load((tmp_path / "from" / "training.yaml").read_text())
    assert saved["config"]["swap_steps"] == 4
    assert [tuple(x) for x in saved["losses"]["denoiser"]] == report["losses"]["denoiser"]  # phase 3, carried over
    with pytest.raises(ValueError, match="other settings or another seed"):  # not this recipe's phase 3
        train.train(tmp_path / "bad", cfg={**cfg, "unet_steps": 7}, seed=2, checkpoint_dir=tmp_path / "ck-bad",
                    start_from=tmp_path / "phase3")


@pytest.mark.slow
def test_a_training_run_killed_mid_phase_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """kill -9 during the denoiser phase, then --resume: the weights equal an uninterrupted run's, bit for bit."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from workbench.models.shapes import checkpoint, train

    torch.set_num_threads(1)
    cfg = _small_config()
    cfg.update(unet_steps=60, batch=4)  # long enough to be killed in the middle
    train.train(tmp_path / "straight", cfg=cfg, seed=3, checkpoint_dir=tmp_path / "ck-straight", score=False)

    ck = tmp_path / "ck"
    script = (f"import json, sys, torch; torch.set_num_threads(1)\n"
              f"from pathlib import Path\nfrom workbench.models.shapes import train\n"
              f"train.train(Path(sys.argv[1]), cfg=json.loads(sys.argv[2]), seed=3, checkpoint_dir=Path(sys.argv[3]),"
              f" checkpoint_every_s=0, resume='--resume' in sys.argv, score=False)\n")
    args = [sys.executable, "-c", script, str(tmp_path / "resumed"), json.dumps(cfg), str(ck)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    state = None
    while time.time() < deadline and proc.poll() is None:  # wait until the denoiser phase has checkpoints
        try:
            state = checkpoint.load(ck, checkpoint.run_id(cfg, 3, "cpu"))
        except Exception:  # caught mid-rename: try again
            state = None
        if state and state["phase"] == "denoiser" and 10 <= state["step"] < 40:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0][-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "resumed").exists()
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "resuming" in done.stdout and " at denoiser step " in done.stdout
    assert _weights(tmp_path / "resumed") == _weights(tmp_path / "straight")


def test_a_checkpoint_is_never_continued_without_resume_or_with_other_settings(tmp_path: Path) -> None:
    from workbench.models.shapes import checkpoint, train

    cfg = _small_config()
    run = checkpoint.run_id(cfg, 0, "cpu")
    checkpoint.save(tmp_path, {"run": run, "phase": "denoiser", "step": 7})
    with pytest.raises(ValueError, match="pass --resume"):
        train.train(tmp_path / "out", cfg=cfg, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="belongs to training run"):
        train.train(tmp_path / "out", cfg=cfg, seed=1, checkpoint_dir=tmp_path, resume=True)
    assert train.main(["--tiny", "--out", str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path), "--seed", "1",
                       "--resume"]) == 2
