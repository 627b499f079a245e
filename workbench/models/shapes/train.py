"""Train the shapes demo model: ``python -m workbench.models.shapes.train --out DIR [--steps N] [--tiny]``.

A diffusers ``StableDiffusionPipeline`` trained from scratch on ``workbench.models.shapes.dataset``:

1. an AutoencoderKL (64×64×3 → 16×16×4) on the drawn images (MSE + a tiny KL term);
2. then a UNet2DConditionModel and a CLIPTextModel jointly (epsilon prediction, DDPM noise schedule),
   with our word-level CLIP tokenizer (``embedded.tokenizer_files`` over the caption words), 10% of the
   captions replaced by "" or by the shapes template's negative prompt (classifier-free guidance),
   linear warm-up then cosine learning rate, bf16 autocast on CUDA, EMA weights;
3. ``save_pretrained`` in fp16 safetensors (the EMA weights), then the saved folder is loaded back and
   scored with ``workbench.models.shapes.scorer`` on the held-out prompts at guidance 1, 3, 5 and 7.5
   (20 DPM-Solver steps, one CPU generator per image, seed = prompt index), and a model card
   ``README.md`` (plus ``training.yaml`` and ``samples.png``) is written beside the weights.

Deterministic given ``--seed``: the data, the data order, the noise, the timesteps and the caption
drop-out all come from CPU generators seeded by it, and every model is built after
``torch.manual_seed(seed)``. Same device and library versions give the same losses; GPU kernels may
still differ in the last bits from run to run unless ``--strict-determinism`` is given (slower).

``--tiny`` shrinks everything (300 images, 20 + 20 steps, ~0.2 M-parameter models) so a CPU run takes
seconds: the test suite uses it to check the whole path, not to get a useful model.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import dataset, scorer

__all__ = ["CONFIGS", "build_tokenizer", "evaluate", "main", "train"]

GUIDANCES = (1.0, 3.0, 5.0, 7.5)

CONFIGS: dict[str, dict[str, Any]] = {
    "full": {
        "images": 40_000, "vae_steps": 2_500, "vae_batch": 128, "vae_lr": 4e-4,
        "unet_steps": 8_000, "batch": 256, "lr": 3e-4, "warmup": 300, "min_lr_frac": 0.1,
        "ema": 0.999, "drop": 0.1, "max_tokens": 32, "score_prompts": 48, "score_steps": 20, "log_every": 250,
        "vae": {"block_out_channels": (32, 64, 64), "layers_per_block": 1, "norm_num_groups": 32},
        "unet": {"block_out_channels": (64, 128, 128), "layers_per_block": 2, "attention_head_dim": 8,
                 "norm_num_groups": 32,
                 "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")},
        "text": {"hidden_size": 192, "intermediate_size": 768, "num_attention_heads": 4, "num_hidden_layers": 4},
    },
    "tiny": {
        "images": 300, "vae_steps": 20, "vae_batch": 8, "vae_lr": 1e-3,
        "unet_steps": 20, "batch": 16, "lr": 1e-3, "warmup": 5, "min_lr_frac": 0.1,
        "ema": 0.9, "drop": 0.1, "max_tokens": 32, "score_prompts": 8, "score_steps": 20, "log_every": 5,
        "vae": {"block_out_channels": (16, 32, 32), "layers_per_block": 1, "norm_num_groups": 8},
        "unet": {"block_out_channels": (32, 64), "layers_per_block": 1, "attention_head_dim": 8,
                 "norm_num_groups": 8, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                 "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")},
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2},
    },
}

# The probe (docs/demo-model.md): a 35 M UNet ran 7 steps/s at batch 256 on an H100; ours is ~4x smaller.
# The VAE ran 25 steps/s at batch 128 there. Printed before the run; measured figures replace them.
_PRIOR_STEPS_PER_S = {"cuda": 15.0}


def _log(message: str) -> None:
    print(f"[shapes-train {time.strftime('%H:%M:%S')}] {message}", flush=True)


def build_tokenizer(max_tokens: int = 32) -> Any:
    """Our word-level CLIP tokenizer: every word of the caption grammar is one token."""
    from transformers import CLIPTokenizer

    from ..tokenizer import tokenizer_files

    vocab, merges = tokenizer_files(dataset.WORDS)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_tokens)


def _build_models(cfg: dict[str, Any], tokenizer: Any, seed: int) -> tuple[Any, Any, Any]:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=dataset.SIZE,
                        down_block_types=("DownEncoderBlock2D",) * len(cfg["vae"]["block_out_channels"]),
                        up_block_types=("UpDecoderBlock2D",) * len(cfg["vae"]["block_out_channels"]),
                        **{**cfg["vae"], "block_out_channels": tuple(cfg["vae"]["block_out_channels"])})
    torch.manual_seed(seed)
    text = cfg["text"]
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, max_position_embeddings=cfg["max_tokens"], layer_norm_eps=1e-5,
        projection_dim=text["hidden_size"], **text))
    torch.manual_seed(seed)
    latent = dataset.SIZE // 2 ** (len(cfg["vae"]["block_out_channels"]) - 1)
    unet = UNet2DConditionModel(sample_size=latent, in_channels=4, out_channels=4,
                                cross_attention_dim=text["hidden_size"],
                                **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["unet"].items()})
    return vae, text_encoder, unet


def _params_m(module: Any) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _lr(cfg: dict[str, Any], step: int, total: int, base: float) -> float:
    if step < cfg["warmup"]:
        return base * (step + 1) / cfg["warmup"]
    progress = (step - cfg["warmup"]) / max(1, total - cfg["warmup"])
    floor = cfg["min_lr_frac"]
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(out: Path, *, cfg: dict[str, Any], seed: int = 0, device: str = "cpu", strict_determinism: bool = False,
          unet_budget_s: float | None = None) -> dict[str, Any]:
    """Train, save the pipeline to ``out``, score it and write the model card; returns the report.

    ``unet_budget_s``: after 50 UNet steps, set the step count so the UNet phase takes about that long.
    """
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline

    from ..embedded import quiet_hf_logging

    quiet_hf_logging()
    cfg = copy.deepcopy(cfg)
    if strict_determinism:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cuda = device.startswith("cuda")
    t_start = time.time()
    report: dict[str, Any] = {"seed": seed, "device": device, "config": _plain(cfg),
                              "device_name": torch.cuda.get_device_name() if cuda else "cpu",
                              "torch": torch.__version__}
    import diffusers
    import transformers

    report.update(diffusers=diffusers.__version__, transformers=transformers.__version__)

    # -- data -----------------------------------------------------------------------------------------
    t = time.time()
    images, captions, _ = dataset.sample(cfg["images"], seed)
    tokenizer = build_tokenizer(cfg["max_tokens"])
    ids = tokenizer(captions, padding="max_length", max_length=cfg["max_tokens"], truncation=True,
                    return_tensors="pt").input_ids
    uncond = tokenizer(["", dataset.NEGATIVE_PROMPT], padding="max_length", max_length=cfg["max_tokens"],
                       return_tensors="pt").input_ids
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
    ids, uncond = ids.to(device), uncond.to(device)
    n = len(captions)
    report["data_s"] = round(time.time() - t, 2)
    _log(f"{n} images drawn and captioned in {report['data_s']} s; vocabulary {len(tokenizer)} tokens")

    vae, text_encoder, unet = _build_models(cfg, tokenizer, seed)
    report["params_m"] = {"unet": round(_params_m(unet), 3), "text_encoder": round(_params_m(text_encoder), 3),
                          "vae": round(_params_m(vae), 3)}
    total_m = sum(report["params_m"].values())
    _log(f"parameters (M): {report['params_m']}; fp16 weights ≈ {total_m * 2:.1f} MB")
    vae, text_encoder, unet = vae.to(device), text_encoder.to(device), unet.to(device)
    gen = torch.Generator("cpu").manual_seed(seed)  # every random draw of training comes from here
    autocast = (lambda: torch.autocast("cuda", torch.bfloat16)) if cuda else (lambda: torch.autocast("cpu", enabled=False))
    if cuda:
        _log(f"estimate before measuring: VAE ≈ {cfg['vae_steps'] / 25:.0f} s, UNet {cfg['unet_steps']} steps ≈ "
             f"{cfg['unet_steps'] / _PRIOR_STEPS_PER_S['cuda'] / 60:.1f} min at batch {cfg['batch']} on an H100 "
             f"(measured figures follow after a few dozen steps)")

    # -- 1. VAE -------------------------------------------------------------------------------------
    t = time.time()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["vae_lr"])
    vae_losses: list[tuple[int, float]] = []
    loss = torch.zeros(())
    for step in range(cfg["vae_steps"]):
        idx = torch.randint(0, n, (cfg["vae_batch"],), generator=gen).to(device)
        x = x_all[idx]
        with autocast():
            posterior = vae.encode(x).latent_dist
            rec = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.mse_loss(rec.float(), x) + 1e-6 * posterior.kl().float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg["log_every"] == 0 or step == cfg["vae_steps"] - 1:
            vae_losses.append((step, round(loss.item(), 5)))
            _log(f"vae step {step} loss {loss.item():.5f} ({time.time() - t:.0f} s)")
        if step == 20 and cfg["vae_steps"] > 200:
            if cuda:
                torch.cuda.synchronize()
            per = (time.time() - t) / 21
            _log(f"VAE: {per * 1000:.0f} ms/step → about {per * cfg['vae_steps']:.0f} s for {cfg['vae_steps']} steps")
    report["vae_s"] = round(time.time() - t, 1)
    report["vae_losses"] = vae_losses
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = torch.cat([vae.encode(x_all[i:i + 512]).latent_dist.mode() for i in range(0, n, 512)])
        recon = torch.cat([vae.decode(latents[i:i + 512]).sample for i in range(0, min(n, 2048), 512)])
        report["vae_recon_mse"] = round(F.mse_loss(recon, x_all[:len(recon)]).item(), 5)
    scaling = float(1 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    report["vae_scaling_factor"] = scaling
    del x_all
    _log(f"VAE done in {report['vae_s']} s, reconstruction MSE {report['vae_recon_mse']}, scaling {scaling:.4f}")

    # -- 2. UNet + text encoder -----------------------------------------------------------------------
    noise_schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                   beta_end=0.012)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=0.01)
    alphas = noise_schedule.alphas_cumprod.to(device)
    total, batch = cfg["unet_steps"], cfg["batch"]
    unet.train()
    text_encoder.train()
    t = time.time()
    unet_losses: list[tuple[int, float]] = []
    step = 0
    while step < total:
        idx = torch.randint(0, n, (batch,), generator=gen)
        drop = torch.rand(batch, generator=gen) < cfg["drop"]
        which = torch.randint(0, 2, (batch,), generator=gen)
        noise = torch.randn((batch, *latents.shape[1:]), generator=gen).to(device)
        steps_t = torch.randint(0, 1000, (batch,), generator=gen).to(device)
        idx, drop, which = idx.to(device), drop.to(device), which.to(device)
        tokens = torch.where(drop[:, None], uncond[which], ids[idx])
        a = alphas[steps_t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents[idx] + (1 - a).sqrt() * noise
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step, total, cfg["lr"])
        with autocast():
            context = text_encoder(tokens).last_hidden_state
            pred = unet(noisy, steps_t, encoder_hidden_states=context).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        if step % cfg["log_every"] == 0 or step == total - 1:
            unet_losses.append((step, round(loss.item(), 5)))
            _log(f"unet step {step}/{total} loss {loss.item():.5f} lr {_lr(cfg, step, total, cfg['lr']):.2e} "
                 f"({time.time() - t:.0f} s)")
        if step == 50 and total > 200:
            if cuda:
                torch.cuda.synchronize()
            per = (time.time() - t) / 51
            if unet_budget_s and step < cfg["warmup"]:
                # Fix the step count once, inside the warm-up (whose learning rate does not depend on the
                # total): the run equals one started with --steps TOTAL, which reproduces it exactly.
                total = max(100, int(unet_budget_s / per) // 100 * 100)
                _log(f"--unet-budget {unet_budget_s:g} s: {total} UNet steps (rerun with --steps {total})")
            _log(f"UNet: {per * 1000:.0f} ms/step → about {per * total / 60:.1f} min for {total} steps "
                 f"(whole run ≈ {(time.time() - t_start + per * total) / 60 + 1:.1f} min with scoring)")
        step += 1
    report["unet_s"] = round(time.time() - t, 1)
    report["unet_losses"] = unet_losses
    report["unet_steps"] = total
    cfg["unet_steps"] = report["config"]["unet_steps"] = total
    with torch.no_grad():
        for p, e in zip(params, ema, strict=True):
            p.copy_(e)
    _log(f"UNet + text encoder done in {report['unet_s']} s ({total} steps, batch {batch})")

    # -- 3. save (fp16) -----------------------------------------------------------------------------
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                            num_train_timesteps=1000, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet.eval(), vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    out.mkdir(parents=True, exist_ok=True)
    pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
    del pipe, unet, text_encoder, vae, opt, ema, params, latents
    report["weights_mb"] = round(sum(f.stat().st_size for f in out.rglob("*.safetensors")) / 1e6, 2)
    _log(f"saved to {out} ({report['weights_mb']} MB of fp16 safetensors)")

    # -- 4. score the saved weights -----------------------------------------------------------------------
    t = time.time()
    prompts = [dataset.caption(a) for a in dataset.held_out_attrs()[:: max(1, 48 // cfg["score_prompts"])]]
    prompts = prompts[:cfg["score_prompts"]]
    scores, rows = evaluate(out, prompts, GUIDANCES, device=device, steps=cfg["score_steps"])
    report["scores"] = scores
    report["score_prompts"] = prompts
    report["score_s"] = round(time.time() - t, 1)
    _save_grid(rows, out / "samples.png")
    report["total_s"] = round(time.time() - t_start, 1)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    _write_card(out, report, cfg)
    _log("scores: " + "; ".join(f"g{g}: overall {s['overall']:.0%}" for g, s in scores.items())
         + f"; total {report['total_s']} s")
    return report


def evaluate(folder: Path, prompts: list[str], guidances: tuple[float, ...] = GUIDANCES, *, device: str = "cpu",
             steps: int = 20, batch: int = 16) -> tuple[dict[str, dict[str, float]], list[list[Any]]]:
    """Adherence of the saved pipeline in ``folder`` on ``prompts`` at each guidance (seed = prompt index,
    the shapes template's negative prompt); also the images, one row per guidance."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32).to(device)
    pipe.set_progress_bar_config(disable=True)
    scores: dict[str, dict[str, float]] = {}
    rows: list[list[Any]] = []
    for guidance in guidances:
        images: list[Any] = []
        for i in range(0, len(prompts), batch):
            chunk = prompts[i:i + batch]
            images.extend(pipe(prompt=chunk, negative_prompt=[dataset.NEGATIVE_PROMPT] * len(chunk),
                           num_inference_steps=steps, guidance_scale=guidance, height=dataset.SIZE,
                           width=dataset.SIZE, output_type="np",
                           generator=[torch.Generator("cpu").manual_seed(k) for k in range(i, i + len(chunk))]).images)
        images = [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in images]
        scores[f"{guidance:g}"] = {k: round(v, 4) for k, v in scorer.score_many(images, prompts).items()}
        rows.append(images[:12])
    return scores, rows


def _save_grid(rows: list[list[Any]], path: Path) -> None:
    import numpy as np
    from PIL import Image

    if not rows or not rows[0]:
        return
    size = dataset.SIZE
    grid = np.zeros((size * len(rows), size * len(rows[0]), 3), np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid[r * size:(r + 1) * size, c * size:(c + 1) * size] = image
    Image.fromarray(grid).save(path)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)  # torch.__version__ is a str subclass yaml cannot represent
    if hasattr(value, "item"):
        return value.item()
    return value


def _write_card(out: Path, report: dict[str, Any], cfg: dict[str, Any]) -> None:
    import yaml

    (out / "training.yaml").write_text(yaml.safe_dump(_plain(report), sort_keys=False, width=120))
    attrs = ["colour", "shape", "size", "position", "background", "overall"]
    table = ["| guidance | " + " | ".join(attrs) + " |", "|---|" + "---|" * len(attrs)]
    for guidance, row in report["scores"].items():
        table.append(f"| {guidance} | " + " | ".join(f"{row.get(a, 0.0):.0%}" for a in attrs) + " |")
    p = report["params_m"]
    held = ", ".join(f"{s} {c} {pos}" for s, c, pos in sorted(dataset.HELD_OUT))
    card = f"""---
library_name: diffusers
pipeline_tag: text-to-image
tags: [workbench, shapes, demo, tiny]
---
# shapes demo model (workbench)

A tiny text-to-image model trained from scratch by `python -m workbench.models.shapes.train` on drawn shapes:
one shape ({", ".join(dataset.SHAPES)}) in one of {len(dataset.COLOURS)} colours, 2 sizes, 5 positions,
on one of {len(dataset.BACKGROUNDS)} backgrounds, 64×64. Prompts follow the caption grammar of
`workbench.models.shapes.dataset`, e.g. "a large red circle on the left, white background" (the `shapes`
template renders it). Load it like any saved pipeline (`StableDiffusionPipeline.from_pretrained(folder)`),
or pass this folder as the model of the workbench's diffusers backend.

## Data
- {cfg['images']:,} images drawn by `workbench.models.shapes.dataset.sample(n, seed={report['seed']})`
  (flat colours, no anti-aliasing, ±{dataset.POSITION_JITTER} px position and ±{dataset.SIZE_JITTER} px size jitter),
  captions in {dataset.STYLES} paraphrases.
- Held out of training (never drawn): the (shape, colour, position) triples {held}.
  The scores below are measured on prompts asking for exactly those.

## Model
- UNet2DConditionModel {p['unet']} M parameters, CLIPTextModel {p['text_encoder']} M
  (word-level tokenizer, {cfg['max_tokens']} tokens), AutoencoderKL {p['vae']} M (64×64×3 → 16×16×4,
  scaling factor {report['vae_scaling_factor']:.4f}); {report['weights_mb']} MB of fp16 safetensors.
- Scheduler: DPMSolverMultistepScheduler (scaled-linear betas 0.00085–0.012, 1000 steps).

## Training
- Device: {report['device_name']} ({report['device']}); torch {report['torch']}, diffusers {report['diffusers']},
  transformers {report['transformers']}; seed {report['seed']}.
- VAE: {cfg['vae_steps']} steps, batch {cfg['vae_batch']}, lr {cfg['vae_lr']}, {report['vae_s']} s;
  reconstruction MSE {report['vae_recon_mse']} (images in [-1, 1]).
- UNet + text encoder: {cfg['unet_steps']} steps, batch {cfg['batch']}, lr {cfg['lr']} (warm-up {cfg['warmup']},
  cosine to {cfg['min_lr_frac']:.0%}), {cfg['drop']:.0%} of captions dropped to "" or "{dataset.NEGATIVE_PROMPT}",
  EMA {cfg['ema']}, {"bf16 autocast" if report['device'].startswith('cuda') else "fp32"}; {report['unet_s']} s;
  last logged loss {report['unet_losses'][-1][1] if report['unet_losses'] else 'n/a'}.
- Total time {report['total_s']} s (including drawing the data and scoring); finished {report['finished']}.

## Adherence on the held-out prompts
{len(report["score_prompts"])} prompts, {cfg["score_steps"]} DPM-Solver steps, negative prompt "{dataset.NEGATIVE_PROMPT}", one CPU
generator per image (seed = prompt index), scored by pixel checks (`workbench.models.shapes.scorer`):

{chr(10).join(table)}

`samples.png`: rows are guidance {", ".join(report['scores'])}; columns the first held-out prompts:
{"; ".join(report['score_prompts'][:12])}.

`training.yaml` holds every setting, the logged losses and these numbers.
"""
    (out / "README.md").write_text(card)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.models.shapes.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write the pipeline and model card to")
    parser.add_argument("--steps", type=int, help="UNet + text encoder steps (default: 8000, tiny: 20)")
    parser.add_argument("--vae-steps", type=int, help="VAE steps (default: 2500, tiny: 20)")
    parser.add_argument("--batch", type=int, help="UNet batch size (default: 256, tiny: 16)")
    parser.add_argument("--images", type=int, help="training images to draw (default: 40000, tiny: 300)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a seconds-long CPU run that checks the path end to end")
    parser.add_argument("--unet-budget", type=float, metavar="SECONDS",
                        help="after 50 UNet steps, pick the step count that fits this many seconds (the card "
                             "records it; --steps N reruns the same training)")
    parser.add_argument("--strict-determinism", action="store_true",
                        help="torch deterministic algorithms (bit-stable on one GPU, slower)")
    args = parser.parse_args(argv)
    import torch

    cfg = copy.deepcopy(CONFIGS["tiny" if args.tiny else "full"])
    for key, value in (("unet_steps", args.steps), ("vae_steps", args.vae_steps), ("batch", args.batch),
                       ("images", args.images)):
        if value is not None:
            cfg[key] = value
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / "model_index.json").exists():
        parser.error(f"{args.out} exists and is not a saved pipeline; pick an empty or new folder")
    train(args.out, cfg=cfg, seed=args.seed, device=device, strict_determinism=args.strict_determinism,
          unet_budget_s=args.unet_budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
