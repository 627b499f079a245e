"""The widget tree of a grid page: labelled tiles in a CSS grid (plain functions, no state, no I/O
beyond the ``thumbnail`` callable they are given)."""

from __future__ import annotations

import dataclasses
import html
from collections import Counter
from collections.abc import Callable, Sequence

import ipywidgets as w

from ..grids.pivot import GridCell
from ..grids.render import unreadable
from ..tracking.schema import RunRecord
from .view import Filter, GridView

__all__ = ["STYLE", "status_tile_html", "tile_widget", "grid_widget", "title_html", "summary_html",
           "filter_widgets"]

_STATUS_COLOURS = {"FAILED": "#fde2e2", "BLOCKED": "#fff0cd", "KILLED": "#e6e6e6", "RUNNING": "#e1ecff",
                   "missing": "#f5f5f5"}
STYLE = """<style>
.wb-comparison-grid .widget-html-content {line-height: 1.4}
.wb-grid .wb-row-label {font-weight: 600; padding-right: 8px; align-self: center}
.wb-grid .wb-col-label {font-weight: 600; text-align: center; border-bottom: 2px solid #ccc}
.wb-grid .wb-tile img {image-rendering: pixelated; display: block}
.wb-grid .wb-tile .widget-button {font-size: 11px}
</style>"""


def title_html(experiment: str, records: Sequence[RunRecord], store: str) -> str:
    """The grid's heading: the experiment, how many runs by outcome, and the store."""
    counts = Counter(record.outcome for record in records)
    tally = ", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items()))
    return (f"<h3 style='margin:4px 0'>{html.escape(experiment)}</h3><span style='color:#555'>{len(records)} "
            f"runs ({html.escape(tally or 'none')}) in <code>{html.escape(store)}</code></span>")


def summary_html(view: GridView, page: int, page_size: int) -> str:
    """The line above the grid: its shape, the images on this page, what is held, and the view's notes."""
    held = ", ".join(f"{html.escape(k)}={html.escape(v)}" for k, v in view.fixed.items())
    columns = view.page_columns(page, page_size)
    cells = [(r, c, s) for r in view.page_rows(page, page_size) for c, s in columns]
    shown = sum(1 for key in cells if view.cell(*key).status == "FINISHED")
    notes = "".join(f"<br><i>{html.escape(n)}</i>" for n in view.notes)
    if view.column_pages(page_size) > 1:  # say why a row is cut, and how the pages run
        notes += (f"<br><i>a row holds {view.tiles_per_row} tiles, more than page_size {page_size}: each "
                  f"page shows {view.page_shape(page_size)[1]} columns of one row; next goes across, then "
                  f"down</i>")
    seeds = f" × {len(view.seeds)} seeds" if len(view.seeds) > 1 else ""
    shape = f"{len(view.row_levels)} × {len(view.col_levels)}{seeds}"
    held = f"; held: {held}" if held else ""
    return f"<span style='color:#555'>{shape}; {shown} images on this page{held}{notes}</span>"


def filter_widgets(filters: Sequence[Filter], on_change: Callable[[str, str], None]
                   ) -> tuple[list[w.Widget], dict[str, w.Dropdown]]:
    """The "hold" row: a dropdown per held parameter (``on_change(key, value)``), a note per linked one."""
    boxes: list[w.Widget] = []
    controls: dict[str, w.Dropdown] = {}
    for f in filters:
        if f.linked_to:
            boxes.append(w.HTML(f"<span style='color:#666'>{html.escape(f.key)} follows "
                                f"{html.escape(f.linked_to)}</span>", layout=w.Layout(margin="4px 12px")))
            continue
        control = w.Dropdown(options=f.levels, value=f.value, description=f.key,
                             style={"description_width": "initial"},
                             layout=w.Layout(width="auto", max_width="420px"))
        control.observe(lambda c, key=f.key: on_change(key, c["new"]), "value")
        controls[f.key] = control
        boxes.append(control)
    if boxes:
        boxes.insert(0, w.HTML("<b>hold</b>", layout=w.Layout(margin="4px 8px 0 0")))
    return boxes, controls


def status_tile_html(status: str, reason: str, size: int) -> str:
    """A labelled tile for a cell without an image: FAILED, BLOCKED, KILLED, RUNNING, not run, or a
    finished run whose image cannot be read ("missing" with a reason)."""
    never_ran = status == "missing" and reason in ("", "not run")
    label = ("not run" if never_ran else "no image") if status == "missing" else status
    colour = _STATUS_COLOURS.get(status, _STATUS_COLOURS["missing"])
    text = "" if never_ran else html.escape(reason if len(reason) <= 160 else reason[:157] + "…")
    return (f"<div class='wb-status wb-status-{html.escape(status.lower())}' title='{html.escape(reason)}' "
            f"style='width:{size}px;height:{size}px;box-sizing:border-box;background:{colour};border:1px solid "
            f"#ccc;padding:6px;overflow:hidden;font-size:11px;line-height:1.25'><b>{html.escape(label)}</b>"
            f"<br>{text}</div>")


