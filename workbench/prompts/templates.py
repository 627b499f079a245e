"""Prompt templates: YAML front matter + a Jinja2 body, rendered in a sandbox (pure: no I/O past loading).

A template is ``<library dir>/<name>.j2``; files and folders starting with ``_`` (``_shared/``) hold
macros and includes and are not templates::

    ---
    description: Photograph of a subject.                   # required
    variables:                                              # no default = required
      subject: {description: What the photo shows., default: a lighthouse}
      lens: {description: Focal length., default: 85mm, allowed: [35mm, 85mm]}
    negative_prompt: '{% import "_shared/quality.j2" as q %}{{ q.negative("photo") }}'
    defaults: {guidance: 7, steps: 30}                      # guidance, steps, width, height, scheduler
    notes: free text
    tags: [photo]
    ---
    {% import "_shared/quality.j2" as q %}
    photograph of {{ subject }}, shot on a {{ lens }} lens, {{ q.photo("high") }}

The front matter is parsed and checked in ``front_matter.py``; this module loads files, compiles and
renders them. Every failure is a ``TemplateError`` naming the template, the variable and the line.
``version`` hashes the file and everything it imports, includes or extends (what is hashed is exactly what
renders). Rendering is bounded in work and size (``sandbox.py``).

    >>> TemplateLibrary().render("photoreal", {"subject": "a red fox"}).prompt[:24]
    'photograph of a red fox '
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
from jinja2.exceptions import SecurityError
from jinja2.loaders import split_template_path

from ..config import template_dirs
from ..errors import TemplateError
from ..hashing import content_hash
from .front_matter import (
    TemplateVariable,
    check_value,
    key_line,
    parse_defaults,
    parse_front_matter,
    parse_variables,
    split_front_matter,
)
from .sandbox import TemplateWorkError, render_bounded, sandbox_environment

__all__ = ["TemplateVariable", "RenderedPrompt", "PromptTemplate", "TemplateLibrary", "load_template",
           "prompt_variables", "render_string", "tidy"]

# Refused even where the object lacks them (the sandbox itself blocks every "_*" attribute).
UNSAFE_NAMES = frozenset({"mro", "os", "sys", "globals", "builtins", "subclasses", "func_globals", "f_globals",
                          "gi_frame", "popen", "system", "eval", "exec", "import"})


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered template; ``variables`` are the resolved values (defaults + given)."""
    prompt: str
    negative_prompt: str
    template: str
    version: str
    variables: dict[str, Any]


