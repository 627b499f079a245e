"""CPU throughput benchmark: workbench end to end vs the loops people write by hand.

Same requests everywhere: 4 prompt variants × 4 seeds on the embedded model (one factor varied).

- bare:      the best plain diffusers code: the pipeline loaded once, one batched call per group
             with a list of CPU generators, nothing logged (the floor for our overhead);
- workbench: ``run_plan`` with every image logged to MLflow (PNG with metadata, params, tags, metrics);
- naive:     the loop users write by hand: one pipeline call per image, then a synchronous
             ``mlflow.log_image`` (plus params) inside a fluent run.

Each is repeated; medians and spread go to ``docs/benchmarks.md`` (section "CPU"). Run: ``make bench-cpu``.
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


def spec_dict(size: int, steps: int, name: str) -> dict:
    return {"name": name, "prompt": "a {{ colour }} lighthouse on a cliff", "variables": {"colour": "red"},
            "backend": "diffusers", "model": "embedded:tiny-sd",
            "params": {"width": size, "height": size, "steps": steps, "guidance": 7.5},
            "seeds": [1, 2, 3, 4], "vary": {"var.colour": ["blue", "green", "white"]}, "max_batch": 16}


def fresh_store(folder: Path) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # migrate outside the timed part
    return uri


def bench_workbench(spec: dict, folder: Path) -> float:
    from workbench.experiment import parse_spec
    from workbench.plan import make_plan
    from workbench.runner import run_plan
    from workbench.tracking import Tracker

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
             generator=[torch.Generator("cpu").manual_seed(r.seed) for r in members]).images
    return time.perf_counter() - start


def bench_naive(pipe, requests, folder: Path) -> float:  # type: ignore[no-untyped-def]
    import mlflow
    import torch

    mlflow.set_tracking_uri(fresh_store(folder))
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
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    home = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    os.environ["WORKBENCH_HOME"] = str(home)
    from workbench import embedded
    from workbench.backends.registry import get_backend
    from workbench.experiment import expand, parse_spec

    embedded.build("tiny-sd")
    spec = spec_dict(args.size, args.steps, "bench")
    requests = expand(parse_spec(spec))
    backend = get_backend("diffusers")
    pipe = backend.pipeline("embedded:tiny-sd")  # shared: every contender gets a warm pipeline
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
    table = "\n".join([
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} with {torch.get_num_threads()} thread(s); {len(requests)} images "
        f"({args.size}x{args.size}, {args.steps} steps, 4 prompts × 4 seeds); {args.repeats} repeats, "
        f"measured {time.strftime('%Y-%m-%d')} (`make bench-cpu`).", "",
        "| loop | median | spread (min–max) | per image |", "|---|---|---|---|", *rows, "",
        f"- workbench / bare batched loop: **{med['workbench'] / med['bare']:.2f}×** (target ≤ 1.05×)",
        f"- naive loop / workbench: **{med['naive'] / med['workbench']:.2f}×** (target ≥ 4× on the GPU)",
    ])
    print(table)
    write_section(args.write, "CPU", table)


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
