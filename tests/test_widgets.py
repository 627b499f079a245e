"""Notebook widgets without a browser: real MLflow stores, real runs, widget trees inspected directly.

ipywidgets work without a kernel (``Button.click()`` and ``observe`` fire on a dummy comm), so the
grid's choices, laziness, detail panel, export and the template explorer are all exercised here;
tests/test_notebooks.py runs them in a kernel and tests/test_browser.py in a real browser.
"""

from __future__ import annotations

import html
import io
import shutil
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import ipywidgets as w
import pytest
from PIL import Image, ImageChops

from workbench.backends import registry
from workbench.backends.base import Backend, Capabilities
from workbench.backends.fake import fake_image
from workbench.errors import UserInputError
from workbench.experiments.spec import parse_spec
from workbench.grids.pivot import GridCell
from workbench.grids.render import grid_from_records
from workbench.prompts.templates import TemplateLibrary
from workbench.run.runner import run_experiment
from workbench.tracking.schema import RunRecord
from workbench.tracking.store import Tracker
from workbench.types import GeneratedImage, GenerationFailure, GenerationRequest, GenerationResult
from workbench.widgets import ComparisonGrid, TemplateExplorer, build_view
from workbench.widgets.detail import highlight_prompts, mlflow_link
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


def test_detail_panel_shows_everything_about_a_run(shapes: str) -> None:
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
    assert not next(b for b in _buttons(panel) if b.description == "Reproduce").disabled
    next(b for b in _buttons(panel) if b.description == "close").click()
    assert grid.detail is None and grid.detail_box.children == ()
    grid.tiles[("seed 1", "9.0", "")].children[1].click()
    assert grid.detail.record.outcome == "FAILED"
    assert "TransientBackendError: 503" in html_in(grid.detail_box) and not images_in(grid.detail_box)
    reproduce = next(b for b in _buttons(grid.detail_box) if b.description == "Reproduce")
    assert reproduce.disabled and "only runs that produced an image" in reproduce.tooltip  # nothing to compare


def photo_spec(**changes):  # type: ignore[no-untyped-def]
    data = {"name": "photo", "template": "photoreal", "backend": "fake", "model": "m",
            "variables": {"subject": "a lighthouse on a cliff", "lighting": "overcast", "lens": "35mm"},
            "params": {"width": 32, "height": 32, "steps": 4}, "seeds": [1, 2], "vary": {"var.lighting": ["neon night"]}}
    data.update(changes)
    return parse_spec(data)


