"""The template system and the built-in library: real files in tmp_path, no mocks."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from workbench.config import PROJECT_DIR
from workbench.errors import TemplateError, UserInputError
from workbench.prompts.templates import TemplateLibrary, load_template, render_string, tidy

BUILTIN = PROJECT_DIR / "templates"
LIBRARY = TemplateLibrary([BUILTIN])


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


SIMPLE = """
    ---
    description: A test template.
    variables:
      subject: {description: The subject., default: a red fox}
      lens: {description: Focal length., default: 85mm, allowed: [35mm, 85mm]}
      extra: {description: Optional extra words., default: ""}
    negative_prompt: "blurry, {{ extra }}"
    ---
    photo of {{ subject }},
    {{ extra }},
    shot on a {{ lens }} lens
"""


@pytest.fixture(autouse=True)
def _no_user_template_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_TEMPLATES", raising=False)


@pytest.fixture
def lib_copy(tmp_path: Path) -> Path:
    """A private copy of the built-in library, safe to edit."""
    return Path(shutil.copytree(BUILTIN, tmp_path / "lib"))


# ------------------------------------------------------------------------------------------ the library

def test_library_has_the_four_families() -> None:
    assert {"photoreal", "product", "concept_art", "diagram"} <= set(LIBRARY.names())
    assert not any(name.startswith("_") or "/_" in name for name in LIBRARY.names())


@pytest.mark.parametrize("name", LIBRARY.names())
def test_every_library_template_renders_with_defaults(name: str) -> None:
    t = LIBRARY.get(name)
    assert t.description and t.tags and t.notes
    assert 3 <= len(t.variables) <= 6
    for var in t.variables.values():
        assert not var.required and var.description, var.name
    rendered = t.render()
    assert rendered.template == name and rendered.version == t.version
    assert re.fullmatch(r"[0-9a-f]{16}", t.version)
    assert rendered.variables == {v.name: v.default for v in t.variables.values()}
    for text in (rendered.prompt, rendered.negative_prompt):
        assert text and "{" not in text and "  " not in text and ", ," not in text and "\n" not in text
        assert text == text.strip(" ,")
    assert set(t.defaults) <= {"guidance", "steps", "width", "height", "scheduler"}


@pytest.mark.parametrize("name", LIBRARY.names())
def test_every_allowed_value_renders(name: str) -> None:
    t = LIBRARY.get(name)
    for var in t.variables.values():
        for value in var.allowed or ():
            assert t.render({var.name: value}).prompt


def test_family_defaults_follow_the_design() -> None:
    product, concept, photo, diagram = (LIBRARY.get(n) for n in ("product", "concept_art", "photoreal", "diagram"))
    assert 10 <= product.defaults["guidance"] <= 12
    assert concept.defaults["guidance"] <= 7 and concept.defaults["steps"] > photo.defaults["steps"]
    assert photo.defaults == {"guidance": 7.0, "steps": 30, "width": 1024, "height": 1024,
                              "scheduler": "dpm++_2m_karras"}
    assert "gpt-image" in diagram.notes
    assert LIBRARY.render("diagram", {"labels": "Ingest, Store"}).prompt.count('"') == 4


def test_variables_override_defaults() -> None:
    r = LIBRARY.render("photoreal", {"subject": "a red fox", "lens": "200mm", "time_of_day": ""})
    assert r.prompt.startswith("photograph of a red fox on a weathered wooden pier, warm golden-hour")
    assert "200mm telephoto" in r.prompt
    assert r.variables["subject"] == "a red fox" and r.variables["lighting"] == "golden hour"


def test_library_render_equals_template_render() -> None:
    assert LIBRARY.render("product") == LIBRARY.get("product").render()


# ----------------------------------------------------------------------------------------- variables

def test_allowed_values_are_enforced() -> None:
    with pytest.raises(TemplateError) as err:
        LIBRARY.render("photoreal", {"lens": "12mm"})
    msg = str(err.value)
    assert "photoreal" in msg and "lens" in msg and "'12mm'" in msg and "'24mm'" in msg
    assert err.value.variable == "lens" and isinstance(err.value, UserInputError)


def test_allowed_values_compare_types_strictly(tmp_path: Path) -> None:
    path = write(tmp_path, "n.j2", """
        ---
        description: numbers
        variables:
          count: {description: how many, default: 1, allowed: [1, 2]}
        ---
        {{ count }} cats
    """)
    t = load_template(path)
    assert t.render({"count": 2}).prompt == "2 cats"
    assert t.render({"count": 2.0}).prompt == "2.0 cats"
    for bad in (True, "2"):
        with pytest.raises(TemplateError, match="not allowed"):
            t.render({"count": bad})


def test_unknown_variable_is_refused_with_the_declared_list() -> None:
    with pytest.raises(TemplateError) as err:
        LIBRARY.render("photoreal", {"colour": "red"})
    msg = str(err.value)
    assert "photoreal" in msg and "'colour'" in msg and "subject" in msg and "time_of_day" in msg
    assert err.value.variable == "colour"
    # the line: where the front matter's declarations start
    first = min(v.line for v in LIBRARY.get("photoreal").variables.values())
    lines = LIBRARY.get("photoreal").path.read_text().splitlines()
    assert err.value.line == first and lines[first - 2].startswith("variables:")


def test_missing_required_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "req.j2", """
        ---
        description: needs a subject
        variables:
          subject: {description: The subject.}
          mood: {description: The mood., default: calm}
        ---
        {{ subject }}, {{ mood }}
    """)
    t = load_template(path)
    assert t.variables["subject"].required and not t.variables["mood"].required
    with pytest.raises(TemplateError) as err:
        t.render({"mood": "tense"})
    msg = str(err.value)
    assert "req" in msg and "'subject'" in msg and "required" in msg and "mood" in msg
    assert err.value.line == 4 and "line 4:" in msg  # where "subject" is declared
    assert t.render({"subject": "a fox"}).prompt == "a fox, calm"


@pytest.mark.parametrize("value", [["a", "b"], {"a": 1}, None, b"bytes", Path("x")])
def test_values_must_be_plain_data(tmp_path: Path, value: object) -> None:
    t = load_template(write(tmp_path, "s.j2", SIMPLE))
    with pytest.raises(TemplateError, match=r"variable 'subject'.*plain text"):
        t.render({"subject": value})


# ------------------------------------------------------------------------------------ load-time errors

def test_syntax_error_names_template_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.j2", """
        ---
        description: broken
        variables:
          subject: {description: s, default: x}
        ---
        photo of {{ subject }},

        shot {% if subject %} on film
    """)
    with pytest.raises(TemplateError) as err:
        load_template(path)
    assert err.value.template == "broken" and err.value.line == 8
    assert "template 'broken', line 8" in str(err.value) and "syntax" in str(err.value)


def test_undeclared_variable_in_body_is_a_load_error(tmp_path: Path) -> None:
    path = write(tmp_path, "undeclared.j2", """
        ---
        description: uses a variable it does not declare
        variables:
          subject: {description: s, default: x}
        ---
        photo of {{ subject }},
        in {{ colour }} light
    """)
    with pytest.raises(TemplateError) as err:
        load_template(path)
    assert err.value.variable == "colour" and err.value.line == 7
    msg = str(err.value)
    assert "template 'undeclared', line 7" in msg and "'colour'" in msg and "variables:" in msg


def test_undeclared_variable_in_negative_prompt_points_at_the_file_line(tmp_path: Path) -> None:
    path = write(tmp_path, "neg.j2", """
        ---
        description: bad negative prompt
        variables:
          subject: {description: s, default: x}
        negative_prompt: |
          blurry,
          {{ avoid }}
        ---
        {{ subject }}
    """)
    with pytest.raises(TemplateError) as err:
        load_template(path)
    assert err.value.variable == "avoid" and err.value.line == 7 and "negative_prompt" in str(err.value)


def test_syntax_error_in_negative_prompt_points_at_the_file_line(tmp_path: Path) -> None:
    path = write(tmp_path, "negsyntax.j2", """
        ---
        description: bad negative prompt
        negative_prompt: "blurry, {{ oops"
        ---
        a cat
    """)
    with pytest.raises(TemplateError) as err:
        load_template(path)
    assert err.value.line == 3 and "negative_prompt" in str(err.value)


@pytest.mark.parametrize("text, needle", [
    ("description: no fence\n---\nbody\n", "must start with a '---' line"),
    ("---\ndescription: never closed\nbody\n", "never closed"),
    ("---\n- a\n- b\n---\nbody\n", "must be a YAML mapping"),
    ("---\ndescription: x\ncolour: red\n---\nbody\n", "unknown front-matter key 'colour'; allowed keys: description"),
    ("---\ndescription: [unclosed\n---\nbody\n", "does not parse"),
    ("---\nvariables: {}\n---\nbody\n", "needs a 'description'"),
    ("---\ndescription: x\ndefaults: {cfg: 7}\n---\nbody\n", "unknown key 'defaults.cfg'; allowed keys: guidance"),
    ("---\ndescription: x\ndefaults: {steps: many}\n---\nbody\n", "'defaults.steps' must be a positive int"),
    ("---\ndescription: x\nvariables:\n  a: {description: d, dflt: 1}\n---\n{{ a }}\n", "unknown key 'dflt'"),
    ("---\ndescription: x\nvariables:\n  a: just a string\n---\n{{ a }}\n", "must be a mapping with a 'description'"),
    ("---\ndescription: x\nvariables:\n  a: {description: d, default: z, allowed: [x, y]}\n---\n{{ a }}\n",
     "default 'z' is not allowed"),
    ("---\ndescription: x\nvariables:\n  a: {description: d, default: 2024-01-01}\n---\n{{ a }}\n", "is a date"),
    ("---\ndescription: x\ntags: photo\n---\nbody\n", "'tags' must be a list of strings"),
])
def test_front_matter_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "fm.j2"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TemplateError) as err:
        load_template(path)
    assert needle in str(err.value) and str(err.value).startswith("template 'fm'")


def test_unknown_front_matter_key_reports_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "k.j2", "---\ndescription: x\n\nnegative: blurry\n---\nbody\n")
    with pytest.raises(TemplateError) as err:
        load_template(path)
    assert err.value.line == 4 and "'negative'" in str(err.value)


def test_syntax_error_in_a_shared_file_names_it_and_the_importer(lib_copy: Path) -> None:
    quality = lib_copy / "_shared/quality.j2"
    lines = quality.read_text().splitlines()
    quality.write_text("\n".join(lines + ["{{ 1 + }}"]) + "\n")
    with pytest.raises(TemplateError) as err:
        TemplateLibrary([lib_copy]).get("product")
    assert err.value.template == "_shared/quality.j2" and err.value.line == len(lines) + 1
    assert "imports" in str(err.value) and "'product'" in str(err.value)


def test_missing_and_dynamic_includes_are_load_errors(tmp_path: Path) -> None:
    missing = write(tmp_path, "m.j2", '---\ndescription: x\n---\n{% import "_shared/nope.j2" as n %}cat\n')
    with pytest.raises(TemplateError, match=r"template 'm'.*'_shared/nope.j2'.*none of the template folders"):
        load_template(missing)
    dynamic = write(tmp_path, "d.j2", """
        ---
        description: x
        variables:
          part: {description: p, default: _shared/a.j2}
        ---
        {% include part %}
    """)
    with pytest.raises(TemplateError, match="literal"):
        load_template(dynamic)


def test_variables_used_by_an_include_must_be_declared(tmp_path: Path) -> None:
    write(tmp_path, "_shared/tail.j2", "in {{ place }}\n")
    path = write(tmp_path, "inc.j2", '---\ndescription: x\n---\na cat {% include "_shared/tail.j2" %}\n')
    with pytest.raises(TemplateError, match=r"'place' is used in the _shared/tail.j2 \(line 1\)"):
        load_template(path)
    path.write_text('---\ndescription: x\nvariables:\n  place: {description: p, default: Rome}\n---\n'
                    'a cat {% include "_shared/tail.j2" %}\n')
    assert load_template(path).render().prompt == "a cat in Rome"


# ------------------------------------------------------------------------------------ render-time errors

def test_runtime_undefined_reports_template_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "rt.j2", """
        ---
        description: x
        variables:
          subject: {description: s, default: a fox}
        ---
        photo of {{ subject }},

        {{ subject.nope }}
    """)
    with pytest.raises(TemplateError) as err:
        load_template(path).render()
    assert err.value.line == 8 and "template 'rt', line 8" in str(err.value) and "nope" in str(err.value)


def test_runtime_error_inside_a_shared_macro_names_both_places(lib_copy: Path) -> None:
    # An allowed value the macro's table does not know: fails inside _shared/camera.j2.
    path = lib_copy / "photoreal.j2"
    path.write_text(path.read_text().replace("allowed: [24mm,", "allowed: [18mm, 24mm,"))
    with pytest.raises(TemplateError) as err:
        TemplateLibrary([lib_copy]).render("photoreal", {"lens": "18mm"})
    msg = str(err.value)
    assert "photoreal" in msg and "_shared/camera.j2" in msg
    assert err.value.line == path.read_text().splitlines().index('{{ camera.lens(lens) }},') + 1


def test_empty_prompt_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "e.j2", SIMPLE.replace("photo of {{ subject }},", "{{ subject }}")
                 .replace("shot on a {{ lens }} lens", "{{ extra }}"))
    assert load_template(path).render().prompt == "a red fox"
    with pytest.raises(TemplateError, match="empty prompt"):
        load_template(path).render({"subject": " "})


# --------------------------------------------------------------------------------------------- sandbox

SSTI = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ joiner.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ namespace.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__ }}",
    "{{ range.__self__ }}",
    "{{ config.items() }}",
    "{{ request }}",
    "{{ subject.__class__.__base__.__subclasses__() }}",
    "{{ subject | attr('__class__') }}",
    "{{ '{0.__class__.__mro__}'.format(subject) }}",
    "{{ subject.mro }}",
    "{{ os }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{% set x = [1] %}{{ x.append(2) }}",
    "{{ 'x' * 100000000 }}",
    "{{ 10 ** 100000000 }}",
]


@pytest.mark.parametrize("payload", SSTI)
def test_ssti_payloads_are_refused(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "pwned"
    payload = payload.replace("MARKER", str(marker))
    path = write(tmp_path, "evil.j2", '---\ndescription: x\nvariables:\n  subject: {description: s, default: a}\n'
                 '---\na photo of {{ subject }}\n' + payload + "\n")
    with pytest.raises(TemplateError) as err:
        load_template(path).render()
    assert "evil" in str(err.value)
    with pytest.raises(TemplateError):
        render_string(payload, {"subject": "a"})
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["{{ ''.__class__ }}", "{{ subject.__class__ }}", "{{ self.__init__ }}",
                                     "{{ subject | attr('__globals__') }}"])
def test_sandbox_violations_say_unsafe(payload: str) -> None:
    with pytest.raises(TemplateError, match="tried to reach an unsafe attribute"):
        render_string(payload, {"subject": "a"}, name="evil")


# Each would run for hours or build gigabytes; each passes Jinja's own per-construct caps.
TOO_MUCH_WORK = {
    "nested loops": "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "nested loops over a string": "{% set s = 'x' * 99999 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "a big range in a loop": "{% for i in range(99999) %}{% set x = range(99999)|join %}{% endfor %}",
    "exponential macro": "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "doubling with ~": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling with +": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "center": "{{ 'x'|center(99999 * 99999) }}",
    "str.center": "{{ 'x'.center(99999 * 99999) }}",
    "% width": "{{ '%0999999999d' % 1 }}",
    "%* width": "{{ '%*d' % (10 ** 9, 1) }}",
    "format width": "{{ '{:>999999999}'.format(1) }}",
    "nested format width": "{{ '{:{w}}'.format(1, w=10 ** 9) }}",
    "replace": "{% set s = 'x' * 99999 %}{{ s|replace('x', s) }}",
    "join": "{% set s = 'x' * 99999 %}{{ range(99999)|join(s) }}",
    "indent": "{{ ('a\\n' * 50000)|indent(99999) }}",
    "batch fill": "{{ [1]|batch(10 ** 9, 'x')|list }}",
    "sum of lists": "{{ ([[1]] * 99999)|sum(start=[]) }}",
    "bytes": "{{ 'x'.encode() * 10 ** 9 }}",
    "long output": "{% for i in range(60000) %}ab{% endfor %}",
    "x * 10**8": "{{ 'x' * 100000000 }}",
}


@pytest.mark.timeout(60)  # a hang guard only: each is refused in well under a second (benchmarks/plan_scale.py)
@pytest.mark.parametrize("payload", TOO_MUCH_WORK.values(), ids=TOO_MUCH_WORK.keys())
def test_rendering_is_bounded_by_total_work(tmp_path: Path, payload: str) -> None:
    with pytest.raises(TemplateError, match=r"rendering the prompt stopped: .*(steps of work|over 100,000|"
                                            r"at most 100,000|numbers only)") as err:
        render_string(payload, {}, name="evil")
    assert "evil" in str(err.value)
    path = write(tmp_path, "heavy.j2", "---\ndescription: x\n---\n" + payload + "\n")
    with pytest.raises(TemplateError, match="rendering the body stopped"):
        load_template(path).render()


def test_ordinary_loops_filters_and_macros_still_render() -> None:
    source = ("{% macro item(x) %}<{{ x }}>{% endmacro %}{% for i in range(3) %}{{ item(i) }}{% endfor %} "
              "{{ range(4)|join(', ') }} {{ 'ab'.center(6) }} {{ '%03d'|format(7) }} {{ '{:>4}'.format(5) }} "
              "{{ ['a', 'b']|sum(start='') if false else [1, 2]|sum }} {{ ('a' * 3)|replace('a', 'bc') }}")
    assert render_string(source, {}) == "<0><1><2> 0, 1, 2, 3 ab 007 5 3 bcbcbc"


# --------------------------------------------------------------------------------------------- versions

def test_version_is_stable_across_loads(lib_copy: Path) -> None:
    first = {t.name: t.version for t in TemplateLibrary([lib_copy]).templates()}
    second = {t.name: t.version for t in TemplateLibrary([lib_copy]).templates()}
    assert first == second == {t.name: t.version for t in LIBRARY.templates()}  # copying does not change it
    assert len(set(first.values())) == len(first)


def test_version_covers_shared_files(lib_copy: Path) -> None:
    before = {t.name: t.version for t in TemplateLibrary([lib_copy]).templates()}
    with (lib_copy / "_shared/lighting.j2").open("a") as f:
        f.write("{# a comment is enough #}\n")
    after = {t.name: t.version for t in TemplateLibrary([lib_copy]).templates()}
    users = {n for n in before if "_shared/lighting.j2" in (lib_copy / f"{n}.j2").read_text()}
    assert users == {"photoreal", "product"}
    assert {n for n in before if before[n] != after[n]} == users
    with (lib_copy / "_shared/quality.j2").open("a") as f:
        f.write("{# the four photo/art families import quality #}\n")
    again = {t.name: t.version for t in TemplateLibrary([lib_copy]).templates()}
    quality_users = {n for n in after if "_shared/quality.j2" in (lib_copy / f"{n}.j2").read_text()}
    assert quality_users >= {"photoreal", "product", "concept_art", "diagram"}
    assert {n for n in after if again[n] != after[n]} == quality_users  # and only those change


def test_version_changes_with_the_file_and_the_cache_sees_edits(tmp_path: Path) -> None:
    path = write(tmp_path, "s.j2", SIMPLE)
    library = TemplateLibrary([tmp_path])
    first = library.get("s")
    assert library.get("s") is first  # cached while nothing changed
    path.write_text(path.read_text().replace("photo of", "a photograph of"))
    second = library.get("s")
    assert second.version != first.version and second.render().prompt.startswith("a photograph of")


def test_a_shadowing_shared_file_changes_what_renders_and_the_version(lib_copy: Path, tmp_path: Path) -> None:
    override = tmp_path / "override"
    write(override, "_shared/camera.j2", (lib_copy / "_shared/camera.j2").read_text()
          .replace("shallow depth of field, creamy bokeh", "SHADOWED"))
    plain, shadowed = TemplateLibrary([lib_copy]).get("photoreal"), TemplateLibrary([override, lib_copy]).get("photoreal")
    assert "SHADOWED" in shadowed.render().prompt and "SHADOWED" not in plain.render().prompt
    assert plain.version != shadowed.version


# ---------------------------------------------------------------------------------------------- library

def test_unknown_template_lists_available_names() -> None:
    with pytest.raises(TemplateError) as err:
        LIBRARY.get("photorealistic")
    msg = str(err.value)
    assert "'photorealistic'" in msg and "concept_art, diagram, photoreal, product" in msg


def test_earlier_dirs_shadow_later_ones(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write(first, "same.j2", SIMPLE.replace("A test template.", "from first"))
    write(second, "same.j2", SIMPLE.replace("A test template.", "from second"))
    write(second, "only_second.j2", SIMPLE)
    library = TemplateLibrary([first, second])
    assert library.names() == ["only_second", "same"]
    assert library.get("same").description == "from first"
    assert library.get("same.j2").path == (first / "same.j2").resolve()
    assert TemplateLibrary([second, first]).get("same").description == "from second"


def test_private_files_and_folders_are_not_templates(tmp_path: Path) -> None:
    write(tmp_path, "_partial.j2", SIMPLE)
    write(tmp_path, "_shared/macro.j2", "{% macro m() %}x{% endmacro %}")
    write(tmp_path, ".hidden/h.j2", SIMPLE)
    write(tmp_path, "team/portrait.j2", SIMPLE)
    write(tmp_path, "notes.txt", "not a template")
    assert TemplateLibrary([tmp_path]).names() == ["team/portrait"]
    assert TemplateLibrary([tmp_path]).render("team/portrait").prompt.startswith("photo of a red fox")


def test_templates_can_extend_other_templates(tmp_path: Path) -> None:
    write(tmp_path, "base.j2", "---\ndescription: base\n---\nphoto of {% block what %}a cat{% endblock %}, sharp\n")
    child = write(tmp_path, "child.j2", """
        ---
        description: child
        variables:
          animal: {description: a, default: an owl}
        ---
        {% extends "base.j2" %}
        {% block what %}{{ animal }}{% endblock %}
    """)
    t = TemplateLibrary([tmp_path]).get("child")
    assert t.render().prompt == "photo of an owl, sharp"
    base = tmp_path / "base.j2"
    base.write_text(base.read_text().replace("sharp", "soft"))
    assert load_template(child).version != t.version


# ------------------------------------------------------------------------------------- tidy and strings

@pytest.mark.parametrize("raw, tidied", [
    ("  a photo\n\n of  a cat\t", "a photo of a cat"),
    ("a, , b,,c , d", "a, b,c, d"),
    (", leading and trailing ,", "leading and trailing"),
    ("end of clause , .", "end of clause."),
    ("(red:1.2), 1,000 cats", "(red:1.2), 1,000 cats"),
    ("", ""),
])
def test_tidy(raw: str, tidied: str) -> None:
    assert tidy(raw) == tidied


def test_empty_optional_variable_leaves_no_stray_separators(tmp_path: Path) -> None:
    r = load_template(write(tmp_path, "s.j2", SIMPLE)).render()
    assert r.prompt == "photo of a red fox, shot on a 85mm lens"
    assert r.negative_prompt == "blurry"


def test_render_string() -> None:
    assert render_string("a {{ color }}  circle ,\n", {"color": "red"}) == "a red circle"
    assert render_string("", {}) == ""
    assert render_string("no variables, {{ n * 2 }}", {"n": 2, "unused": True}) == "no variables, 4"
    with_macro = render_string('{% import "_shared/quality.j2" as q %}a fox, {{ q.photo("draft") }}', {})
    assert with_macro == "a fox, natural color"
    assert render_string("{{ [a, '', none, ' ', b] | join_nonempty(' + ') }}", {"a": "x", "b": 2}) == "x + 2"


def test_render_string_errors_name_variable_and_line() -> None:
    with pytest.raises(TemplateError) as err:
        render_string("a {{ color }}\ncircle {{ shape }}", {"color": "red"}, name="prompt")
    assert err.value.variable == "shape" and err.value.line == 2
    assert "template 'prompt', line 2" in str(err.value) and "given: color" in str(err.value)
    with pytest.raises(TemplateError, match="syntax"):
        render_string("a {{ color", {"color": "red"})
    with pytest.raises(TemplateError, match="plain text"):
        render_string("{{ c }}", {"c": ["red"]})
