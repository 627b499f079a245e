"""Where things live: the workbench home, the default MLflow store, the template library.

Resolved once, always to absolute paths, never relative to the current directory (MLflow's own
default ``sqlite:///mlflow.db`` is relative to it, which scatters stores across folders).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["workbench_home", "default_tracking_uri", "default_artifact_root", "template_dirs",
           "resolve_tracking_uri", "is_local_sqlite", "public_uri"]

PACKAGE_DIR = Path(__file__).resolve().parent
# In a source checkout (editable install) the project root holds pyproject.toml and templates/.
PROJECT_DIR = PACKAGE_DIR.parent


def _in_checkout() -> bool:
    return (PROJECT_DIR / "pyproject.toml").is_file() and (PROJECT_DIR / "templates").is_dir()


def workbench_home() -> Path:
    """``$WORKBENCH_HOME``, else ``<checkout>/.workbench``, else ``~/.workbench``."""
    env = os.environ.get("WORKBENCH_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if _in_checkout():
        return PROJECT_DIR / ".workbench"
    return Path.home() / ".workbench"


def default_tracking_uri() -> str:
    """The embedded store: SQLite inside the workbench home."""
    return f"sqlite:///{workbench_home() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    return workbench_home() / "artifacts"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """An explicit URI, else ``$MLFLOW_TRACKING_URI``, else the embedded store (made absolute)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # sqlite:///relative.db → absolute, so the store does not depend on the current directory
        rel = uri[len("sqlite:///"):]
        uri = f"sqlite:///{Path(rel).resolve()}"
    elif "://" not in uri and not uri.startswith("databricks"):
        from .errors import UserInputError

        raise UserInputError(f"tracking URI '{uri}' has no scheme; use sqlite:////abs/path.db, "
                             f"http://host:port or another MLflow store URI")
    return uri


def is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")


def public_uri(uri: str | None) -> str | None:
    """A tracking URI without credentials (user:password@ never goes into files or logs)."""
    if not uri or "@" not in uri:
        return uri
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def template_dirs() -> list[Path]:
    """Template library folders: ``$WORKBENCH_TEMPLATES`` (os.pathsep-separated) then the built-ins."""
    dirs = [Path(p).expanduser().resolve() for p in os.environ.get("WORKBENCH_TEMPLATES", "").split(os.pathsep)
            if p]
    # A wheel carries the checkout's templates/ as workbench/templates_builtin (see pyproject.toml).
    builtin = PROJECT_DIR / "templates" if _in_checkout() else PACKAGE_DIR / "templates_builtin"
    dirs.append(builtin)
    return dirs
