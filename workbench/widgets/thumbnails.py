"""Image bytes of logged runs, fetched from the store only when a cell is shown, and cached by run id.

A grid over a few hundred runs fetches only the page on screen; going back to a page costs nothing.
Thumbnails are PNG bytes no larger than ``size`` pixels on their longer side (smaller images are
kept as logged: upscaling happens in the browser).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable

from ..tracking.schema import IMAGE_ARTIFACT
from ..tracking.store import Tracker

__all__ = ["ThumbnailCache", "to_thumbnail"]


def to_thumbnail(data: bytes, size: int) -> bytes:
    """``data`` (any image PIL reads) as PNG bytes at most ``size`` px on the longer side."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if max(image.size) <= size and image.format == "PNG":
            return data
        image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=True)
        return out.getvalue()


class ThumbnailCache:
    """``thumbnail(run_id)`` and ``image(run_id)`` over ``fetch(run_id) -> bytes`` (the logged PNG).

    ``loads`` counts fetches from the store: the measure of laziness that tests assert on.
    Full images are kept for the ``keep_full`` most recent runs only; thumbnails for every run seen.
    """

    def __init__(self, fetch: Callable[[str], bytes], *, size: int = 192, keep_full: int = 16) -> None:
        self.fetch = fetch
        self.size = size
        self.keep_full = keep_full
        self.loads = 0
        self._thumbs: dict[str, bytes] = {}
        self._full: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def for_tracker(cls, tracker: Tracker, **kwargs: int) -> ThumbnailCache:
        return cls(lambda run_id: tracker.load_bytes(run_id, IMAGE_ARTIFACT), **kwargs)

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._thumbs

    def __len__(self) -> int:
        return len(self._thumbs)

    def image(self, run_id: str) -> bytes:
        """The logged PNG, as stored."""
        with self._lock:
            if run_id in self._full:
                self._full.move_to_end(run_id)
                return self._full[run_id]
        data = self.fetch(run_id)
        with self._lock:
            self.loads += 1
            self._full[run_id] = data
            while len(self._full) > self.keep_full:
                self._full.popitem(last=False)
        return data

    def thumbnail(self, run_id: str) -> bytes:
        cached = self._thumbs.get(run_id)
        if cached is not None:
            return cached
        thumb = to_thumbnail(self.image(run_id), self.size)
        self._thumbs[run_id] = thumb
        return thumb
