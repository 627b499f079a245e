"""Expansion: a spec into its cells, then into ``GenerationRequest``s (pure: no I/O past loading templates).

One-factor-at-a-time: the base cell, then each factor swept over its levels while everything else stays
at base, so every comparison differs in exactly one factor; the optional ``grid`` crosses two factors.
Seeds are replicates inside every cell. Requests are deduplicated by run key, so expansion is idempotent.

    >>> from workbench.experiments.spec import parse_spec
    >>> spec = parse_spec({"name": "x", "prompt": "a red circle", "model": "m", "seeds": [1, 2],
    ...                    "vary": {"steps": [5, 10]}})
    >>> [c.label for c in cells(spec)], len(expand(spec))
    (['base', 'steps=5', 'steps=10'], 6)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import BudgetError, SpecError, TemplateError
from ..hashing import canonical_json
from ..prompts.templates import TemplateLibrary, render_string
from ..types import GenerationRequest, Lora
from .spec import SIZE_PATTERN, ExperimentSpec, check_template_variables

__all__ = ["Cell", "cells", "expand"]


@dataclass(frozen=True)
class Cell:
    """One condition of the experiment: the factor levels that differ from base (empty = base)."""

    group: str  # "base", the factor name, or "rows×cols" for the grid
    changes: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.changes) or "base"


def cells(spec: ExperimentSpec) -> list[Cell]:
    """Every condition, base first, in spec order; a level equal to base is the base cell itself."""
    out = [Cell("base", ())]
    for factor, levels in spec.vary.items():
        out += [Cell(factor, ((factor, level),)) for level in levels]
    if spec.grid:
        r, c = spec.grid.rows, spec.grid.cols
        group = f"{r.factor}×{c.factor}"
        out += [Cell(group, ((r.factor, rl), (c.factor, cl))) for rl in r.levels for cl in c.levels]
    return out


def _apply(settings: dict[str, Any], factor: str, level: Any) -> None:
    if factor.startswith("var."):
        settings["variables"] = {**settings["variables"], factor[4:]: level}
    elif factor.startswith("option."):
        settings["option_levels"] = {**settings["option_levels"], factor[7:]: level}
    elif factor.startswith("lora."):
        name, _, attribute = factor[5:].partition(".")
        settings["loras"] = tuple(
            (replace(lora, scale=float(level)) if attribute == "scale" else replace(lora, enabled=level in (True, "on")))
            if lora.name == name else lora for lora in settings["loras"])
    elif factor == "size":
        w, h = SIZE_PATTERN.match(level).groups()  # type: ignore[union-attr]
        settings["width"], settings["height"] = int(w), int(h)
    elif factor == "backend":
        backend, _, model = str(level).partition(":")
        settings["backend"] = backend
        settings["model"] = model or settings["model"]
    else:
        settings[factor] = level


def expand(spec: ExperimentSpec, *, library: TemplateLibrary | None = None,
           seeds_supported: Callable[[str, str], bool] | None = None,
           model_defaults: Callable[[str, str], dict[str, Any]] | None = None) -> list[GenerationRequest]:
    """All requests of ``spec``, deduplicated by run key, base cell first.

    ``library`` is a ``TemplateLibrary`` (default: the configured one). ``seeds_supported(backend,
    model)`` says whether a backend honours seeds; where it does not, the seeds become replicate
    indices (``seed=None``) so the run is honest about what was held. ``model_defaults(backend, model)``
    gives a model family's own steps and guidance, used where neither the spec nor its template sets them.
    """
    n_cells = len(cells(spec))
    total = n_cells * len(spec.seeds)
    if total > spec.max_images:
        raise BudgetError(f"the spec expands to {n_cells} cells × {len(spec.seeds)} seeds = {total} images, "
                          f"over max_images={spec.max_images}; reduce the levels or seeds, or raise "
                          f"'max_images' in the spec")
    if library is None and spec.template is not None:
        library = TemplateLibrary()

    template = spec.template
    if template is not None:
        check_template_variables(spec, library)
    base_params = dict(model_defaults(spec.backend, spec.model)) if model_defaults else {}
    base_params.update(library.get(template).defaults if template else {})
    base_params.update(spec.params.model_dump(exclude_none=True))
    base: dict[str, Any] = {
        "backend": spec.backend, "model": spec.model, "template": template, "prompt": spec.prompt,
        "negative_prompt": spec.negative_prompt, "variables": dict(spec.variables),
        "option_levels": {},  # set by option.NAME factors
        "width": base_params.get("width", 512), "height": base_params.get("height", 512),
        "steps": base_params.get("steps", 30), "guidance": float(base_params.get("guidance", 7.5)),
        "scheduler": base_params.get("scheduler"),
        "loras": tuple(Lora(name=e.name, source=e.source, scale=e.scale, weight_name=e.weight_name, enabled=e.enabled)
                       for e in spec.loras),
    }
    requests: dict[str, GenerationRequest] = {}
    rendered_cache: dict[str, tuple[str, str, str | None]] = {}
    for cell in cells(spec):
        settings = dict(base)
        for factor, level in cell.changes:
            _apply(settings, factor, level)
        # the options of the cell's backend: everyone's, then its own, then the level being varied
        settings["options"] = {**spec.options, **spec.backend_options.get(settings["backend"], {}),
                               **settings["option_levels"]}
        prompt, negative, version, variables = _render(spec, settings, library, rendered_cache)
        seeded = seeds_supported(settings["backend"], settings["model"]) if seeds_supported else True
        factor = cell.group if cell.changes else None
        level = " × ".join(str(v) for _, v in cell.changes) if cell.changes else None
        for index, seed in enumerate(spec.seeds):
            request = GenerationRequest(
                backend=settings["backend"], model=settings["model"], prompt=prompt, negative_prompt=negative,
                seed=seed if seeded else None, replicate=index, width=settings["width"],
                height=settings["height"], steps=settings["steps"], guidance=float(settings["guidance"]),
                scheduler=settings["scheduler"], options=settings["options"], template=settings["template"],
                template_version=version, variables=variables, experiment=spec.name, factor=factor, level=level,
                loras=settings["loras"])
            requests.setdefault(request.run_key, request)
    return list(requests.values())


def _render(spec: ExperimentSpec, settings: dict[str, Any], library: TemplateLibrary | None,
            cache: dict[str, Any]) -> tuple[str, str, str | None, dict[str, Any]]:
    key = canonical_json({k: settings[k] for k in ("template", "prompt", "negative_prompt", "variables")})
    if key in cache:
        return cache[key]  # type: ignore[no-any-return]
    if settings["template"] is not None:
        template = library.get(settings["template"])
        declared = template.variables
        # Each template takes the variables it declares; _check_template_variables made sure that every
        # variable given reaches one of the spec's templates.
        rendered = template.render({k: v for k, v in settings["variables"].items() if k in declared})
        negative = rendered.negative_prompt if settings["negative_prompt"] is None else settings["negative_prompt"]
        result = (rendered.prompt, negative, rendered.version, dict(rendered.variables))
    else:
        try:
            prompt = render_string(settings["prompt"], settings["variables"], name="prompt")
            negative = render_string(settings["negative_prompt"] or "", settings["variables"],
                                     name="negative_prompt")
        except TemplateError as exc:
            raise SpecError(f"prompt: {exc}") from None
        result = (prompt, negative, None, dict(settings["variables"]))
    cache[key] = result
    return result
