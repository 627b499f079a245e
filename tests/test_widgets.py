"""Notebook widgets without a browser: real MLflow stores, real runs, widget trees inspected directly.

ipywidgets work without a kernel (``Button.click()`` and ``observe`` fire on a dummy comm), so the
grid's choices, laziness, detail panel, export and the template explorer are all exercised here;
tests/test_notebooks.py runs them in a kernel and tests/test_browser.py in a real browser.
"""

from __future__ import annotations

import io
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as w
import pytest
from PIL import Image

from workbench.backends import registry
from workbench.backends.base import Backend, Capabilities
from workbench.backends.fake import fake_image
from workbench.errors import UserInputError
from workbench.experiment import parse_spec
from workbench.grid import GridCell
from workbench.runner import run_experiment
from workbench.templates import TemplateLibrary
from workbench.tracking import Tracker
from workbench.types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult, RunRecord
from workbench.widgets import ComparisonGrid, TemplateExplorer, build_view
from workbench.widgets.detail import highlight_prompts, mlflow_link, reproduce_function
from workbench.widgets.thumbnails import ThumbnailCache, to_thumbnail
from workbench.widgets.tiles import status_tile_html, tile_widget
from workbench.widgets.view import PAGED, SIDE_BY_SIDE


class MixedBackend(Backend):
    """Blocks prompts with "blue", fails guidance 9, rewrites prompts with "rewrite", draws the rest."""

    name = "mixed"

    def capabilities(self, model: str) -> Capabilities:
        return Capabilities(seeds=True, max_batch=8, revised_prompt=True)

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out: list[GenerationResult] = []
        for r in batch:
            if "blue" in r.prompt:
                out.append(GenerationFailure(r, "moderation_blocked: the prompt was refused", status="BLOCKED"))
            elif r.guidance == 9:
                out.append(GenerationFailure(r, "TransientBackendError: 503 after 4 attempts"))
            else:
                revised = "A detailed oil painting of a red circle at dawn." if "rewrite" in r.prompt else None
                out.append(GeneratedImage(request=r, image=fake_image(r), revised_prompt=revised, latency_s=0.01))
        return out


@pytest.fixture
def mixed():  # type: ignore[no-untyped-def]
    backend = MixedBackend()
    registry.register_backend("mixed", MixedBackend)
    registry._instances["mixed"] = backend
    yield backend
    registry._registered.pop("mixed", None)
    registry._instances.pop("mixed", None)


def spec(**changes):  # type: ignore[no-untyped-def]
    data = {"name": "shapes", "prompt": "a {{ colour }} circle, 35mm lens, {{ extra }}",
            "variables": {"colour": "red", "extra": "rewrite"}, "backend": "mixed", "model": "m",
            "params": {"width": 32, "height": 32, "steps": 4, "guidance": 5}, "seeds": [1, 2],
            "vary": {"guidance": [2, 9], "var.colour": ["blue", "green"]}}
    data.update(changes)
    return parse_spec(data)


