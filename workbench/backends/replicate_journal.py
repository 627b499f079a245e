"""The predictions this machine started on Replicate, by what they were asked: so none is paid for twice.

A prediction is paid for when it is created. A ``workbench run`` killed while its predictions run (``kill -9``,
a crash, a lost laptop lid) would create them again on the next run, and pay again, though their outputs
can still be fetched for an hour. So each prediction's id is written here as soon as the create answers,
before any waiting, under a key made of the API host, the request's run key and the inputs sent (model,
version and seed included). The next request with the same key fetches that prediction instead of creating
one, unless it failed or its output is gone. Once an output is fetched its entry is dropped: a later
request for the same image (``workbench reproduce``) must make a new prediction, not read the old one.

A create is noted (``intend``) before it is sent: a process killed while the create itself waits
(``Prefer: wait``) for the prediction to finish never sees the id, and the next run then looks for that
prediction in Replicate's list of the account's predictions (``replicate_recovery.py``).

One small JSON file per key in ``<workbench home>/replicate/predictions`` (atomic writes; several threads
and processes may write at once). Entries older than a day are dropped: Replicate deletes outputs after an
hour. What this cannot cover: a process killed between fetching an output and logging it (the logger's
queue: well under a second) has dropped the entry (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import workbench_home
from ..hashing import canonical_json, content_hash

__all__ = ["JournalEntry", "PredictionJournal", "MAX_AGE_S"]

MAX_AGE_S = 24 * 3600.0


@dataclass(frozen=True)
class JournalEntry:
    """One request's note: the prediction it started (None: the create was sent, its answer never came)."""

    prediction_id: str | None
    sent_at: float


class PredictionJournal:
    """Prediction ids by request key, on disk. ``folder`` defaults to the workbench home's."""

    def __init__(self, folder: Path | None = None) -> None:
        self._folder = folder
        self._pruned = False  # old entries are dropped once per process, not on every write

    @property
    def folder(self) -> Path:
        return self._folder or workbench_home() / "replicate" / "predictions"

    @staticmethod
    def key(base_url: str, run_key: str, inputs: dict[str, Any]) -> str:
        """The API host (whose account), the request's run key (replicates without a seed differ only there)
        and the inputs sent."""
        return content_hash(canonical_json({"api": base_url.rstrip("/"), "run_key": run_key, "input": inputs}),
                            length=32)

    def entry(self, key: str) -> JournalEntry | None:
        """What was noted for ``key`` within ``MAX_AGE_S``: a started prediction's id, or a create sent
        whose answer never came (the process died waiting); None when nothing was."""
        entry = self._read(self.folder / f"{key}.json")
        if entry is None:
            return None
        prediction_id = str(entry["id"]) if entry.get("id") else None
        return JournalEntry(prediction_id=prediction_id, sent_at=float(entry["created"]))

    def known_ids(self) -> set[str]:
        """Every prediction id the journal holds: predictions already claimed by some request."""
        try:
            return {str(e["id"]) for p in self.folder.glob("*.json") if (e := self._read(p)) and e.get("id")}
        except OSError:
            return set()

    def intend(self, key: str) -> None:
        """Note that a create for ``key`` is about to be sent (``put`` replaces the note once it answers)."""
        self._write(key, {"id": None, "created": time.time()})

    def put(self, key: str, prediction_id: str) -> None:
        """Record a created prediction (before waiting for it)."""
        self._write(key, {"id": prediction_id, "created": time.time()})

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(entry, dict) and time.time() - float(entry["created"]) < MAX_AGE_S:
                return entry
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def _write(self, key: str, entry: dict[str, Any]) -> None:
        """Atomically; a journal that cannot be written costs only the protection, never the image."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{key}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle)
            os.replace(tmp, self.folder / f"{key}.json")
        except OSError:
            return
        self._prune()

    def drop(self, key: str) -> None:
        """Forget ``key`` (its prediction failed, or its output is gone): the next request creates anew."""
        try:
            (self.folder / f"{key}.json").unlink()
        except OSError:
            pass

    def _prune(self) -> None:
        if self._pruned:
            return
        self._pruned = True
        now = time.time()
        try:
            for path in self.folder.glob("*.json"):
                if now - path.stat().st_mtime > MAX_AGE_S:
                    path.unlink(missing_ok=True)
        except OSError:
            pass
