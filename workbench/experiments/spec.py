"""Experiment specs: the schema, and every check a spec must pass before it expands (``expand.py``).

A spec names a template (or a literal prompt), its variables, a backend and model, base parameters,
a locked list of seeds, and the factors to ``vary`` (one at a time), optionally a two-axis ``grid``.
Every check lives here: key by key (pydantic, ``extra="forbid"``), across keys (``ExperimentSpec._check``:
no two factors change one field), and against the templates (``check_template_variables``). Errors
name the offending key and quote the bad value.

Example spec (YAML)::

    name: lighthouse
    template: photoreal
    variables: {subject: a lighthouse on a cliff}
    backend: diffusers
    model: embedded:tiny-sd
    params: {width: 64, height: 64, steps: 10, guidance: 7.5, scheduler: ddim}
    seeds: [1, 2, 3]
    vary:
      guidance: [3, 12]
      var.lighting: [golden hour, overcast]
    evaluate: {clip: openai/clip-vit-base-patch32}   # optional: a CLIP score on every image
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import BudgetError, SpecError

if TYPE_CHECKING:
    from ..prompts.templates import TemplateLibrary

__all__ = ["ExperimentSpec", "Params", "GridAxis", "Grid", "Evaluate", "LoraEntry", "load_spec", "parse_spec",
           "check_template_variables",
           "budget_error", "FACTOR_FIELDS", "SIZE_PATTERN", "DEFAULT_MAX_IMAGES"]

DEFAULT_MAX_IMAGES = 1000
MAX_SPEC_BYTES = 1_000_000  # a spec is a few KB; a bigger file is a mistake (a million seeds), refused unread
MAX_SPEC_VALUES = 500_000  # values in a spec once YAML aliases are followed (an alias bomb stops here)
_STRICT = ConfigDict(extra="forbid", strict=True)  # unknown keys are refused, and "2" is not 2

# Generation parameters a factor may vary, and the request fields each one changes.
FACTOR_FIELDS: dict[str, tuple[str, ...]] = {
    "guidance": ("guidance",),
    "steps": ("steps",),
    "scheduler": ("scheduler",),
    "width": ("width",),
    "height": ("height",),
    "size": ("width", "height"),
    "negative_prompt": ("negative_prompt",),
    "prompt": ("prompt",),
    "template": ("template",),
    "model": ("model",),
    "backend": ("backend", "model"),
}
SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")
_LOCATED = re.compile(r"^((?:vary|grid|seeds|variables|params|options|backend_options|loras)(?:\.[\w.]+)?): (.*)$", re.S)


class Params(BaseModel):
    """Base generation parameters (every factor not being varied stays here)."""

    model_config = _STRICT
    width: int | None = Field(default=None, gt=0, le=8192)
    height: int | None = Field(default=None, gt=0, le=8192)
    steps: int | None = Field(default=None, gt=0, le=1000)
    guidance: float | None = Field(default=None, ge=0, le=100)
    scheduler: str | None = None


class GridAxis(BaseModel):
    model_config = _STRICT
    factor: str
    levels: list[Any] = Field(min_length=1)


class Grid(BaseModel):
    """A two-axis grid: every row level crossed with every column level, the rest at base."""

    model_config = _STRICT
    rows: GridAxis
    cols: GridAxis


class Evaluate(BaseModel):
    """Scores beyond the ones every image gets (image statistics; adherence on the shapes model).

    ``clip``: a CLIP model (a hub id such as ``openai/clip-vit-base-patch32``, or a local folder saved with
    ``save_pretrained``) that scores how well each image matches its prompt. Scores never change an image,
    so they are not part of any run key.
    """

    model_config = _STRICT
    clip: str | None = Field(default=None, min_length=1)


class LoraEntry(BaseModel):
    """A LoRA applied in every cell (at ``scale``), unless a ``lora.NAME`` factor turns it off or rescales it.

    ``source``: a ``.safetensors`` file, a folder holding one (``weight_name`` picks it where there are several),
    or a hub id ``owner/name``.
    """

    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)
    source: str = Field(min_length=1)
    weight_name: str | None = None
    scale: float = Field(default=1.0, ge=-10, le=10)
    enabled: bool = True


class ExperimentSpec(BaseModel):
    """A controlled experiment. Unknown keys are rejected; see the module docstring for an example."""

    model_config = _STRICT
    name: str = Field(min_length=1, max_length=200, pattern=r"^[\w][\w .\-]*$")
    description: str = ""
    template: str | None = None
    prompt: str | None = None
    variables: dict[str, str | int | float | bool] = Field(default_factory=dict)
    negative_prompt: str | None = None
    backend: str = "diffusers"
    model: str
    params: Params = Field(default_factory=Params)
    options: dict[str, Any] = Field(default_factory=dict)
    # Options for one backend only, merged over ``options`` in its cells: a sweep over backends can give
    # each its own (``{openai: {quality: high}, replicate: {deadline_s: 60}}``).
    backend_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    seeds: list[int] = Field(min_length=1)
    vary: dict[str, list[Any]] = Field(default_factory=dict)
    grid: Grid | None = None
    max_images: int = Field(default=DEFAULT_MAX_IMAGES, gt=0)
    max_batch: int | None = Field(default=None, gt=0)
    evaluate: Evaluate = Field(default_factory=Evaluate)
    loras: list[LoraEntry] = Field(default_factory=list)

    @field_validator("options", "variables")
    @classmethod
    def _names(cls, values: dict[str, Any]) -> dict[str, Any]:
        for name in values:  # MLflow param keys (var.NAME, option.NAME) and template variable names
            if not str(name).isidentifier():
                raise ValueError(f"'{name}' is not a valid name: use letters, digits and _")
        return values

    @field_validator("backend_options")
    @classmethod
    def _backend_option_names(cls, values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for options in values.values():
            cls._names(options)
        return values

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        seen: set[int] = set()
        for s in seeds:
            if s < 0 or s >= 2**63:
                raise ValueError(f"seed {s} is out of range: seeds are integers from 0 to 2**63-1")
            if s in seen:
                raise ValueError(f"seed {s} appears twice; each seed is one replicate, list it once")
            seen.add(s)
        return seeds

    def axes(self) -> list[tuple[str, list[Any]]]:
        """Every varied factor with its levels: the ``vary`` factors, then the grid's rows and cols."""
        grid = [(a.factor, a.levels) for a in (self.grid.rows, self.grid.cols)] if self.grid else []
        return [*self.vary.items(), *grid]

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        if (self.template is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'template' (a library template name) or 'prompt' "
                             "(a literal prompt)")
        touched: dict[str, str] = {}
        _check_loras(self)
        if self.grid and self.grid.rows.factor == self.grid.cols.factor:
            raise ValueError(f"grid: rows and cols both vary '{self.grid.rows.factor}'; pick two factors")
        factors = self.axes()
        used = {self.backend} | {str(level).partition(":")[0] for factor, levels in factors if factor == "backend"
                                 for level in levels}
        for name in self.backend_options:
            if name not in used:
                raise ValueError(f"backend_options.{name}: the spec never runs on backend '{name}'; it runs on "
                                 f"{', '.join(sorted(used))}")
        for factor, levels in factors:
            _check_factor_name(factor, self)
            if not levels:
                raise ValueError(f"vary.{factor}: no levels given; list at least one level")
            seen: list[Any] = []
            for level in levels:
                if factor.startswith("lora."):
                    _check_lora_level(factor, level)
                else:
                    _check_level(factor, level)
                if level in seen:
                    raise ValueError(f"vary.{factor}: level {level!r} appears twice")
                seen.append(level)
            if factor in self.vary:  # the grid may repeat a vary factor on purpose; vary may not overlap itself
                for f in FACTOR_FIELDS.get(factor, (factor,)):
                    if f in touched and touched[f] != factor:
                        raise ValueError(f"vary: '{touched[f]}' and '{factor}' both change '{f}', so one "
                                         f"comparison would differ in two things; keep one of them")
                    touched[f] = factor
        return self


