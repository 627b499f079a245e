"""``TemplateExplorer``: pick a template, edit its variables, see the prompt live, launch a small experiment.

The prompt and negative prompt re-render on every edit; a template error is shown under the fields,
never raised. "Run experiment" builds an ordinary spec (``experiment.parse_spec``), runs it with
``runner.run_experiment`` and shows the result as a ``ComparisonGrid``.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as w

from ..errors import WorkbenchError
from ..experiments.spec import ExperimentSpec, parse_spec
from ..prompts.templates import PromptTemplate, RenderedPrompt, TemplateLibrary, TemplateVariable
from ..run.context import RunSummary
from ..run.runner import run_experiment
from .comparison import ComparisonGrid

__all__ = ["TemplateExplorer", "variable_widget", "parse_levels", "template_summary_html"]

NO_FACTOR = "(nothing: base only)"


def variable_widget(variable: TemplateVariable, value: Any = None) -> w.ValueWidget:
    """The input for one template variable: a dropdown over ``allowed`` values, a checkbox or number
    box for boolean and numeric defaults, a text box otherwise (empty for a required variable)."""
    value = variable.default if value is None else value
    common: dict[str, Any] = {"description": variable.name, "tooltip": variable.description,
                              "style": {"description_width": "110px"}, "layout": w.Layout(width="520px")}
    if variable.allowed:
        options: list[Any] = list(variable.allowed) if all(isinstance(a, str) for a in variable.allowed) \
            else [(str(a), a) for a in variable.allowed]
        return w.Dropdown(options=options, value=value if value in variable.allowed else variable.allowed[0],
                          **common)
    if isinstance(value, bool):
        return w.Checkbox(value=value, indent=False, **common)
    if isinstance(value, int):
        return w.IntText(value=value, **common)
    if isinstance(value, float):
        return w.FloatText(value=value, **common)
    return w.Text(value="" if value is None else str(value), placeholder="required" if variable.required else "",
                  **common)


def parse_levels(text: str, examples: tuple[Any, ...] = ()) -> list[Any]:
    """Comma-separated levels; numbers become numbers unless ``examples`` (allowed values) are strings.

    >>> parse_levels("3, 7.5, 12")
    [3, 7.5, 12]
    >>> parse_levels("golden hour, overcast", ("golden hour", "overcast"))
    ['golden hour', 'overcast']
    """
    out: list[Any] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if examples and all(isinstance(e, str) for e in examples):
            out.append(part)
            continue
        for kind in (int, float):
            try:
                out.append(kind(part))
                break
            except ValueError:
                continue
        else:
            out.append(part)
    return out


def template_summary_html(template: PromptTemplate) -> str:
    esc = html.escape
    defaults = ", ".join(f"{k}={v}" for k, v in template.defaults.items())
    parts = [f"<b>{esc(template.name)}</b> <span style='color:#777'>version {esc(template.version)}</span>",
             f"<br>{esc(template.description)}"]
    if template.tags:
        parts.append(f"<br><span style='color:#555'>tags: {esc(', '.join(template.tags))}</span>")
    if defaults:
        parts.append(f"<br><span style='color:#555'>recommended: {esc(defaults)}</span>")
    if template.notes:
        parts.append(f"<br><i style='color:#555'>{esc(template.notes)}</i>")
    return "".join(parts)


class TemplateExplorer:
    """Browse the template library, render a template live, and run a small experiment from it.

    Example:
        >>> explorer = TemplateExplorer(template="photoreal")
        >>> explorer.set_variable("lighting", "overcast")
        >>> "overcast" in explorer.rendered.prompt
        True
        >>> explorer.launch()  # runs the spec on the embedded model, then shows its grid  # doctest: +SKIP
    """

    def __init__(self, library: TemplateLibrary | None = None, *, template: str | None = None,
                 tracking_uri: str | None = None, backend: str = "diffusers", model: str = "embedded:tiny-sd",
                 seeds: tuple[int, ...] = (1, 2), size: int = 64, steps: int | None = None) -> None:
        self.library = library or TemplateLibrary()
        self.tracking_uri = tracking_uri
        names = self.library.names()
        if not names:
            raise WorkbenchError(f"no templates in {', '.join(map(str, self.library.dirs))}")
        self.rendered: RenderedPrompt | None = None
        self.error: str | None = None
        self.summary: RunSummary | None = None  # of the last launch
        self.grid: ComparisonGrid | None = None  # its grid
        self.variable_controls: dict[str, w.ValueWidget] = {}
        self.template_control = w.Dropdown(options=names, value=template or names[0], description="template")
        self.about = w.HTML()
        self.variables_box = w.VBox()
        self.prompt_view = w.HTML()
        self.negative_view = w.HTML()
        self.error_view = w.HTML()
        small = {"style": {"description_width": "110px"}, "layout": w.Layout(width="360px")}
        self.name_control = w.Text(description="experiment", **small)
        self.backend_control = w.Text(value=backend, description="backend", **small)
        self.model_control = w.Text(value=model, description="model", **small)
        self.seeds_control = w.Text(value=", ".join(map(str, seeds)), description="seeds", **small)
        self.size_control = w.IntText(value=size, description="size (px)", **small)
        self.steps_control = w.IntText(value=steps or 0, description="steps", **small)
        self.vary_control = w.Dropdown(description="vary", **small)
        self.levels_control = w.Text(description="levels", placeholder="comma-separated", **small)
        self.run_button = w.Button(description="Run experiment", icon="play", button_style="primary")
        self.run_status = w.HTML()
        self.result_box = w.VBox()
        self._explicit_steps = steps
        self.template_control.observe(lambda c: self.select(c["new"]), "value")
        self.vary_control.observe(lambda c: self._suggest_levels(), "value")
        self.run_button.on_click(lambda _: self._launch_clicked())
        launch = w.VBox([w.HTML("<b>Small experiment</b>"), self.name_control, self.backend_control, self.model_control,
                         self.seeds_control, self.size_control, self.steps_control, self.vary_control,
                         self.levels_control, w.HBox([self.run_button, self.run_status])])
        style = w.HTML("<style>.wb-template-explorer .widget-html-content {line-height: 1.4}</style>")
        self.widget = w.VBox([style, self.template_control, self.about, self.variables_box,
                              w.HTML("<b>Prompt</b>"), self.prompt_view, w.HTML("<b>Negative prompt</b>"),
                              self.negative_view, self.error_view, launch, self.result_box])
        self.widget.add_class("wb-template-explorer")
        self.select(self.template_control.value)

    # -- template and variables -------------------------------------------------------------------------
    @property
    def template(self) -> PromptTemplate:
        return self.library.get(self.template_control.value)

    @property
    def values(self) -> dict[str, Any]:
        """The variable values as edited; an empty required one is left out (rendering then says so),
        an empty optional one is passed as "" (the template leaves it out)."""
        variables = self.template.variables
        return {name: control.value for name, control in self.variable_controls.items()
                if not (control.value == "" and name in variables and variables[name].required)}

    def select(self, name: str) -> None:
        """Show template ``name``: its description, one input per variable, the rendered prompt."""
        if self.template_control.value != name:
            self.template_control.value = name  # observed: calls select again
            return
        template = self.library.get(name)
        self.about.value = template_summary_html(template)
        self.variable_controls = {v.name: variable_widget(v) for v in template.variables.values()}
        for control in self.variable_controls.values():
            control.observe(lambda _: self.render(), "value")
        self.variables_box.children = list(self.variable_controls.values())
        self.name_control.value = f"{name.replace('/', '-')}-explorer"
        if self._explicit_steps is None:
            self.steps_control.value = int(template.defaults.get("steps", 30))
        factors = ["guidance", "steps"] + [f"var.{v.name}" for v in template.variables.values() if v.allowed]
        self.vary_control.options = [NO_FACTOR, *factors]
        self.vary_control.value = NO_FACTOR
        self.render()

    def set_variable(self, name: str, value: Any) -> None:
        if name not in self.variable_controls:
            raise WorkbenchError(f"template '{self.template_control.value}' has no variable '{name}'; its "
                                 f"variables: {', '.join(self.variable_controls)}")
        self.variable_controls[name].value = value

    def render(self) -> RenderedPrompt | None:
        """Render with the current values; on error, show it (and return None) instead of raising."""
        try:
            self.rendered = self.template.render(self.values)
            self.error = None
        except WorkbenchError as exc:
            self.rendered, self.error = None, str(exc)
        if self.rendered is not None:
            self.prompt_view.value = f"<div class='wb-prompt' style='font-family:monospace'>" \
                                     f"{html.escape(self.rendered.prompt)}</div>"
            self.negative_view.value = f"<div style='font-family:monospace;color:#555'>" \
                                       f"{html.escape(self.rendered.negative_prompt) or '<i>(none)</i>'}</div>"
            self.error_view.value = ""
        else:
            self.prompt_view.value = self.negative_view.value = "<i style='color:#777'>(not rendered)</i>"
            self.error_view.value = f"<div class='wb-error' style='color:#b00'>{html.escape(self.error or '')}</div>"
        return self.rendered

    def _suggest_levels(self) -> None:
        factor = self.vary_control.value
        template = self.template
        if factor and factor.startswith("var."):
            variable = template.variables[factor[4:]]
            current = self.values.get(variable.name)
            self.levels_control.value = ", ".join(str(a) for a in (variable.allowed or ()) if a != current)
        elif factor == "guidance":
            self.levels_control.value = "3, 12"
        elif factor == "steps":
            self.levels_control.value = "5, 20"
        else:
            self.levels_control.value = ""

    # -- the experiment -------------------------------------------------------------------------------
    def spec_data(self) -> dict[str, Any]:
        """The experiment spec the form describes, as a mapping (what a spec YAML would hold)."""
        seeds = parse_levels(self.seeds_control.value)
        size = self.size_control.value
        params: dict[str, Any] = {"width": size, "height": size}
        if self.steps_control.value:
            params["steps"] = self.steps_control.value
        data: dict[str, Any] = {"name": self.name_control.value.strip(), "template": self.template_control.value,
                                "variables": self.values, "backend": self.backend_control.value.strip(),
                                "model": self.model_control.value.strip(), "params": params, "seeds": seeds}
        factor = self.vary_control.value
        if factor and factor != NO_FACTOR:
            examples: tuple[Any, ...] = ()
            if factor.startswith("var."):
                variable = self.template.variables[factor[4:]]
                examples = variable.allowed or ((variable.default,) if variable.default is not None else ())
            data["vary"] = {factor: parse_levels(self.levels_control.value, examples)}
        return data

    def build_spec(self) -> ExperimentSpec:
        return parse_spec(self.spec_data(), source="TemplateExplorer")

    def launch(self, **run_options: Any) -> RunSummary:
        """Run the experiment (only what is not logged yet), show its ComparisonGrid, return the summary.

        ``run_options`` go to ``run_experiment`` (e.g. ``grids_dir``)."""
        spec = self.build_spec()
        self.summary = run_experiment(spec, tracking_uri=self.tracking_uri, progress=False, library=self.library,
                                      **run_options)
        cols = next(iter(spec.vary), None)
        self.grid = ComparisonGrid(self.summary.experiment, self.tracking_uri, cols=cols)
        self.result_box.children = (self.grid.widget,)
        return self.summary

    def _launch_clicked(self) -> None:
        self.run_button.disabled = True
        self.run_status.value = "<i>running…</i>"
        try:
            s = self.launch()
            self.run_status.value = (f"{s.finished} generated, {s.skipped} already logged, {s.failed} failed, "
                                     f"{s.blocked} blocked in {s.seconds:.1f} s")
        except Exception as exc:  # shown beside the button, never raised into the notebook
            self.run_status.value = f"<span style='color:#b00'>{html.escape(f'{type(exc).__name__}: {exc}')}</span>"
        finally:
            self.run_button.disabled = False

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"TemplateExplorer(template={self.template_control.value!r}, error={self.error!r})"
