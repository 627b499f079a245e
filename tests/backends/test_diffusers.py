"""The diffusers backend on the real embedded pipeline (built in code, loaded via from_pretrained)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.models import embedded
from workbench.backends.diffusers import DiffusersBackend
from workbench.errors import UnsupportedRequestError
from workbench.types import GeneratedImage, GenerationFailure, GenerationRequest

MODEL = "embedded:tiny-sd"


def req(prompt: str = "a red lighthouse", seed: int = 1, **kw) -> GenerationRequest:  # type: ignore[no-untyped-def]
    fields = {"backend": "diffusers", "model": MODEL, "prompt": prompt, "seed": seed, "width": 64, "height": 64,
              "steps": 4, "guidance": 7.5}
    fields.update(kw)
    return GenerationRequest(**fields)


@pytest.fixture(scope="module")
def backend(embedded_model: Path) -> DiffusersBackend:
    return DiffusersBackend()


def pixels(image) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(image, dtype=np.int16)


def test_embedded_build_is_deterministic(embedded_model: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    again = embedded.build("tiny-sd")
    assert again != embedded_model
    for weights in sorted(embedded_model.rglob("*.safetensors")):
        twin = again / weights.relative_to(embedded_model)
        assert hashlib.sha256(weights.read_bytes()).digest() == hashlib.sha256(twin.read_bytes()).digest()
    # our own tokenizer files, loaded back through from_pretrained
    assert (again / "tokenizer" / "tokenizer.json").is_file()
    assert sum(f.stat().st_size for f in again.rglob("*")) < 20 * 2**20


def test_unknown_embedded_model() -> None:
    with pytest.raises(UnsupportedRequestError, match="embedded:tiny-sd"):
        embedded.build("embedded:nope")


def test_image_is_pixel_identical_to_a_plain_diffusers_call(backend: DiffusersBackend, embedded_model: Path) -> None:
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline.from_pretrained(str(embedded_model))
    plain.set_progress_bar_config(disable=True)
    prompts, seeds = ["a red lighthouse", "a blue cube on the left"], [3, 4]
    expected = plain(prompts, negative_prompt=["", ""], num_inference_steps=4, guidance_scale=7.5, width=64,
                     height=64, generator=[torch.Generator("cpu").manual_seed(s) for s in seeds]).images
    single = plain(prompts[0], num_inference_steps=4, guidance_scale=7.5, width=64, height=64,
                   generator=torch.Generator("cpu").manual_seed(3)).images[0]
    results = backend.generate([req(p, s) for p, s in zip(prompts, seeds, strict=True)])
    assert all(isinstance(r, GeneratedImage) for r in results)
    for result, image in zip(results, expected, strict=True):
        assert np.array_equal(pixels(result.image), pixels(image))
    (alone,) = backend.generate([req(prompts[0], 3)])
    assert np.array_equal(pixels(alone.image), pixels(single))
    assert results[1].batch_size == 2 and results[1].batch_index == 1


def test_seed_and_prompt_change_the_image(backend: DiffusersBackend) -> None:
    a, b, c = backend.generate([req(seed=1), req(seed=2), req("a green forest", seed=1)])
    assert not np.array_equal(pixels(a.image), pixels(b.image))
    assert not np.array_equal(pixels(a.image), pixels(c.image))


def test_scheduler_by_name_without_reloading(backend: DiffusersBackend) -> None:
    base = backend.pipeline(MODEL)
    (euler,) = backend.generate([req(scheduler="euler_a")])
    (ddim,) = backend.generate([req(scheduler="DDIMScheduler")])
    assert euler.environment["scheduler"] == "EulerAncestralDiscreteScheduler"
    assert ddim.environment["scheduler"] == "DDIMScheduler"
    assert backend.pipeline(MODEL) is base and type(base.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert not np.array_equal(pixels(euler.image), pixels(ddim.image))


def test_environment_fingerprint(backend: DiffusersBackend) -> None:
    (result,) = backend.generate([req()])
    env = result.environment
    for key in ("python", "torch", "diffusers", "transformers", "device", "dtype", "weights_hash",
                "scheduler_config", "attention", "pipeline_class", "family", "call"):
        assert key in env, key
    assert env["device"] == "cpu" and env["dtype"] == "float32" and env["generator_device"] == "cpu"
    assert env["family"] == "sd1" and env["pipeline_class"] == "StableDiffusionPipeline"
    assert env["call"] == {"num_inference_steps": 4, "width": 64, "height": 64, "guidance_scale": 7.5}
    # The batch position has one home, the result (the environment holds the setup only)
    assert (result.batch_size, result.batch_index) == (1, 0) and "batch_size" not in env
    plain = json.loads(json.dumps(env))  # raises on anything JSON cannot hold: no default=str hides an object
    scheduler = plain["scheduler_config"]  # the embedded model's DPM-Solver, as models/embedded.py builds it
    assert (scheduler["beta_start"], scheduler["beta_end"], scheduler["beta_schedule"],
            scheduler["num_train_timesteps"], scheduler["steps_offset"]) == (0.00085, 0.012, "scaled_linear", 1000, 1)
    assert plain["call"] == env["call"] and plain["weights_hash"] == env["weights_hash"]


def test_validation_names_allowed_values(backend: DiffusersBackend) -> None:
    with pytest.raises(UnsupportedRequestError, match="unknown scheduler 'warp'; use one of ddim"):
        backend.validate(req(scheduler="warp"))
    with pytest.raises(UnsupportedRequestError, match="multiples of 8, got 65x64"):
        backend.validate(req(width=65))
    with pytest.raises(UnsupportedRequestError, match=r"unknown option\(s\) \['cfg'\]"):
        backend.validate(req(options={"cfg": 1}))
    with pytest.raises(UnsupportedRequestError, match="neither a local folder nor a hub id"):
        backend.validate(req(model="not a model"))
    backend.validate(req(scheduler="dpm++_2m_karras", options={"eta": 0.0}))


def test_long_prompts_are_reported_not_silently_truncated(backend: DiffusersBackend) -> None:
    (result,) = backend.generate([req(" ".join(["lighthouse"] * 100))])
    assert "truncated_prompt" in result.flags
    assert "the text encoder keeps 77" in result.notes["truncated_prompt"]


def test_nan_output_becomes_a_failed_run(embedded_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(embedded_model, broken)
    from safetensors.torch import load_file, save_file

    weights = broken / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if k.startswith("decoder.conv_out") and k.endswith("bias"))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, weights)
    (result,) = DiffusersBackend().generate([req(model=str(broken))])
    assert isinstance(result, GenerationFailure) and "NaN" in result.reason


def test_local_folder_must_be_a_pipeline(tmp_path: Path, backend: DiffusersBackend) -> None:
    with pytest.raises(UnsupportedRequestError, match="no model_index.json"):
        from workbench.backends.diffusers import resolve_model

        resolve_model(str(tmp_path))


def test_safety_checker_flag_is_a_blocked_run(embedded_model: Path, tmp_path: Path) -> None:
    """A pipeline whose safety checker flags everything: the run is BLOCKED, not a black 'image'."""
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
                                     "num_hidden_layers": 1, "vocab_size": 99},
                        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
                                       "num_hidden_layers": 1, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)  # every image scores above every threshold
    pipe = StableDiffusionPipeline.from_pretrained(str(embedded_model))
    flagged = StableDiffusionPipeline(**{**pipe.components, "safety_checker": checker,
                                         "feature_extractor": CLIPImageProcessor(size={"shortest_edge": 32},
                                                                                 crop_size=32)})
    folder = tmp_path / "with-checker"
    flagged.save_pretrained(folder)
    (result,) = DiffusersBackend().generate([req(model=str(folder))])
    assert isinstance(result, GenerationFailure) and result.status == "BLOCKED"
    assert "safety checker" in result.reason


def test_a_black_image_is_flagged_not_hidden(embedded_model: Path, tmp_path: Path) -> None:
    """A VAE that decodes to all black: the run finishes (black can be what was asked for) with a flag
    the grid and the widgets show, so a broken model is not mistaken for a dark picture."""
    dark = tmp_path / "dark"
    shutil.copytree(embedded_model, dark)
    from safetensors.torch import load_file, save_file

    weights = dark / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    for name in (k for k in tensors if k.startswith("decoder.conv_out")):
        tensors[name] = torch.zeros_like(tensors[name]) if name.endswith("weight") else \
            torch.full_like(tensors[name], -10.0)  # every pixel far below 0 → clipped to black
    save_file(tensors, weights)
    (result,) = DiffusersBackend().generate([req(model=str(dark))])
    assert isinstance(result, GeneratedImage) and "black" in result.flags
    assert pixels(result.image).max() == 0 and "black" in result.notes["black"]
    (normal,) = DiffusersBackend().generate([req()])
    assert "black" not in normal.flags


def test_a_hub_id_loads_from_the_local_hub_cache_and_records_its_commit(
        embedded_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path for real, offline: a repo laid out as huggingface_hub caches it, loaded by id."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--wbtest--tiny-sd"
    shutil.copytree(embedded_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    backend = DiffusersBackend()
    assert backend.model_hash("wbtest/tiny-sd") is None  # a hub id's identity is its name (and @revision)
    (hub,) = backend.generate([req(model="wbtest/tiny-sd")])
    (local,) = backend.generate([req(model=str(embedded_model))])
    assert isinstance(hub, GeneratedImage) and np.array_equal(pixels(hub.image), pixels(local.image))
    env = hub.environment
    assert env["model_source"] == "wbtest/tiny-sd" and env["resolved_revision"] == commit
    assert env["weights_hash"] == local.environment["weights_hash"] is not None