def _check_lora_factor(factor: str, spec: ExperimentSpec) -> None:
    """``lora.NAME`` (on/off) and ``lora.NAME.scale`` (numbers) for a LoRA the spec declares under ``loras``."""
    name, _, attribute = factor[5:].partition(".")
    declared = [lora.name for lora in spec.loras]
    if name not in declared:
        have = f"the spec's LoRAs are {', '.join(declared)}" if declared else "the spec declares none"
        raise ValueError(f"vary.{factor}: no LoRA named '{name}' under 'loras' ({have}); declare it there "
                         f"(name, source, scale) to vary it")
    if attribute not in ("", "scale"):
        raise ValueError(f"vary.{factor}: a LoRA factor is lora.{name} (on/off) or lora.{name}.scale (numbers)")


def _check_lora_level(factor: str, level: Any) -> None:
    if factor.endswith(".scale"):
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not -10 <= level <= 10:
            raise ValueError(f"vary.{factor}: level {level!r} is not a scale (a number from -10 to 10)")
    elif level not in (True, False, "on", "off"):
        raise ValueError(f"vary.{factor}: level {level!r} is not on or off")


def _check_loras(spec: ExperimentSpec) -> None:
    names = [lora.name for lora in spec.loras]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"loras: two LoRAs are named '{name}'; give each its own name")


