"""Train the shapes demo model: ``python -m workbench.models.shapes.train --out DIR [--resume] [--tiny]``.

A diffusers ``StableDiffusionPipeline`` trained from scratch on ``workbench.models.shapes.dataset``, in
phases (the recipe and why it looks as it does: ``recipe.py``):

1. ``vae``: an AutoencoderKL (64×64×3 → 16×16×4) on 32×32 crops of the drawn images (L1 + MSE + a tiny KL);
2. ``decoder``: its decoder alone on whole images;
3. ``denoiser``: the UNet and the text encoder together on the cached latents (v-prediction, zero terminal
   SNR, min-SNR weighting, 10% of captions dropped for classifier-free guidance, EMA weights);
4. ``guidance``: the same, from the weights rounded to fp16, with 30% of the captions swapped for another
   image's (as in scraped data): the model alone follows its prompt less, and classifier-free guidance
   is what restores it (``recipe.py`` says why);
5. the EMA weights saved as a pipeline in fp16 safetensors, loaded back through ``from_pretrained`` and
   scored on the held-out prompts (``card.py`` writes the model card, ``training.yaml`` and ``samples.png``).

``--from DIR`` starts at phase 4 from a pipeline saved after phase 3 (its ``training.yaml`` must name the
same settings): phase 4 depends only on those fp16 weights and the seed, so the result equals a whole run's.

It survives being stopped: a checkpoint is written every few minutes and at the end of each phase
(``checkpoint.py``), and ``--resume`` goes on from the last one with the same result, bit for bit, as a
run that never stopped. ``--max-minutes`` stops cleanly at a checkpoint, for runs split over sessions.

Deterministic given ``--seed``: the data, its order, the crops, the noise, the timesteps and the caption
drop-out all come from one CPU generator seeded by it, and every model is built after
``torch.manual_seed(seed)``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...files import temp_folder
from ..weights import weights_hash
from . import card, checkpoint, dataset, recipe

if TYPE_CHECKING:
    import torch

__all__ = ["CONFIGS", "train", "main"]

CONFIGS = recipe.CONFIGS
GUIDANCE_SEED_OFFSET = 4_000  # phase 4's generator: seed + this (its own stream, see _start_guidance)


def _log(message: str) -> None:
    print(f"[shapes-train {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class _Run:
    """The state of one training run that a checkpoint saves and ``--resume`` restores."""

    cfg: dict[str, Any]
    seed: int
    device: str
    folder: Path
    run: str
    checkpoint_every_s: float
    deadline: float | None  # time.time() at which to stop at the next checkpoint (--max-minutes)
    phase: str = "vae"
    step: int = 0
    modules: dict[str, Any] = field(default_factory=dict)
    optimizer: Any = None
    ema: list[Any] | None = None
    generator: Any = None
    losses: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    _last_save: float = field(default_factory=time.time)
    _phase_start: float = field(default_factory=time.time)

    def state(self) -> dict[str, Any]:
        return {"run": self.run, "phase": self.phase, "step": self.step, "generator": self.generator.get_state(),
                "modules": {k: m.state_dict() for k, m in self.modules.items()},
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                "ema": self.ema, "losses": self.losses, "seconds": self._seconds_now(), "report": self.report}

    def restore(self, state: dict[str, Any]) -> None:
        self.phase, self.step = state["phase"], state["step"]
        self.generator.set_state(state["generator"])
        for name, values in state["modules"].items():
            self.modules[name].load_state_dict(values)
        self.ema, self.losses, self.seconds, self.report = state["ema"], state["losses"], state["seconds"], \
            state["report"]

    def _seconds_now(self) -> dict[str, float]:
        return {**self.seconds, self.phase: self.seconds.get(self.phase, 0.0) + time.time() - self._phase_start}

    def save(self) -> None:
        self.seconds = self._seconds_now()
        self._phase_start = self._last_save = time.time()
        checkpoint.save(self.folder, self.state())

    def tick(self) -> None:
        """After each step: a checkpoint when one is due; stop (exit 3) once --max-minutes is spent."""
        if time.time() - self._last_save >= self.checkpoint_every_s:
            self.save()
            _log(f"checkpoint: {self.phase} step {self.step} ({self.folder})")
        if self.deadline is not None and time.time() >= self.deadline:
            self.save()
            raise _Stopped(f"stopped at {self.phase} step {self.step} (--max-minutes); the checkpoint is in "
                           f"{self.folder}: run the same command with --resume to go on")

    def enter(self, phase: str) -> None:
        self.seconds = self._seconds_now()
        self.phase, self.step, self._phase_start = phase, 0, time.time()
        self.optimizer, self.ema = None, None


class _Stopped(Exception):
    """Training stopped on purpose at a checkpoint (--max-minutes)."""


def _cosine(step: int, total: int, base: float, warmup: int, floor: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _set_lr(optimizer: Any, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _reconstruction_loss(vae: Any, x: torch.Tensor, generator: Any) -> torch.Tensor:
    import torch.nn.functional as F

    posterior = vae.encode(x).latent_dist
    rec = vae.decode(posterior.sample(generator=generator)).sample
    return (rec - x).abs().mean() + F.mse_loss(rec, x) + 1e-6 * posterior.kl().mean()


def _train_vae(run: _Run, x_all: torch.Tensor) -> None:
    """Phase 1: the whole VAE on crops aligned to the latent grid."""
    import torch

    cfg, vae, gen = run.cfg, run.modules["vae"], run.generator
    total, crop = cfg["vae_steps"], cfg["vae_crop"]
    factor = dataset.SIZE // recipe.latent_size(cfg)
    run.optimizer = run.optimizer or torch.optim.AdamW(vae.parameters(), lr=cfg["vae_lr"])
    vae.train()
    while run.step < total:
        idx = torch.randint(0, len(x_all), (cfg["vae_batch"],), generator=gen)
        oy, ox = (torch.randint(0, (dataset.SIZE - crop) // factor + 1, (2,), generator=gen) * factor).tolist()
        _set_lr(run.optimizer, _cosine(run.step, total, cfg["vae_lr"], cfg["vae_warmup"], 0.1))
        loss = _reconstruction_loss(vae, x_all[idx][:, :, oy:oy + crop, ox:ox + crop].to(run.device), gen)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        _logged(run, "vae", total, loss.item())
        run.step += 1
        run.tick()


def _train_decoder(run: _Run, x_all: torch.Tensor) -> None:
    """Phase 2: the decoder alone on whole images (the encoder, and so the latents, stay fixed)."""
    import torch
    import torch.nn.functional as F

    cfg, vae, gen = run.cfg, run.modules["vae"], run.generator
    total = cfg["decoder_steps"]
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    run.optimizer = run.optimizer or torch.optim.AdamW(params, lr=cfg["decoder_lr"])
    while run.step < total:
        x = x_all[torch.randint(0, len(x_all), (cfg["decoder_batch"],), generator=gen)].to(run.device)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        _set_lr(run.optimizer, _cosine(run.step, total, cfg["decoder_lr"], 0, 0.0))
        rec = vae.decode(z).sample
        loss = (rec - x).abs().mean() + F.mse_loss(rec, x)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        _logged(run, "decoder", total, loss.item())
        run.step += 1
        run.tick()


def _encode(run: _Run, x_all: torch.Tensor) -> torch.Tensor:
    """The training latents, scaled to unit variance (in phase 3 the scale becomes the VAE's
    ``scaling_factor``; phase 4 keeps it)."""
    import torch

    vae = run.modules["vae"].eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(x_all[i:i + 500].to(run.device)).latent_dist.mode()
                             for i in range(0, len(x_all), 500)])
    if run.phase == "denoiser":
        run.report["vae_scaling_factor"] = float(1 / latents.std())
    scaling = run.report["vae_scaling_factor"]
    vae.register_to_config(scaling_factor=scaling)
    return latents * scaling


def _start_guidance(run: _Run) -> None:
    """Enter phase 4 from the weights as shipped after phase 3 (rounded to fp16), with a generator of its
    own: so phase 4 depends only on those weights and the seed, whether it follows phase 3 or ``--from``."""
    import torch

    run.enter("guidance")
    with torch.no_grad():
        for module in run.modules.values():
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())
    run.generator = torch.Generator("cpu").manual_seed(run.seed + GUIDANCE_SEED_OFFSET)


def _load_init(run: _Run, folder: Path) -> None:
    """Start from a pipeline saved after phase 3 (``--from``): its weights, and its report of phases 1-3."""
    import torch
    import yaml
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    report = yaml.safe_load((folder / "training.yaml").read_text(encoding="utf-8"))
    def phases_1_3(cfg: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in cfg.items() if not k.startswith("swap")}

    if phases_1_3(report.get("config") or {}) != phases_1_3(run.cfg) or report.get("seed") != run.seed:
        raise ValueError(f"{folder} was trained with other settings or another seed than phases 1-3 of this "
                         f"configuration; --from takes a pipeline this recipe saved after phase 3")
    loaded = {"vae": AutoencoderKL.from_pretrained(folder / "vae", dtype=torch.float32),
              "unet": UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32),
              "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32)}
    for name, module in loaded.items():
        run.modules[name].load_state_dict(module.state_dict())
    run.seconds = {k: v for k, v in report["seconds"].items() if k in ("vae", "decoder", "denoiser")}
    run.losses = {k: [tuple(x) for x in v] for k, v in report["losses"].items() if k != "guidance"}
    keep = ("seed", "device", "params_m", "data_s", "torch", "diffusers", "transformers", "torch_threads",
            "vae_reconstruction", "vae_scaling_factor")
    run.report.update({k: report[k] for k in keep if k in report}, config=copy.deepcopy(run.cfg), run=run.run,
                      phases_1_3_from=str(folder), phases_1_3_run=report.get("run"),
                      phases_1_3_finished=report.get("finished"))
    run.phase = "denoiser"  # done: what follows is phase 4
    _start_guidance(run)


def _denoiser_settings(run: _Run) -> tuple[int, float, int, float, float]:
    """Steps, learning rate, warm-up, EMA decay and caption-swap rate of the phase running (3 or 4)."""
    cfg = run.cfg
    if run.phase == "denoiser":
        return cfg["unet_steps"], cfg["lr"], cfg["warmup"], cfg["ema"], 0.0
    return cfg["swap_steps"], cfg["swap_lr"], cfg["swap_warmup"], cfg["swap_ema"], cfg["swap"]


def _train_denoiser(run: _Run, latents: torch.Tensor, ids: torch.Tensor, uncond: torch.Tensor) -> None:
    """Phases 3 and 4: UNet + text encoder, v-prediction under zero terminal SNR, noisy timesteps drawn more
    often; in phase 4 a share of the captions are another image's."""
    import torch

    cfg, gen = run.cfg, run.generator
    unet, text_encoder = run.modules["unet"], run.modules["text_encoder"]
    params = [*unet.parameters(), *text_encoder.parameters()]
    total, lr, warmup, ema, swap = _denoiser_settings(run)
    run.optimizer = run.optimizer or torch.optim.AdamW(params, lr=lr, weight_decay=cfg["weight_decay"])
    run.ema = run.ema or [p.detach().clone() for p in params]
    alphas = recipe.noise_schedule().alphas_cumprod.to(run.device)
    snr = alphas / (1 - alphas).clamp(min=1e-12)
    # min-SNR-γ capping the easy steps, weight 1 where SNR < γ - 1, the pure-noise step included (recipe.py)
    weights = (cfg["min_snr_gamma"] / (snr + 1)).clamp(max=1.0)
    batch = cfg["batch"]
    unet.train()
    text_encoder.train()
    while run.step < total:
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        drop = torch.rand(batch, generator=gen) < cfg["drop"]
        which = torch.randint(0, len(uncond), (batch,), generator=gen)
        noise = torch.randn((batch, *latents.shape[1:]), generator=gen).to(run.device)
        u = torch.rand(batch, generator=gen)  # t = T·(1 − (1 − u)^bias): more draws where the layout is decided
        t = (len(alphas) * (1 - (1 - u) ** cfg["timestep_bias"])).long().clamp(max=len(alphas) - 1).to(run.device)
        captions = idx
        if swap:  # drawn only in phase 4, so phase 3's draws (and its weights) stay those of the shipped run
            other = torch.randint(0, len(latents), (batch,), generator=gen)
            captions = torch.where(torch.rand(batch, generator=gen) < swap, other, idx)
        tokens = torch.where(drop[:, None], uncond[which], ids[captions]).to(run.device)
        x0, a = latents[idx], alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v
        _set_lr(run.optimizer, _cosine(run.step, total, lr, warmup, cfg["min_lr_frac"]))
        pred = unet(noisy, t, encoder_hidden_states=text_encoder(tokens).last_hidden_state).sample
        loss = (((pred - target) ** 2).mean(dim=(1, 2, 3)) * weights[t]).mean()
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        run.optimizer.step()
        decay = min(ema, (1 + run.step) / (10 + run.step))
        with torch.no_grad():
            torch._foreach_lerp_(run.ema, [p.detach() for p in params], 1 - decay)
        _logged(run, run.phase, total, loss.item())
        run.step += 1
        run.tick()
    with torch.no_grad():
        for p, e in zip(params, run.ema, strict=True):
            p.copy_(e)


