"""One exception tree for the whole workbench.

Every message says what is wrong, quotes the bad value, and says how to fix it.
The CLI maps the tree to exit codes (``cli.py`` only): ``UserInputError`` → 2, any
other ``WorkbenchError`` → 1.

    WorkbenchError
    ├── UserInputError                 bad input; nothing was generated (exit code 2)
    │   ├── TemplateError              template not found, syntax error, bad variables, sandbox escape
    │   ├── SpecError                  experiment spec invalid (names the offending key)
    │   ├── UnknownBackendError        backend name not registered (lists the valid names)
    │   ├── UnsupportedRequestError    a request the backend/model cannot honour (plan time)
    │   ├── BudgetError                plan is over --max-cost / max_images
    │   ├── MetadataError              PNG without (valid) workbench or A1111 metadata
    │   ├── UnknownRunError            no such run id in the store (or neither a run id nor a file)
    │   ├── NotReproducibleError       a run or file without an image or a rebuildable request
    │   ├── ScoringModelError          a scoring model (CLIP) named that cannot be found or loaded
    │   ├── StoreNotFoundError         a local MLflow store that does not exist, asked by a command that only reads
    │   └── NotWritableError           a folder the workbench must write (its home, a store) is not writable
    ├── BackendError                   a backend call failed
    │   ├── AuthenticationError        401/403, missing key: stops the sweep (fatal)
    │   │   └── MissingSecretError     no API key set: also a UserInputError (exit 2 before anything runs)
    │   ├── QuotaError                 quota exhausted: stops the sweep (fatal)
    │   ├── ModelNotFoundError         the server has no such model (retired, unknown): stops the sweep (fatal)
    │   ├── RateLimitError             429: retried with backoff (retryable)
    │   ├── TransientBackendError      5xx, timeouts, dropped connections (retryable)
    │   ├── ContentPolicyError         blocked by a safety filter: that run is BLOCKED, sweep goes on
    │   ├── InvalidResponseError       a response we cannot use (no data, bad image)
    │   ├── OutOfMemoryError           the device ran out of memory: the runner halves the batch
    │   ├── ReproductionFailedError    the backend gave no image when reproducing a run
    │   └── MissingDependencyError     an optional extra is not installed (names the pip command)
    └── TrackingError                  MLflow store unreachable or refused a write
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "WorkbenchError",
    "UserInputError",
    "TemplateError",
    "SpecError",
    "UnknownBackendError",
    "UnsupportedRequestError",
    "BudgetError",
    "MetadataError",
    "UnknownRunError",
    "NotReproducibleError",
    "ScoringModelError",
    "StoreNotFoundError",
    "NotWritableError",
    "BackendError",
    "AuthenticationError",
    "MissingSecretError",
    "QuotaError",
    "ModelNotFoundError",
    "RateLimitError",
    "TransientBackendError",
    "ContentPolicyError",
    "InvalidResponseError",
    "OutOfMemoryError",
    "ReproductionFailedError",
    "MissingDependencyError",
    "TrackingError",
]


class WorkbenchError(Exception):
    """Base of every error the workbench raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable whatever a subclass's __init__ takes: Ray sends errors from its workers to the driver.
        return _restore_error, (type(self), self.args, self.__dict__)


def _restore_error(cls: type[WorkbenchError], args: tuple[Any, ...], state: dict[str, Any]) -> WorkbenchError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class UserInputError(WorkbenchError):
    """The input (template, spec, option, file) is wrong; nothing was generated."""


class TemplateError(UserInputError):
    """A prompt template could not be found, parsed or rendered."""

    def __init__(self, message: str, *, template: str | None = None, line: int | None = None,
                 variable: str | None = None) -> None:
        self.template = template
        self.line = line
        self.variable = variable
        where = ""
        if template:
            where = f"template '{template}'"
            if line:
                where += f", line {line}"
            where += ": "
        super().__init__(where + message)


class SpecError(UserInputError):
    """An experiment spec is invalid."""


class UnknownBackendError(UserInputError):
    """No backend is registered under that name."""


class UnsupportedRequestError(UserInputError):
    """A backend or model cannot honour a request (size, n, option...)."""


class BudgetError(UserInputError):
    """The planned work exceeds a configured cap (images or cost)."""


class MetadataError(UserInputError):
    """A PNG holds no usable generation metadata."""


class UnknownRunError(UserInputError):
    """No run with that id in the tracking store (or the source is neither a run id nor a file)."""


class NotReproducibleError(UserInputError):
    """The run or file holds no image to compare with, or not enough to rebuild its request."""


class ScoringModelError(UserInputError):
    """A scoring model (the CLIP of ``evaluate: {clip: ...}`` or ``--clip``) cannot be found or loaded."""


class StoreNotFoundError(UserInputError):
    """A local tracking store (SQLite file, ``file:`` folder) that does not exist: reading creates nothing."""


class NotWritableError(UserInputError):
    """A folder or file the workbench must write is read-only or missing its permissions (names the path)."""


class BackendError(WorkbenchError):
    """A backend call failed.

    ``retryable`` errors are retried by the runner with bounded backoff; ``fatal`` errors stop
    the sweep at once (every finished image is kept); others fail only the affected runs.
    """

    retryable: bool = False
    fatal: bool = False
    status: str = "FAILED"

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        self.request_id = request_id
        super().__init__(message)


class AuthenticationError(BackendError):
    fatal = True


class MissingSecretError(AuthenticationError, UserInputError):
    """An API key or token is not set. Bad input, found by ``preflight`` before anything runs (exit 2);
    should it surface mid-sweep, it stops the sweep like any ``AuthenticationError``."""


class QuotaError(BackendError):
    fatal = True


class ModelNotFoundError(BackendError):
    """The server does not know the model (retired, unknown, or not on this host): every further call
    would fail the same way, so the sweep stops."""

    fatal = True


class RateLimitError(BackendError):
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None,
                 request_id: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, request_id=request_id)


class TransientBackendError(BackendError):
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None,
                 request_id: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, request_id=request_id)


class ContentPolicyError(BackendError):
    status = "BLOCKED"


class InvalidResponseError(BackendError):
    pass


class OutOfMemoryError(BackendError):
    """The device ran out of memory for this batch; a smaller batch may fit."""


class ReproductionFailedError(BackendError):
    """The backend ran but gave no image for the reproduced request (NaN output, safety filter...)."""


class MissingDependencyError(BackendError):
    fatal = True

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"the optional dependency '{package}' is not installed; "
            f"install it with: pip install 'workbench[{extra}]'"
        )


class TrackingError(WorkbenchError):
    """The MLflow store cannot be reached or refused a write."""
