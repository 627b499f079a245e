"""Scale of planning and resuming: `plan` and the already-done check on 250…2000-run specs.

Uses the instant fake backend and a real SQLite store holding the finished runs, so what is timed is
the workbench itself: expansion, validation, run keys, the store lookup and batching. Writes the
"Planning at scale" section of docs/benchmarks.md. Run: ``.venv/bin/python benchmarks/plan_scale.py``.
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


if __name__ == "__main__":
    main()