def _check_factor_name(factor: str, spec: ExperimentSpec) -> None:
    if factor.startswith("lora."):
        _check_lora_factor(factor, spec)
        return
    if factor.startswith("var."):
        if not factor[4:].isidentifier():
            raise ValueError(f"vary.{factor}: '{factor[4:]}' is not a valid variable name")
        if spec.template is None and spec.prompt is not None and "{{" not in spec.prompt:
            raise ValueError(f"vary.{factor}: the literal prompt uses no variables ({{{{ name }}}})")
        return
    if factor.startswith("option."):
        if not factor[7:].isidentifier():  # it becomes an MLflow param key and a grid file name
            raise ValueError(f"vary.{factor}: '{factor[7:]}' is not a valid option name (letters, digits and _)")
        return
    if factor == "prompt" and spec.prompt is None:
        raise ValueError("vary.prompt: only a spec with a literal 'prompt' can vary it; "
                         "with a template, vary 'template' or a 'var.NAME'")
    if factor == "template" and spec.template is None:
        raise ValueError("vary.template: the spec uses a literal prompt; set 'template' to vary templates")
    if factor not in FACTOR_FIELDS:
        known = ", ".join([*FACTOR_FIELDS, "var.NAME", "option.NAME", "lora.NAME", "lora.NAME.scale"])
        hint = " (seeds are replicates: list them under 'seeds')" if factor == "seed" else ""
        raise ValueError(f"vary: unknown factor '{factor}'{hint}; factors are: {known}")


def _check_level(factor: str, level: Any) -> None:
    def bad(expected: str) -> ValueError:
        return ValueError(f"vary.{factor}: level {level!r} is not {expected}")

    if factor == "guidance" and (isinstance(level, bool) or not isinstance(level, (int, float)) or level < 0):
        raise bad("a non-negative number")
    if factor in ("steps", "width", "height") and (isinstance(level, bool) or not isinstance(level, int)
                                                     or level <= 0):
        raise bad("a positive whole number")
    if factor == "size" and not (isinstance(level, str) and SIZE_PATTERN.match(level)):
        raise bad("a size like '512x768'")
    if factor in ("scheduler", "template", "model", "backend", "prompt", "negative_prompt") and \
            not isinstance(level, str):
        raise bad("a string")
    if not isinstance(level, (str, int, float, bool)):
        raise bad("a plain value (string, number or boolean)")


def budget_error(n_cells: int, n_seeds: int, max_images: int) -> BudgetError:
    """The error of a spec whose cells × seeds are over its ``max_images``."""
    return BudgetError(f"the spec expands to {n_cells:,} cells × {n_seeds:,} seeds = {n_cells * n_seeds:,} images, "
                       f"over max_images={max_images:,}; reduce the levels or seeds, or raise 'max_images' in the "
                       f"spec")


