"""Environment fingerprints: what produced an image, so a reproduction can say what differs."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .config import PROJECT_DIR

__all__ = ["base_environment", "package_version", "git_state", "diff_environments"]


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
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_DIR,
                                capture_output=True, text=True, timeout=10, check=True).stdout
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


# Fields whose difference means pixels may differ (the rest are informational).
_IGNORED_IN_DIFF = {"git_commit", "git_dirty", "workbench", "batch_size", "batch_index", "batch_id"}


def diff_environments(old: dict[str, Any], new: dict[str, Any], *, include_all: bool = False
                      ) -> dict[str, tuple[Any, Any]]:
    """Fields whose values differ: ``{field: (old, new)}``."""
    keys = sorted(set(old) | set(new))
    return {k: (old.get(k), new.get(k)) for k in keys
            if old.get(k) != new.get(k) and (include_all or k not in _IGNORED_IN_DIFF)}
