"""workbench: prompt experiments for text-to-image models, tracked in MLflow.

The public API: everything a notebook or a script needs, from one import. The package's folders are its
stages (docs/architecture.md); modules inside it import from the module that defines a name, not from here.

Example:
    >>> from workbench import load_spec, make_plan, report
    >>> spec = load_spec("experiments/quickstart.yaml")  # doctest: +SKIP
    >>> make_plan(spec).total_images  # doctest: +SKIP
    >>> report("quickstart", metric="image.sharpness").factor("guidance").best  # doctest: +SKIP
"""

from __future__ import annotations

from .backends.base import Backend, Capabilities
from .backends.registry import get_backend, list_backends, register_backend
from .errors import *  # noqa: F403  (the exception tree is public)
from .errors import __all__ as _errors_all
from .evaluate.effects import EffectsReport
from .evaluate.ratings import Rating, pick_best, rate
from .evaluate.report import report
from .evaluate.rescore import RescoreSummary, rescore
from .experiments.expand import expand
from .experiments.spec import ExperimentSpec, load_spec, parse_spec
from .grids.pivot import resolve_where
from .grids.render import grid_from_records, render_grid
from .hashing import canonical_json, run_key
from .prompts.templates import (
    PromptTemplate,
    RenderedPrompt,
    TemplateLibrary,
    TemplateVariable,
    load_template,
    render_string,
)
from .reproduce.regenerate import reproduce
from .reproduce.report import ReproductionReport
from .run.context import RunSummary
from .run.plan import Plan, make_plan
from .run.ray_executor import RayOptions
from .run.runner import run_experiment
from .tracking.schema import RunRecord
from .tracking.store import Tracker
from .types import GeneratedImage, GenerationFailure, GenerationRequest

__version__ = "0.1.0"

__all__ = [
    "Backend", "Capabilities", "get_backend", "list_backends", "register_backend",
    "ExperimentSpec", "expand", "load_spec", "parse_spec",
    "TemplateLibrary", "PromptTemplate", "RenderedPrompt", "TemplateVariable", "load_template", "render_string",
    "grid_from_records", "render_grid", "resolve_where", "canonical_json", "run_key",
    "Plan", "make_plan", "RunSummary", "run_experiment", "RayOptions", "Tracker", "reproduce", "ReproductionReport",
    "GeneratedImage", "GenerationFailure", "GenerationRequest", "RunRecord",
    "report", "EffectsReport", "rescore", "RescoreSummary", "rate", "pick_best", "Rating",
    *_errors_all,
]
