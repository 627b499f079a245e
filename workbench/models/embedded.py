"""The embedded models: pipelines that come with the workbench, so it runs with no download and no GPU.

Models are referred to as ``embedded:NAME`` in specs; the diffusers backend loads each through the
ordinary ``from_pretrained`` path.

- ``embedded:shapes`` (the default): the shapes demo model, trained on a CPU by
  ``python -m workbench.models.shapes.train`` and shipped as fp16 safetensors with its model card in
  ``workbench/models/shapes/weights/``. It draws what its prompts say in the caption grammar of the
  ``shapes`` template ("a large red circle on the left, white background").
- ``embedded:tiny-sd``: a random-weight Stable Diffusion architecture built in code from fixed seeds
  (``build`` saves it into the workbench home; build twice, get the same bytes). Its images show the
  plumbing (seeds, batching, tracking, grids, reproduction), not a learned picture: for tests.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..config import workbench_home
from ..errors import UnsupportedRequestError
from ..files import temp_folder
from .tokenizer import LIBRARY_WORDS, tokenizer_files

__all__ = ["EMBEDDED_MODELS", "embedded_path", "build", "is_embedded", "PREFIX", "quiet_hf_logging"]

PREFIX = "embedded:"
BUILD_VERSION = 2  # bump when the recipe changes: old builds are then rebuilt


def quiet_hf_logging() -> None:
    """Silence diffusers/transformers load bars and notices: they would drown our own progress."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read at transformers' import
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


def _build_tiny_sd(folder: Path) -> None:
    quiet_hf_logging()
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = tokenizer_files(LIBRARY_WORDS)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=len(vocab), hidden_size=32,
        intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
        layer_norm_eps=1e-5, projection_dim=32))
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[16, 32, 32],
                        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                        layers_per_block=1, norm_num_groups=8, sample_size=64)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8)
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                            num_train_timesteps=1000, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)


SHAPES_WEIGHTS = Path(__file__).resolve().parent / "shapes" / "weights"

EMBEDDED_MODELS: dict[str, dict[str, Any]] = {
    "shapes": {
        "shipped": SHAPES_WEIGHTS,
        "description": "the shapes demo model: one flat shape, 64x64, follows colour, shape, size, position and "
                       "background (template 'shapes'); trained on a CPU, 4.6 MB",
        "default_size": (64, 64),
    },
    "tiny-sd": {
        "build": _build_tiny_sd,
        "description": "random-weight Stable Diffusion architecture, 64x64, ~1 M parameters, CPU in seconds",
        "default_size": (64, 64),
    },
}


def is_embedded(model: str) -> bool:
    return model.startswith(PREFIX)


def _name(model: str) -> str:
    name = model[len(PREFIX):] if is_embedded(model) else model
    if name not in EMBEDDED_MODELS:
        raise UnsupportedRequestError(
            f"unknown embedded model '{model}'; embedded models: "
            + ", ".join(PREFIX + n for n in EMBEDDED_MODELS))
    return name


def embedded_path(model: str) -> Path:
    """Folder of an embedded model (a built one may not be built yet)."""
    name = _name(model)
    shipped = EMBEDDED_MODELS[name].get("shipped")
    return Path(shipped) if shipped else workbench_home() / "models" / f"{name}-v{BUILD_VERSION}"


def build(model: str = "tiny-sd", *, force: bool = False) -> Path:
    """The folder of ``embedded:NAME``: a shipped model's own, or one built into the workbench home
    (atomically, so a killed build never leaves half a model)."""
    name = _name(model)
    target = embedded_path(name)
    if "shipped" in EMBEDDED_MODELS[name]:
        if not (target / "model_index.json").is_file():
            raise UnsupportedRequestError(
                f"the weights of embedded:{name} are missing from {target}; the workbench install is incomplete: "
                f"reinstall it (pip install --force-reinstall workbench) or use another model")
        return target
    if (target / "model_index.json").is_file() and not force:
        return target
    tmp = temp_folder(target.parent, f".{name}-")  # 0755 under umask 022, as a plain mkdir
    try:
        EMBEDDED_MODELS[name]["build"](tmp)
        (tmp / "workbench_embedded.json").write_text(json.dumps({"name": name, "build_version": BUILD_VERSION}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