def _check_scale(data: Mapping[str, Any]) -> None:
    """Refuse an oversized spec before validating it (validating a million seeds alone takes seconds)."""
    def count(value: Any) -> int | None:
        return len(value) if isinstance(value, list) else None

    seeds, cap, vary, grid = data.get("seeds"), data.get("max_images", DEFAULT_MAX_IMAGES), data.get("vary"), \
        data.get("grid")
    levels = [count(v) for v in vary.values()] if isinstance(vary, Mapping) else []
    axes = [count(grid.get(axis, {}).get("levels")) if isinstance(grid.get(axis), Mapping) else None
            for axis in ("rows", "cols")] if isinstance(grid, Mapping) else [0, 0]
    if isinstance(cap, int) and count(seeds) and None not in levels and None not in axes:
        n_cells = 1 + sum(levels) + axes[0] * axes[1]  # type: ignore[operator]
        if n_cells * len(seeds) > cap:
            raise budget_error(n_cells, len(seeds), cap)
    seen, stack = 0, [data]
    while stack:  # YAML aliases can make a small file hold billions of values
        value = stack.pop()
        seen += 1
        if seen > MAX_SPEC_VALUES:
            raise SpecError(f"the spec holds over {MAX_SPEC_VALUES:,} values (YAML aliases included); a spec "
                            f"lists levels and seeds, not data: shorten it")
        if isinstance(value, Mapping):
            stack += [*value.keys(), *value.values()]
        elif isinstance(value, list):
            stack += value


def parse_spec(data: Any, *, source: str = "spec") -> ExperimentSpec:
    """Validate a mapping as an ``ExperimentSpec``; errors name the offending key."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: an experiment spec must be a YAML mapping (key: value), "
                        f"got {type(data).__name__}")
    _check_scale(data)
    try:
        return ExperimentSpec.model_validate(dict(data))
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            located = _LOCATED.match(msg) if not loc else None
            if located:  # a check across keys (the model validator) names its key at the start of the message
                loc, msg = located.group(1), located.group(2)
            loc = loc or "(top level)"
            if err["type"] == "extra_forbidden":
                msg = f"unknown key; allowed keys here: {_allowed_keys(err['loc'])}"
            elif err["type"] == "missing":
                msg = "required key is missing"
            lines.append(f"  at '{loc}': {msg}" + (f" (got {err['input']!r})" if err["type"] not in
                                                  ("missing", "extra_forbidden") and _short(err["input"])
                                                  else ""))
        raise SpecError(f"{source}: invalid experiment spec\n" + "\n".join(lines)) from None


def _short(value: Any) -> bool:
    return not isinstance(value, (dict, list)) or len(repr(value)) < 80


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = ExperimentSpec
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        for candidate in (Params, Grid, GridAxis, Evaluate, LoraEntry):
            if ann is candidate or (ann is not None and candidate in getattr(ann, "__args__", ())):
                model = candidate
    return ", ".join(model.model_fields)


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a spec file (YAML, loaded safely)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(f"{path} is {size / 1e6:.1f} MB; a spec is a few KB (over {MAX_SPEC_BYTES / 1e6:.0f} MB is "
                            f"refused unread): list fewer seeds or levels")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file not found: {path}") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml's safe loader
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, source=str(path))


def _factor_key(spec: ExperimentSpec, factor: str) -> str:
    if factor in spec.vary:
        return f"vary.{factor}"
    return "grid.rows" if spec.grid and spec.grid.rows.factor == factor else "grid.cols"


def check_template_variables(spec: ExperimentSpec, library: TemplateLibrary) -> None:
    """Every variable given must reach a template: none is silently dropped, no cell repeats the base."""
    templates = {spec.template}
    axes = spec.axes()
    for factor, levels in axes:
        if factor == "template":
            templates.update(levels)
    declared = {name: set(library.get(name).variables) for name in sorted(templates, key=str)}
    everywhere = set().union(*declared.values())
    unknown = sorted(set(spec.variables) - everywhere)
    if unknown:
        names = " or ".join(f"'{t}'" for t in declared)
        raise SpecError(f"variables: template {names} has no variable(s) {unknown}; the variables are "
                        f"{sorted(everywhere)}")
    for factor, _levels in axes:
        if not factor.startswith("var."):
            continue
        name = factor[4:]
        # one factor at a time: a var.NAME cell uses the base template (or, in the grid, the template axis)
        crossed = spec.grid and "template" in (spec.grid.rows.factor, spec.grid.cols.factor) and \
            factor in (spec.grid.rows.factor, spec.grid.cols.factor)
        users = templates if crossed else {spec.template}
        if not any(name in declared[t] for t in users):
            raise SpecError(f"{_factor_key(spec, factor)}: template '{spec.template}' has no variable '{name}', so "
                            f"its levels would change nothing; its variables are {sorted(declared[spec.template])}")
