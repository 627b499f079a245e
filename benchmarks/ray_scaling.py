"""How `--executor ray` scales with workers, on a local Ray cluster with simulated GPUs.

Each worker's "GPU" is the fake backend sleeping ``--gpu-seconds`` per batch (a sleep holds no core, so
four simulated GPUs fit on a small machine); everything else is real: Ray actors, PNG encoding with
metadata, MLflow logging from the workers into one SQLite store, the driver's bookkeeping. What is
timed is therefore the executor's overhead and the tracking cost around a fixed device time. Writes
the "Ray scaling" section of docs/benchmarks.md. Run: ``.venv/bin/python benchmarks/ray_scaling.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def spec(name: str, images: int, batch: int, size: int) -> dict:
    return {"name": name, "prompt": "a blue square", "backend": "fake", "model": "m",
            "params": {"width": size, "height": size, "steps": 1}, "seeds": list(range(images)),
            "max_batch": batch}


def sweep(name: str, args: argparse.Namespace, workers: int | None) -> tuple[float, float]:
    """Seconds for the whole sweep, and the steady rate in images/s once the first batch is logged."""
    from throughput import fresh_store

    from workbench.experiments.spec import parse_spec
    from workbench.run.plan import make_plan
    from workbench.run.ray_executor import RayOptions
    from workbench.run.runner import run_plan
    from workbench.tracking.store import Tracker

    folder = Path(tempfile.mkdtemp(prefix="wb-ray-"))
    tracker = Tracker(fresh_store(folder))
    plan = make_plan(parse_spec(spec(name, args.images, args.batch, args.size)), tracker=tracker)
    start = time.perf_counter()
    summary = run_plan(plan, tracker, progress=False, make_grids=False,
                       ray=None if workers is None else RayOptions(workers=workers))
    elapsed = time.perf_counter() - start
    assert summary.ok and summary.finished == args.images, summary.stopped
    # Steady state from the store's own clock: images logged after the first one, over the time they took.
    ends = sorted(r.info.end_time for r in tracker.client.search_runs(
        [summary.experiment_id], "tags.`workbench.kind` = 'image'", max_results=10_000))
    first = ends[args.batch - 1]
    steady = (len(ends) - args.batch) / max((ends[-1] - first) / 1000, 1e-9)
    return elapsed, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--gpu-seconds", type=float, default=0.8, help="simulated device time per batch")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ["WORKBENCH_HOME"] = tempfile.mkdtemp(prefix="wb-ray-home-")
    os.environ["WORKBENCH_FAKE_DELAY_S"] = str(args.gpu_seconds)
    import ray

    started = time.perf_counter()
    # A Ray of its own ("local"), even where `ray start` left one running; one CPU per worker, since
    # workbench starts no more workers than the cluster holds (the simulated GPUs only sleep).
    ray.init(address="local", num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    init_s = time.perf_counter() - started
    batches = -(-args.images // args.batch)
    rows = []
    for workers in [None, *args.workers]:
        results = [sweep(f"ray-{workers}-{i}", args, workers) for i in range(args.repeats)]
        times = [t for t, _ in results]
        median, steady = statistics.median(times), statistics.median(r for _, r in results)
        ideal = -(-batches // (workers or 1)) * args.gpu_seconds
        ceiling = (workers or 1) * args.batch / args.gpu_seconds
        label = "local executor" if workers is None else f"ray, {workers} worker(s)"
        rows.append(f"| {label} | {median:.2f} s (spread {max(times) - min(times):.2f}) | {ideal:.1f} s | "
                    f"{args.images / median:.1f} | {steady:.1f} of {ceiling:.1f} ({steady / ceiling:.0%}) |")
        print(rows[-1], flush=True)
    ray.shutdown()
    body = "\n".join([
        f"{args.images} images of {args.size}², batches of {args.batch}, {args.gpu_seconds} s of simulated device "
        f"time per batch (the fake backend sleeping); real Ray actors, PNG encoding and MLflow logging into one "
        f"SQLite store. {os.cpu_count()} cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, ray {ray.__version__}; medians of {args.repeats}, measured "
        f"{time.strftime('%Y-%m-%d')} (`benchmarks/ray_scaling.py`). Starting the local Ray itself took "
        f"{init_s:.1f} s (not in the times below); each sweep includes starting its actors.", "",
        "| executor | sweep time | device-time floor | images/s, whole sweep | images/s after the first batch, "
        "of the device ceiling |",
        "|---|---|---|---|---|", *rows])
    from throughput import write_section

    write_section(ROOT / "docs" / "benchmarks.md", "Ray scaling", body)


if __name__ == "__main__":
    main()