@pytest.fixture
def shapes(tracking_uri: str, mixed, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    summary = run_experiment(spec(), tracking_uri=tracking_uri, progress=False, grids_dir=tmp_path / "grids")
    assert (summary.finished, summary.failed, summary.blocked) == (6, 2, 2)
    return tracking_uri


def images_in(widget: w.Widget) -> list[w.Image]:
    found = [widget] if isinstance(widget, w.Image) else []
    for child in getattr(widget, "children", ()):
        found += images_in(child)
    return found


def html_in(widget: w.Widget) -> str:
    text = widget.value if isinstance(widget, w.HTML) else ""
    return text + "".join(html_in(c) for c in getattr(widget, "children", ()))


def test_grid_shows_levels_images_and_status_tiles(shapes: str) -> None:
    grid = ComparisonGrid("shapes", shapes, cols="guidance")
    data = grid.data
    assert (data.rows, data.cols) == ("seed", "guidance")
    assert data.row_levels == ["seed 1", "seed 2"] and data.col_levels == ["2.0", "5.0", "9.0"]
    assert data.base_col == "5.0" and data.fixed == {"var.colour": "red"}
    assert grid.visible_cells == [(s, g, "") for s in ("seed 1", "seed 2") for g in ("2.0", "5.0", "9.0")]
    failed = grid.view.cell("seed 1", "9.0")
    assert failed.status == "FAILED" and "503" in failed.reason
    # finished cells are thumbnails; the failed column is labelled status tiles, never an image
    assert len(images_in(grid.grid_box)) == 4
    assert grid.thumbnail_loads == 4
    tile = grid.tiles[("seed 2", "9.0", "")]
    assert not images_in(tile) and "FAILED" in html_in(tile) and "503 after 4 attempts" in html_in(tile)
    assert isinstance(tile.children[1], w.Button)  # failed runs still open their details
    assert "(base)" in html_in(grid.grid_box) and "seed 2" in html_in(grid.grid_box)
    assert "6 finished" in grid.title.value and "2 blocked" in grid.title.value and "2 failed" in grid.title.value
    # BLOCKED is its own outcome
    grid.set_axes(cols="var.colour")
    assert grid.data.col_levels == ["red", "blue", "green"]
    assert grid.view.cell("seed 1", "blue").status == "BLOCKED"
    assert "BLOCKED" in html_in(grid.tiles[("seed 1", "blue", "")])


def test_axis_and_filter_controls_drive_the_view(shapes: str) -> None:
    grid = ComparisonGrid("shapes", shapes)
    assert grid.rows_control.options == ("seed", "guidance", "var.colour")
    assert list(grid.filter_controls) == ["var.colour"]
    grid.rows_control.value = "var.colour"  # rows: colour; columns stay guidance, seeds side by side
    assert (grid.rows, grid.cols) == ("var.colour", "guidance")
    assert grid.view.seeds == ["seed 1", "seed 2"] and grid.view.tiles_per_row == 6
    assert grid.data.col_levels[:2] == ["2.0 · seed 1", "2.0 · seed 2"]
    # one factor at a time: colour × guidance only crosses at the base
    assert grid.view.cell("green", "2.0", "seed 1").status == "missing"
    assert grid.view.cell("green", "5.0", "seed 2").status == "FINISHED"
    assert "not run" in html_in(grid.tiles[("green", "2.0", "seed 1")])
    grid.cols_control.value = "var.colour"  # the rows' factor: the axes swap
    assert (grid.rows, grid.cols) == ("guidance", "var.colour")
    assert grid.rows_control.value == "guidance"
    grid.seed_mode_control.value = PAGED
    assert grid.view.seeds == ["seed 1"] and grid.seed_control.options == ("seed 1", "seed 2")
    grid.seed_control.value = "seed 2"
    assert grid.view.seeds == ["seed 2"] and grid.data.fixed["seed"] == "2"
    grid.set_axes(rows="seed", cols="guidance")
    grid.filter_controls["var.colour"].value = "green"
    assert grid.data.fixed == {"var.colour": "green"}
    assert [grid.view.cell("seed 1", g).status for g in grid.data.col_levels] == ["missing", "FINISHED", "missing"]
    with pytest.raises(UserInputError, match="does not vary"):
        ComparisonGrid("shapes", shapes, cols="nonsense")
    with pytest.raises(UserInputError, match="no experiment 'nope'.*shapes"):
        ComparisonGrid("nope", shapes)


def test_detail_panel_shows_everything_about_a_run(shapes: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "workbench.reproduce", None)  # no reproduce module: no button
    grid = ComparisonGrid("shapes", shapes, cols="guidance")
    grid.tiles[("seed 1", "5.0", "")].children[1].click()  # what a click in the notebook does
    detail = grid.detail
    assert detail is not None and detail.record.params["guidance"] == "5.0"
    assert detail.revised_prompt == "A detailed oil painting of a red circle at dawn."
    panel = grid.detail_box.children[0]
    text = html_in(panel)
    for expected in ("<th>guidance</th><td>5.0</td>", "<th>colour</th><td>red</td>", "latency_s",
                     "a literal prompt", "requested", "revised", "drift", "workbench ui --tracking-uri"):
        assert expected in text, expected
    assert '<mark class="wb-dropped">35mm lens</mark>' in text and '<mark class="wb-added">detailed</mark>' in text
    assert len(images_in(panel)) == 1
    assert not [b for b in _buttons(panel) if b.description == "Reproduce"]
    next(b for b in _buttons(panel) if b.description == "close").click()
    assert grid.detail is None and grid.detail_box.children == ()
    grid.tiles[("seed 1", "9.0", "")].children[1].click()
    assert grid.detail.record.outcome == "FAILED"
    assert "TransientBackendError: 503" in html_in(grid.detail_box) and not images_in(grid.detail_box)


def _buttons(widget: w.Widget) -> list[w.Button]:
    found = [widget] if isinstance(widget, w.Button) else []
    for child in getattr(widget, "children", ()):
        found += _buttons(child)
    return found


def test_reproduce_button_only_when_reproduce_exists(shapes: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    module = types.ModuleType("workbench.reproduce")

    def reproduce(run_id: str, tracking_uri: str | None = None) -> str:
        calls.append((run_id, tracking_uri))
        return "bit-exact: yes"

    module.reproduce = reproduce  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "workbench.reproduce", module)
    assert reproduce_function() is reproduce
    grid = ComparisonGrid("shapes", shapes, cols="guidance")
    run_id = grid.view.cell("seed 2", "2.0").run_id
    grid.open_detail(run_id)
    button = next(b for b in _buttons(grid.detail_box) if b.description == "Reproduce")
    button.click()
    assert calls == [(run_id, grid.tracking_uri)] and "bit-exact: yes" in html_in(grid.detail_box)
    module.reproduce = lambda run_id: None  # type: ignore[attr-defined]  # no tracking_uri: not the contract
    assert reproduce_function() is None
    module.reproduce = "not callable"  # type: ignore[attr-defined]
    assert reproduce_function() is None


def test_mlflow_link_and_prompt_highlighting() -> None:
    url, how = mlflow_link("http://127.0.0.1:5000/", "3", "abc")
    assert url == "http://127.0.0.1:5000/#/experiments/3/runs/abc" and how == f"open {url}"
    url, how = mlflow_link("sqlite:////tmp/x/mlflow.db", "3", "abc")
    assert url is None and "workbench ui --tracking-uri sqlite:////tmp/x/mlflow.db" in how and "#/experiments/3" in how
    requested, revised, diff = highlight_prompts("a <red> fox, Oil Painting, 35mm lens", "an oil painting of a fox")
    assert diff.dropped == ("red", "35mm lens")
    assert "&lt;<mark class=\"wb-dropped\">red</mark>&gt;" in requested and "Oil Painting" in requested
    assert "<mark" not in revised
    assert highlight_prompts("a cat", None)[1] == ""


def test_export_saves_the_view_and_logs_it_to_the_parent_run(shapes: str, tmp_path: Path) -> None:
    grid = ComparisonGrid("shapes", shapes, rows="var.colour", cols="guidance", seeds=PAGED)
    path = grid.export(tmp_path / "view.png")
    with Image.open(path) as image:
        assert image.width > 3 * 160 and image.height > 3 * 160
    tracker = Tracker(shapes)
    parent = grid.last_export[1]
    assert parent is not None and tracker.client.get_run(parent).data.tags["workbench.kind"] == "parent"
    assert [a.path for a in tracker.client.list_artifacts(parent, "grids")][-1] == "grids/view.png"
    grid.export_button.click()  # the button: default path in the workbench home, logged too
    assert "saved" in grid.export_status.value and parent in grid.export_status.value
    assert any(a.path.startswith("grids/notebook-guidance-x-var.colour") for a in
               tracker.client.list_artifacts(parent, "grids"))


class MemoryTracker:
    """The parts of ``Tracker`` the grid reads, over runs held in memory (for scale, not for MLflow)."""

    uri = display_uri = "memory://"

    def __init__(self, records: list[RunRecord]) -> None:
        self._records = records
        self.fetched: list[str] = []
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (30, 90, 200)).save(buffer, format="PNG")
        self.png = buffer.getvalue()

    def experiment_id(self, name: str, create: bool = False) -> str:
        return "1"

    def records(self, experiment: str) -> list[RunRecord]:
        return list(self._records)

    def load_bytes(self, run_id: str, artifact: str) -> bytes:
        self.fetched.append(run_id)
        return self.png


