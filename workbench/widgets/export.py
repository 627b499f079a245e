"""Exporting a comparison grid's view: a labelled PNG (the renderer of ``workbench grid``), logged to the
parent run of the runs it shows."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..config import workbench_home
from ..grids.render import render_grid, safe_name, save_grid, unreadable
from ..tracking.schema import PARENT_RUN_TAG, RunRecord
from ..tracking.store import Tracker
from .view import GridView

__all__ = ["export_view", "shared_parent_run"]


def shared_parent_run(tracker: Tracker, records: Sequence[RunRecord]) -> str | None:
    """The parent run (the ``workbench run``) that logged ``records``; the newest one when they came
    from several runs of the spec, None when none has a parent."""
    parents = sorted({r.tags[PARENT_RUN_TAG] for r in records if r.tags.get(PARENT_RUN_TAG)})
    if len(parents) <= 1:
        return parents[0] if parents else None
    # several sweeps filled this view: the newest of those parents (a later re-run that generated
    # nothing shown here is not among them)
    return max(parents, key=lambda run_id: tracker.run(run_id).start_time)


def export_view(view: GridView, tracker: Tracker, image_bytes: Callable[[str], bytes],
                records: Mapping[str, RunRecord], *, experiment: str, title: str, name: str,
                path: str | Path | None, log: bool) -> tuple[Path, str | None]:
    """Draw every page of ``view`` into one PNG at ``path`` (default: the experiment's grids folder)
    and log it to the shared parent run of the runs shown; returns (path, parent run id or None)."""
    from PIL import Image

    data = view.to_grid_data()
    data.title = data.title or title
    cells = {}
    for key, cell in data.cells.items():
        if cell.status == "FINISHED" and cell.run_id:
            try:
                with Image.open(io.BytesIO(image_bytes(cell.run_id))) as img:
                    img.load()
                    cell = dataclasses.replace(cell, image=img.copy())
            except Exception as exc:  # drawn as a labelled tile, like `workbench grid` does
                cell = dataclasses.replace(cell, status="missing", reason=unreadable(exc))
        cells[key] = cell
    data.cells = cells
    image = render_grid(data)
    if path is None:
        held = "-".join(f"{k}={v}" for k, v in sorted(data.fixed.items()))[:80]
        name += f"-{held}" if held else ""
        path = workbench_home() / "grids" / safe_name(experiment) / f"{safe_name(name)}.png"
    path = save_grid(image, Path(path))  # PNG by default; .jpg / .webp as the name says
    shown = [records[c.run_id] for c in data.cells.values() if c.run_id in records]
    parent = shared_parent_run(tracker, shown) if log else None
    if parent is not None:
        tracker.log_png(parent, image, f"grids/{path.stem}.png")  # the logged copy keeps the cell map
    return path, parent