def tile_widget(cell: GridCell, label: str, image: bytes | None, *, size: int, tooltip: str = "",
                on_select: Callable[[str], None] | None = None, extra: w.Widget | None = None) -> w.VBox:
    """One cell: the thumbnail (or a status tile) above a button that opens the run's details, and ``extra``
    (the rating controls) below."""
    children: list[w.Widget] = []
    if cell.status == "FINISHED" and image is not None:
        children.append(w.Image(value=image, format="png", width=str(size), height=str(size)))
    else:
        children.append(w.HTML(status_tile_html(cell.status, cell.reason, size)))
    if cell.run_id:
        button = w.Button(description=label, tooltip=tooltip or label, layout=w.Layout(width=f"{size}px"))
        if on_select is not None:
            run_id = cell.run_id
            button.on_click(lambda _: on_select(run_id))
        children.append(button)
    else:
        children.append(w.HTML(f"<div style='width:{size}px;text-align:center;color:#777;font-size:11px'>"
                               f"{html.escape(label)}</div>"))
    if cell.status == "FINISHED" and cell.reason:  # finished but flagged (truncated prompt, ...)
        children.append(w.HTML(f"<div title='{html.escape(cell.reason)}' style='width:{size}px;color:#777;"
                               f"font-size:10px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis'>⚑ "
                               f"{html.escape(cell.reason)}</div>"))
    if extra is not None:
        children.append(extra)
    tile = w.VBox(children, layout=w.Layout(width=f"{size + 4}px", margin="0 0 6px 0"))
    tile.add_class("wb-tile")
    tile.add_class(f"wb-tile-{cell.status.lower()}")
    return tile


def grid_widget(view: GridView, row_levels: Sequence[str], thumbnail: Callable[[str], bytes], *, size: int,
                on_select: Callable[[str], None] | None = None,
                columns: Sequence[tuple[str, str]] | None = None,
                decorate: Callable[[str, str], w.Widget | None] | None = None
                ) -> tuple[w.GridBox, dict[tuple[str, str, str], w.VBox]]:
    """The visible part of ``view`` as a CSS grid: ``row_levels`` × ``columns`` ((level, seed) pairs,
    default all), column labels on top (with a seed sub-row when seeds sit side by side), row labels on
    the left. ``thumbnail(run_id)`` is called for shown images only; ``decorate(run_id, row)`` gives a
    widget to put under each shown image (the rating controls)."""
    seeds = view.seeds
    columns = list(view.tile_columns if columns is None else columns)
    n_cols = len(columns)
    children: list[w.Widget] = []

    def label(text: str, css: str, span: int = 1) -> w.HTML:
        # grid_area, not grid_column: the widget manager sets layout properties in order and clearing the
        # unset grid_area shorthand afterwards would wipe grid-column out again
        box = w.HTML(text, layout=w.Layout(grid_area=f"auto / span {span}") if span > 1 else w.Layout())
        box.add_class(css)
        return box

    children.append(label(f"<i>{html.escape(view.rows)} ↓ &nbsp; {html.escape(view.cols)} →</i>", "wb-corner"))
    spans: list[tuple[str, int]] = []  # each level over its seeds on this page (a level can span two pages)
    for col, _ in columns:
        if spans and spans[-1][0] == col:
            spans[-1] = (col, spans[-1][1] + 1)
        else:
            spans.append((col, 1))
    for col, span in spans:
        mark = " <span style='color:#777;font-weight:400'>(base)</span>" if col == view.base_col else ""
        children.append(label(f"{html.escape(col)}{mark}", "wb-col-label", span))
    if len(seeds) > 1:
        children.append(label("", "wb-corner"))
        children += [label(f"<span style='color:#555'>{html.escape(s)}</span>", "wb-seed-label")
                     for _, s in columns]
    tiles: dict[tuple[str, str, str], w.VBox] = {}
    for row in row_levels:
        children.append(label(html.escape(row), "wb-row-label"))
        for col, seed in columns:
            cell = view.cell(row, col, seed)
            image = None
            if cell.status == "FINISHED" and cell.run_id:
                try:
                    image = thumbnail(cell.run_id)
                except Exception as exc:  # one unreadable artifact must not cost the whole page
                    cell = dataclasses.replace(cell, status="missing",
                                               reason=unreadable(exc))
            tip = f"{view.rows}={row}, {view.cols}={col}" + (f", {seed}" if seed else "")
            tip += " (click for details)"
            # each tile is labelled with its level (the seed, when seeds sit side by side under it)
            extra = decorate(cell.run_id, row) if decorate and image is not None and cell.run_id else None
            tile = tile_widget(cell, seed if len(seeds) > 1 else col, image, size=size, tooltip=tip,
                               on_select=on_select, extra=extra)
            tiles[(row, col, seed)] = tile
            children.append(tile)
    box = w.GridBox(children, layout=w.Layout(
        grid_template_columns=f"max-content repeat({n_cols}, {size + 8}px)", grid_gap="4px 4px",
        overflow="auto", max_width="100%"))
    box.add_class("wb-grid")
    return box, tiles
