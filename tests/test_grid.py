"""Pivoting runs into grids: seeds and replicates, cells that cannot exist, held parameters, --where."""

from __future__ import annotations

import json
from typing import Any

import pytest
from PIL import Image

from workbench.errors import UserInputError
from workbench.grids.pivot import axis_value, pivot_records, resolve_where
from workbench.grids.render import grid_from_records, render_grid
from workbench.provenance.png import GRID_CHUNK
from workbench.tracking.schema import RunRecord


def record(run_id: str, status: str = "FINISHED", **params: Any) -> RunRecord:
    return RunRecord(run_id=run_id, status=status, run_key=run_id, params={k: str(v) for k, v in params.items()},
                     tags={}, metrics={}, artifact_uri="")


def mixed_backends() -> list[RunRecord]:
    """A backend sweep: diffusers honours seeds 1 and 2; OpenAI has none, so its two images are replicates."""
    runs = [record(f"d{s}", backend="diffusers", seed=s, replicate=s - 1, guidance=7.0) for s in (1, 2)]
    runs += [record(f"o{r}", backend="openai", seed="not controlled", replicate=r, guidance=7.0) for r in (0, 1)]
    return runs


def test_seedless_runs_are_labelled_replicates_and_the_grid_says_why() -> None:
    runs = mixed_backends()
    assert [axis_value(r, "seed") for r in runs] == ["seed 1", "seed 2", "replicate 1", "replicate 2"]
    data, _ = pivot_records(runs, "seed", "backend")
    assert data.row_levels == ["seed 1", "seed 2", "replicate 1", "replicate 2"]
    assert "seed not controlled by the backend: rows are independent replicates" in data.notes


def test_seed_rows_and_replicate_rows_that_cannot_meet_are_na_not_missing_runs() -> None:
    data, _ = pivot_records(mixed_backends(), "seed", "backend")
    assert data.cells[("seed 1", "diffusers")].run_id == "d1"
    assert data.cells[("replicate 2", "openai")].run_id == "o1"
    na = data.cells[("seed 1", "openai")]
    assert na.status == "n/a" and "no seeds" in na.reason
    assert data.cells[("replicate 1", "diffusers")].status == "n/a"
    # a cell that could exist but has no run is still "not run" (left out of the cells)
    partial = [r for r in mixed_backends() if r.run_id != "d2"]
    data, _ = pivot_records(partial, "seed", "backend")
    assert ("seed 2", "diffusers") not in data.cells


def test_with_neither_axis_on_the_seeds_the_first_seed_is_shown_and_named() -> None:
    runs = [record(f"{g}-{s}", seed=s, guidance=g, steps=4) for g in (3.0, 9.0) for s in (2, 1)]
    data, chosen = pivot_records(runs, "guidance", "steps")
    assert {r.run_id for r in chosen} == {"3.0-1", "9.0-1"} and data.fixed["seed"] == "1"


def test_resolve_where_matches_numbers_as_typed_and_refuses_what_no_run_has() -> None:
    runs = [record(f"r{g}", seed=1, guidance=g) for g in (2.0, 7.0, 12.0)]
    assert resolve_where(runs, {"guidance": "7"}) == {"guidance": "7.0"}
    with pytest.raises(UserInputError, match="its values are: 2.0, 7.0, 12.0"):
        resolve_where(runs, {"guidance": "99"})
    with pytest.raises(UserInputError, match="'cfg' is not a parameter"):
        resolve_where(runs, {"cfg": "7"})


def test_a_rendered_grid_carries_the_run_of_every_cell(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workbench.grids.render import save_png_atomic

    runs = mixed_backends() + [record("f1", status="FAILED", backend="replicate", seed=1, replicate=0, guidance=7.0)]
    image, data = grid_from_records(runs, "seed", "backend", load_image=lambda run_id: Image.new("RGB", (8, 8)),
                                    title="mixed")
    path = save_png_atomic(image, tmp_path / "grid.png")
    with Image.open(path) as saved:
        chunk = json.loads(saved.text[GRID_CHUNK])
    assert chunk["format"] == "workbench-grid/1" and (chunk["rows"], chunk["cols"]) == ("seed", "backend")
    by_run = {c["run_id"]: c for c in chunk["cells"] if c["run_id"]}
    assert set(by_run) == {"d1", "d2", "o0", "o1", "f1"} and by_run["f1"]["status"] == "FAILED"
    assert any(c["status"] == "n/a" for c in chunk["cells"])
    assert render_grid(data).info[GRID_CHUNK] == image.info[GRID_CHUNK]


def test_the_widget_view_shows_replicates_and_na_cells_the_same_way() -> None:
    from workbench.widgets.view import build_view, seed_levels

    runs = mixed_backends()
    assert seed_levels(runs) == ["seed 1", "seed 2", "replicate 1", "replicate 2"]
    view = build_view(runs, rows="seed", cols="backend")
    assert view.cells[("seed 2", "diffusers", "")].run_id == "d2"
    assert view.cells[("replicate 1", "diffusers", "")].status == "n/a"
    assert any("independent replicates" in note for note in view.notes)
