"""What every CLI module shares: the consoles, the error-to-exit-code mapping, common options.

Exit codes: bad input (``UserInputError``) → 2, any other ``WorkbenchError`` → 1; the message goes to
stderr as ``error: …``. Only the CLI turns exceptions into exit codes.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

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
    return wrapper  # type: ignore[return-value]


tracking_option = click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
                               help="MLflow tracking URI (default: the embedded SQLite store in the workbench home).")
