"""Labelled comparison grids (PIL): rows × columns of images, with factor names and levels.

``render_grid`` draws any table of cells; ``grid_from_records`` pivots logged runs on two keys
(a factor, or ``seed``) while holding every other varying parameter fixed, so the same function
serves ``workbench run``, ``workbench grid`` and the notebook export.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .errors import UserInputError
from .hashing import canonical_json
from .provenance.png import GRID_CHUNK, GRID_FORMAT, text_chunks
from .types import RunRecord

__all__ = ["GridCell", "GridData", "render_grid", "pivot_records", "grid_from_records", "varying_keys",
           "sort_levels", "axis_value", "resolve_where", "safe_name", "save_png_atomic"]

# Params that identify a run rather than describe a condition: never grid axes or filters.
_IDENTITY = {"run_key", "prompt", "template_version", "model_hash", "replicate", "seed"}
_BG = (255, 255, 255)
_INK = (20, 20, 20)
_MUTED = (110, 110, 110)
_STATUS_FILL = {"FAILED": (253, 226, 226), "BLOCKED": (255, 240, 205), "KILLED": (230, 230, 230),
                "RUNNING": (225, 236, 255), "missing": (245, 245, 245)}


@dataclass
class GridCell:
    """An image, or a status (FAILED, BLOCKED, missing...) with a short reason."""

    image: Image.Image | None = None
    status: str = "FINISHED"
    reason: str = ""
    run_id: str | None = None


@dataclass
class GridData:
    """A pivoted table of cells, ready to render (or to show as widgets)."""

    rows: str
    cols: str
    row_levels: list[str]
    col_levels: list[str]
    cells: dict[tuple[str, str], GridCell]
    fixed: dict[str, str] = field(default_factory=dict)
    title: str = ""
    notes: list[str] = field(default_factory=list)
    base_col: str | None = None  # the column level that is the experiment's base (marked in the header)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def _wrap(text: str, width: int, draw: ImageDraw.ImageDraw, font: Any, max_lines: int = 3) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        candidate = f"{line} {word}".strip()
        if _text_size(draw, candidate, font)[0] <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(1, len(lines[-1]) - 1)] + "…"
    return "\n".join(lines)


def safe_name(text: str) -> str:
    """``text`` as one file name: what is not a letter, digit, ``-``, ``_`` or ``.`` becomes ``_``, so a
    factor or experiment name can never reach another folder."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._") or "grid"


