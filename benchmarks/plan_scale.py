"""Scale of planning and resuming: `plan` and the already-done check on 250…2000-run specs.

Uses the instant fake backend and a real SQLite store holding the finished runs, so what is timed is
the workbench itself: expansion, validation, run keys, the store lookup and batching. Writes the
"Planning at scale" section of docs/benchmarks.md. Then the "Huge and hostile specs" section: how fast a
10⁶-cell plan is summarised, and how fast 10⁶ seeds and a template with nested loops are refused (each was a
hang or a long stall once: issue 18). Run: ``.venv/bin/python benchmarks/plan_scale.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def spec(n_levels: int, name: str) -> dict:
    # 1 base + n_levels guidance levels, × 10 seeds
    return {"name": name, "prompt": "a {{ colour }} square", "variables": {"colour": "red"}, "backend": "fake",
            "model": "m", "params": {"width": 8, "height": 8, "steps": 1, "guidance": 0.5},
            "seeds": list(range(10)), "vary": {"guidance": [round(1 + i * 0.1, 2) for i in range(n_levels - 1)]},
            "max_images": 100_000}


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="wb-plan-"))
    os.environ["WORKBENCH_HOME"] = str(home)
    from throughput import fresh_store, write_section

    from workbench.experiments.spec import parse_spec
    from workbench.run.plan import make_plan
    from workbench.run.runner import run_plan
    from workbench.tracking.store import Tracker

    rows = []
    for runs in (250, 500, 1000, 2000):
        folder = home / str(runs)
        folder.mkdir()
        tracker = Tracker(fresh_store(folder))
        s = parse_spec(spec(runs // 10, f"scale-{runs}"))
        start = time.perf_counter()
        empty_plan = make_plan(s, tracker=tracker)
        t_empty = time.perf_counter() - start
        run_plan(empty_plan, tracker, progress=False, make_grids=False)  # fill the store
        start = time.perf_counter()
        resumed = make_plan(s, tracker=tracker)
        t_resume = time.perf_counter() - start
        assert len(resumed.done) == runs and not resumed.todo
        rows.append(f"| {runs} | {t_empty * 1000:.0f} ms | {t_resume * 1000:.0f} ms | {t_resume / runs * 1e6:.0f} µs |")
        print(rows[-1], flush=True)
    body = "\n".join([
        f"`make_plan` on a fake-backend spec, SQLite store; {os.cpu_count()} cores; measured "
        f"{time.strftime('%Y-%m-%d')} (`benchmarks/plan_scale.py`).", "",
        "| runs in the spec | plan, empty store | plan + resume check, all runs logged | per logged run |",
        "|---|---|---|---|", *rows])
    write_section(ROOT / "docs" / "benchmarks.md", "Planning at scale", body)
    huge_and_hostile(home)


def timed(action) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    """Seconds ``action`` took, and the first words of the error it raised (every case here must raise or plan)."""
    start = time.perf_counter()
    try:
        outcome = action()
    except Exception as exc:  # the refusals are the point
        outcome = f"{type(exc).__name__}: {str(exc)[:70]}…"
    return time.perf_counter() - start, str(outcome)


def huge_and_hostile(home: Path) -> None:
    import platform
    import subprocess

    import yaml

    from throughput import write_section

    from workbench.experiments.spec import load_spec, parse_spec
    from workbench.prompts.templates import render_string
    from workbench.run.plan import make_plan

    grid = {"name": "huge", "prompt": "a red circle", "backend": "fake", "model": "m", "seeds": [1],
            "max_images": 10**7, "grid": {"rows": {"factor": "guidance", "levels": [i / 100 for i in range(1000)]},
                                          "cols": {"factor": "steps", "levels": list(range(1, 1001))}}}
    seeds = home / "seeds.yaml"
    seeds.write_text("name: s\nprompt: p\nmodel: m\nseeds: [" + ", ".join(map(str, range(10**6))) + "]\n")
    nested = "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}"
    huge = home / "huge.yaml"
    huge.write_text(yaml.safe_dump(grid))
    million = {"name": "s", "prompt": "p", "model": "m", "seeds": list(range(10**6))}  # built before the clock
    make_plan(parse_spec({**grid, "grid": None}))  # imports and the backend registry, once: not what is timed
    cases = [
        ("plan of a 1000 × 1000 grid (10⁶ cells, max_images raised), summarised", lambda: (
            lambda p: f"{p.summary.cells:,} cells counted, {len(p.rows)} planned")(
            make_plan(parse_spec(grid), summarise=True))),
        ("`workbench plan huge.yaml`, the same grid: the console script, Python's start included", lambda: (
            lambda done: f"exit {done.returncode}, {len(done.stdout.splitlines())} lines")(subprocess.run(
                [str(Path(sys.executable).with_name("workbench")), "plan", str(huge)], capture_output=True,
                text=True, env={**os.environ, "WORKBENCH_HOME": str(home)}))),
        ("10⁶ seeds in a spec mapping (the API)", lambda: parse_spec(million)),
        ("10⁶ seeds in a spec file (7.9 MB)", lambda: load_spec(seeds)),
        ("a literal prompt with two nested range(99999) loops", lambda: render_string(nested, {})),
    ]
    load = f"load average {os.getloadavg()[0]:.1f} while measured" if hasattr(os, "getloadavg") else "load unknown"
    rows = []
    for what, action in cases:
        seconds, outcome = timed(action)
        rows.append(f"| {what} | {seconds * 1000:.0f} ms | {outcome.replace('|', '/')} |")
        print(rows[-1], flush=True)
    body = "\n".join([
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; measured "
        f"{time.strftime('%Y-%m-%d')} (`benchmarks/plan_scale.py`), {load}. Before issue 18: the grid kept `plan` silent "
        f"for over 3 minutes, the seeds were refused after 39 s, the loops never ended.", "",
        "| case | time | outcome |", "|---|---|---|", *rows])
    write_section(ROOT / "docs" / "benchmarks.md", "Huge and hostile specs", body)


if __name__ == "__main__":
    main()
