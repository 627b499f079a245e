"""workbench: prompt experiments for text-to-image models, tracked in MLflow.

Example:
    >>> from workbench import load_spec, make_plan
    >>> spec = load_spec("experiments/quickstart.yaml")  # doctest: +SKIP
    >>> make_plan(spec).total_images  # doctest: +SKIP
"""

from __future__ import annotations

from .backends.base import Backend, Capabilities
from .backends.registry import get_backend, list_backends, register_backend
from .errors import *  # noqa: F403  (the exception tree is public)
from .errors import __all__ as _errors_all
from .experiments.expand import expand
from .experiments.spec import ExperimentSpec, load_spec, parse_spec
from .grid import grid_from_records, render_grid, resolve_where
from .hashing import canonical_json, run_key
from .plan import Plan, make_plan
from .prompts.templates import PromptTemplate, RenderedPrompt, TemplateLibrary, TemplateVariable, load_template, \
    render_string
from .reproduce import ReproductionReport, reproduce
from .ray_executor import RayOptions
from .runner import RunSummary, run_experiment
from .tracking import Tracker
from .types import GeneratedImage, GenerationFailure, GenerationRequest, RunRecord

__version__ = "0.1.0"

__all__ = [
    "Backend", "Capabilities", "get_backend", "list_backends", "register_backend",
    "ExperimentSpec", "expand", "load_spec", "parse_spec",
    "TemplateLibrary", "PromptTemplate", "RenderedPrompt", "TemplateVariable", "load_template", "render_string",
    "grid_from_records", "render_grid", "resolve_where", "canonical_json", "run_key",
    "Plan", "make_plan", "RunSummary", "run_experiment", "RayOptions", "Tracker", "reproduce", "ReproductionReport",
    "GeneratedImage", "GenerationFailure", "GenerationRequest", "RunRecord",
    *_errors_all,
]
