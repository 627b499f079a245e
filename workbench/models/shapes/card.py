"""Scoring a trained shapes pipeline and writing its model card (``README.md``, ``training.yaml``, ``samples.png``).

The scores come from the saved folder loaded back through ``StableDiffusionPipeline.from_pretrained``
(what a user gets), on the held-out prompts: every (shape, colour, position) triple of
``dataset.HELD_OUT`` in both sizes on all four backgrounds, none of which training ever drew, so they
measure composition rather than recall. Each prompt is drawn with ``score_seeds`` seeds at each
guidance of ``recipe.GUIDANCES``, 20 DPM-Solver steps, the shapes template's negative prompt, one CPU
generator per image.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from . import dataset, recipe, scorer

__all__ = ["evaluate", "reconstruction_scores", "score_and_write", "held_out_prompts", "DEFAULT_GUIDANCE"]

DEFAULT_GUIDANCE = 3.0  # the shapes template's default
ATTRS = ["colour", "shape", "size", "position", "background", "overall"]


def held_out_prompts(limit: int | None = None) -> list[str]:
    prompts = [dataset.caption(a) for a in dataset.held_out_attrs()]
    return prompts[:: max(1, len(prompts) // limit)][:limit] if limit else prompts


def seen_prompts(n: int, seed: int = 1) -> list[str]:
    """``n`` prompts of combinations training did draw (canonical captions), for comparison."""
    rng = np.random.default_rng(seed)
    pool = [a for a in dataset.all_attrs() if not dataset.is_held_out(a)]
    return [dataset.caption(pool[int(i)]) for i in rng.choice(len(pool), n, replace=False)]


def generate(pipe: Any, prompts: list[str], seeds: list[int], guidance: float, *, steps: int = 20,
             batch: int = 16) -> list[np.ndarray]:
    """uint8 images, one per (prompt, seed) pair."""
    import torch

    images: list[np.ndarray] = []
    for i in range(0, len(prompts), batch):
        chunk, chunk_seeds = prompts[i:i + batch], seeds[i:i + batch]
        out = pipe(prompt=chunk, negative_prompt=[dataset.NEGATIVE_PROMPT] * len(chunk), num_inference_steps=steps,
                   guidance_scale=guidance, height=dataset.SIZE, width=dataset.SIZE, output_type="np",
                   generator=[torch.Generator("cpu").manual_seed(s) for s in chunk_seeds]).images
        images += [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in out]
    return images


def evaluate(folder: Path, prompts: list[str], guidances: tuple[float, ...] = recipe.GUIDANCES, *,
             seeds_per_prompt: int = 1, steps: int = 20, device: str = "cpu"
             ) -> tuple[dict[str, dict[str, float]], list[list[np.ndarray]]]:
    """Adherence per guidance (rates per attribute and overall) and, per guidance, the first seed's images."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32).to(device)
    pipe.set_progress_bar_config(disable=True)
    all_prompts = [p for p in prompts for _ in range(seeds_per_prompt)]
    seeds = [1000 * k + i for i in range(len(prompts)) for k in range(seeds_per_prompt)]
    scores: dict[str, dict[str, float]] = {}
    rows: list[list[np.ndarray]] = []
    for guidance in guidances:
        images = generate(pipe, all_prompts, seeds, guidance, steps=steps)
        scores[f"{guidance:g}"] = {k: round(v, 4) for k, v in scorer.score_many(images, all_prompts).items()}
        rows.append(images[::seeds_per_prompt][:12])
    return scores, rows


def seconds_per_image(folder: Path, *, batch: int = 8, steps: int = 20, device: str = "cpu") -> float:
    """Wall time per 64×64 image in a batch of ``batch`` at the default guidance (after one warm-up call)."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=torch.float32).to(device)
    pipe.set_progress_bar_config(disable=True)
    prompts = held_out_prompts()[:batch]
    generate(pipe, prompts[:2], [0, 1], DEFAULT_GUIDANCE, steps=2)
    start = time.perf_counter()
    generate(pipe, prompts, list(range(batch)), DEFAULT_GUIDANCE, steps=steps, batch=batch)
    return (time.perf_counter() - start) / batch


def reconstruction_scores(vae: Any, seed: int, device: str = "cpu", n: int = 300) -> dict[str, float]:
    """What the scorer reads in the VAE's reconstructions of ``n`` images it never saw (a ceiling for the model)."""
    import torch

    images, _, attrs = dataset.sample(n, seed + 7, include_held_out=True)
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
    out = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return {k: round(v, 4) for k, v in scorer.score_many(list(out), attrs).items()}


