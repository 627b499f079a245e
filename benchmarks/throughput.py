"""Throughput benchmark: workbench end to end vs the loops people write by hand.

Same requests everywhere: 4 prompt variants × 4 seeds (one factor varied), on the CPU with the
embedded model (``make bench-cpu``), or on a GPU with a Stable Diffusion 1.5-architecture pipeline
built from its published config with random weights (same FLOPs, no download): ``make bench-gpu``.

- bare:      the best plain diffusers code: the pipeline loaded once, one batched call per group
             with a list of CPU generators, nothing logged (the floor for our overhead);
- workbench: ``run_plan`` with every image logged to MLflow (PNG with metadata, params, tags, metrics);
- naive:     the loop users write by hand: one pipeline call per image, then a synchronous
             ``mlflow.log_image`` (plus params) inside a fluent run.

Each is repeated; medians and spread go to ``docs/benchmarks.md`` (section "CPU" or "GPU").
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def build_sd15_random(folder: Path) -> Path:
    """SD 1.5's architecture (UNet 860 M, VAE, CLIP ViT-L text encoder) with random weights, fp16."""
    import torch
    from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from workbench.models.tokenizer import LIBRARY_WORDS, tokenizer_files

    if (folder / "model_index.json").is_file():
        return folder
    vocab, merges = tokenizer_files(LIBRARY_WORDS)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        sample_size=512)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text, tokenizer=CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77),
        scheduler=DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                              steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(folder)
    return folder


def spec_dict(size: int, steps: int, name: str, model: str = "embedded:tiny-sd") -> dict:
    return {"name": name, "prompt": "a {{ colour }} lighthouse on a cliff", "variables": {"colour": "red"},
            "backend": "diffusers", "model": model,
            "params": {"width": size, "height": size, "steps": steps, "guidance": 7.5},
            "seeds": [1, 2, 3, 4], "vary": {"var.colour": ["blue", "green", "white"]}, "max_batch": 16}


def fresh_store(folder: Path) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # migrate outside the timed part
    return uri


def bench_workbench(spec: dict, folder: Path) -> float:
    from workbench.experiments.spec import parse_spec
    from workbench.run.plan import make_plan
    from workbench.run.runner import run_plan
    from workbench.tracking.store import Tracker

    tracker = Tracker(fresh_store(folder))
    plan = make_plan(parse_spec(spec), tracker=tracker)
    start = time.perf_counter()
    summary = run_plan(plan, tracker, progress=False, make_grids=False)
    elapsed = time.perf_counter() - start
    assert summary.finished == 16 and summary.ok, summary
    return elapsed


def bench_bare(pipe, requests) -> float:  # type: ignore[no-untyped-def]
    import torch

    groups: dict[tuple, list] = {}
    for r in requests:
        groups.setdefault((r.width, r.height, r.steps, r.guidance), []).append(r)
    start = time.perf_counter()
    for (w, h, steps, guidance), members in groups.items():
        pipe([r.prompt for r in members], negative_prompt=[r.negative_prompt for r in members], width=w, height=h,
             num_inference_steps=steps, guidance_scale=guidance,
             generator=[torch.Generator("cpu").manual_seed(r.seed) for r in members])
    return time.perf_counter() - start


def bench_naive(pipe, requests, folder: Path) -> float:  # type: ignore[no-untyped-def]
    import mlflow
    import torch

    mlflow.set_tracking_uri(fresh_store(folder))
    # An explicit artifact folder: MLflow's default is ./mlruns under whatever the current directory is.
    mlflow.create_experiment("naive", artifact_location=(folder / "naive-artifacts").as_uri())
    experiment = mlflow.set_experiment("naive")
    assert experiment
    start = time.perf_counter()
    for r in requests:
        with mlflow.start_run():
            image = pipe(r.prompt, negative_prompt=r.negative_prompt, width=r.width, height=r.height,
                         num_inference_steps=r.steps, guidance_scale=r.guidance,
                         generator=torch.Generator("cpu").manual_seed(r.seed)).images[0]
            mlflow.log_params({"prompt": r.prompt, "seed": r.seed, "steps": r.steps, "guidance": r.guidance})
            mlflow.log_image(image, artifact_file="image.png")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", type=int, default=None, help="default: 64 on cpu, 512 on cuda")
    parser.add_argument("--steps", type=int, default=None, help="default: 20 on cpu, 30 on cuda")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "wb-sd15-random")
    parser.add_argument("--write", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    size = args.size or (512 if gpu else 64)
    steps = args.steps or (30 if gpu else 20)

    import torch

    if not gpu:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    home = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    os.environ["WORKBENCH_HOME"] = str(home)
    os.environ["WORKBENCH_DEVICE"] = args.device
    from workbench.models import embedded
    from workbench.backends.registry import get_backend
    from workbench.experiments.expand import expand
    from workbench.experiments.spec import parse_spec

    if gpu:
        model = str(build_sd15_random(args.model_dir))
    else:
        embedded.build("tiny-sd")
        model = "embedded:tiny-sd"
    spec = spec_dict(size, steps, "bench", model)
    requests = expand(parse_spec(spec))
    backend = get_backend("diffusers")
    pipe = backend.pipeline(model)  # shared: every contender gets a warm pipeline
    bench_bare(pipe, requests)  # warm-up (first-call allocations)
    times: dict[str, list[float]] = {"bare": [], "workbench": [], "naive": []}
    for i in range(args.repeats):
        for name in times:  # interleaved, so drift in machine load hits all three alike
            folder = home / f"{name}-{i}"
            folder.mkdir()
            if name == "bare":
                times[name].append(bench_bare(pipe, requests))
            elif name == "workbench":
                times[name].append(bench_workbench({**spec, "name": f"bench-{i}"}, folder))
            else:
                times[name].append(bench_naive(pipe, requests, folder))
            print(f"run {i + 1}/{args.repeats} {name:9s} {times[name][-1]:.2f} s", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [f"| {name} | {med[name]:.2f} s | {min(v):.2f}–{max(v):.2f} s | {med[name] / 16 * 1000:.0f} ms |"
            for name, v in times.items()]
    machine = (f"{torch.cuda.get_device_name()}, torch {torch.__version__}, fp16, SD 1.5 architecture with "
               f"random weights" if gpu else
               f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
               f"with {torch.get_num_threads()} thread(s), the embedded tiny model")
    peak = (f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if gpu else "")
    table = "\n".join([
        f"Machine: {machine}; {len(requests)} images ({size}x{size}, {steps} steps, 4 prompts × 4 seeds); "
        f"{args.repeats} repeats, measured {time.strftime('%Y-%m-%d')} (`make bench-{args.device.replace('cuda', 'gpu')}`)"
        f"{peak}.", "",
        "| loop | median | spread (min–max) | per image |", "|---|---|---|---|", *rows, "",
        f"- workbench / bare batched loop: **{med['workbench'] / med['bare']:.2f}×** (target ≤ 1.05×)",
        f"- naive loop / workbench: **{med['naive'] / med['workbench']:.2f}×** (target ≥ 4× on the GPU)",
    ])
    print(table)
    write_section(args.write, "GPU" if gpu else "CPU", table)


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or add) the ``## name`` section of docs/benchmarks.md."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start_marker, end_marker = f"<!-- {name} start -->", f"<!-- {name} end -->"
    block = f"{start_marker}\n{body}\n{end_marker}"
    if start_marker in text:
        before, rest = text.split(start_marker, 1)
        text = before + block + rest.split(end_marker, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {name}\n\n{block}\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
