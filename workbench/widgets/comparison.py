"""``ComparisonGrid``: an interactive comparison grid over the runs of an experiment, read from MLflow.

Nothing is regenerated: the runs, their parameters and their PNGs come from the tracking store.
Choose the row and column factors, hold the other factors at a level, page through the grid (never
more than ``page_size`` tiles on a page), click a cell for the run's details, export the view as a
labelled PNG (the renderer of ``workbench grid``) logged to the parent run of the runs shown. Under each
image a 1–5 rating and a "best of row" pick are written to MLflow at once (``rating``); a second tab holds
the effects report of the runs read (``report_tab``).

Widget trees are built by plain functions (``tiles.tile_widget``, ``tiles.grid_widget``), so everything
here works and is tested without a browser; the state lives in plain attributes (``view``, ``data``,
``visible_cells``, ``thumbnail_loads``...).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..errors import UserInputError
from ..grids.pivot import GridData
from ..tracking.schema import RunRecord
from ..tracking.store import Tracker
from .detail import RunDetail, detail_panel, load_detail
from .export import export_view
from .rating import RatingBook
from .report_tab import ReportTab
from .thumbnails import ThumbnailCache
from .tiles import STYLE, filter_widgets, grid_widget, summary_html, title_html
from .view import (
    PAGED,
    SEED,
    SIDE_BY_SIDE,
    GridView,
    axis_options,
    build_view,
    default_cols,
    filters_for,
    seed_levels,
)

__all__ = ["ComparisonGrid"]


class ComparisonGrid:
    """An ipywidgets comparison grid over the runs of ``experiment`` in MLflow.

    Args:
        experiment: the MLflow experiment name (a spec's ``name`` unless ``--experiment`` said otherwise).
        tracking_uri: the store (default: ``$MLFLOW_TRACKING_URI``, else the embedded store).
        rows, cols: the factors down and across (``seed`` or any parameter that varies; ``cols``
            defaults to the first varying factor).
        where: hold other factors at these levels (default: their most common level, the base).
            ``where={"seed": "2"}`` shows one seed at a time, starting with seed 2.
        page_size: at most this many tiles per page: whole rows while a row fits, else part of one row
            (its columns are paged too); only the page shown is loaded.
        seeds: ``"side by side"`` or ``"one at a time"`` when seed is not an axis.
        rater: who rates the images (default: ``$WORKBENCH_RATER``, else the OS user); ``ratings=False``
            hides the rating controls.

    Example:
        >>> grid = ComparisonGrid("quickstart", cols="var.lighting")  # doctest: +SKIP
        >>> grid  # the widget, in a notebook  # doctest: +SKIP
        >>> grid.data.col_levels, grid.thumbnail_loads  # doctest: +SKIP
        (['golden hour', 'overcast', 'neon night'], 9)
        >>> grid.export()  # a labelled PNG, logged to the runs' parent run  # doctest: +SKIP
        >>> grid.rate(run_id, 4); grid.report_tab.show("clip_score").factor("guidance").best  # doctest: +SKIP
    """

    def __init__(self, experiment: str, tracking_uri: str | None = None, *, rows: str = SEED,
                 cols: str | None = None, where: Mapping[str, Any] | None = None, page_size: int = 48,
                 seeds: str = SIDE_BY_SIDE, tile_size: int = 128, thumbnail_size: int = 192,
                 tracker: Tracker | None = None, rater: str | None = None, ratings: bool = True) -> None:
        if page_size < 1:
            raise UserInputError(f"page_size must be at least 1, got {page_size}")
        if seeds not in (SIDE_BY_SIDE, PAGED):
            raise UserInputError(f"seeds must be '{SIDE_BY_SIDE}' or '{PAGED}', got {seeds!r}")
        self.experiment = experiment
        self.tracker = tracker or Tracker(tracking_uri, create=False)  # reading creates nothing
        self.tracking_uri = self.tracker.uri
        self.page_size = page_size
        self.tile_size = tile_size
        self.thumbnails = ThumbnailCache.for_tracker(self.tracker, size=thumbnail_size)
        self.where = {str(k): str(v) for k, v in (where or {}).items()}
        self.seed_mode = seeds
        self.seed: str | None = None
        if SEED in self.where:
            value = self.where.pop(SEED)
            self.seed_mode = PAGED
            self.seed = value if value.startswith(("seed ", "replicate ")) else f"seed {value}"
        self.page = 0
        self.detail: RunDetail | None = None
        self.last_export: tuple[Path, str | None] | None = None
        self.view: GridView | None = None
        self.tiles: dict[tuple[str, str, str], w.VBox] = {}
        self._updating = False
        self.records = self._read()
        opened = RatingBook.open(self.tracker, rater, self.records) if ratings else (None, "")
        self.rating_book, self.ratings_off = opened
        self.report_tab = ReportTab(self.tracker, experiment, lambda: self.records)
        options = axis_options(self.records) if self.records else [SEED]
        self.rows = rows
        self.cols = cols or (default_cols(self.records, rows) if self.records else "model")
        for axis in (self.rows, self.cols):
            if self.records and axis not in options:
                raise UserInputError(f"'{axis}' does not vary in experiment '{experiment}'; choose from: "
                                     f"{', '.join(options)}")
        self._build_widgets(options)
        self._update()

    # -- reading --------------------------------------------------------------------------------------
    def _read(self) -> list[RunRecord]:
        self._exp_id = self.tracker.experiment_id(self.experiment, create=False)
        if self._exp_id is None:
            names = self.tracker.experiment_names()
            raise UserInputError(f"no experiment '{self.experiment}' in {self.tracker.display_uri}; experiments: "
                                 f"{', '.join(names) or '(none)'}; run a spec first (workbench run SPEC)")
        records = self.tracker.records(self.experiment)
        self._by_id = {r.run_id: r for r in records}
        return records

    def refresh(self) -> None:
        """Read the runs again (new runs appear; thumbnails already loaded stay cached)."""
        self.records = self._read()
        if self.rating_book is not None:
            self.rating_book.load(self.records)
        self.report_tab.stale = True
        if self.tabs.selected_index == 1:
            self.report_tab.show()
        self._rebuild_filters()
        self._update()

    # -- state ----------------------------------------------------------------------------------------
    @property
    def data(self) -> GridData | None:
        """The current view (all pages) as the table ``render_grid`` draws; None without runs."""
        return self.view.to_grid_data() if self.view else None

    @property
    def rows_per_page(self) -> int:
        return self.view.page_shape(self.page_size)[0] if self.view else 1

    @property
    def columns_per_page(self) -> int:
        """Tile columns per page: all of them unless one row alone holds more than ``page_size`` tiles."""
        return self.view.page_shape(self.page_size)[1] if self.view else 1

    @property
    def column_pages(self) -> int:
        return self.view.column_pages(self.page_size) if self.view else 1

    @property
    def pages(self) -> int:
        return self.view.pages(self.page_size) if self.view else 1

    @property
    def visible_rows(self) -> list[str]:
        return self.view.page_rows(self.page, self.page_size) if self.view else []

    @property
    def visible_columns(self) -> list[tuple[str, str]]:
        """(column level, seed) of the tile columns on the page shown (pages go across, then down)."""
        return self.view.page_columns(self.page, self.page_size) if self.view else []

    @property
    def visible_cells(self) -> list[tuple[str, str, str]]:
        """(row, column, seed) of every tile on the page shown ("" as seed when seed is an axis)."""
        return [(r, c, s) for r in self.visible_rows for c, s in self.visible_columns]

    @property
    def visible_run_ids(self) -> list[str]:
        if not self.view:
            return []
        return [run_id for key in self.visible_cells if (run_id := self.view.cell(*key).run_id)]

    @property
    def thumbnail_loads(self) -> int:
        """How many images were fetched from the store so far (lazy loading: the pages shown only)."""
        return self.thumbnails.loads

    # -- actions --------------------------------------------------------------------------------------
    def set_axes(self, rows: str | None = None, cols: str | None = None) -> None:
        """Change the factors; choosing the other axis's factor swaps the two."""
        new_rows, new_cols = rows or self.rows, cols or self.cols
        if new_rows == new_cols:
            if cols is not None and cols != self.cols:  # columns took the rows' factor
                new_rows = self.cols
            else:
                new_cols = self.rows
        rows, cols = new_rows, new_cols
        self.rows, self.cols, self.page = rows, cols, 0
        self._sync(self.rows_control, rows)
        self._sync(self.cols_control, cols)
        self._rebuild_filters()
        self._update()

    def set_filter(self, key: str, value: str) -> None:
        self.where[key] = str(value)
        if key in self.filter_controls:
            self._sync(self.filter_controls[key], str(value))
        self.page = 0
        self._update()

    def set_seeds(self, mode: str, seed: str | None = None) -> None:
        """Show seeds ``"side by side"`` or ``"one at a time"`` (then ``seed`` picks which)."""
        if mode not in (SIDE_BY_SIDE, PAGED):
            raise UserInputError(f"seeds must be '{SIDE_BY_SIDE}' or '{PAGED}', got {mode!r}")
        self.seed_mode, self.seed = mode, seed or self.seed
        self._sync(self.seed_mode_control, mode)
        self._update()

    def go_to_page(self, page: int) -> None:
        self.page = min(max(0, page), self.pages - 1)
        self._render()

    def next_page(self) -> None:
        self.go_to_page(self.page + 1)

    def previous_page(self) -> None:
        self.go_to_page(self.page - 1)

    def open_detail(self, run_id: str) -> RunDetail:
        """Show the detail panel of ``run_id`` (what clicking a cell does) and return what it shows."""
        record = self._by_id.get(run_id)
        if record is None:
            raise UserInputError(f"run {run_id} is not a run of experiment '{self.experiment}'")
        detail = load_detail(self.tracker, record, self.experiment, self._exp_id)
        image = None
        if record.outcome == "FINISHED":
            try:
                image = self.thumbnails.image(run_id)
            except Exception:  # a finished run whose PNG is gone: show the details anyway
                image = None
        self.detail = detail
        self.detail_box.children = (detail_panel(detail, image, tracking_uri=self.tracking_uri,
                                                 on_close=self.close_detail),)
        return detail

    def rate(self, run_id: str, value: int) -> None:
        """Rate the image of ``run_id`` 1–5 as this grid's rater (what its control under the tile does)."""
        self._ratings().rate(run_id, value)

    def pick_best(self, run_id: str) -> None:
        """Pick ``run_id`` as the best of its row in the current view (what its "best of row" button does)."""
        row = self.view.row_of(run_id) if self.view else None
        if row is None:
            raise UserInputError(f"run {run_id} is not shown in this view; pick among the runs it shows")
        self._ratings().pick(run_id, self.view.row_run_ids(row) if self.view else [])

    def _ratings(self) -> RatingBook:
        if self.rating_book is None:
            raise UserInputError(self.ratings_off or "this grid was opened with ratings=False; open it with "
                                                     "ratings=True to rate")
        return self.rating_book

    def close_detail(self) -> None:
        self.detail = None
        self.detail_box.children = ()

    def export(self, path: str | Path | None = None, *, log: bool = True) -> Path:
        """Save the current view (every page) as a labelled PNG with ``grids.render.render_grid``, and log
        it under ``grids/`` of the parent run that logged the runs shown (``shared_parent_run``;
        ``log=False``: the file only)."""
        if self.view is None:
            raise UserInputError(f"experiment '{self.experiment}' has no runs to export")
        title, name = f"{self.experiment}: {self.cols} x {self.rows}", f"notebook-{self.cols}-x-{self.rows}"
        self.last_export = export_view(self.view, self.tracker, self.thumbnails.image, self._by_id,
                                       experiment=self.experiment, title=title, name=name, path=path, log=log)
        return self.last_export[0]

    # -- widgets --------------------------------------------------------------------------------------
    def _build_widgets(self, options: list[str]) -> None:
        self.title = w.HTML()
        self.rows_control = w.Dropdown(options=options, value=self.rows if self.rows in options else options[0],
                                       description="rows", layout=w.Layout(width="240px"))
        self.cols_control = w.Dropdown(options=options, value=self.cols if self.cols in options else None,
                                       description="columns", layout=w.Layout(width="260px"))
        self.rows_control.observe(lambda c: self._on_control(lambda: self.set_axes(rows=c["new"])), "value")
        self.cols_control.observe(lambda c: self._on_control(lambda: self.set_axes(cols=c["new"])), "value")
        self.seed_mode_control = w.ToggleButtons(options=[SIDE_BY_SIDE, PAGED], value=self.seed_mode,
                                                 description="seeds", style={"button_width": "110px"})
        self.seed_mode_control.observe(lambda c: self._on_control(lambda: self.set_seeds(c["new"])), "value")
        self.seed_control = w.Dropdown(options=[], description="seed", layout=w.Layout(width="200px"))
        self.seed_control.observe(lambda c: self._on_control(lambda: self._pick_seed(c["new"])), "value")
        self.filter_controls: dict[str, w.Dropdown] = {}
        self.filters_box = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.summary = w.HTML()
        self.grid_box = w.VBox()
        self.prev_button = w.Button(description="previous", icon="arrow-left", layout=w.Layout(width="110px"))
        self.next_button = w.Button(description="next", icon="arrow-right", layout=w.Layout(width="110px"))
        self.prev_button.on_click(lambda _: self.previous_page())
        self.next_button.on_click(lambda _: self.next_page())
        self.page_label = w.HTML()
        self.pager = w.HBox([self.prev_button, self.page_label, self.next_button],
                            layout=w.Layout(align_items="center", grid_gap="8px"))
        self.export_button = w.Button(description="export PNG", icon="download",
                                      tooltip="save this view as a labelled PNG and log it to the parent run")
        self.refresh_button = w.Button(description="refresh", icon="refresh", tooltip="read the runs again")
        self.export_status = w.HTML()
        self.export_button.on_click(lambda _: self._export_clicked())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.detail_box = w.VBox()
        self._rebuild_filters()
        grid_page = w.VBox([
            w.HBox([self.rows_control, self.cols_control, self.seed_mode_control, self.seed_control],
                   layout=w.Layout(flex_flow="row wrap")),
            self.filters_box, self.summary, self.grid_box, self.pager,
            w.HBox([self.export_button, self.refresh_button, self.export_status],
                   layout=w.Layout(align_items="center")),
            self.rating_book.status if self.rating_book else w.HTML(html.escape(self.ratings_off)),
            self.detail_box])
        self.tabs = w.Tab([grid_page, self.report_tab.widget], titles=("grid", "report"))
        # the report is computed when its tab is first shown (and after a refresh), not on every open
        self.tabs.observe(lambda c: self._tab_shown(c["new"]), "selected_index")
        self.widget = w.VBox([w.HTML(STYLE), self.title, self.tabs])
        self.widget.add_class("wb-comparison-grid")

    def _tab_shown(self, index: int) -> None:
        if index == 1 and self.report_tab.stale:
            self.report_tab.show()

    def _on_control(self, action: Callable[[], None]) -> None:
        if not self._updating:
            action()

    def _sync(self, control: w.ValueWidget, value: Any) -> None:
        self._updating = True
        try:
            control.value = value
        finally:
            self._updating = False

    def _pick_seed(self, seed: str | None) -> None:
        if seed:
            self.seed = seed
            self._update()

    def _rebuild_filters(self) -> None:
        filters = filters_for(self.records, self.rows, self.cols, self.where) if self.records else []
        boxes, self.filter_controls = filter_widgets(
            filters, lambda key, value: self._on_control(lambda: self.set_filter(key, value)))
        self.filters_box.children = boxes

    def _export_clicked(self) -> None:
        self.export_status.value = "<i>exporting…</i>"
        try:
            path = self.export()
            parent = self.last_export[1] if self.last_export else None
            where = f" and logged to parent run <code>{html.escape(parent)}</code> (grids/)" if parent else \
                " (no parent run found to log it to)"
            self.export_status.value = f"saved <code>{html.escape(str(path))}</code>{where}"
        except Exception as exc:  # shown beside the button, never raised into the notebook
            self.export_status.value = f"<span style='color:#b00'>{html.escape(f'{type(exc).__name__}: {exc}')}</span>"

    def _update(self) -> None:
        """Recompute the view from the current choices, then draw page ``self.page``."""
        if self.records:
            where = {k: v for k, v in self.where.items() if k not in (self.rows, self.cols)}
            self.view = build_view(self.records, self.rows, self.cols, where=where, seed_mode=self.seed_mode,
                                   seed=self.seed)
            seed_axis = SEED in (self.rows, self.cols)
            self.seed_mode_control.layout.display = "none" if seed_axis else None
            paged = not seed_axis and self.seed_mode == PAGED
            self.seed_control.layout.display = None if paged else "none"
            if paged:
                levels = seed_levels(self.records)
                self._updating = True
                try:
                    self.seed_control.options = levels
                    self.seed_control.value = self.view.seeds[0]
                finally:
                    self._updating = False
                self.seed = self.view.seeds[0]
        self.page = min(self.page, self.pages - 1)
        self._render()

    def _render(self) -> None:
        self.title.value = title_html(self.experiment, self.records, self.tracker.display_uri)
        if self.view is None:
            self.grid_box.children = (w.HTML("<p><i>No runs in this experiment yet: run it first "
                                             "(<code>workbench run SPEC</code>).</i></p>"),)
            self.tiles = {}
            self.pager.layout.display = "none"
            return
        view = self.view
        rows, columns = self.visible_rows, self.visible_columns
        decorate = None
        if self.rating_book is not None:
            book = self.rating_book
            decorate = lambda run_id, row: book.widget_for(  # noqa: E731
                run_id, lambda: view.row_run_ids(row), width=self.tile_size)
        box, self.tiles = grid_widget(view, rows, self.thumbnails.thumbnail, size=self.tile_size,
                                      on_select=self.open_detail, columns=columns, decorate=decorate)
        self.grid_box.children = (box,)
        self.summary.value = summary_html(view, self.page, self.page_size)
        self.pager.layout.display = None if self.pages > 1 else "none"
        self.page_label.value = view.page_label(self.page, self.page_size)
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.pages - 1

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        shape = f"{len(self.view.row_levels)}x{len(self.view.col_levels)}" if self.view else "empty"
        return (f"ComparisonGrid(experiment={self.experiment!r}, rows={self.rows!r}, cols={self.cols!r}, "
                f"runs={len(self.records)}, grid={shape}, page={self.page + 1}/{self.pages})")