def save_grid(rows: list[list[np.ndarray]], path: Path) -> None:
    from PIL import Image

    if not rows or not rows[0]:
        return
    size = dataset.SIZE
    grid = np.zeros((size * len(rows), size * len(rows[0]), 3), np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid[r * size:(r + 1) * size, c * size:(c + 1) * size] = image
    Image.fromarray(grid).save(path)


def score_and_write(out: Path, report: dict[str, Any], cfg: dict[str, Any], *, device: str = "cpu"
                    ) -> dict[str, Any]:
    """Score the pipeline saved in ``out`` and write the card beside it; returns the numbers added to ``report``."""
    t = time.time()
    prompts = held_out_prompts(cfg.get("score_prompts"))
    seeds = cfg["score_seeds"]
    scores, rows = evaluate(out, prompts, seeds_per_prompt=seeds, steps=cfg["score_steps"], device=device)
    seen, _ = evaluate(out, seen_prompts(len(prompts)), (DEFAULT_GUIDANCE,), steps=cfg["score_steps"],
                       device=device)
    added = {"scores": scores, "seen_scores": seen, "score_prompts": prompts,
             "seconds_per_image": round(seconds_per_image(out, steps=cfg["score_steps"], device=device), 3),
             "weights_mb": round(sum(f.stat().st_size for f in out.rglob("*.safetensors")) / 1e6, 2)}
    added["score_s"] = round(time.time() - t, 1)
    save_grid(rows, out / "samples.png")
    write_card(out, {**report, **added}, cfg)
    return added


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def _table(scores: dict[str, dict[str, float]], first: str = "guidance") -> list[str]:
    rows = [f"| {first} | " + " | ".join(ATTRS) + " |", "|---|" + "---|" * len(ATTRS)]
    for guidance, row in scores.items():
        rows.append(f"| {guidance} | " + " | ".join(f"{row.get(a, 0.0):.0%}" for a in ATTRS) + " |")
    return rows


def _phases_note(report: dict[str, Any]) -> str:
    if not report.get("phases_1_3_finished"):
        return ""
    return (f" Phases 1-3 are those of run `{report.get('phases_1_3_run')}`, finished "
            f"{report['phases_1_3_finished']}; this run did phase 4 from its fp16 weights (`--from`), which gives "
            f"what a whole run gives.")


def write_card(out: Path, report: dict[str, Any], cfg: dict[str, Any]) -> None:
    import yaml

    (out / "training.yaml").write_text(yaml.safe_dump(_plain(report), sort_keys=False, width=120))
    p, s = report["params_m"], report["seconds"]
    held = ", ".join(f"{a} {b} {c}" for a, b, c in sorted(dataset.HELD_OUT))
    recon = report.get("vae_reconstruction", {})
    minutes = sum(s.values()) / 60
    card = f"""---
library_name: diffusers
pipeline_tag: text-to-image
tags: [workbench, shapes, demo, tiny]
---
# shapes demo model (workbench)

A tiny text-to-image model trained from scratch on a CPU by `python -m workbench.models.shapes.train` on
drawn shapes: one shape ({", ".join(dataset.SHAPES)}) in one of {len(dataset.COLOURS)} colours, 2 sizes, 5 positions,
on one of {len(dataset.BACKGROUNDS)} backgrounds, 64×64. Prompts follow the caption grammar of
`workbench.models.shapes.dataset`, e.g. "a large red circle on the left, white background" (the `shapes`
template renders it). In the workbench it is the model `embedded:shapes`; elsewhere load this folder with
`StableDiffusionPipeline.from_pretrained(folder)`.

## Data
- {cfg['images']:,} images drawn by `dataset.sample(n, seed={report['seed']})` (flat colours, no anti-aliasing,
  ±{dataset.POSITION_JITTER} px position and ±{dataset.SIZE_JITTER} px size jitter), captions in {dataset.STYLES} paraphrases.
- Held out of training (never drawn): the (shape, colour, position) triples {held}.
  The scores below are measured on prompts asking for exactly those.

## Model
- UNet2DConditionModel {p['unet']} M parameters, CLIPTextModel {p['text_encoder']} M (our word-level tokenizer,
  {cfg['max_tokens']} tokens), AutoencoderKL {p['vae']} M (64×64×3 → {recipe.latent_size(cfg)}²×{cfg['vae']['latent_channels']},
  scaling factor {report['vae_scaling_factor']:.4f}); {report['weights_mb']} MB of fp16 safetensors.
- v-prediction under a zero-terminal-SNR schedule (scaled-linear betas 0.00085–0.012 rescaled, 1000 steps);
  sampled with DPMSolverMultistepScheduler, trailing timesteps.

## Training ({minutes:.0f} min on {report['device']}, {report.get('torch_threads', '?')} torch threads)
- Device {report['device']}; torch {report['torch']}, diffusers {report['diffusers']}, transformers {report['transformers']};
  seed {report['seed']}; run `{report['run']}`. Settings: `recipe.CONFIGS`; every value and logged loss: `training.yaml`.
- VAE: {cfg['vae_steps']} steps on {cfg['vae_crop']}×{cfg['vae_crop']} crops, batch {cfg['vae_batch']}, lr {cfg['vae_lr']}
  ({s.get('vae', 0):.0f} s), then the decoder alone {cfg['decoder_steps']} steps on whole images, batch
  {cfg['decoder_batch']} ({s.get('decoder', 0):.0f} s). What the scorer reads in its reconstructions of unseen
  images: colour {recon.get('colour', 0):.0%}, shape {recon.get('shape', 0):.0%}, position {recon.get('position', 0):.0%},
  background {recon.get('background', 0):.0%}.
- UNet + text encoder: {cfg['unet_steps']:,} steps, batch {cfg['batch']}, AdamW lr {cfg['lr']} (warm-up {cfg['warmup']},
  cosine to {cfg['min_lr_frac']:.0%}), timesteps T·(1 − (1 − u)^{cfg['timestep_bias']:g}), loss weight
  min(1, {cfg['min_snr_gamma']:g} / (SNR + 1)), {cfg['drop']:.0%} of captions dropped to
  "" or "{dataset.NEGATIVE_PROMPT}", EMA {cfg['ema']}, fp32 ({s.get('denoiser', 0):.0f} s).
- Then, from those weights rounded to fp16, {cfg['swap_steps']:,} more steps with {cfg['swap']:.0%} of the captions
  swapped for another image's, lr {cfg['swap_lr']} (warm-up {cfg['swap_warmup']}, cosine), EMA {cfg['swap_ema']}
  ({s.get('guidance', 0):.0f} s): the model alone follows its prompt less, and classifier-free guidance
  restores it, as with scraped captions.{_phases_note(report)}
- Finished {report['finished']}.

## Adherence on the held-out prompts
{len(report["score_prompts"])} prompts × {cfg["score_seeds"]} seeds, {cfg["score_steps"]} steps, negative prompt
"{dataset.NEGATIVE_PROMPT}", one CPU generator per image, scored by pixel checks (`workbench.models.shapes.scorer`):

{chr(10).join(_table(report["scores"]))}

On {len(report["score_prompts"])} prompts of combinations training did draw, at guidance {DEFAULT_GUIDANCE:g}:

{chr(10).join(_table(report["seen_scores"]))}

Speed: {report['seconds_per_image']} s per 64×64 image, {cfg['score_steps']} steps, in a batch of 8 at guidance
{DEFAULT_GUIDANCE:g} ({report.get('torch_threads', '?')} torch threads).

`samples.png`: rows are guidance {", ".join(report['scores'])}; columns the first held-out prompts:
{"; ".join(report['score_prompts'][:12])}.
"""
    (out / "README.md").write_text(card)