def test_hundreds_of_runs_load_lazily_page_by_page() -> None:
    records = [RunRecord(f"run-{g}-{s}", "FINISHED", f"key-{g}-{s}", {"guidance": str(g), "seed": str(s),
                                                                      "steps": "4", "model": "m"}, {}, {}, "")
               for g in range(1, 21) for s in range(1, 26)]  # 500 runs: 20 levels × 25 seeds
    tracker = MemoryTracker(records)
    started = time.perf_counter()
    grid = ComparisonGrid("big", tracker=tracker, cols="guidance", page_size=48)  # type: ignore[arg-type]
    assert time.perf_counter() - started < 10
    assert len(grid.records) == 500 and len(grid.data.row_levels) == 25 and len(grid.data.col_levels) == 20
    assert (grid.rows_per_page, grid.pages) == (2, 13)
    assert grid.thumbnail_loads == 40 and len(images_in(grid.grid_box)) == 40
    assert sorted(tracker.fetched) == sorted(grid.visible_run_ids)  # only what is on screen
    grid.next_button.click()
    assert grid.page == 1 and grid.visible_rows == ["seed 3", "seed 4"] and grid.thumbnail_loads == 80
    grid.prev_button.click()
    assert grid.page == 0 and grid.thumbnail_loads == 80  # cached
    assert grid.prev_button.disabled and not grid.next_button.disabled
    grid.go_to_page(99)
    assert grid.page == 12 and grid.next_button.disabled and "page 13 of 13" in grid.page_label.value
    assert grid.visible_rows == ["seed 25"] and grid.thumbnail_loads == 100
    grid.set_axes(rows="guidance", cols="seed")  # 20 rows of 25: one row per page (page_size 48)
    assert grid.pages == 20 and grid.page == 0 and grid.thumbnail_loads == 100 + 20  # seeds 1-4 and 25 were cached


