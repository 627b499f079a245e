"""Environment fingerprints: what produced an image, so a reproduction can say what differs.

A result's ``environment`` holds the setup only (libraries, device, dtype, weights...); its batch
position lives on the result itself (``batch_size``, ``batch_index``, ``batch_id``). A run's
``environment.json`` holds both (``recorded_environment``): it is where the position of a failed image is
kept, and where readers of older runs find it.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..config import PROJECT_DIR
from ..types import GenerationResult

__all__ = ["base_environment", "run_environment", "recorded_environment", "package_version", "git_state",
           "diff_environments", "INFORMATIONAL"]


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@functools.cache
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the workbench checkout, or (None, None) outside a git checkout."""
    if not (PROJECT_DIR / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        # Untracked files count only inside the package: a new module changes what runs, a stray file does not.
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_DIR,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        status += subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", "workbench"],
                                 cwd=PROJECT_DIR, capture_output=True, text=True, timeout=10, check=True).stdout
        return commit or None, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


@functools.cache
def _static() -> dict[str, Any]:
    commit, dirty = git_state()
    return {
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "workbench": package_version("workbench"),
        "git_commit": commit,
        "git_dirty": dirty,
    }


def base_environment() -> dict[str, Any]:
    """Fields every backend reports: python, platform, workbench version and git state."""
    return dict(_static())


def run_environment(reported: Mapping[str, Any], *, backend: str) -> dict[str, Any]:
    """A run's fingerprint: the fields every backend shares, then what the backend itself reported."""
    return {**base_environment(), "backend": backend, **reported}


def recorded_environment(result: GenerationResult) -> dict[str, Any]:
    """The fingerprint as ``environment.json`` records it: ``result.environment`` with the batch position
    written in from the result, its one source."""
    env = {**result.environment, "batch_size": result.batch_size, "batch_index": result.batch_index}
    if result.batch_id:
        env["batch_id"] = result.batch_id
    return env


# Fields that say who or what ran, not how the pixels were computed: reported apart, as informational
# (the batch shape is explained by its own note). batch_id names one call and is never compared.
INFORMATIONAL = {"git_commit", "git_dirty", "workbench", "batch_size", "batch_index"}
_NEVER_COMPARED = {"batch_id"}


def diff_environments(old: Mapping[str, Any], new: Mapping[str, Any], *, informational: bool = False
                      ) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ, ``{field: (old, new)}``: those that can change pixels, or with
    ``informational=True`` the others (workbench version, git state, batch position)."""
    keys = sorted((set(old) | set(new)) - _NEVER_COMPARED)
    return {k: (old.get(k), new.get(k)) for k in keys
            if old.get(k) != new.get(k) and (k in INFORMATIONAL) == informational}
