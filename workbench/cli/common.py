"""What every CLI module shares: the consoles, the error-to-exit-code mapping, common options.

Exit codes: bad input (``UserInputError``) → 2, any other ``WorkbenchError`` → 1; the message goes to
stderr as ``error: …``. Only the CLI turns exceptions into exit codes.
"""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from ..config import workbench_home
from ..errors import UserInputError, WorkbenchError

__all__ = ["out", "err", "handle_errors", "tracking_option"]

F = TypeVar("F", bound=Callable[..., Any])
# Not a terminal (a pipe, a test): a fixed width, and long lines (paths) are not wrapped.
out = Console(width=None if sys.stdout.isatty() else 120, soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def handle_errors(func: F) -> F:
    """Map the exception tree to exit codes, printing ``error: …`` on stderr."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserInputError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            sys.exit(2)
        except WorkbenchError as exc:
            err.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", highlight=False)
            sys.exit(1)
        except OSError as exc:  # a folder we must write that is read-only (or a file): the path and the fix
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
                raise
            err.print(f"[bold red]error:[/] {escape(not_writable_message(exc))}", highlight=False)
            sys.exit(2)
    return wrapper  # type: ignore[return-value]


def not_writable_message(exc: OSError) -> str:
    """What a permission error says: which path, and how to fix it (the workbench home has its own fix)."""
    path = Path(str(exc.filename)) if exc.filename else None
    home = workbench_home()
    where = ""
    if path is not None and (path == home or home in path.parents):
        where = f" (in the workbench home {home})"
    fix = "make it writable, or set WORKBENCH_HOME to a writable folder" if where else "check its permissions"
    clash = " (a file stands where a folder should be)" if exc.errno in (errno.ENOTDIR, errno.EEXIST) else ""
    return f"cannot write {path or 'a file'}{where}: {exc.strerror or 'permission denied'}{clash}; {fix}"


tracking_option = click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
                               help="MLflow tracking URI (default: the embedded SQLite store in the workbench home).")
