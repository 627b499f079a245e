"""Backends: one file each (diffusers, openai, replicate, fake), one small contract (``base.Backend``).

The API backends keep their parts beside them: ``openai_models``/``openai_errors``, ``replicate_models``/
``replicate_api``/``replicate_results``, and what both share in ``_http``.
"""

from .base import Backend, Capabilities
from .registry import get_backend, list_backends, register_backend

__all__ = ["Backend", "Capabilities", "get_backend", "list_backends", "register_backend"]
