"""What the shapes demo model is made of: its training configurations and how each part is built.

Two configurations: ``cpu`` (the shipped model: trained on 2 CPU cores in 118 minutes, scored on the held-out
prompts at its default guidance 3: colour 97%, shape 85%, position 99%, background 100%; 77% overall at
guidance 1) and ``tiny`` (seconds; the test suite uses it to check the whole path). Why ``cpu`` looks the
way it does, each choice measured on this project's 2-core machine (docs/demo-model.md has the figures):

- The VAE (64×64×3 → 16×16×4) first trains on 32×32 crops (4× cheaper a step than whole images),
  then its decoder alone is fine-tuned on whole images: a crop-trained decoder shifts flat colours
  (yellow on black decodes as orange); in a probe, 400 decoder steps on whole images lifted the colours
  the scorer reads in its reconstructions from 86% to 99%.
- The denoiser predicts v (not the noise) under a zero-terminal-SNR schedule: with the usual schedule
  the last training step still leaks the image's mean colour, so a model sampled from pure noise picks
  its background at random (25% in the first CPU probe); with zero terminal SNR it must read it from
  the prompt (100% after 45 k samples).
- Where the shape goes is decided in the first, noisiest sampling steps, and with timesteps drawn
  uniformly a small model never learned it: after 90 k samples its prediction from pure noise was the
  same central blob for every position word (position 15%, chance 20%). Timesteps are drawn as
  t = T·(1 − (1 − u)²), u uniform, so a third of the draws land in the noisiest tenth: position rose to
  58% after 40 k samples. The loss weight is min(1, γ / (SNR + 1)) on the v error: it caps the easy
  low-noise steps (min-SNR-γ) without the zero weight that min-SNR's usual min(SNR, γ) / (SNR + 1) gives
  the pure-noise step, where the layout is decided.
- Phase 4 swaps 30% of the captions for another image's. Trained on captions that always say exactly
  what is drawn, the model followed its prompt as well without classifier-free guidance as with it
  (held out: 99% at guidance 1 and at 5), so a guidance sweep showed nothing. Real text-to-image data is
  scraped, its captions often wrong, and that is why guidance matters there: a model of p(image |
  caption) over mismatched pairs is a blend of the right images and unconditional ones, and guidance
  pushes away from the unconditional. With 2,500 such steps from the phase-3 weights, held out: guidance 1
  fell from 99% to 77% overall, guidance 3 kept 96% (shape 85%, the price; docs/demo-model.md).
- The UNet's 16×16 level has cross-attention but no self-attention (``only_cross_attention``): self-
  attention over 256 positions was 40% of a training step, and one flat shape needs no long-range
  mixing at that level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import dataset

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

__all__ = ["CONFIGS", "build_tokenizer", "build_vae", "build_text_encoder", "build_unet", "noise_schedule",
           "sampling_scheduler", "GUIDANCES"]

GUIDANCES = (1.0, 3.0, 5.0, 7.5)
# The scaled-linear betas of Stable Diffusion, rescaled to zero terminal SNR (see the module docstring).
_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}

CONFIGS: dict[str, dict[str, Any]] = {
    "cpu": {
        "images": 20_000,
        "vae": {"block_out_channels": [16, 32, 64], "latent_channels": 4, "layers_per_block": 1,
                "norm_num_groups": 8},
        "vae_steps": 2_000, "vae_batch": 32, "vae_crop": 32, "vae_lr": 2e-3, "vae_warmup": 50,
        "decoder_steps": 500, "decoder_batch": 16, "decoder_lr": 5e-4,
        "text": {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4, "num_hidden_layers": 2},
        "max_tokens": 16,
        "unet": {"block_out_channels": [32, 64, 64], "layers_per_block": 1, "attention_head_dim": 8,
                 "norm_num_groups": 8,
                 "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                 "only_cross_attention": [True, False, False]},
        "unet_steps": 10_000, "batch": 32, "lr": 1e-3, "warmup": 200, "min_lr_frac": 0.1, "weight_decay": 0.01,
        "ema": 0.999, "drop": 0.1, "min_snr_gamma": 5.0, "timestep_bias": 2.0,
        "swap": 0.3, "swap_steps": 2_500, "swap_lr": 3e-4, "swap_warmup": 50, "swap_ema": 0.998,
        "score_seeds": 2, "score_steps": 20, "log_every": 100,
    },
    "tiny": {
        "images": 300,
        "vae": {"block_out_channels": [8, 16], "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 8},
        "vae_steps": 10, "vae_batch": 8, "vae_crop": 32, "vae_lr": 1e-3, "vae_warmup": 2,
        "decoder_steps": 5, "decoder_batch": 4, "decoder_lr": 5e-4,
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1},
        "max_tokens": 16,
        "unet": {"block_out_channels": [16, 32], "layers_per_block": 1, "attention_head_dim": 8,
                 "norm_num_groups": 8, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "only_cross_attention": [True, False]},
        "unet_steps": 20, "batch": 8, "lr": 1e-3, "warmup": 5, "min_lr_frac": 0.1, "weight_decay": 0.01,
        "ema": 0.9, "drop": 0.1, "min_snr_gamma": 5.0, "timestep_bias": 2.0,
        "swap": 0.3, "swap_steps": 5, "swap_lr": 3e-4, "swap_warmup": 2, "swap_ema": 0.9,
        "score_seeds": 1, "score_steps": 4, "score_prompts": 8, "log_every": 5,
    },
}


def build_tokenizer(max_tokens: int) -> CLIPTokenizer:
    """Our word-level CLIP tokenizer: every word of the caption grammar is one token."""
    from transformers import CLIPTokenizer

    from ..tokenizer import tokenizer_files

    vocab, merges = tokenizer_files(dataset.WORDS)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_tokens)


def build_vae(cfg: dict[str, Any], seed: int) -> AutoencoderKL:
    import torch
    from diffusers import AutoencoderKL

    vae_cfg = cfg["vae"]
    levels = len(vae_cfg["block_out_channels"])
    torch.manual_seed(seed)
    # No attention in the mid block: the VAE stays fully convolutional, so it can train on crops.
    return AutoencoderKL(in_channels=3, out_channels=3, sample_size=dataset.SIZE, mid_block_add_attention=False,
                         down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels,
                         **{**vae_cfg, "block_out_channels": tuple(vae_cfg["block_out_channels"])})


def build_text_encoder(cfg: dict[str, Any], tokenizer: CLIPTokenizer, seed: int) -> CLIPTextModel:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    text = cfg["text"]
    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, max_position_embeddings=cfg["max_tokens"], layer_norm_eps=1e-5,
        projection_dim=text["hidden_size"], **text))


def latent_size(cfg: dict[str, Any]) -> int:
    return dataset.SIZE // 2 ** (len(cfg["vae"]["block_out_channels"]) - 1)


def build_unet(cfg: dict[str, Any], seed: int) -> UNet2DConditionModel:
    import torch
    from diffusers import UNet2DConditionModel

    channels = cfg["vae"]["latent_channels"]
    torch.manual_seed(seed)
    return UNet2DConditionModel(sample_size=latent_size(cfg), in_channels=channels, out_channels=channels,
                                cross_attention_dim=cfg["text"]["hidden_size"],
                                **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["unet"].items()})


def noise_schedule() -> DDPMScheduler:
    """The training schedule: v-prediction, zero terminal SNR."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**_BETAS, rescale_betas_zero_snr=True, prediction_type="v_prediction")


def sampling_scheduler() -> DPMSolverMultistepScheduler:
    """The shipped pipeline's scheduler: DPM-Solver++ over the training schedule, trailing timesteps
    (so the first step starts from pure noise, as training's last step does)."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(**_BETAS, rescale_betas_zero_snr=True, prediction_type="v_prediction",
                                       timestep_spacing="trailing", final_sigmas_type="zero", steps_offset=1)
