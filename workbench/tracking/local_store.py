"""A local store on disk (a SQLite file, a ``file:`` folder): does it exist, and may this user write there?

MLflow creates a missing store on first contact (the folder, then a ~1 MB database) and, in a folder it cannot
write, fails late (an empty read-only home spent 105 s in its retries) or with a misleading "cannot reach".
So the ``Tracker`` asks here first: a command that only reads creates nothing and says that the store does not
exist; a command that writes is told at once which path is not writable and how to fix it. Nothing in this
module imports MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import NotWritableError, StoreNotFoundError

__all__ = ["local_store_path", "check_local_store"]


def local_store_path(uri: str) -> Path | None:
    """The file or folder of a local store URI; None for a server or a database elsewhere.

    >>> local_store_path("sqlite:////tmp/x/mlflow.db"), local_store_path("http://127.0.0.1:5000")
    (PosixPath('/tmp/x/mlflow.db'), None)
    """
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):].split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)
    if uri.startswith("file:"):
        return Path(unquote(urlsplit(uri).path))
    return None


def check_local_store(uri: str, display: str, *, create: bool) -> None:
    """Raise ``StoreNotFoundError`` (a missing store, ``create=False``) or ``NotWritableError`` (a store, or the
    folder it would be made in, that this user cannot write: SQLite writes its journal beside the database even
    to read it). ``create``: make the store's folder, as ``workbench run`` does."""
    path = local_store_path(uri)
    if path is None:
        return
    if not path.exists():
        if not create:
            raise StoreNotFoundError(f"no MLflow store at {display}: {path} does not exist, so nothing was logged "
                                     f"there (and looking creates nothing); check --tracking-uri or "
                                     f"MLFLOW_TRACKING_URI, or `workbench run` a spec to create it")
        folder = path.parent if uri.startswith("sqlite:") else path
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        _writable(existing, f"the MLflow store {display} would be created in it")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NotWritableError(f"cannot create {folder} for the MLflow store {display}: {exc.strerror}; make "
                                   f"its parent writable, or set WORKBENCH_HOME or --tracking-uri to a writable "
                                   f"place") from None
        return
    folder = path.parent if path.is_file() else path
    _writable(folder, f"it holds the MLflow store {display}, and SQLite writes its journal there even to read")
    if path.is_file():
        _writable(path, f"it is the MLflow store {display}")


def _writable(path: Path, why: str) -> None:
    if not path.is_dir() and path.exists() and not path.is_file():
        raise NotWritableError(f"{path} is neither a file nor a folder ({why})")
    if not os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0)):
        owner = _owner(path)
        raise NotWritableError(f"{path} is not writable by this user ({why}): permission denied"
                               f"{f' (owned by {owner}, mode {path.stat().st_mode & 0o777:o})' if owner else ''}; "
                               f"make it writable (chmod u+w {path}), or set WORKBENCH_HOME or --tracking-uri to a "
                               f"writable place")


def _owner(path: Path) -> str | None:
    try:
        return path.owner()
    except (KeyError, OSError, NotImplementedError):
        return None