def test_an_unreadable_image_is_a_labelled_tile_not_a_broken_page(tmp_path: Path) -> None:
    records = [RunRecord(f"run-{g}", "FINISHED", f"key-{g}", {"guidance": g, "seed": "1"}, {}, {}, "")
               for g in ("3", "7")]
    tracker = MemoryTracker(records)
    fetch = tracker.load_bytes

    def load_bytes(run_id: str, artifact: str) -> bytes:
        if run_id == "run-7":
            raise FileNotFoundError(f"{run_id}/{artifact}")  # the artifact was deleted from the store
        return fetch(run_id, artifact)

    tracker.load_bytes = load_bytes  # type: ignore[method-assign]
    grid = ComparisonGrid("gone", tracker=tracker, cols="guidance")  # type: ignore[arg-type]
    assert len(images_in(grid.grid_box)) == 1
    assert "no image" in html_in(grid.tiles[("seed 1", "7", "")]) and "FileNotFoundError" in html_in(grid.grid_box)
    path = grid.export(tmp_path / "gone.png", log=False)
    assert path.is_file() and grid.last_export == (path, None)


def test_view_follows_linked_parameters_and_keeps_unreached_levels() -> None:
    def record(run_id: str, template: str, negative: str, guidance: str, seed: str) -> RunRecord:
        return RunRecord(run_id, "FINISHED", run_id, {"template": template, "negative_prompt": negative,
                                                      "guidance": guidance, "seed": seed}, {}, {}, "")
    runs = [record(f"{t}{g}{s}", t, f"no {t}", g, s) for t, g in (("a", "7"), ("b", "7"), ("a", "3"))
            for s in ("1", "2")]
    view = build_view(runs, rows="seed", cols="template")
    # the negative prompt changes with the template: it is not held at one value (which would hide "b")
    assert view.linked == {"negative_prompt": "template"} and view.fixed == {"guidance": "7"}
    assert view.cell("seed 2", "b").run_id == "b72"
    held = build_view(runs, rows="seed", cols="template", where={"guidance": "3"})
    assert held.cell("seed 1", "a").run_id == "a31" and held.cell("seed 1", "b").status == "missing"
    side = build_view(runs, rows="guidance", cols="template", seed_mode=SIDE_BY_SIDE)
    assert side.seeds == ["seed 1", "seed 2"] and side.to_grid_data().col_levels[0] == "a · seed 1"
    with pytest.raises(UserInputError, match="matches no run"):
        build_view(runs, rows="seed", cols="template", where={"guidance": "12"})


def test_tiles_and_thumbnails_are_plain_functions() -> None:
    big = Image.new("RGB", (640, 320), (200, 10, 10))
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    thumb = to_thumbnail(buffer.getvalue(), 128)
    assert Image.open(io.BytesIO(thumb)).size == (128, 64)
    fetched = []
    cache = ThumbnailCache(lambda run_id: fetched.append(run_id) or buffer.getvalue(), size=64)
    cache.thumbnail("r1"), cache.thumbnail("r1"), cache.image("r1")
    assert fetched == ["r1"] and cache.loads == 1 and "r1" in cache
    assert "not run" in status_tile_html("missing", "not run", 100)
    assert "BLOCKED" in status_tile_html("BLOCKED", "<nsfw>", 100) and "&lt;nsfw&gt;" in status_tile_html(
        "BLOCKED", "<nsfw>", 100)
    selected = []
    tile = tile_widget(GridCell(status="FINISHED", run_id="r1", reason="truncated_prompt"), "7.0", thumb, size=96,
                       on_select=selected.append)
    tile.children[1].click()
    assert selected == ["r1"] and "truncated_prompt" in html_in(tile)


