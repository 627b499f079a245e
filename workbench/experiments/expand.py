"""Expansion: a spec into its cells, then into ``GenerationRequest``s (pure: no I/O past loading templates).

One-factor-at-a-time: the base cell, then each factor swept over its levels while everything else stays
at base, so every comparison differs in exactly one factor; the optional ``grid`` crosses two factors.
Seeds are replicates inside every cell. Requests are deduplicated by run key, so expansion is idempotent.
Cells are counted (``count_cells``) before any is built, so an oversized spec is refused at once; a plan can
expand only some of them (``summary_cells``). The checks that need the merged values run here, before
anything is written: the base after template and model defaults, the variables a literal prompt uses, and
levels that would repeat another cell's images.

    >>> from workbench.experiments.spec import parse_spec
    >>> spec = parse_spec({"name": "x", "prompt": "a red circle", "model": "m", "seeds": [1, 2],
    ...                    "vary": {"steps": [5, 10]}})
    >>> [c.label for c in cells(spec)], len(expand(spec))
    (['base', 'steps=5', 'steps=10'], 6)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from pydantic import ValidationError

from ..errors import SpecError, TemplateError
from ..hashing import canonical_json
from ..prompts.templates import TemplateLibrary, prompt_variables, render_string
from ..types import GenerationRequest, Lora
from .spec import SIZE_PATTERN, ExperimentSpec, Params, budget_error, check_template_variables

__all__ = ["Cell", "cells", "count_cells", "summary_cells", "expand"]


@dataclass(frozen=True)
class Cell:
    """One condition of the experiment: the factor levels that differ from base (empty = base)."""

    group: str  # "base", the factor name, or "rows×cols" for the grid
    changes: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.changes) or "base"


def cells(spec: ExperimentSpec) -> list[Cell]:
    """Every condition, base first, in spec order (grid cells equal to another cell share its images)."""
    return list(_iter_cells(spec))


def count_cells(spec: ExperimentSpec) -> int:
    """How many cells ``cells`` would give, without building them.

    >>> from workbench.experiments.spec import parse_spec
    >>> count_cells(parse_spec({"name": "x", "prompt": "p", "model": "m", "seeds": [1], "vary": {"steps": [5, 9]},
    ...                         "grid": {"rows": {"factor": "guidance", "levels": [1, 2, 3]},
    ...                                  "cols": {"factor": "width", "levels": [64, 128]}}}))
    9
    """
    grid = len(spec.grid.rows.levels) * len(spec.grid.cols.levels) if spec.grid else 0
    return 1 + sum(len(levels) for levels in spec.vary.values()) + grid


def summary_cells(spec: ExperimentSpec, shown: int) -> list[Cell]:
    """The first ``shown`` cells and the last ``shown`` (all of them when there are no more than 2 × ``shown``)."""
    total = count_cells(spec)
    if total <= 2 * shown:
        return cells(spec)
    return [*islice(_iter_cells(spec), shown), *(_cell_at(spec, i) for i in range(total - shown, total))]


def _iter_cells(spec: ExperimentSpec) -> Iterator[Cell]:
    yield Cell("base", ())
    for factor, levels in spec.vary.items():
        for level in levels:
            yield Cell(factor, ((factor, level),))
    if spec.grid:
        r, c = spec.grid.rows, spec.grid.cols
        group = f"{r.factor}×{c.factor}"
        for rl in r.levels:
            for cl in c.levels:
                yield Cell(group, ((r.factor, rl), (c.factor, cl)))


def _cell_at(spec: ExperimentSpec, index: int) -> Cell:
    """Cell number ``index`` of ``cells(spec)``, computed (the last cells of a million-cell grid, at once)."""
    if index == 0:
        return Cell("base", ())
    index -= 1
    for factor, levels in spec.vary.items():
        if index < len(levels):
            return Cell(factor, ((factor, levels[index]),))
        index -= len(levels)
    assert spec.grid is not None
    r, c = spec.grid.rows, spec.grid.cols
    row, col = divmod(index, len(c.levels))
    return Cell(f"{r.factor}×{c.factor}", ((r.factor, r.levels[row]), (c.factor, c.levels[col])))


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
           model_defaults: Callable[[str, str], dict[str, Any]] | None = None,
           only: Sequence[Cell] | None = None, notes: list[str] | None = None) -> list[GenerationRequest]:
    """All requests of ``spec`` (or of its cells ``only``), deduplicated by run key, base cell first.

    ``library`` is a ``TemplateLibrary`` (default: the configured one). ``seeds_supported(backend,
    model)`` says whether a backend honours seeds; where it does not, the seeds become replicate
    indices (``seed=None``) so the run is honest about what was held. ``model_defaults(backend, model)``
    gives a model family's own steps and guidance, used where neither the spec nor its template sets them.
    A vary level equal to the base value is the base cell (its images are logged once, under 'base'): that is
    said in ``notes``; a level whose images are another cell's although it changes something (a variable the
    template never uses) is refused.
    """
    n_cells = count_cells(spec)
    total = n_cells * len(spec.seeds)
    if total > spec.max_images:
        raise budget_error(n_cells, len(spec.seeds), spec.max_images)
    if library is None and spec.template is not None:
        library = TemplateLibrary()

    template = spec.template
    if template is not None:
        check_template_variables(spec, library)
    else:
        _check_prompt_variables(spec)
    sources: dict[str, str] = {}  # where each base value came from, for the error that refuses it
    base_params = dict(model_defaults(spec.backend, spec.model)) if model_defaults else {}
    sources.update(dict.fromkeys(base_params, f"the defaults of model '{spec.model}'"))
    base_params.update(library.get(template).defaults if template else {})
    sources.update(dict.fromkeys(library.get(template).defaults if template else {},
                                 f"the 'defaults:' of template '{template}'"))
    base_params.update(spec.params.model_dump(exclude_none=True))
    sources.update(dict.fromkeys(spec.params.model_dump(exclude_none=True), "params"))
    _check_base(base_params, sources)
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
    owners: dict[str, tuple[Cell, GenerationRequest]] = {}  # run key → the first cell that gave it
    rendered_cache: dict[str, tuple[str, str, str | None]] = {}
    for cell in only if only is not None else _iter_cells(spec):
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
            key = request.run_key
            if key not in owners:
                owners[key] = (cell, request)
                requests[key] = request
            elif index == 0:  # the first seed decides for the cell
                note = _repeat(cell, *owners[key], request)
                if note and notes is not None and note not in notes:
                    notes.append(note)
    return list(requests.values())


def _check_base(values: dict[str, Any], sources: dict[str, str]) -> None:
    """The base after every default is applied passes the same bounds as ``params``: strict types, the caps."""
    try:
        Params.model_validate({k: v for k, v in values.items() if k in Params.model_fields})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0])
        raise SpecError(f"params.{key}: {first['input']!r} from {sources.get(key, 'params')}: "
                        f"{first['msg'].removeprefix('Value error, ').lower()}; set 'params.{key}' in the spec "
                        f"to a value in range") from None


def _check_prompt_variables(spec: ExperimentSpec) -> None:
    """A literal prompt: every variable given or varied is used by the prompt or the negative prompt."""
    try:
        used = prompt_variables(spec.prompt or "") | prompt_variables(spec.negative_prompt or "")
    except TemplateError as exc:
        raise SpecError(f"prompt: {exc}") from None
    for factor in [f for f, _ in spec.axes() if f.startswith("var.")]:
        if factor[4:] not in used:
            where = "vary" if factor in spec.vary else "grid"
            raise SpecError(f"{where}.{factor}: the prompt never uses '{factor[4:]}' (it uses "
                            f"{', '.join(sorted(used)) or 'no variables'}), so its levels would change nothing; "
                            f"write {{{{ {factor[4:]} }}}} into the prompt or remove the factor")
    unused = sorted(set(spec.variables) - used)
    if unused:
        raise SpecError(f"variables: the prompt never uses {', '.join(map(repr, unused))} (it uses "
                        f"{', '.join(sorted(used)) or 'no variables'}); use them in the prompt or remove them")


def _repeat(cell: Cell, owner: Cell, first: GenerationRequest, request: GenerationRequest) -> str | None:
    """A cell whose images another cell already gives: a note when it is the base value, else refused."""
    if len(cell.changes) == 2 and owner.group != cell.group:
        return None  # a grid cell at a base or varied level is that cell: logged once, under it
    same = replace(request, factor=first.factor, level=first.level) == first  # nothing differs but the label
    if len(cell.changes) == 2:
        raise SpecError(f"grid: the cells '{cell.label}' and '{owner.label}' give the same images, so a level "
                        f"changes nothing; check that each axis's levels differ and do not override each other")
    factor, level = cell.changes[0]
    if same and owner.changes == ():
        return (f"vary.{factor}: level {level!r} is the base value, so its images are the base cell's "
                f"(generated and logged once, under 'base')")
    what = "is the same request as" if same else "gives the same images as"
    raise SpecError(f"vary.{factor}: level {level!r} {what} the cell '{owner.label}', so it changes nothing "
                    f"(is the variable used by the template?); remove that level or the factor")


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
