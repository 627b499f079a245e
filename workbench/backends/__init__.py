"""Backends: one file each (diffusers, openai, replicate, fake), one small contract (``base.Backend``)."""

from .base import Backend, Capabilities
from .registry import get_backend, list_backends, register_backend

__all__ = ["Backend", "Capabilities", "get_backend", "list_backends", "register_backend"]