def test_detail_panel_shows_the_template_its_version_and_variables(
        tracking_uri: str, fake_backend, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    summary = run_experiment(photo_spec(), tracking_uri=tracking_uri, progress=False, make_grids=False)
    assert summary.finished == 4
    grid = ComparisonGrid("photo", tracking_uri, cols="var.lighting")
    grid.tiles[("seed 2", "neon night", "")].children[1].click()
    rendered = TemplateLibrary().render("photoreal", {"subject": "a lighthouse on a cliff", "lens": "35mm",
                                                      "lighting": "neon night"})
    text = html_in(grid.detail_box)
    assert f"<p><b>photoreal</b> (version <code>{rendered.version}</code>)</p>" in text
    assert "a literal prompt" not in text
    template_section = text[text.index("<h4>Template</h4>"):text.index("<h4>Parameters</h4>")]
    for name, value in (("subject", "a lighthouse on a cliff"), ("lighting", "neon night"), ("lens", "35mm")):
        assert f"<th>{name}</th><td>{value}</td>" in template_section, (name, template_section)
    assert html.escape(rendered.prompt) in text and html.escape(rendered.negative_prompt) in text


def _buttons(widget: w.Widget) -> list[w.Button]:
    found = [widget] if isinstance(widget, w.Button) else []
    for child in getattr(widget, "children", ()):
        found += _buttons(child)
    return found


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
    tracker = Tracker(shapes)
    # the renderer of `workbench grid` and `workbench run`, on the same runs: seed 1, guidance × colour
    expected, data = grid_from_records(tracker.records("shapes"), "var.colour", "guidance",
                                       load_image=tracker.load_image, where={"seed": "1"},
                                       title="shapes: guidance x var.colour", base={"guidance": "5.0"})
    assert data.row_levels == ["red", "blue", "green"] and data.col_levels == ["2.0", "5.0", "9.0"]
    assert data.cells[("blue", "5.0")].status == "BLOCKED" and data.cells[("red", "9.0")].status == "FAILED"
    with Image.open(path) as image:
        assert image.size == expected.size
        assert ImageChops.difference(image.convert("RGB"), expected.convert("RGB")).getbbox() is None
    parent = grid.last_export[1]
    assert parent is not None and tracker.client.get_run(parent).data.tags["workbench.kind"] == "parent"
    assert [a.path for a in tracker.client.list_artifacts(parent, "grids")][-1] == "grids/view.png"
    grid.export_button.click()  # the button: default path in the workbench home, logged too
    assert "saved" in grid.export_status.value and parent in grid.export_status.value
    assert any(a.path.startswith("grids/notebook-guidance-x-var.colour") for a in
               tracker.client.list_artifacts(parent, "grids"))


def test_export_logs_to_the_parent_run_of_the_runs_shown(tracking_uri: str, fake_backend,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path) -> None:
    first = run_experiment(photo_spec(), tracking_uri=tracking_uri, progress=False, make_grids=False)
    again = run_experiment(photo_spec(), tracking_uri=tracking_uri, progress=False, make_grids=False)
    assert (first.finished, again.finished, again.skipped) == (4, 0, 4)  # the re-run generated nothing
    assert again.parent_run_id is None  # ...so it left no parent run: the export goes to the first one
    tracker = Tracker(tracking_uri)

    def grids_of(parent: str) -> list[str]:
        return [a.path for a in tracker.client.list_artifacts(parent, "grids")]

    grid = ComparisonGrid("photo", tracking_uri, cols="var.lighting")
    grid.export(tmp_path / "photo.png")
    assert grid.last_export[1] == first.parent_run_id
    assert "grids/photo.png" in grids_of(first.parent_run_id)
    # a third run adds seed 3: the view now holds runs of two parents, and the newer one gets the export
    third = run_experiment(photo_spec(seeds=[1, 2, 3]), tracking_uri=tracking_uri, progress=False,
                           make_grids=False)
    assert third.finished == 2
    grid.refresh()
    grid.export(tmp_path / "three-seeds.png")
    assert grid.last_export[1] == third.parent_run_id
    assert grids_of(third.parent_run_id) == ["grids/three-seeds.png"]
    assert grids_of(first.parent_run_id) == ["grids/photo.png"]


class CountingTracker(Tracker):
    """The real tracker, counting the images the grid fetches (laziness is what the paging tests check)."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.fetched: list[str] = []

    def load_bytes(self, run_id: str, artifact: str) -> bytes:
        self.fetched.append(run_id)
        return super().load_bytes(run_id, artifact)


def log_images(tracker: Tracker, experiment: str, requests: list[GenerationRequest]) -> list[str]:
    """Log one finished image run per request through the real logging path; returns their run ids."""
    exp_id = tracker.experiment_id(experiment)
    assert exp_id is not None
    return [tracker.log_image_run(exp_id, None, GeneratedImage(request=r, image=fake_image(r), latency_s=0.01))
            for r in requests]


def request(**fields: object) -> GenerationRequest:
    return GenerationRequest(**{"backend": "fake", "model": "m", "prompt": "a red circle", "width": 16,
                                "height": 16, "steps": 4, **fields})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def many_runs(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> str:
    """A real SQLite store with hundreds of image runs: "big" (20 guidance × 25 seeds) and "wide"
    (2 steps × 7 guidance × 25 seeds), logged once for the module's paging tests."""
    target = tmp_path_factory.mktemp("many-runs") / "mlflow.db"
    shutil.copy(migrated_db, target)
    uri = f"sqlite:///{target}"
    tracker = Tracker(uri)
    log_images(tracker, "big", [request(guidance=g, seed=s) for g in range(1, 21) for s in range(1, 26)])
    log_images(tracker, "wide", [request(steps=st, guidance=g, seed=s)
                                 for st in (10, 20) for g in range(1, 8) for s in range(1, 26)])
    return uri


def test_hundreds_of_runs_load_lazily_page_by_page(many_runs: str) -> None:
    tracker = CountingTracker(many_runs)  # 500 runs: 20 levels × 25 seeds
    grid = ComparisonGrid("big", tracker=tracker, cols="guidance", page_size=48)
    assert len(grid.records) == 500 and len(grid.data.row_levels) == 25 and len(grid.data.col_levels) == 20
    assert (grid.rows_per_page, grid.pages) == (2, 13)
    assert grid.thumbnail_loads == 40 and len(images_in(grid.grid_box)) == 40
    assert sorted(tracker.fetched) == sorted(grid.visible_run_ids)  # only what is on screen
    grid.next_button.click()
    assert grid.page == 1 and grid.visible_rows == ["seed 3", "seed 4"] and grid.thumbnail_loads == 80
    grid.prev_button.click()
    assert grid.page == 0 and grid.thumbnail_loads == 80 and len(tracker.fetched) == 80  # cached
    assert grid.prev_button.disabled and not grid.next_button.disabled
    grid.go_to_page(99)
    assert grid.page == 12 and grid.next_button.disabled and "page 13 of 13" in grid.page_label.value
    assert grid.visible_rows == ["seed 25"] and grid.thumbnail_loads == 100
    grid.set_axes(rows="guidance", cols="seed")  # 20 rows of 25: one row per page (page_size 48)
    assert grid.pages == 20 and grid.page == 0 and grid.thumbnail_loads == 100 + 20  # seeds 1-4 and 25 were cached
    assert len(tracker.fetched) == len(set(tracker.fetched)) == 120  # no image read twice


def test_a_wide_row_is_paged_by_columns_too(many_runs: str) -> None:
    # 350 runs: 2 steps × 7 guidance × 25 seeds side by side: one row alone holds 175 tiles
    tracker = CountingTracker(many_runs)
    grid = ComparisonGrid("wide", tracker=tracker, rows="steps", cols="guidance", page_size=48)
    records = grid.records
    assert len(records) == 350 and grid.view.tiles_per_row == 175
    # a guidance level's 25 seeds stay together: one level of one row per page
    assert (grid.rows_per_page, grid.columns_per_page, grid.pages) == (1, 25, 14)
    first = grid.visible_columns[0][0]
    assert grid.visible_rows == ["10"] and grid.visible_columns == [(first, f"seed {s}") for s in range(1, 26)]
    assert "columns 1–25 of 175" in grid.page_label.value and "more than page_size 48" in grid.summary.value
    fetches, shown = [len(tracker.fetched)], set(grid.visible_run_ids)
    while not grid.next_button.disabled:
        before = len(tracker.fetched)
        grid.next_button.click()
        fetches.append(len(tracker.fetched) - before)
        assert len(images_in(grid.grid_box)) == len(grid.visible_cells) == fetches[-1]
        shown |= set(grid.visible_run_ids)
    assert fetches == [25] * 14  # never more than page_size images fetched for one page
    assert shown == {r.run_id for r in records} and sorted(tracker.fetched) == sorted(shown)  # each once
    assert grid.visible_rows == ["20"] and grid.visible_columns[0][1] == "seed 1"
    # fewer tiles per page than seeds: a level is split over pages, its label spans the seeds shown
    small = ComparisonGrid("wide", tracker=tracker, rows="steps", cols="guidance", page_size=10)
    assert (small.rows_per_page, small.columns_per_page, small.pages) == (1, 10, 36)
    small.go_to_page(2)  # seeds 21-25 of guidance 1, then seeds 1-5 of guidance 2
    levels = [c for c, _ in small.visible_columns]
    assert levels[:5] == [first] * 5 and len(set(levels[5:])) == 1 and levels[5] != first
    labels = [c for c in small.grid_box.children[0].children if "wb-col-label" in c._dom_classes]
    shown = [(c.value.split(" <span")[0], c.layout.grid_area) for c in labels]  # (a "(base)" mark may follow)
    assert shown == [(first, "auto / span 5"), (levels[5], "auto / span 5")]
    assert len(images_in(small.grid_box)) == 10
    # a row that fits: whole rows, as many as fit
    view = build_view(records, rows="steps", cols="guidance", seed_mode=PAGED)
    assert view.page_shape(48) == (6, 7) and view.page_shape(5) == (1, 5)


def test_an_unreadable_image_is_a_labelled_tile_not_a_broken_page(tracking_uri: str, tmp_path: Path) -> None:
    tracker = Tracker(tracking_uri)
    kept, gone = log_images(tracker, "gone", [request(guidance=g, seed=1) for g in (3, 7)])
    # the artifact is deleted from the store behind MLflow's back (a cleaned-up disk, a lost bucket object)
    artifact_dir = Path(urlparse(tracker.run(gone).artifact_uri).path)
    (artifact_dir / "image.png").unlink()
    grid = ComparisonGrid("gone", tracker=tracker, cols="guidance")
    assert len(images_in(grid.grid_box)) == 1 and kept in grid.visible_run_ids
    tile = next(t for key, t in grid.tiles.items() if key[1].startswith("7"))
    assert "no image" in html_in(tile)
    assert "FileNotFoundError: image.png is missing from the artifact store (deleted" in html_in(tile)
    path = grid.export(tmp_path / "gone.png", log=False)
    assert path.is_file() and grid.last_export == (path, None)
    assert Image.open(path).size[0] > 0


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


def test_reproduce_button_regenerates_a_batched_image_bit_exact(tracking_uri: str, embedded_model: Path) -> None:
    data = {"name": "batched", "prompt": "a red lighthouse, at dusk", "backend": "diffusers",
            "model": "embedded:tiny-sd", "params": {"width": 64, "height": 64, "steps": 4, "guidance": 7.5},
            "seeds": [1, 2, 3]}
    summary = run_experiment(parse_spec(data), tracking_uri=tracking_uri, progress=False, make_grids=False,
                             max_batch=3)  # one backend call of 3, as in the quick start
    assert summary.finished == 3
    grid = ComparisonGrid("batched", tracking_uri)
    run_id = grid.view.cell("seed 2", "embedded:tiny-sd").run_id
    grid.open_detail(run_id)
    assert grid.detail.record.metrics["batch_size"] == 3
    whole_batch = next(c for c in _all(grid.detail_box) if isinstance(c, w.Checkbox))
    assert whole_batch.value and whole_batch.description == "whole batch (3)"  # ticked for a batched run
    button = next(b for b in _buttons(grid.detail_box) if b.description == "Reproduce")
    button.click()
    text = html_in(grid.detail_box)
    assert "color:#b00" not in text, text[-2000:]
    verdict = text[text.index("<p class='wb-verdict'>"):]
    assert verdict.startswith("<p class='wb-verdict'>verdict: <b style='color:#060'>bit-exact</b>"), verdict[:300]
    assert "regenerated with its whole batch (image 2 of 3)" in text
    client = Tracker(tracking_uri).client
    logged = client.search_runs([grid.detail.experiment_id], "tags.`workbench.kind` = 'reproduction'")
    assert len(logged) == 1 and logged[0].data.tags["workbench.reproduces"] == run_id
    assert logged[0].data.tags["workbench.reproduction.verdict"] == "bit-exact"
    assert f"logged as run <code>{logged[0].info.run_id}</code>" in text and not button.disabled
    grid.refresh()  # the reproduction is a run of the experiment, but not a cell of the grid
    assert len(grid.records) == 3


def _all(widget: w.Widget) -> list[w.Widget]:
    return [widget] + [d for c in getattr(widget, "children", ()) for d in _all(c)]
