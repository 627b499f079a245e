"""Labelled comparison grids (PIL): rows × columns of images, with factor names and levels.

``render_grid`` draws any table of cells (``pivot.GridData``); ``grid_from_records`` pivots logged runs,
fetches their images and draws them: the one function behind ``workbench run``, ``workbench grid`` and
the notebook export. The PNG carries a ``workbench-grid`` chunk naming the run of every cell.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..errors import UserInputError
from ..files import write_atomic
from ..hashing import canonical_json
from ..provenance.png import GRID_CHUNK, GRID_FORMAT, text_chunks
from ..tracking.schema import RunRecord
from .pivot import GridCell, GridData, pivot_records

__all__ = ["render_grid", "grid_from_records", "unreadable", "safe_name", "save_png_atomic", "save_grid", "grid_format",
           "GRID_FORMATS"]

# What a grid file may be, by suffix (Pillow's format names). Only PNG keeps the cell map (text chunks).
GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

_BG = (255, 255, 255)
_INK = (20, 20, 20)
_MUTED = (110, 110, 110)
_STATUS_FILL = {"FAILED": (253, 226, 226), "BLOCKED": (255, 240, 205), "KILLED": (230, 230, 230),
                "RUNNING": (225, 236, 255), "missing": (245, 245, 245)}


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
    return write_atomic(Path(path), lambda f: image.save(f, format="PNG", pnginfo=text_chunks(image)))


def grid_format(path: Path) -> str:
    """The Pillow format ``path``'s suffix names (PNG, JPEG, WebP); ``UserInputError`` for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in GRID_FORMATS:
        raise UserInputError(f"cannot write a grid as '{Path(path).name}': the suffix "
                             f"{suffix or '(none)'} names no image format we write; end the name in "
                             f"{', '.join(GRID_FORMATS)}")
    return GRID_FORMATS[suffix]


def save_grid(image: Image.Image, path: Path) -> Path:
    """Write a grid in the format its suffix names (``grid_format``), atomically. JPEG and WebP files hold
    the pixels only: the run of every cell is kept in PNG's text chunks."""
    fmt = grid_format(path)
    if fmt == "PNG":
        return save_png_atomic(image, path)
    # no chroma subsampling, near-lossless JPEG, lossless WebP: a grid is for looking closely at small differences
    options = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"lossless": True}}[fmt]
    return write_atomic(Path(path), lambda f: image.convert("RGB").save(f, format=fmt, **options))


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


def unreadable(exc: Exception) -> str:
    """The reason a tile gives for an image that could not be read: what failed, in a line."""
    message = " ".join(str(exc).split())
    return f"image unreadable: {type(exc).__name__}" + (f": {message[:160]}" if message else "")


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
                cell.status, cell.reason = "missing", unreadable(exc)
    if base and base.get(cols) in data.col_levels:
        data.base_col = base[cols]
    data.title = title or data.title
    return render_grid(data), data
