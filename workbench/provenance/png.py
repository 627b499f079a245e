"""Generation metadata inside PNG files.

Two text chunks, so a loose file can find its way back:

- ``parameters``: the AUTOMATIC1111 web UI format (prompt, ``Negative prompt: …``, then one line of
  ``Key: value`` pairs), so A1111, Forge, civitai and friends read our images;
- ``workbench``: canonical JSON with the full request, run key, MLflow run id and tracking URI,
  environment fingerprint, batch position, revised prompt and flags (format ``workbench/1``).

Writing: ``a1111_parameters`` + ``workbench_metadata`` → ``encode_png``. Reading: ``read_png_metadata``
walks the chunks itself (signature, every CRC, the final IEND), so a truncated or damaged file is named as
such, and checks that the ``workbench`` chunk's request still hashes to its run key (an edited prompt is
caught). The A1111 text itself (writer, parser, ``request_from_a1111``) lives in ``a1111.py``.

Other tools' files are read too, as far as they map onto a request (``PngMetadata.imported``): an A1111
``parameters`` text, ComfyUI's ``prompt`` / ``workflow`` graph (``comfyui.py``) and InvokeAI's
``invokeai_metadata`` (``invokeai.py``), in that order of preference when a file holds several.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from ..config import public_uri
from ..errors import MetadataError
from ..hashing import canonical_json, content_hash
from ..types import GeneratedImage, GenerationRequest
from .a1111 import import_a1111, parse_a1111_parameters
from .comfyui import is_comfyui, read_comfyui
from .imported import Imported
from .invokeai import METADATA_KEY as INVOKEAI_KEY
from .invokeai import read_invokeai

__all__ = ["FORMAT", "workbench_metadata", "encode_png", "PngMetadata", "read_png_metadata", "jsonable",
           "GRID_CHUNK", "GRID_FORMAT", "text_chunks"]

FORMAT = "workbench/1"
# A comparison grid's chunk: title, axes, fixed params and the run id of every cell (grid.render_grid).
GRID_CHUNK, GRID_FORMAT = "workbench-grid", "workbench-grid/1"
# A hash of the rest of the chunk (files written before it have none and are checked by run key only).
DIGEST = "digest"


def workbench_metadata(result: GeneratedImage, *, run_id: str | None, tracking_uri: str | None,
                       experiment_id: str | None = None) -> dict[str, Any]:
    """The ``workbench`` chunk's content: everything needed to run the request again."""
    request = result.request
    return {
        "format": FORMAT,
        "run_key": request.run_key,
        "run_id": run_id,
        "experiment_id": experiment_id,
        "tracking_uri": public_uri(tracking_uri),
        "request": request.to_dict(),
        "revised_prompt": result.revised_prompt,
        "flags": sorted(result.flags),
        "backend_ids": dict(result.backend_ids),
        "environment": dict(result.environment),
        "batch": _batch(result),
    }


def _batch(result: GeneratedImage) -> dict[str, Any]:
    batch: dict[str, Any] = {"size": result.batch_size, "index": result.batch_index}
    if result.batch_id:
        batch["id"] = result.batch_id
    return batch