def _logged(run: _Run, phase: str, total: int, loss: float) -> None:
    step = run.step
    if step % run.cfg["log_every"] == 0 or step == total - 1:
        run.losses.setdefault(phase, []).append((step, round(loss, 5)))
        elapsed = run._seconds_now()[phase]
        eta = elapsed / (step + 1) * (total - step - 1)
        _log(f"{phase} step {step + 1}/{total} loss {loss:.5f} ({elapsed:.0f} s, ~{eta / 60:.1f} min left)")


def _save_pipeline(run: _Run, tokenizer: Any, out: Path) -> None:
    """The trained pipeline in fp16 safetensors, written beside ``out`` and renamed into place."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        unet=run.modules["unet"].eval(), vae=run.modules["vae"].eval(), text_encoder=run.modules["text_encoder"].eval(),
        tokenizer=tokenizer, scheduler=recipe.sampling_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    tmp = temp_folder(out.parent, f".{out.name}-")  # 0755 under umask 022, as a plain mkdir
    try:
        copy.deepcopy(pipe).to(torch.float16).save_pretrained(tmp, safe_serialization=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def train(out: Path, *, cfg: dict[str, Any], seed: int = 0, device: str = "cpu", resume: bool = False,
          checkpoint_dir: Path | None = None, checkpoint_every_s: float = 300.0,
          max_minutes: float | None = None, score: bool = True, start_from: Path | None = None) -> dict[str, Any]:
    """Train, save the pipeline to ``out``, score it and write its model card; returns the report.

    ``score=False`` skips the scoring and the card (tests that compare weights need neither);
    ``start_from`` a pipeline saved after phase 3: only phase 4 runs (``--from``).

    Example:
        >>> train(Path("/tmp/shapes"), cfg=CONFIGS["tiny"])["scores"]["5"]["overall"]  # doctest: +SKIP
    """
    import diffusers
    import torch
    import transformers

    from ..embedded import quiet_hf_logging

    quiet_hf_logging()
    start = {} if start_from is None else {"from": weights_hash(Path(start_from))}
    run_name = checkpoint.run_id({**cfg, **start}, seed, device)
    folder = Path(checkpoint_dir) if checkpoint_dir else checkpoint.default_dir(run_name)
    saved = checkpoint.load(folder, run_name)
    if saved is not None and not resume:
        raise ValueError(f"a checkpoint of this training run exists in {folder} ({saved['phase']} step "
                         f"{saved['step']}); pass --resume to go on from it, or delete the folder to start over")
    run = _Run(cfg=cfg, seed=seed, device=device, folder=folder, run=run_name, checkpoint_every_s=checkpoint_every_s,
               deadline=time.time() + max_minutes * 60 if max_minutes else None)
    run.generator = torch.Generator("cpu").manual_seed(seed)
    t = time.time()
    images, captions, _ = dataset.sample(cfg["images"], seed)
    tokenizer = recipe.build_tokenizer(cfg["max_tokens"])
    ids = tokenizer(captions, padding="max_length", max_length=cfg["max_tokens"], truncation=True,
                    return_tensors="pt").input_ids
    uncond = tokenizer(["", dataset.NEGATIVE_PROMPT], padding="max_length", max_length=cfg["max_tokens"],
                       return_tensors="pt").input_ids
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    data_s = time.time() - t
    run.modules = {"vae": recipe.build_vae(cfg, seed).to(device),
                   "text_encoder": recipe.build_text_encoder(cfg, tokenizer, seed).to(device),
                   "unet": recipe.build_unet(cfg, seed).to(device)}
    if saved is not None:
        run.restore(saved)
        _log(f"resuming {run_name} at {run.phase} step {run.step} from {folder}")
        if saved["optimizer"] is not None:
            _rebuild_optimizer(run, saved["optimizer"])
    elif start_from is not None:
        _load_init(run, Path(start_from))
        _log(f"phase 4 from the pipeline in {start_from}; checkpoints in {folder}")
    else:
        params = {k: round(sum(p.numel() for p in m.parameters()) / 1e6, 3) for k, m in run.modules.items()}
        run.report.update(seed=seed, device=device, config=copy.deepcopy(cfg), params_m=params, data_s=round(data_s, 1),
                          torch=str(torch.__version__), diffusers=diffusers.__version__,
                          transformers=transformers.__version__, torch_threads=torch.get_num_threads(), run=run_name)
        _log(f"{len(captions)} images drawn in {data_s:.1f} s; parameters (M) {params}; checkpoints in {folder}")
    try:
        if run.phase == "vae":
            _train_vae(run, x_all)
            run.enter("decoder")
            run.save()
        if run.phase == "decoder":
            _train_decoder(run, x_all)
            run.report["vae_reconstruction"] = card.reconstruction_scores(run.modules["vae"], seed, device)
            _log(f"VAE reconstructions of held-out images: {run.report['vae_reconstruction']}")
            run.enter("denoiser")
            run.save()
        if run.phase == "denoiser":
            _train_denoiser(run, _encode(run, x_all), ids, uncond)
            _start_guidance(run)
            run.save()
        if run.phase == "guidance":
            latents = _encode(run, x_all)  # again: from the VAE as phase 4 starts it, rounded to fp16
            del x_all
            _train_denoiser(run, latents, ids, uncond)
            run.enter("done")
            run.save()
    except _Stopped as stop:
        _log(str(stop))
        raise
    run.modules["vae"].register_to_config(scaling_factor=run.report["vae_scaling_factor"])
    _save_pipeline(run, tokenizer, out)
    report = {**run.report, "seconds": {k: round(v, 1) for k, v in run.seconds.items() if k != "done"},
              "losses": run.losses, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if score:
        report.update(card.score_and_write(out, report, cfg, device=device))
    shutil.rmtree(folder, ignore_errors=True)  # the weights are saved: the checkpoint has done its job
    _log(f"saved to {out}; " + "; ".join(f"g{g}: overall {s['overall']:.0%}" for g, s in report.get("scores", {}).items()))
    return report


def _rebuild_optimizer(run: _Run, state: dict[str, Any]) -> None:
    import torch

    cfg = run.cfg
    if run.phase == "vae":
        run.optimizer = torch.optim.AdamW(run.modules["vae"].parameters(), lr=cfg["vae_lr"])
    elif run.phase == "decoder":
        vae = run.modules["vae"]
        run.optimizer = torch.optim.AdamW([*vae.decoder.parameters(), *vae.post_quant_conv.parameters()],
                                          lr=cfg["decoder_lr"])
    elif run.phase in ("denoiser", "guidance"):
        params = [*run.modules["unet"].parameters(), *run.modules["text_encoder"].parameters()]
        run.optimizer = torch.optim.AdamW(params, lr=_denoiser_settings(run)[1], weight_decay=cfg["weight_decay"])
    if run.optimizer is not None:
        run.optimizer.load_state_dict(state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.models.shapes.train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write the pipeline and model card to")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu", help="training configuration (recipe.py)")
    parser.add_argument("--tiny", action="store_true", help="same as --config tiny: seconds, to check the path")
    parser.add_argument("--steps", type=int, help="denoiser steps (default: the configuration's)")
    parser.add_argument("--device", default="cpu", help="cpu (the configurations are sized for it) or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="go on from this run's last checkpoint")
    parser.add_argument("--from", dest="start_from", type=Path, metavar="DIR",
                        help="run phase 4 only, from a pipeline this recipe saved after phase 3")
    parser.add_argument("--checkpoint-dir", type=Path, help="default: ~/.cache/workbench/shapes-train/<run>")
    parser.add_argument("--checkpoint-every", type=float, default=300.0, metavar="SECONDS")
    parser.add_argument("--max-minutes", type=float, help="stop at a checkpoint after this long (exit 3)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 2 on a 2-core machine)")
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = copy.deepcopy(CONFIGS["tiny" if args.tiny else args.config])
    if args.steps is not None:
        cfg["unet_steps"] = args.steps
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / "model_index.json").exists():
        parser.error(f"{args.out} exists and is not a saved pipeline; pick an empty or new folder")
    try:
        train(args.out, cfg=cfg, seed=args.seed, device=args.device, resume=args.resume,
              checkpoint_dir=args.checkpoint_dir, checkpoint_every_s=args.checkpoint_every,
              max_minutes=args.max_minutes, start_from=args.start_from)
    except _Stopped:
        return 3
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
