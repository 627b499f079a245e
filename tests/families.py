"""Tiny random-weight pipelines of each model family, built from configs as diffusers' own tests build them.

No download: every tokenizer is made from our own files (CLIP: ``workbench.models.tokenizer``; T5: a
Unigram vocabulary over the same words). Each builder saves the pipeline with ``save_pretrained`` into a
folder, which the tests then load through the real ``AutoPipelineForText2Image.from_pretrained`` path.
Deterministic: every model is built after ``torch.manual_seed(0)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.models.tokenizer import LIBRARY_WORDS, tokenizer_files

__all__ = ["FAMILIES", "build", "build_lora"]

_CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
         "layer_norm_eps": 1e-5, "hidden_act": "gelu", "projection_dim": 32}


def clip_tokenizer(max_length: int = 77) -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = tokenizer_files(LIBRARY_WORDS)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def t5_tokenizer(max_length: int = 512) -> Any:
    """A T5 tokenizer (Unigram) whose pieces are our words and single letters: nothing is unknown."""
    from transformers import T5TokenizerFast

    words = sorted(set(LIBRARY_WORDS))
    letters = sorted(set("".join(words)) | set("0123456789"))
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -1.0) for w in words] + [(c, -5.0) for c in letters] + [(f"▁{c}", -4.0) for c in letters]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=max_length)


def _clip_config(tokenizer: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                          max_position_embeddings=77, **_CLIP)


def _t5(tokenizer: Any, d_model: int = 32) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=d_model, d_ff=37, d_kv=8, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0))


def _sd15() -> Any:
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=8)
    torch.manual_seed(0)
    vae = _vae(latent_channels=4)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_config(tokenizer))
    return StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=DPMSolverMultistepScheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def _vae(latent_channels: int, **extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=8, sample_size=32, **extra)


def _sdxl(turbo: bool = False) -> Any:
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, StableDiffusionXLPipeline, \
        UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = clip_tokenizer(), clip_tokenizer()
    torch.manual_seed(0)
    # As diffusers' SDXL tests: time ids (6 × 8) + the second encoder's pooled projection (32) = 80.
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                                transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=80,
                                cross_attention_dim=64, norm_num_groups=8)
    torch.manual_seed(0)
    vae = _vae(latent_channels=4)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_config(tokenizer))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2))
    scheduler = EulerAncestralDiscreteScheduler(timestep_spacing="trailing") if turbo else EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    return StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True)


def _flux(dev: bool) -> Any:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=dev)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_config(tokenizer))
    torch.manual_seed(0)
    text_encoder_2 = _t5(tokenizer_2)
    torch.manual_seed(0)
    vae = _vae(latent_channels=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
               scaling_factor=1.5035)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder, tokenizer=tokenizer,
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer, vae=vae)


def _sd3() -> Any:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer, tokenizer_2, tokenizer_3 = clip_tokenizer(), clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=32, pooled_projection_dim=64, out_channels=4)
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(_clip_config(tokenizer))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2))
    torch.manual_seed(0)
    text_encoder_3 = _t5(tokenizer_3)
    torch.manual_seed(0)
    vae = _vae(latent_channels=4, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
               scaling_factor=1.5035)
    return StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=text_encoder,
                                    tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                                    text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3, transformer=transformer,
                                    vae=vae)


FAMILIES = {
    "sd15": _sd15,
    "sdxl": _sdxl,
    "sdxl-turbo": lambda: _sdxl(turbo=True),
    "flux-schnell": lambda: _flux(dev=False),
    "flux-dev": lambda: _flux(dev=True),
    "sd3": _sd3,
}


def build(family: str, folder: Path) -> Path:
    """Build the tiny ``family`` pipeline into ``folder`` (once) and return it."""
    if not (folder / "model_index.json").is_file():
        FAMILIES[family]().save_pretrained(folder, safe_serialization=True)
    return folder


def build_lora(pipeline_folder: Path, out: Path, *, rank: int = 4, seed: int = 0, magnitude: float = 0.5) -> Path:
    """A LoRA for the denoiser of the pipeline in ``pipeline_folder``, made with peft and saved as diffusers
    saves one (``pytorch_lora_weights.safetensors``); random, non-zero weights so it changes the image."""
    import torch
    from diffusers import AutoPipelineForText2Image
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = AutoPipelineForText2Image.from_pretrained(pipeline_folder)
    denoiser = pipe.unet if hasattr(pipe, "unet") else pipe.transformer
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in denoiser.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * magnitude)
    layers = get_peft_model_state_dict(denoiser)
    out.mkdir(parents=True, exist_ok=True)
    save = type(pipe).save_lora_weights
    key = "unet_lora_layers" if hasattr(pipe, "unet") else "transformer_lora_layers"
    save(save_directory=str(out), safe_serialization=True, **{key: layers})
    return out