def encode_png(image: Image.Image, *, parameters: str, workbench: Mapping[str, Any],
               compress_level: int = 6) -> bytes:
    """PNG bytes of ``image`` with both text chunks (iTXt, so any Unicode prompt survives)."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt("parameters", parameters)
    chunk = _jsonable({k: v for k, v in workbench.items() if k != DIGEST})
    info.add_itxt("workbench", canonical_json({**chunk, DIGEST: _digest(chunk)}))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()


def text_chunks(image: Image.Image) -> PngImagePlugin.PngInfo | None:
    """The workbench text chunks an in-memory image carries in ``image.info`` (a grid's cell map), for
    ``Image.save(..., pnginfo=...)``: PIL does not write ``info`` back on its own."""
    texts = {k: v for k, v in image.info.items() if isinstance(v, str) and k.startswith("workbench")}
    if not texts:
        return None
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_itxt(key, value)
    return info


def _digest(chunk: Mapping[str, Any]) -> str:
    return content_hash(canonical_json(chunk), 32)


def _jsonable(value: Any) -> Any:
    """Plain JSON values only: scheduler configs may hold tuples, inf or numpy scalars."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item())
    return str(value)


jsonable = _jsonable


# -- reading ----------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_OTHER_FORMATS = {b"\xff\xd8\xff": "a JPEG", b"RIFF": "a RIFF/WebP", b"GIF8": "a GIF"}


@dataclass(frozen=True)
class PngMetadata:
    """The generation metadata of one PNG, as read by ``read_png_metadata``.

    ``workbench`` is the decoded ``workbench`` chunk (verified: its request hashes to its run key)
    or None; ``parameters`` is the raw A1111 text or None; ``texts`` holds every text chunk.
    """

    name: str
    width: int
    height: int
    texts: Mapping[str, str]
    parameters: str | None
    workbench: Mapping[str, Any] | None

    @property
    def source(self) -> str:
        """``"workbench"`` when the full request is embedded, else the tool whose metadata the file holds:
        ``"a1111"`` (a parameters text), ``"comfyui"`` (a graph) or ``"invokeai"``."""
        if self.workbench is not None:
            return "workbench"
        if self.parameters is not None:
            return "a1111"
        return "invokeai" if INVOKEAI_KEY in self.texts else "comfyui"

    @property
    def a1111(self) -> dict[str, str] | None:
        return parse_a1111_parameters(self.parameters) if self.parameters is not None else None

    def _get(self, key: str) -> Any:
        return self.workbench.get(key) if self.workbench is not None else None

    @property
    def run_id(self) -> str | None:
        return self._get("run_id")

    @property
    def run_key(self) -> str | None:
        return self._get("run_key")

    @property
    def tracking_uri(self) -> str | None:
        return self._get("tracking_uri")

    @property
    def experiment_id(self) -> str | None:
        return self._get("experiment_id")

    @property
    def environment(self) -> dict[str, Any]:
        return dict(self._get("environment") or {})

    @property
    def batch(self) -> dict[str, Any]:
        """``size`` and ``index`` of the image in the backend call that made it, and the call's ``id``."""
        return dict(self._get("batch") or {})

    @property
    def batch_id(self) -> str | None:
        # Files written before the id moved into "batch" kept it in the environment.
        return self.batch.get("id") or self.environment.get("batch_id")

    def request(self, *, model: str | None = None, backend: str | None = None) -> GenerationRequest:
        """The request that made this image: the workbench chunk's, else one built from the A1111 text.

        ``model`` / ``backend`` replace what the metadata names (an A1111 model name is rarely
        something diffusers can load).
        """
        if self.workbench is not None:
            request = _request_from_chunk(self.workbench, self.name)
            changes = {k: v for k, v in (("model", model), ("backend", backend)) if v}
            return request.replace(**changes) if changes else request
        imported = self.imported(model=model, backend=backend)
        assert imported is not None
        return imported.request

    def imported(self, *, model: str | None = None, backend: str | None = None) -> Imported | None:
        """Another tool's metadata as a request, with what it does not reproduce; None for our own files.

        Raises ``MetadataError`` naming what could not be mapped.
        """
        source = self.source
        if source == "a1111":
            assert self.parameters is not None
            return import_a1111(parse_a1111_parameters(self.parameters), backend=backend, model=model)
        if source == "invokeai":
            return read_invokeai(self.texts[INVOKEAI_KEY], backend=backend, model=model)
        if source == "comfyui":
            return read_comfyui(self.texts, backend=backend, model=model)
        return None


def read_png_metadata(source: str | Path | bytes, *, verify: bool = True) -> PngMetadata:
    """Read both metadata chunks of a PNG, checking that the file is whole and the metadata intact.

    Raises ``MetadataError`` saying which problem it found: not a PNG, truncated or corrupt, no
    metadata, a ``workbench`` chunk that is not JSON or of an unknown format, or (``verify``) one whose
    request no longer hashes to its recorded run key (edited after the image was made).

    Example:
        >>> meta = read_png_metadata("image.png")  # doctest: +SKIP
        >>> meta.request().prompt, meta.run_id  # doctest: +SKIP
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<PNG bytes>"
    else:
        path = Path(source).expanduser()
        name = str(source)
        if not path.is_file():
            raise MetadataError(f"no such file: '{name}'" + (" (it is a folder)" if path.is_dir() else ""))
        data = path.read_bytes()
    width, height, texts = _walk_png(data, name)
    parameters = texts.get("parameters")
    raw = texts.get("workbench")
    if parameters is None and raw is None and GRID_CHUNK in texts:
        raise MetadataError(_grid_message(name, texts[GRID_CHUNK]))
    if parameters is None and raw is None and not (is_comfyui(texts) or INVOKEAI_KEY in texts):
        found = f" (text chunks present: {', '.join(sorted(texts))})" if texts else ""
        raise MetadataError(
            f"'{name}' holds no generation metadata: no 'workbench' and no 'parameters' text chunk (A1111), nor "
            f"ComfyUI's 'prompt' / 'workflow' or InvokeAI's '{INVOKEAI_KEY}'{found}. Editors and upload sites often "
            f"strip them when re-saving; reproduce from the MLflow run id instead")
    chunk = _decode_chunk(raw, name, verify=verify) if raw is not None else None
    return PngMetadata(name=name, width=width, height=height, texts=texts, parameters=parameters, workbench=chunk)


def _grid_message(name: str, raw: str) -> str:
    try:
        grid = json.loads(raw)
        runs = [c["run_id"] for c in grid["cells"] if c.get("run_id")]
        title = grid.get("title", "")
    except (ValueError, KeyError, TypeError):
        runs, title = [], ""
    shown = ", ".join(runs[:8]) + (f", … ({len(runs)} runs)" if len(runs) > 8 else "")
    return (f"'{name}' is a comparison grid{f' ({title})' if title else ''}, not one generation; reproduce one "
            f"of its runs by id" + (f": {shown}" if runs else ""))


def _walk_png(data: bytes, name: str) -> tuple[int, int, dict[str, str]]:
    """(width, height, text chunks) of a PNG, checking the signature, every CRC and the final IEND."""
    if not data.startswith(_PNG_SIGNATURE):
        kind = next((k for magic, k in _OTHER_FORMATS.items() if data.startswith(magic)), None)
        what = f"it is {kind} file" if kind else "it does not start with the PNG signature"
        if not data:
            what = "it is empty"
        raise MetadataError(f"'{name}' is not a PNG file ({what}); generation metadata is read from PNG text "
                            f"chunks only")
    pos, size = len(_PNG_SIGNATURE), len(data)
    width = height = 0
    texts: dict[str, str] = {}
    while True:
        if pos + 8 > size:
            raise MetadataError(f"'{name}' is truncated: the file ends after {size} bytes, before the PNG's end "
                                f"marker (IEND); it was cut short, e.g. by an interrupted download or copy")
        length, kind_bytes = struct.unpack(">I4s", data[pos:pos + 8])
        kind = kind_bytes.decode("latin-1")
        end = pos + 8 + length
        if end + 4 > size:
            raise MetadataError(f"'{name}' is truncated: the file ends inside its '{kind}' chunk (byte {size} of "
                                f"{end + 4}); it was cut short, e.g. by an interrupted download or copy")
        body = data[pos + 8:end]
        (crc,) = struct.unpack(">I", data[end:end + 4])
        if zlib.crc32(kind_bytes + body) & 0xFFFFFFFF != crc:
            raise MetadataError(f"'{name}' is corrupt: the checksum of its '{kind}' chunk at byte {pos} does not "
                                f"match (the file was damaged or edited byte-wise)")
        if kind == "IHDR" and length >= 8:
            width, height = struct.unpack(">II", body[:8])
        elif kind in ("tEXt", "zTXt", "iTXt"):
            key, text = _text_chunk(kind, body, name)
            texts[key] = text
        elif kind == "IEND":
            return width, height, texts
        pos = end + 4


def _text_chunk(kind: str, body: bytes, name: str) -> tuple[str, str]:
    key_bytes, _, rest = body.partition(b"\0")
    key = key_bytes.decode("latin-1")
    try:
        if kind == "tEXt":
            return key, rest.decode("latin-1")
        if kind == "zTXt":
            return key, zlib.decompress(rest[1:]).decode("latin-1")
        compressed, rest = rest[0], rest[2:]
        _lang, _, rest = rest.partition(b"\0")
        _translated, _, text = rest.partition(b"\0")
        return key, (zlib.decompress(text) if compressed else text).decode("utf-8")
    except (zlib.error, UnicodeDecodeError, IndexError) as exc:
        raise MetadataError(f"'{name}': the '{key}' text chunk cannot be decoded ({exc})") from None


def _decode_chunk(raw: str, name: str, *, verify: bool) -> dict[str, Any]:
    try:
        chunk = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MetadataError(f"the 'workbench' chunk of '{name}' is not valid JSON ({exc.msg} at character "
                            f"{exc.pos}); the metadata was damaged or edited by hand") from None
    if not isinstance(chunk, dict):
        raise MetadataError(f"the 'workbench' chunk of '{name}' is not a JSON object")
    if chunk.get("format") != FORMAT:
        raise MetadataError(f"the 'workbench' chunk of '{name}' has format {chunk.get('format')!r}; this version "
                            f"of the workbench reads '{FORMAT}' (upgrade the workbench, or reproduce from the "
                            f"A1111 'parameters' text)")
    if verify:
        request = _request_from_chunk(chunk, name)
        if request.run_key != chunk.get("run_key"):
            raise MetadataError(
                f"the 'workbench' chunk of '{name}' was tampered with: its request "
                f"(prompt '{_short(request.prompt)}', seed {request.seed}) hashes to run key {request.run_key}, but the chunk records run key "
                f"{chunk.get('run_key')!r}. The prompt or parameters were edited after the image was made; reproduce "
                f"from the original run id ({chunk.get('run_id') or 'unknown'}) instead")
        recorded = chunk.pop(DIGEST, None)
        if recorded is not None and recorded != _digest(chunk):
            raise MetadataError(
                f"the 'workbench' chunk of '{name}' was tampered with: its digest does not match its content (a "
                f"field such as the run id, tracking URI, environment or batch was edited after the image was "
                f"made); reproduce from the MLflow run id instead")
    return chunk


def _request_from_chunk(chunk: Mapping[str, Any], name: str) -> GenerationRequest:
    data = chunk.get("request")
    if not isinstance(data, Mapping):
        raise MetadataError(f"the 'workbench' chunk of '{name}' holds no request object")
    try:
        return GenerationRequest.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"the request in the 'workbench' chunk of '{name}' is invalid: {exc}") from None


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
