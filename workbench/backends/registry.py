"""Backend lookup by name: built-ins plus the ``workbench.backends`` entry-point group.

Third-party backends declare ``[project.entry-points."workbench.backends"] mine = "pkg.mod:MyBackend"``.
A broken plugin warns instead of breaking the built-ins.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from importlib.metadata import entry_points
from typing import Any

from ..errors import UnknownBackendError
from .base import Backend

__all__ = ["get_backend", "list_backends", "register_backend"]

_BUILTIN = {
    "diffusers": "workbench.backends.diffusers:DiffusersBackend",
    "openai": "workbench.backends.openai:OpenAIBackend",
    "replicate": "workbench.backends.replicate:ReplicateBackend",
    "fake": "workbench.backends.fake:FakeBackend",
}
_registered: dict[str, type[Backend] | str] = {}
_instances: dict[str, Backend] = {}


def register_backend(name: str, backend: type[Backend] | str) -> None:
    """Register a backend class (or ``"module:Class"`` path) under ``name``."""
    _registered[name] = backend
    _instances.pop(name, None)


def _all() -> dict[str, type[Backend] | str]:
    found: dict[str, type[Backend] | str] = dict(_BUILTIN)
    for name, value in _plugins():
        found.setdefault(name, value)
    found.update(_registered)
    return found


@functools.lru_cache(maxsize=1)
def _plugins() -> tuple[tuple[str, str], ...]:
    """The ``workbench.backends`` entry points, read once per process: scanning every installed package's
    metadata takes ~0.3 s, and a plan asks for a backend per cell."""
    try:
        return tuple((ep.name, ep.value) for ep in entry_points(group="workbench.backends"))
    except Exception as exc:  # a broken plugin must not break the built-ins
        warnings.warn(f"could not read workbench.backends entry points: {exc}", stacklevel=2)
        return ()


def list_backends() -> list[str]:
    """Names of every backend that can be asked for."""
    return sorted(_all())


def _load(target: type[Backend] | str) -> type[Backend]:
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    return target


def get_backend(name: str, **config: Any) -> Backend:
    """The backend called ``name``; one shared instance per process unless ``config`` is given.

    >>> get_backend("nope")
    Traceback (most recent call last):
    ...
    workbench.errors.UnknownBackendError: unknown backend 'nope'; available backends: diffusers, fake, openai, replicate
    """
    known = _all()
    if name not in known:
        raise UnknownBackendError(
            f"unknown backend '{name}'; available backends: {', '.join(sorted(known))}")
    if config:
        return _load(known[name])(**config)
    if name not in _instances:
        _instances[name] = _load(known[name])()
    return _instances[name]