def save_png_atomic(image: Image.Image, path: Path) -> Path:
    """Write a PNG so readers never see half a file; concurrent writers each use their own temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp.png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG", pnginfo=text_chunks(image))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def render_grid(data: GridData, *, cell_size: int | None = None, pad: int = 6) -> Image.Image:
    """Draw ``data`` as one PNG-ready image with a title, column and row labels."""
    images = [c.image for c in data.cells.values() if c.image is not None]
    if cell_size is None:
        native = max((max(i.size) for i in images), default=128)
        cell_size = min(max(native, 160), 384)  # tiny models' 64 px images are scaled up to be seen
    label_font, title_font, small_font = _font(15), _font(18), _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    row_label_w = max([_text_size(probe, _wrap(r, 160, probe, label_font), label_font)[0]
                       for r in data.row_levels] + [_text_size(probe, data.rows, label_font)[0]]) + 2 * pad
    header_h = 2 * 22 + pad
    title = data.title or f"{data.cols} (columns) x {data.rows} (rows)"
    subtitle = ", ".join(f"{k}={v}" for k, v in data.fixed.items())
    title_h = 30 + (20 if subtitle else 0) + 18 * len(data.notes)
    width = row_label_w + len(data.col_levels) * (cell_size + pad) + pad
    height = title_h + header_h + len(data.row_levels) * (cell_size + pad) + pad
    canvas = Image.new("RGB", (max(width, 320), height), _BG)
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, pad), title, fill=_INK, font=title_font)
    y = pad + 26
    if subtitle:
        draw.text((pad, y), _wrap("fixed: " + subtitle, canvas.width - 2 * pad, draw, small_font, 1), fill=_MUTED,
                  font=small_font)
        y += 20
    for note in data.notes:
        draw.text((pad, y), note, fill=_MUTED, font=small_font)
        y += 18
    top = title_h
    # Axis names: the column factor above its levels, the row factor at the head of the label column.
    draw.text((row_label_w, top), f"{data.cols}:", fill=_MUTED, font=small_font)
    draw.text((pad, top + 20), f"{data.rows}:", fill=_MUTED, font=small_font)
    for ci, level in enumerate(data.col_levels):
        x = row_label_w + ci * (cell_size + pad)
        text = f"{level} (base)" if level == data.base_col else level
        draw.text((x, top + 20), _wrap(text, cell_size, draw, label_font, 1), fill=_INK, font=label_font)
    for ri, row in enumerate(data.row_levels):
        y0 = top + header_h + ri * (cell_size + pad)
        draw.text((pad, y0 + cell_size // 2 - 10), _wrap(row, row_label_w - 2 * pad, draw, label_font), fill=_INK,
                  font=label_font)
        for ci, col in enumerate(data.col_levels):
            x0 = row_label_w + ci * (cell_size + pad)
            cell = data.cells.get((row, col), GridCell(status="missing", reason="not run"))
            _draw_cell(canvas, draw, cell, (x0, y0), cell_size, small_font)
    # Which run is in which cell, written into the PNG by save_png_atomic / Tracker.log_png (A1111 grids
    # carry their axes the same way): a grid found on disk leads back to its runs.
    canvas.info[GRID_CHUNK] = canonical_json({
        "format": GRID_FORMAT, "title": title, "rows": data.rows, "cols": data.cols, "fixed": data.fixed,
        "cells": [{"row": r, "col": c, "status": cell.status, "run_id": cell.run_id}
                  for (r, c), cell in data.cells.items()]})
    return canvas


def _draw_cell(canvas: Image.Image, draw: ImageDraw.ImageDraw, cell: GridCell, origin: tuple[int, int],
               size: int, font: Any) -> None:
    x0, y0 = origin
    if cell.image is not None:
        image = cell.image.convert("RGB")
        scale = size / max(image.size)
        resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
        canvas.paste(image, (x0 + (size - image.width) // 2, y0 + (size - image.height) // 2))
        if cell.reason:  # flagged but finished (e.g. truncated prompt, seed not controlled)
            draw.rectangle((x0, y0 + size - 16, x0 + size, y0 + size), fill=(255, 255, 255))
            draw.text((x0 + 3, y0 + size - 15), _wrap(cell.reason, size - 6, draw, font, 1), fill=_MUTED, font=font)
        return
    fill = _STATUS_FILL.get(cell.status, _STATUS_FILL["missing"])
    draw.rectangle((x0, y0, x0 + size, y0 + size), fill=fill, outline=(200, 200, 200))
    label = cell.status if cell.status != "missing" else "not run"
    if cell.status == "missing" and cell.reason and cell.reason != "not run":
        label = "no image"
    text = label + ("\n" + _wrap(cell.reason, size - 12, draw, font, 5) if cell.reason and cell.reason != "not run"
                    else "")
    draw.multiline_text((x0 + 6, y0 + 6), text, fill=_INK, font=font)


def sort_levels(levels: Sequence[str]) -> list[str]:
    """Numeric levels in numeric order; others in the order first seen."""
    unique = list(dict.fromkeys(levels))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def varying_keys(records: Sequence[RunRecord]) -> list[str]:
    """Params that take more than one value across ``records`` (candidate factors)."""
    values: dict[str, set[str]] = {}
    for record in records:
        for key, value in record.params.items():
            values.setdefault(key, set()).add(value)
    keys = {k for k, v in values.items() if len(v) > 1 and k not in _IDENTITY}
    # width/height are covered by size; the negative prompt etc. still count
    if "size" in keys:
        keys -= {"width", "height"}
    return sorted(keys)


def axis_value(record: RunRecord, key: str) -> str:
    """The label of ``record``'s level on axis ``key`` ("seed 7", or "replicate 2" where seeds are not
    controlled)."""
    if key == "seed":
        seed = record.params.get("seed", "")
        if seed in ("", "not controlled"):
            return f"replicate {int(record.params.get('replicate', '0')) + 1}"
        return f"seed {seed}"
    return record.params.get(key, "—")


def resolve_where(records: Sequence[RunRecord], where: Mapping[str, str]) -> dict[str, str]:
    """``--where`` as the runs spell it (``guidance=7`` → ``7.0``); refuse a key or value no run has,
    which would draw an empty grid."""
    resolved: dict[str, str] = {}
    for key, value in where.items():
        values = sort_levels(sorted({r.params[key] for r in records if key in r.params}))
        if not values:
            raise UserInputError(f"--where {key}=…: '{key}' is not a parameter of these runs; parameters: "
                                 f"{', '.join(sorted({k for r in records for k in r.params}))}")
        if value not in values:
            value = next((v for v in values if _same_number(v, value)), value)
        if value not in values:
            shown = ", ".join(values[:20]) + (f", … ({len(values)} values)" if len(values) > 20 else "")
            raise UserInputError(f"--where {key}={value}: no run has {key}={value}; its values are: {shown}")
        resolved[key] = value
    if resolved and not any(all(r.params.get(k) == v for k, v in resolved.items()) for r in records):
        raise UserInputError("no run has " + ", ".join(f"{k}={v}" for k, v in resolved.items())
                             + " all at once; drop one of the --where values")
    return resolved


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def pivot_records(records: Sequence[RunRecord], rows: str, cols: str, *,
                  where: Mapping[str, str] | None = None) -> tuple[GridData, list[RunRecord]]:
    """Pick the runs of a rows × cols grid; every other varying param is held at ``where`` or its mode.

    Returns the grid (cells without images yet) and the chosen records. The latest run wins when
    several runs fill one cell (a re-run after a failure, say).
    """
    if not records:
        raise UserInputError("no runs to build a grid from; run the experiment first")
    known = set(varying_keys(records)) | {"seed"} | {k for r in records for k in r.params}
    for axis in (rows, cols):
        if axis not in known:
            raise UserInputError(f"'{axis}' is not a parameter of these runs; choose from: "
                                 f"{', '.join(['seed', *varying_keys(records)])}")
    if rows == cols:
        raise UserInputError(f"rows and cols are both '{rows}'; pick two different factors")
    fixed = dict(where or {})
    for key in varying_keys(records):
        if key in (rows, cols) or key in fixed:
            continue
        if {rows, cols} & {"size"} and key in ("width", "height"):
            continue
        if _follows(records, key, rows) or _follows(records, key, cols):
            continue  # e.g. a template's negative prompt changes with the template: not a held factor
        fixed[key] = Counter(r.params.get(key) for r in records).most_common(1)[0][0]
    chosen = [r for r in records if all(r.params.get(k) == v for k, v in fixed.items())]
    held_seed = None
    if "seed" not in (rows, cols) and not {"seed", "replicate"} & set(where or {}):
        # Seeds are replicates: with neither axis on them, show the first one (said under "fixed"),
        # not whichever run happened to be logged last.
        labels = _levels([axis_value(r, "seed") for r in chosen], "seed")
        if len(labels) > 1:
            held = [next(v for v in labels if v.startswith(kind)) for kind in ("seed", "replicate")
                    if any(v.startswith(kind) for v in labels)]
            chosen = [r for r in chosen if axis_value(r, "seed") in held]
            held_seed = " / ".join(held)
    cells: dict[tuple[str, str], GridCell] = {}
    picked: dict[tuple[str, str], RunRecord] = {}
    for record in chosen:  # oldest first, so later runs overwrite earlier ones
        key = (axis_value(record, rows), axis_value(record, cols))
        previous = picked.get(key)
        if previous is not None and previous.outcome == "FINISHED" and record.outcome != "FINISHED":
            continue  # a finished image beats a later failed attempt
        picked[key] = record
    for key, record in picked.items():
        cells[key] = GridCell(status=record.outcome, reason=record.reason if record.outcome != "FINISHED" else
                              _flag_note(record), run_id=record.run_id)
    row_levels = _levels([k[0] for k in picked], rows)
    col_levels = _levels([k[1] for k in picked], cols)
    if "seed" in (rows, cols):
        _mark_impossible(cells, picked, rows, cols, row_levels if rows == "seed" else col_levels)
    notes = []
    if any(r.params.get("seed") == "not controlled" for r in chosen):
        notes.append("seed not controlled by the backend: rows are independent replicates")
    shown_fixed = {k: v for k, v in fixed.items() if k not in ("width", "height")}
    if held_seed:
        shown_fixed["seed"] = held_seed.removeprefix("seed ")
    data = GridData(rows=rows, cols=cols, row_levels=row_levels, col_levels=col_levels, cells=cells,
                    fixed=shown_fixed, notes=notes)
    return data, list(picked.values())


def _mark_impossible(cells: dict[tuple[str, str], GridCell], picked: Mapping[tuple[str, str], RunRecord],
                     rows: str, cols: str, seed_levels: Sequence[str]) -> None:
    """Across backends, seed rows and replicate rows never meet: say "n/a" there, not "not run"."""
    other = cols if rows == "seed" else rows
    kinds: dict[str, set[str]] = {}  # level of the other axis -> "seed" and/or "replicate"
    for record in picked.values():
        kinds.setdefault(axis_value(record, other), set()).add(axis_value(record, "seed").split()[0])
    for seed_level in seed_levels:
        kind = seed_level.split()[0]
        for level, present in kinds.items():
            key = (seed_level, level) if rows == "seed" else (level, seed_level)
            if kind not in present and key not in cells:
                why = ("this backend has no seeds: its images are the replicate rows" if kind == "seed" else
                       "this backend takes seeds: its images are the seed rows")
                cells[key] = GridCell(status="n/a", reason=why)


def _follows(records: Sequence[RunRecord], key: str, axis: str) -> bool:
    """True when ``key`` takes one value per level of ``axis`` (it changes only together with it)."""
    seen: dict[str, str | None] = {}
    for record in records:
        level, value = axis_value(record, axis), record.params.get(key)
        if seen.setdefault(level, value) != value:
            return False
    return len(seen) > 1


def _flag_note(record: RunRecord) -> str:
    flags = record.tags.get("workbench.flags", "")
    return flags.replace(",", ", ") if flags else ""


def _levels(values: list[str], axis: str) -> list[str]:
    if axis == "seed":
        def number(v: str) -> float:
            try:
                return float(v.split()[-1])
            except ValueError:
                return math.inf
        return sorted(dict.fromkeys(values), key=lambda v: (v.startswith("replicate"), number(v)))
    return sort_levels(values)


def grid_from_records(records: Sequence[RunRecord], rows: str, cols: str, *,
                      load_image: Callable[[str], Image.Image], where: Mapping[str, str] | None = None,
                      title: str = "", base: Mapping[str, str] | None = None) -> tuple[Image.Image, GridData]:
    """Pivot ``records`` and draw the labelled grid; ``load_image(run_id)`` fetches each PNG."""
    data, _ = pivot_records(records, rows, cols, where=where)
    for cell in data.cells.values():
        if cell.status == "FINISHED" and cell.run_id:
            try:
                cell.image = load_image(cell.run_id)
            except Exception as exc:  # one unreadable artifact must not cost the whole grid
                cell.status, cell.reason = "missing", f"image unreadable: {type(exc).__name__}"
    if base and base.get(cols) in data.col_levels:
        data.base_col = base[cols]
    data.title = title or data.title
    return render_grid(data), data
