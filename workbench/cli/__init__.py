"""The ``workbench`` command (click): thin, each command parses, calls one library function, prints.

- ``app``: the group and the run/plan/grid/ui/info commands; ``main`` is the console script
- ``common``: the consoles, the error-to-exit-code mapping, shared options
- ``reproduce``: ``workbench inspect`` and ``workbench reproduce``
- ``templates``: ``workbench templates list|show|render``
- ``evaluate``: ``workbench score``, ``workbench rate`` and ``workbench report``

``cli`` and ``main`` are exported here because ``workbench = "workbench.cli:main"`` is the entry point.
"""

from .app import cli, main

__all__ = ["cli", "main"]