@pytest.fixture
def library(tmp_path: Path) -> TemplateLibrary:
    (tmp_path / "badge.j2").write_text(
        "---\ndescription: A badge.\nvariables:\n  subject: {description: What is on it.}\n"
        "  style: {description: Look., default: flat, allowed: [flat, embossed]}\n"
        "  count: {description: How many stars., default: 3}\n"
        "negative_prompt: 'blurry {{ style }}'\ndefaults: {steps: 6}\n---\n"
        "a {{ style }} badge of {{ subject }} with {{ count }} stars\n")
    return TemplateLibrary([tmp_path])


def test_template_explorer_renders_live_and_shows_errors_inline(library: TemplateLibrary) -> None:
    explorer = TemplateExplorer(library)
    controls = explorer.variable_controls
    assert isinstance(controls["style"], w.Dropdown) and controls["style"].options == ("flat", "embossed")
    assert isinstance(controls["count"], w.IntText) and isinstance(controls["subject"], w.Text)
    assert explorer.rendered is None and "required variable 'subject'" in explorer.error  # no default: inline
    assert "required variable &#x27;subject&#x27;" in explorer.error_view.value
    controls["subject"].value = "a fox"
    assert explorer.error is None and explorer.rendered.prompt == "a flat badge of a fox with 3 stars"
    controls["style"].value = "embossed"
    controls["count"].value = 5
    assert "an embossed" not in explorer.prompt_view.value and "embossed badge of a fox with 5 stars" in \
        explorer.prompt_view.value
    assert explorer.rendered.negative_prompt == "blurry embossed" and explorer.error_view.value == ""
    assert explorer.steps_control.value == 6 and explorer.name_control.value == "badge-explorer"
    with pytest.raises(Exception, match="no variable 'colour'"):
        explorer.set_variable("colour", "red")
    real = TemplateExplorer(template="photoreal")
    real.set_variable("lighting", "neon night")
    assert "neon" in real.rendered.prompt and real.rendered.template == "photoreal"


def test_template_explorer_launches_an_experiment_and_shows_its_grid(
        library: TemplateLibrary, tracking_uri: str, fake_backend) -> None:  # type: ignore[no-untyped-def]
    explorer = TemplateExplorer(library, tracking_uri=tracking_uri, backend="fake", model="m", size=32)
    explorer.set_variable("subject", "a fox")
    explorer.vary_control.value = "var.style"
    assert explorer.levels_control.value == "embossed"  # the allowed values other than the current one
    data = explorer.spec_data()
    assert data["vary"] == {"var.style": ["embossed"]} and data["seeds"] == [1, 2]
    assert data["params"] == {"width": 32, "height": 32, "steps": 6}
    explorer.run_button.click()
    assert "4 generated" in explorer.run_status.value, explorer.run_status.value
    assert explorer.summary.finished == 4 and explorer.grid.experiment == "badge-explorer"
    assert explorer.grid.data.col_levels == ["flat", "embossed"]
    assert explorer.result_box.children == (explorer.grid.widget,)
    assert len(images_in(explorer.result_box)) == 4
    explorer.seeds_control.value = "1, 1"  # invalid spec: the error is shown, not raised
    explorer.run_button.click()
    assert "SpecError" in explorer.run_status.value and "appears twice" in explorer.run_status.value


def test_reproduce_button_runs_the_real_reproduction(shapes: str) -> None:
    if reproduce_function() is None:
        pytest.skip("workbench.reproduce does not provide reproduce(run_id, tracking_uri=...) in this checkout")
    grid = ComparisonGrid("shapes", shapes, cols="guidance")
    grid.open_detail(grid.view.cell("seed 1", "2.0").run_id)
    button = next(b for b in _buttons(grid.detail_box) if b.description == "Reproduce")
    button.click()
    result = html_in(grid.detail_box)
    assert "<pre>" in result and "color:#b00" not in result, result[-2000:]
    assert not button.disabled
