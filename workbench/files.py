"""Atomic writes that honour the umask: a temporary file or folder beside the target, renamed into place.

``tempfile.mkstemp`` and ``mkdtemp`` create 0600 files and 0700 folders whatever the umask (they are meant
for secrets); renamed into place, a grid or a model folder would then be private to its writer, while a
plain ``open()`` or ``mkdir`` gives 0644 / 0755 under the usual umask 022. These helpers give the latter.

Example:
    >>> path = write_atomic(Path("/tmp/example.txt"), lambda f: f.write(b"hello"))  # doctest: +SKIP
    >>> oct(path.stat().st_mode & 0o777)  # doctest: +SKIP
    '0o644'
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["current_umask", "write_atomic", "temp_folder"]

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # elsewhere: set and restore (process-wide, so as briefly as possible)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``write(handle)``: readers never see half a file, concurrent writers each use
    their own temporary file, and the file gets 0666 less the umask, as ``open()`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=f".tmp{path.suffix}", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def temp_folder(parent: Path, prefix: str) -> Path:
    """A new empty folder in ``parent`` (to be filled, then renamed into place), with 0777 less the umask,
    as ``mkdir`` would give it."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    folder.chmod(0o777 & ~current_umask())
    return folder
