"""The sandbox templates render in: what a template may reach, and how much work one render may do.

Jinja's ``ImmutableSandboxedEnvironment`` blocks unsafe attributes; it does not bound work. A template is
user text (a literal prompt in a spec is too), so a render is bounded here by the total work it does, not
by any single construct: two nested ``range(99999)`` loops each pass Jinja's own range cap, yet would
run for hours. Every render (``render_bounded``) gets a budget of ``MAX_WORK`` steps: one per loop
iteration, per call (methods, globals; ``MACRO_STEPS`` per macro call), per filter, and one per item of every
``range``. Every
value a call, filter, ``+`` or ``~`` builds, and the rendered text itself, is at most ``MAX_SIZE`` long;
calls that would build more from small inputs (``center(10**9)``, ``'%0999999999d' % 1``, a ``replace``
or ``join`` that multiplies) are refused before they run. Either limit raises ``TemplateWorkError``, which
``templates.py`` turns into a ``TemplateError`` naming the template and line.

    >>> env = sandbox_environment(None)
    >>> render_bounded(env.from_string("{% for i in range(3) %}{{ i }}{% endfor %}"), {})
    '012'
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

__all__ = ["MAX_SIZE", "MAX_WORK", "TemplateWorkError", "sandbox_environment", "render_bounded"]

MAX_SIZE = 100_000  # the longest string/list one expression may build, and the longest rendered text
MAX_WORK = 200_000  # loop iterations + calls + filters + range items in one render (~0.1 s at worst)
MACRO_STEPS = 20  # a macro call costs what ~20 loop iterations do (measured: ~8 µs against ~0.4 µs)
_COUNTED = "__wb_counted"  # what every for-loop iterates through (a global: never an undeclared variable)
_SIZED = "__wb_sized"  # what every ``~`` result passes through, so its size is checked
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\d+)|\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")


class TemplateWorkError(SecurityError):
    """A render went over its work or size bounds (not an unsafe attribute: the template is just too big)."""


class _TooBig(TemplateWorkError):
    pass


@dataclass
class _Budget:
    left: int


_budget: ContextVar[_Budget | None] = ContextVar("template_work_budget", default=None)


def spend(steps: int) -> None:
    """Take ``steps`` from the current render's budget; over it, refuse (outside a render: no limit)."""
    budget = _budget.get()
    if budget is None:
        return
    budget.left -= steps
    if budget.left < 0:
        raise TemplateWorkError(f"the template does more than {MAX_WORK:,} steps of work (loop iterations, calls "
                            f"and range items, nested loops multiplied), so it would run for a very long time; "
                            f"loop over fewer items")


def render_bounded(template: jinja2.Template, values: Mapping[str, Any]) -> str:
    """Render ``template`` within ``MAX_WORK`` steps and ``MAX_SIZE`` characters of output."""
    token = _budget.set(_Budget(MAX_WORK))
    try:
        parts, size = [], 0
        for chunk in template.generate(values):
            size += len(chunk)
            if size > MAX_SIZE:
                raise TemplateWorkError(f"the rendered text is over {MAX_SIZE:,} characters; a prompt is far shorter, "
                                    f"so loop over fewer items")
            parts.append(chunk)
        return "".join(parts)
    finally:
        _budget.reset(token)


def _sized(value: Any) -> Any:
    if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > MAX_SIZE:
        raise _TooBig(f"the expression would build a value of {len(value):,} items (at most {MAX_SIZE:,})")
    return value


