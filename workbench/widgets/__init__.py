"""Notebook widgets: comparison grids over MLflow runs, and a template explorer (needs ipywidgets).

    >>> from workbench.widgets import ComparisonGrid, TemplateExplorer  # doctest: +SKIP
    >>> ComparisonGrid("quickstart", cols="var.lighting")  # the grid, read from MLflow  # doctest: +SKIP
    >>> ComparisonGrid("quickstart", rater="alice")  # rate images 1-5; the report tab  # doctest: +SKIP
    >>> TemplateExplorer()  # pick a template, edit its variables, run a small experiment  # doctest: +SKIP

Install the extra with ``pip install 'workbench[notebook]'``. The logic is plain Python building
widget trees (``view`` holds the pure part), so it runs, and is tested, without a browser; see
docs/notebooks.md.
"""

from __future__ import annotations

try:
    import ipywidgets  # noqa: F401
except ImportError as exc:  # a missing extra names what to install
    from ..errors import MissingDependencyError

    raise MissingDependencyError("ipywidgets", "notebook") from exc

from .comparison import ComparisonGrid
from .detail import RunDetail
from .explorer import TemplateExplorer
from .export import shared_parent_run
from .view import PAGED, SIDE_BY_SIDE, GridView, build_view

__all__ = ["ComparisonGrid", "TemplateExplorer", "RunDetail", "GridView", "build_view", "shared_parent_run",
           "SIDE_BY_SIDE", "PAGED"]