@dataclass(frozen=True)
class _Compiled:
    body: jinja2.Template
    negative: jinja2.Template
    files: dict[str, tuple[str, int]]  # compiled filename -> (label, line offset), to place runtime errors
    stamp: tuple[Any, ...]              # (path, mtime, size) of the file and all it pulls in: cache validity


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template; build it with ``load_template`` or ``TemplateLibrary.get``.

    >>> TemplateLibrary().get("product").render({"background": "gradient"}).variables["background"]
    'gradient'
    """
    name: str
    path: Path
    description: str
    variables: dict[str, TemplateVariable]
    negative_prompt: str
    defaults: dict[str, Any]
    notes: str
    tags: tuple[str, ...]
    body: str
    version: str
    _compiled: _Compiled | None = field(default=None, repr=False, compare=False)

    def render(self, variables: Mapping[str, Any] | None = None) -> RenderedPrompt:
        """Render prompt and negative prompt, both tidied (see ``tidy``).

        Unknown variables, missing required ones, values that are not str/int/float/bool and values
        outside ``allowed`` are errors; nothing is silently dropped or fixed.
        """
        compiled = self._compiled or load_template(self.path)._compiled
        assert compiled is not None
        values = _resolve_values(self, variables or {})
        hint = "declare it under 'variables:' in the front matter, or fix the name"
        prompt = _render(compiled.body, values, self.name, compiled.files, hint, part="body")
        if not prompt:
            raise TemplateError("the body rendered to an empty prompt; give the variables non-empty values",
                                template=self.name)
        negative = _render(compiled.negative, values, self.name, compiled.files, hint, part="negative_prompt")
        return RenderedPrompt(prompt, negative, self.name, self.version, values)


class TemplateLibrary:
    """The templates in ``dirs`` (default ``config.template_dirs()``); earlier dirs shadow later ones,
    for template names and for the shared files they import.

    >>> TemplateLibrary().names()[:2]
    ['concept_art', 'diagram']
    """

    def __init__(self, dirs: Sequence[Path] | None = None) -> None:
        self.dirs = _dedupe(template_dirs() if dirs is None else dirs)
        self._cache: dict[Path, PromptTemplate] = {}

    def _paths(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for root in self.dirs:
            for folder, subdirs, files in os.walk(root):
                subdirs[:] = sorted(d for d in subdirs if not d.startswith(("_", ".")))
                for file in sorted(f for f in files if f.endswith(".j2") and not f.startswith(("_", "."))):
                    found.setdefault(Path(folder, file).relative_to(root).with_suffix("").as_posix(),
                                     Path(folder, file))
        return dict(sorted(found.items()))

    def names(self) -> list[str]:
        return list(self._paths())

    def get(self, name: str) -> PromptTemplate:
        paths = self._paths()
        path = paths.get(name.removesuffix(".j2"))
        if path is None:
            raise TemplateError(f"no such template; available templates: {', '.join(paths) or '(none)'} "
                                f"(searched {', '.join(map(str, self.dirs))}); check the spelling or add a "
                                f"folder to $WORKBENCH_TEMPLATES", template=name)
        cached = self._cache.get(path)
        if cached and cached._compiled and cached._compiled.stamp == _stamp(p for p, *_ in cached._compiled.stamp):
            return cached
        self._cache[path] = template = load_template(path, search_dirs=self.dirs)
        return template

    def templates(self) -> list[PromptTemplate]:
        return [self.get(name) for name in self.names()]

    def render(self, name: str, variables: Mapping[str, Any] | None = None) -> RenderedPrompt:
        return self.get(name).render(variables)


def tidy(text: str) -> str:
    """Collapse whitespace runs to one space, merge runs of commas (``", ,"``), drop a comma before
    ``.;:!?`` and at either end: what empty optional variables leave behind.

    >>> tidy("  photo of a cat ,  , in the rain ,  .")
    'photo of a cat, in the rain.'
    """
    text = re.sub(r"\s*,(?:\s*,)*", ",", re.sub(r"\s+", " ", text))
    return re.sub(r",\s*([.;:!?])", r"\1", text).strip(" ,")


def load_template(path: Path, *, search_dirs: Sequence[Path] | None = None) -> PromptTemplate:
    """Load, validate and compile one template file.

    Imports resolve in ``search_dirs`` (default: the file's folder, then ``config.template_dirs()``).

    >>> load_template(TemplateLibrary().dirs[-1] / "diagram.j2").defaults["width"]
    1536
    """
    path = Path(path).resolve()
    dirs = _dedupe([*search_dirs, path.parent] if search_dirs is not None else [path.parent, *template_dirs()])
    name = next((path.relative_to(d).with_suffix("").as_posix() for d in dirs if path.is_relative_to(d)), path.stem)
    try:
        data = path.read_bytes()
        front, body = split_front_matter(data.decode("utf-8"), name)
    except OSError as exc:
        raise TemplateError(f"cannot read {path}: {exc.strerror}; check the path", template=name) from exc
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path} is not UTF-8 text; save it as UTF-8", template=name) from exc
    text = data.decode("utf-8")
    meta = parse_front_matter(front, name, text)
    variables = parse_variables(meta.get("variables"), name, text)
    negative, notes, tags = meta.get("negative_prompt") or "", meta.get("notes") or "", meta.get("tags") or []
    for key, ok in (("negative_prompt", isinstance(negative, str)), ("notes", isinstance(notes, str)),
                    ("tags", isinstance(tags, list) and all(isinstance(t, str) for t in tags))):
        if not ok:
            raise TemplateError(f"'{key}' must be {'a list of strings' if key == 'tags' else 'a string'}, "
                                f"got {meta[key]!r}", template=name, line=key_line(text, key))
    env = _environment(dirs)
    negative_line = key_line(text, "negative_prompt") or 1  # where the negative prompt starts in the file
    offset = negative_line if re.search(r"^negative_prompt\s*:\s*[|>]", text, re.M) else negative_line - 1
    sources = [("body", body, str(path), 0), ("negative_prompt", negative, f"{path}#negative_prompt", offset)]
    asts = [_parse(env, name, source, filename, offset, "" if label == "body" else f" in the {label}")
            for label, source, filename, offset in sources]
    deps: dict[str, Any] = {}
    for ast in asts:
        _collect(env, ast, name, deps)
    _check_declared(env, name, variables, [(s[0], s[1], s[3], a) for s, a in zip(sources, asts)]
                    + [(ref, src, 0, a) for ref, (src, a) in deps.items()])
    loaded: dict[str, tuple[Path, bytes]] = env.loader.files  # type: ignore[union-attr]
    version = content_hash(b"\0".join([data] + [ref.encode() + b"\n" + loaded[ref][1] for ref in sorted(loaded)]))
    files = {s[2]: (s[0], s[3]) for s in sources} | {str(p): (ref, 0) for ref, (p, _) in loaded.items()}
    compiled = _Compiled(*(_compile(env, a, name, s[2]) for s, a in zip(sources, asts)), files=files,
                         stamp=_stamp([path, *(p for p, _ in loaded.values())]))
    return PromptTemplate(name, path, meta["description"].strip(), variables, negative,
                          parse_defaults(meta.get("defaults"), name, text), notes.strip(), tuple(tags),
                          body.lstrip("\n"), version, compiled)


def prompt_variables(source: str, *, name: str = "prompt") -> set[str]:
    """The variables a literal prompt uses (what ``render_string`` will ask for).

    >>> sorted(prompt_variables("a {{ colour }} {% if big %}big {% endif %}circle"))
    ['big', 'colour']
    """
    env = _environment(_dedupe(template_dirs()))
    return set(jinja2.meta.find_undeclared_variables(_parse(env, name, source, f"<{name}>", 0, "")))


def render_string(source: str, variables: Mapping[str, Any], *, name: str = "<prompt>") -> str:
    """Render a literal prompt that uses ``{{ }}`` in the same sandbox, tidied like templates.

    Names not in ``variables`` are errors; extra variables are allowed. Library macros can be imported.

    >>> render_string("a {{ color }} circle ,", {"color": "red"})
    'a red circle'
    """
    values = {str(k): check_value(name, str(k), v, None, "value") for k, v in variables.items()}
    env = _environment(_dedupe(template_dirs()))
    filename = name if name.startswith("<") else f"<{name}>"
    ast = _parse(env, name, source, filename, 0, "")
    _collect(env, ast, name, {})
    hint = f"pass it in the variables (given: {', '.join(sorted(values)) or 'none'})"
    return _render(_compile(env, ast, name, filename), values, name, {filename: ("prompt", 0)}, hint, part="prompt")


# ---------------------------------------------------------------------------------------------- internals

class _SnapshotLoader(jinja2.BaseLoader):
    """Finds names in ``dirs`` (earlier first) once, then serves those bytes: what is hashed is what renders."""

    def __init__(self, dirs: Sequence[Path]) -> None:
        self.dirs = dirs
        self.files: dict[str, tuple[Path, bytes]] = {}

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        if template not in self.files:
            parts = split_template_path(template)  # refuses ".." segments
            path = next((Path(d, *parts) for d in self.dirs if Path(d, *parts).is_file()), None)
            if path is None:
                raise jinja2.TemplateNotFound(template)
            self.files[template] = (path, path.read_bytes())
        path, data = self.files[template]
        text = data.decode("utf-8")
        if text.lstrip("\ufeff").startswith("---"):  # another template (extends): blank its front matter
            text = split_front_matter(text, template)[1]
        return text, str(path), lambda: True


def _environment(dirs: Sequence[Path]) -> jinja2.Environment:
    return sandbox_environment(_SnapshotLoader(dirs))


def _resolve_values(template: PromptTemplate, given: Mapping[str, Any]) -> dict[str, Any]:
    declared = template.variables
    listing = ", ".join(f"{v.name} (required)" if v.required else f"{v.name}={v.default!r}"
                        for v in declared.values()) or "(none)"
    for key in given:
        if key not in declared:
            first = min((v.line for v in declared.values() if v.line), default=None)
            raise TemplateError(f"unknown variable '{key}'; declared variables: {listing}", template=template.name,
                                variable=str(key), line=first)  # the line: where the declarations start
    values: dict[str, Any] = {}
    for var in declared.values():
        if var.name not in given and var.required:
            raise TemplateError(f"required variable '{var.name}' ({var.description}) has no value; pass it. "
                                f"Declared variables: {listing}", template=template.name, variable=var.name,
                                line=var.line)
        value = given[var.name] if var.name in given else var.default
        values[var.name] = check_value(template.name, var.name, value, var.allowed, "value")
    return values


def _parse(env: jinja2.Environment, name: str, source: str, filename: str, offset: int, where: str) -> Any:
    try:
        return env.parse(source, name, filename)
    except jinja2.TemplateSyntaxError as exc:
        problem = (exc.message or "").rstrip(".")
        raise TemplateError(f"Jinja2 syntax error{where}: {problem}; fix the tag or expression on that line",
                            template=name, line=(exc.lineno or 1) + offset) from exc


def _collect(env: jinja2.Environment, ast: Any, name: str, deps: dict[str, Any]) -> None:
    """Every file ``ast`` imports/includes/extends, recursively: ``deps[ref] = (source, ast)``."""
    for ref in jinja2.meta.find_referenced_templates(ast):
        if ref is None:
            raise TemplateError("an import/include/extends names its file with an expression; use a literal "
                                "name such as \"_shared/quality.j2\" so the version can cover it", template=name)
        if ref in deps:
            continue
        try:
            source, filename, _ = env.loader.get_source(env, ref)  # type: ignore[union-attr]
        except (jinja2.TemplateNotFound, OSError, UnicodeDecodeError) as exc:
            dirs = ", ".join(map(str, env.loader.dirs))  # type: ignore[union-attr]
            raise TemplateError(f"imports/includes '{ref}', which is in none of the template folders ({dirs}) or "
                                f"is not readable UTF-8 text; check the name (relative to a template folder)",
                                template=name) from exc
        deps[ref] = (source, _parse(env, ref, source, filename, 0, f" (in a file that '{name}' imports)"))
        _collect(env, deps[ref][1], ref, deps)


def _check_declared(env: jinja2.Environment, name: str, variables: Mapping[str, TemplateVariable],
                    sources: list[tuple[str, str, int, Any]]) -> None:
    for label, source, offset, ast in sources:
        for var in sorted(jinja2.meta.find_undeclared_variables(ast) - set(variables)):
            line = next((ln for ln, kind, value in env.lex(source) if kind == "name" and value == var), None)
            own = label in ("body", "negative_prompt")
            raise TemplateError(
                f"variable '{var}' is used in the {label}{'' if own else f' (line {line})'} but not declared; add "
                f"it under 'variables:' in the front matter (with a description and a default) or fix the name; "
                f"declared: {', '.join(variables) or '(none)'}", template=name, variable=var,
                line=line + offset if own and line else None)


def _compile(env: jinja2.Environment, ast: Any, name: str, filename: str) -> jinja2.Template:
    return env.template_class.from_code(env, env.compile(ast, name, filename), env.make_globals(None), None)


def _render(template: jinja2.Template, values: Mapping[str, Any], name: str,
            files: Mapping[str, tuple[str, int]], hint: str, *, part: str) -> str:
    try:
        return tidy(render_bounded(template, values))
    except Exception as exc:  # whatever a template raises becomes a TemplateError with its line
        frames, tb = [], exc.__traceback__  # Jinja rewrites frames to the template file and its lines
        while tb is not None:
            if (where := files.get(tb.tb_frame.f_code.co_filename)) is not None:
                frames.append((where[0], tb.tb_lineno + where[1]))
            tb = tb.tb_next
        label, line = frames[0] if frames else (part, None)
        inner = f" (raised in {frames[-1][0]}, line {frames[-1][1]})" if frames and frames[-1][0] != label else ""
        found = re.search(r"attribute '([^']+)'", str(exc)) if isinstance(exc, jinja2.UndefinedError) else None
        undefined = re.search(r"'(\w+)' is undefined", str(exc)) if isinstance(exc, jinja2.UndefinedError) else None
        if isinstance(exc, TemplateWorkError):
            message = f"rendering the {label} stopped{inner}: {exc}"
        elif isinstance(exc, SecurityError) or found and (found[1].startswith("_") or found[1] in UNSAFE_NAMES):
            message = (f"template tried to reach an unsafe attribute or operation in the {label}{inner} ({exc}); "
                       f"templates may only format their variables: remove that expression")
        elif isinstance(exc, jinja2.UndefinedError):
            fix = hint if undefined else "fix the expression (variables are plain values, without attributes)"
            message = f"{exc.message} in the {label}{inner}; {fix}"
        else:
            message = f"rendering the {label} failed{inner}: {type(exc).__name__}: {exc}; fix that expression"
        raise TemplateError(message, template=name, line=line, variable=undefined[1] if undefined else None) from exc


def _dedupe(dirs: Sequence[Path]) -> tuple[Path, ...]:
    return tuple(dict.fromkeys(Path(d).expanduser().resolve() for d in dirs))


def _stamp(paths: Any) -> tuple[Any, ...]:
    stats = []
    for path in paths:
        try:
            st = path.stat()
            stats.append((path, st.st_mtime_ns, st.st_size))
        except OSError:
            stats.append((path, None, None))
    return tuple(stats)