def _counted(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        spend(1)
        yield item


def _range(*args: int) -> range:
    numbers = safe_range(*args)  # Jinja's own cap: at most 100,000 items
    spend(len(numbers))
    return numbers


def _check_width(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse a call that would build a big value out of small inputs: ``args`` are the string (or list)
    operated on, then the call's own arguments (a width, a format's values, a separator...)."""
    value = args[0] if args else None
    numbers = [a for a in (*args[1:], *kwargs.values()) if isinstance(a, int) and not isinstance(a, bool)]
    big = any(n > MAX_SIZE for n in numbers)
    text = value if isinstance(value, str) else ""
    if name in ("format", "format_map", "%"):  # a width in the format, or taken from the values (%*d, {:{w}})
        widths = [int(w or v) for w, v in _FORMAT_WIDTH.findall(text)]
        if any(w > MAX_SIZE for w in widths) or big and ("*" in text or re.search(r"\{[^{}]*\{", text)):
            raise _TooBig(f"the format {text[:40]!r} asks for a width over {MAX_SIZE:,}")
    elif name == "indent":
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        if len(text) + (text.count("\n") + 1) * pad > MAX_SIZE:
            raise _TooBig(f"indent() would build a value over {MAX_SIZE:,} characters")
    elif name == "expandtabs":
        if len(text) + text.count("\t") * (numbers[0] if numbers else 8) > MAX_SIZE:
            raise _TooBig(f"expandtabs() would build a value over {MAX_SIZE:,} characters")
    elif name == "replace" and len(args) >= 3 and all(isinstance(a, str) for a in args[:3]):
        old, new = args[1], args[2]
        if len(text) + text.count(old) * len(new) > MAX_SIZE:
            raise _TooBig(f"replace() would build a value over {MAX_SIZE:,} characters")
    elif name == "join" and len(args) >= 2 and isinstance(args[1], (list, tuple, range)):
        items = args[1]
        if len(text) * len(items) + sum(len(str(i)) for i in items[:MAX_SIZE]) > MAX_SIZE:
            raise _TooBig(f"join() would build a value over {MAX_SIZE:,} characters")
    elif name == "sum" and not isinstance(kwargs.get("start", args[2] if len(args) > 2 else 0), (int, float)):
        raise _TooBig("sum() adds numbers only (adding lists or strings one by one takes quadratic time)")
    elif name not in ("default", "d", "max", "min", "round", "int", "float", "abs") and big:
        # center(10**9), batch(10**9, 'x'), slice(10**9), ljust, zfill, truncate...: a width or count
        raise _TooBig(f"{name}() with a width or count over {MAX_SIZE:,} would build a huge value")


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Every file parsed here (the template, its imports and includes) gets its loops counted and its
        # ``~`` results sized: Jinja runs a plain for-loop and a concatenation without calling back.
        ast = super()._parse(source, name, filename)
        for loop in ast.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_COUNTED, "load", lineno=loop.lineno), [loop.iter], [], None, None,
                                   lineno=loop.lineno)
        for parent in list(ast.find_all(nodes.Node)):
            for field in parent.fields:
                child = getattr(parent, field, None)
                if isinstance(child, nodes.Concat):
                    setattr(parent, field, _wrap_concat(child))
                elif isinstance(child, list):
                    setattr(parent, field, [_wrap_concat(c) if isinstance(c, nodes.Concat) else c for c in child])
        return ast

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's names)
        spend(MACRO_STEPS if isinstance(__obj, jinja2.runtime.Macro) else 1)
        if isinstance(getattr(__obj, "__self__", None), str):  # a str method: 'x'.center(...), ', '.join(...)
            _check_width(__obj.__name__, (__obj.__self__, *args), kwargs)
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 100:
            raise SecurityError(f"the exponent {right!r} is too large")
        seq, times = (left, right) if isinstance(left, (str, bytes, list, tuple)) else (right, left)
        if operator == "*" and isinstance(seq, (str, bytes, list, tuple)) and isinstance(times, int) \
                and len(seq) * times > MAX_SIZE:
            raise _TooBig(f"the expression would build a value of {len(seq) * times:,} items (at most {MAX_SIZE:,})")
        if operator == "%" and isinstance(left, str):
            _check_width("%", (left, *(right if isinstance(right, tuple) else (right,))), {})
        return _sized(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)  # Jinja's sandboxed str.format / format_map
        if wrapped is None:
            return None

        def checked(*args: Any, **kwargs: Any) -> str:
            _check_width(value.__name__, (value.__self__, *args, *(args[0].values() if args and
                                          isinstance(args[0], dict) else ())), kwargs)
            return _sized(wrapped(*args, **kwargs))  # type: ignore[no-any-return]
        return checked


def _wrap_concat(node: nodes.Concat) -> nodes.Call:
    return nodes.Call(nodes.Name(_SIZED, "load", lineno=node.lineno), [node], [], None, None, lineno=node.lineno)


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)  # keeps Jinja's pass_context/pass_environment marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        spend(1)
        plain = [a for a in args if not isinstance(a, (jinja2.runtime.Context, jinja2.Environment,
                                                        jinja2.nodes.EvalContext))]
        if name == "join" and plain:  # the filter takes (items, separator); _check_width takes (separator, items)
            items = list(plain[0]) if isinstance(plain[0], (list, tuple, range)) else None
            separator = plain[1] if len(plain) > 1 else kwargs.get("d", "")
            if items is not None and isinstance(separator, str):
                _check_width("join", (separator, items), {})
        else:
            _check_width(name, plain, kwargs)
        return _sized(func(*args, **kwargs))
    return bounded


def sandbox_environment(loader: jinja2.BaseLoader | None) -> _Sandbox:
    """The environment every template and literal prompt renders in (``loader``: where imports resolve)."""
    env = _Sandbox(loader=loader,
                   undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)
    for unused in ("lipsum", "cycler", "joiner"):  # globals stay plain data helpers: range, dict, namespace
        env.globals.pop(unused, None)
    env.globals.update({"range": _range, _COUNTED: _counted, _SIZED: _sized})
    env.filters["join_nonempty"] = lambda items, sep=", ": sep.join(
        str(i).strip() for i in items if i is not None and str(i).strip())
    env.filters["split_list"] = lambda value, sep=",": [p.strip() for p in str(value).split(sep) if p.strip()]
    env.filters["quote"] = lambda value: f'"{value}"'
    env.filters = {name: _bounded_filter(name, func) for name, func in env.filters.items()}
    return env
