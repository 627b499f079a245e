"""The front matter of a template file: the YAML between two ``---`` lines, parsed and checked.

``split_front_matter`` cuts a file into front matter and body (the body padded so that Jinja's line
numbers are the file's); ``parse_front_matter``, ``parse_variables`` and ``parse_defaults`` check each
part and raise a ``TemplateError`` naming the template, the key or variable, and its line in the file.
Pure: no I/O, no Jinja. ``templates.py`` reads the file and compiles the body.

    >>> text = "---\\ndescription: A cat.\\n---\\na {{ colour }} cat"
    >>> front, body = split_front_matter(text, "cat")
    >>> parse_front_matter(front, "cat", text)["description"], body
    ('A cat.', '\\n\\n\\na {{ colour }} cat')
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import TemplateError

__all__ = ["TemplateVariable", "FRONT_MATTER_KEYS", "VARIABLE_KEYS", "DEFAULT_TYPES", "PLAIN_TYPES",
           "split_front_matter", "parse_front_matter", "parse_variables", "parse_defaults", "check_value",
           "key_line"]

FRONT_MATTER_KEYS = ("description", "variables", "negative_prompt", "defaults", "notes", "tags")
VARIABLE_KEYS = ("description", "default", "allowed")
DEFAULT_TYPES: dict[str, tuple[type, ...]] = {"guidance": (int, float), "steps": (int,), "width": (int,),
                                              "height": (int,), "scheduler": (str,)}
PLAIN_TYPES = (str, int, float, bool)


@dataclass(frozen=True)
class TemplateVariable:
    """A declared variable: ``required`` when the front matter gives no ``default``."""
    name: str
    description: str
    default: Any = None
    required: bool = False
    allowed: tuple[Any, ...] | None = None
    line: int | None = None  # where the front matter declares it (error messages point there)


def split_front_matter(text: str, name: str) -> tuple[str, str]:
    """(front matter, body padded with blank lines so that Jinja's line numbers are the file's)."""
    lines = text.lstrip("\ufeff").split("\n")
    if lines[0].rstrip() != "---":
        raise TemplateError("the file must start with a '---' line that opens the YAML front matter "
                            "(description, variables, ...), closed by another '---' line", template=name, line=1)
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if end is None:
        raise TemplateError("the front matter opened on line 1 is never closed; add a '---' line before the "
                            "body", template=name, line=1)
    return "\n".join(lines[1:end]), "\n" * (end + 1) + "\n".join(lines[end + 1:])


def parse_front_matter(front: str, name: str, text: str) -> dict[str, Any]:
    """The front matter as a mapping, with known keys only and a ``description`` (``text``: the whole file,
    to place errors)."""
    try:
        meta = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TemplateError(f"the YAML front matter does not parse: {getattr(exc, 'problem', exc)}; fix the YAML",
                            template=name, line=mark.line + 2 if mark else None) from exc
    if not isinstance(meta, dict):
        raise TemplateError(f"the front matter must be a YAML mapping (key: value lines), got "
                            f"{type(meta).__name__}: {meta!r}", template=name, line=2)
    for key in meta:
        if key not in FRONT_MATTER_KEYS:
            raise TemplateError(f"unknown front-matter key '{key}'; allowed keys: {', '.join(FRONT_MATTER_KEYS)}",
                                template=name, line=key_line(text, str(key)))
    if not isinstance(meta.get("description"), str) or not meta["description"].strip():
        raise TemplateError("the front matter needs a 'description' (one line saying what the template is for)",
                            template=name, line=key_line(text, "description") or 2)
    return meta


def parse_variables(raw: Any, name: str, text: str) -> dict[str, TemplateVariable]:
    """The ``variables:`` mapping as ``TemplateVariable``s; defaults and allowed values are checked."""
    if not isinstance(raw, dict | None):
        raise TemplateError("'variables' must map each name to {description, default, allowed}",
                            template=name, line=key_line(text, "variables"))
    out: dict[str, TemplateVariable] = {}
    for var, spec in (raw or {}).items():
        line, var = key_line(text, str(var), indented=True), str(var)

        def fail(problem: str) -> TemplateError:
            return TemplateError(problem, template=name, line=line, variable=var)
        if not var.isidentifier():
            raise fail(f"variable name {var!r} is not an identifier; use letters, digits and _")
        if not isinstance(spec, dict) or not isinstance(spec.get("description"), str):
            raise fail(f"variable '{var}' must be a mapping with a 'description' (and optionally 'default' and "
                       f"'allowed'), got {spec!r}")
        if unknown := sorted(set(spec) - set(VARIABLE_KEYS)):
            raise fail(f"variable '{var}' has unknown key {unknown[0]!r}; allowed keys: {', '.join(VARIABLE_KEYS)}")
        if "allowed" in spec and (not isinstance(spec["allowed"], list) or not spec["allowed"]):
            raise fail(f"variable '{var}': 'allowed' must be a non-empty list, got {spec['allowed']!r}")
        allowed = spec.get("allowed")
        if allowed is not None:
            allowed = tuple(check_value(name, var, a, None, "allowed value") for a in allowed)
        required = "default" not in spec
        default = None if required else check_value(name, var, spec["default"], allowed, "default")
        out[var] = TemplateVariable(var, spec["description"].strip(), default, required, allowed, line)
    return out


def parse_defaults(raw: Any, name: str, text: str) -> dict[str, Any]:
    """The ``defaults:`` mapping (generation defaults such as guidance and steps), type-checked."""
    if not isinstance(raw, dict | None):
        raise TemplateError("'defaults' must be a mapping, e.g. {guidance: 7, steps: 30}",
                            template=name, line=key_line(text, "defaults"))
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        line = key_line(text, str(key), indented=True)
        if key not in DEFAULT_TYPES:
            raise TemplateError(f"unknown key 'defaults.{key}'; allowed keys: {', '.join(DEFAULT_TYPES)}",
                                template=name, line=line)
        ok = isinstance(value, DEFAULT_TYPES[key]) and not isinstance(value, bool)
        if not ok or (key in ("steps", "width", "height") and value <= 0) or (key == "guidance" and value < 0):
            raise TemplateError(f"'defaults.{key}' must be a positive "
                                f"{'/'.join(t.__name__ for t in DEFAULT_TYPES[key])}, got {value!r}",
                                template=name, line=line)
        out[key] = float(value) if key == "guidance" else value
    return out


def check_value(template: str, var: str, value: Any, allowed: tuple[Any, ...] | None, what: str) -> Any:
    """``value`` if it is a plain value (str, finite number, bool) and among ``allowed``; else a
    ``TemplateError`` calling it the variable's ``what`` ("value", "default", ...)."""
    if not isinstance(value, PLAIN_TYPES) or isinstance(value, float) and not math.isfinite(value):
        raise TemplateError(f"variable '{var}': {what} {value!r} is a {type(value).__name__}; variable values are "
                            f"plain text, finite numbers or booleans (str, int, float, bool)", template=template,
                            variable=var)
    if allowed is not None and not any(_same(value, a) for a in allowed):
        raise TemplateError(f"variable '{var}': {what} {value!r} is not allowed; choose one of: "
                            f"{', '.join(repr(a) for a in allowed)}", template=template, variable=var)
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same kind: ``True`` is not ``1`` and ``"7"`` is not ``7``, but ``7 == 7.0``."""
    if isinstance(a, (bool, str)) or isinstance(b, (bool, str)):
        return type(a) is type(b) and a == b
    return bool(a == b)


def key_line(text: str, key: str, *, indented: bool = False) -> int | None:
    """1-based line of the first ``key:`` (at column 0, or indented), for error messages."""
    match = re.search((r"^[ \t]+" if indented else "^") + re.escape(key) + r"[ \t]*:", text, re.M)
    return text.count("\n", 0, match.start()) + 1 if match else None
