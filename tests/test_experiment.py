import re
from pathlib import Path

import pytest
import yaml

from workbench.errors import BudgetError, SpecError
from workbench.experiments.expand import cells, expand
from workbench.experiments.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parent.parent


def spec(**changes):  # type: ignore[no-untyped-def]
    data = {"name": "t", "prompt": "a {{ colour }} circle", "variables": {"colour": "red"},
            "backend": "fake", "model": "m", "params": {"width": 64, "height": 64, "steps": 4, "guidance": 5},
            "seeds": [1, 2]}
    data.update(changes)
    return parse_spec(data)


def test_every_shipped_spec_is_valid_and_expands() -> None:
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        requests = expand(load_spec(path))
        assert requests, path
        assert len({r.run_key for r in requests}) == len(requests)


def test_one_factor_at_a_time_expansion() -> None:
    s = spec(vary={"guidance": [2, 9], "var.colour": ["blue"]})
    requests = expand(s)
    # base + 2 guidance levels + 1 colour level, × 2 seeds
    assert len(requests) == 8
    base = [r for r in requests if r.factor is None]
    assert {(r.prompt, r.guidance, r.seed) for r in base} == {("a red circle", 5.0, 1), ("a red circle", 5.0, 2)}
    for r in requests:
        differs = {k for k, v in r.factor_values().items() if v != base[0].factor_values()[k]} - {"seed", "replicate"}
        # every comparison differs from the base in exactly one factor (the prompt follows var.colour)
        assert differs <= {"guidance", "var.colour", "prompt"}
        assert len(differs - {"prompt"}) <= 1
    blue = [r for r in requests if r.factor == "var.colour"]
    assert {r.prompt for r in blue} == {"a blue circle"} and {r.guidance for r in blue} == {5.0}


def test_a_level_equal_to_base_is_the_base_cell_and_says_so() -> None:
    notes: list[str] = []
    requests = expand(spec(vary={"guidance": [5, 9]}), notes=notes)
    assert len(requests) == 4  # base (=5) and 9, × 2 seeds
    assert notes == ["vary.guidance: level 5 is the base value, so its images are the base cell's (generated and "
                     "logged once, under 'base')"]
    notes.clear()
    expand(spec(vary={"guidance": [2, 9]}), notes=notes)
    assert notes == []


def test_expansion_is_deterministic() -> None:
    s = spec(vary={"guidance": [2, 9], "steps": [8]})
    assert [r.run_key for r in expand(s)] == [r.run_key for r in expand(s)]


def test_seedless_backends_get_replicates() -> None:
    requests = expand(spec(), seeds_supported=lambda backend, model: False)
    assert [(r.seed, r.replicate) for r in requests] == [(None, 0), (None, 1)]
    assert len({r.run_key for r in requests}) == 2


def test_two_axis_grid_crosses_levels() -> None:
    s = spec(seeds=[1], grid={"rows": {"factor": "steps", "levels": [4, 8]},
                              "cols": {"factor": "guidance", "levels": [2, 5, 9]}})
    assert len(cells(s)) == 1 + 6
    requests = expand(s)
    assert {(r.steps, r.guidance) for r in requests} == {(4, 2.0), (4, 5.0), (4, 9.0), (8, 2.0), (8, 5.0), (8, 9.0)}


def test_template_spec_renders_with_family_defaults() -> None:
    s = parse_spec({"name": "p", "template": "product", "backend": "fake", "model": "m", "seeds": [1],
                    "variables": {"product": "a red mug"}})
    (request,) = expand(s)
    assert "a red mug" in request.prompt
    assert request.template == "product" and request.template_version
    assert request.guidance >= 9  # the product family's recommended guidance
    assert request.negative_prompt


def test_varying_the_template_passes_each_its_own_variables() -> None:
    s = parse_spec({"name": "p", "template": "photoreal", "backend": "fake", "model": "m", "seeds": [1],
                    "variables": {"subject": "a fox"}, "vary": {"template": ["concept_art"]}})
    requests = expand(s)
    assert {r.template for r in requests} == {"photoreal", "concept_art"}


@pytest.mark.parametrize("changes, message", [
    ({"seeds": [1, 1]}, "seed 1 appears twice"),
    ({"seeds": []}, "at 'seeds'"),
    ({"vary": {"guidance": []}}, "no levels"),
    ({"vary": {"guidance": [3, 3]}}, "appears twice"),
    ({"vary": {"colour": ["x"]}}, "unknown factor 'colour'"),
    ({"vary": {"seed": [1]}}, "seeds are replicates"),
    ({"vary": {"size": ["64x64"], "width": [32]}}, "both change 'width'"),
    ({"vary": {"guidance": ["high"]}}, "not a non-negative number"),
    ({"vary": {"size": ["big"]}}, "like '512x768'"),
    ({"template": "photoreal"}, "exactly one of 'template'"),
    ({"colour": "red"}, "at 'colour': unknown key"),
    ({"params": {"cfg": 7}}, "at 'params.cfg': unknown key; allowed keys here: width, height"),
    ({"params": {"steps": 0}}, "at 'params.steps'"),
    ({"grid": {"rows": {"factor": "steps", "levels": [1]}, "cols": {"factor": "steps", "levels": [2]}}},
     "rows and cols both vary"),
])
def test_bad_specs_name_the_problem(changes, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(".", r"\.")):
        spec(**changes)


def test_missing_model_is_named() -> None:
    with pytest.raises(SpecError, match="at 'model': required key is missing"):
        parse_spec({"name": "x", "prompt": "p", "seeds": [1]})


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


def test_combinatorial_explosion_is_capped() -> None:
    # refused before the spec is validated, and again by expand (a spec built in code)
    with pytest.raises(BudgetError, match="30 cells × 50 seeds = 1,500 images, over max_images=100"):
        spec(seeds=list(range(50)), vary={"guidance": list(range(1, 30))}, max_images=100)
    s = spec(seeds=list(range(50)), vary={"guidance": list(range(1, 30))}, max_images=1500)
    with pytest.raises(BudgetError, match="30 cells × 50 seeds = 1,500 images, over max_images=100"):
        expand(s.model_copy(update={"max_images": 100}))


def test_unknown_template_variable_in_spec() -> None:
    s = parse_spec({"name": "p", "template": "photoreal", "backend": "fake", "model": "m", "seeds": [1],
                    "variables": {"colour": "red"}})
    with pytest.raises(SpecError, match="has no variable"):
        expand(s)


@pytest.mark.parametrize("changes, message", [
    # a typo in a varied variable names its own key, not 'variables'
    ({"vary": {"var.lightning": ["a", "b"]}}, "vary.var.lightning: template 'photoreal' has no variable 'lightning'"),
    # varying the template too: the typo is not silently dropped from every cell
    ({"vary": {"template": ["concept_art"], "var.lightning": ["a"]}}, "vary.var.lightning: template 'photoreal'"),
    ({"variables": {"subject": "a fox", "colour": "red"}, "vary": {"template": ["concept_art"]}},
     "variables: template 'concept_art' or 'photoreal' has no variable(s) ['colour']"),
    ({"grid": {"rows": {"factor": "var.lightning", "levels": ["a"]}, "cols": {"factor": "steps", "levels": [2]}}},
     "grid.rows: template 'photoreal' has no variable 'lightning'"),
])
def test_template_variables_that_reach_no_template_are_refused(changes, message) -> None:  # type: ignore[no-untyped-def]
    s = parse_spec({"name": "p", "template": "photoreal", "backend": "fake", "model": "m", "seeds": [1], **changes})
    with pytest.raises(SpecError, match=re.escape(message)):
        expand(s)


def test_a_template_variable_crossed_with_the_template_axis_is_allowed() -> None:
    s = parse_spec({"name": "p", "template": "photoreal", "backend": "fake", "model": "m", "seeds": [1],
                    "grid": {"rows": {"factor": "template", "levels": ["photoreal", "concept_art"]},
                             "cols": {"factor": "var.subject", "levels": ["a fox", "a barn"]}}})
    assert len(expand(s)) == 5  # the base cell and the 2 × 2 grid: concept_art takes var.subject too


def test_a_variable_of_one_template_crossed_with_the_template_axis_reaches_that_template_only() -> None:
    s = parse_spec({"name": "p", "template": "photoreal", "backend": "fake", "model": "m", "seeds": [1],
                    "grid": {"rows": {"factor": "template", "levels": ["photoreal", "concept_art"]},
                             "cols": {"factor": "var.mood", "levels": ["ominous"]}}})  # concept_art's, not photoreal's
    requests = expand(s)
    (concept,) = [r for r in requests if r.template == "concept_art"]
    assert concept.variables["mood"] == "ominous" and "ominous" in concept.prompt
    # photoreal has no mood: its cell of the grid is its base image (one request, deduplicated by run key)
    assert [r.variables.get("mood") for r in requests if r.template == "photoreal"] == [None]


def test_checks_across_keys_are_located_at_their_key() -> None:
    with pytest.raises(SpecError, match=re.escape("at 'vary.steps': level 2.5 is not a positive whole number")):
        spec(vary={"steps": [2.5]})
    with pytest.raises(SpecError, match=re.escape("at 'vary': 'size' and 'width' both change 'width'")):
        spec(vary={"size": ["64x64"], "width": [32]})


def test_spec_round_trips_through_yaml(tmp_path: Path) -> None:
    s = spec(vary={"guidance": [2]})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(s.model_dump(exclude_defaults=True)))
    assert [r.run_key for r in expand(load_spec(path))] == [r.run_key for r in expand(s)]


def test_backend_options_apply_to_their_backend_only() -> None:
    s = parse_spec({"name": "mixed", "prompt": "a fox", "backend": "fake", "model": "m", "seeds": [1],
                    "options": {"shared": 1},
                    "backend_options": {"openai": {"quality": "high"}, "fake": {"fault": "none"}},
                    "vary": {"backend": ["openai:gpt-image-1-mini"], "option.shared": [2]}})
    by_cell = {(r.backend, r.factor): dict(r.options) for r in expand(s)}
    assert by_cell[("fake", None)] == {"shared": 1, "fault": "none"}
    assert by_cell[("openai", "backend")] == {"shared": 1, "quality": "high"}
    assert by_cell[("fake", "option.shared")] == {"shared": 2, "fault": "none"}
    # crossed in a grid, the varied option wins on every backend
    grid = parse_spec({**s.model_dump(exclude_defaults=True), "vary": {}, "grid": {
        "rows": {"factor": "backend", "levels": ["openai:gpt-image-1-mini"]},
        "cols": {"factor": "option.quality", "levels": ["low"]}}})
    crossed = [r for r in expand(grid) if r.backend == "openai"]
    assert [dict(r.options) for r in crossed] == [{"shared": 1, "quality": "low"}]


def test_backend_options_for_a_backend_the_spec_never_uses_are_refused() -> None:
    with pytest.raises(SpecError, match=re.escape("at 'backend_options.replicate': the spec never runs on "
                                                  "backend 'replicate'; it runs on fake")):
        spec(backend_options={"replicate": {"deadline_s": 5}})


# ------------------------------------------------------------------ checks on the values that reach the image

def test_template_defaults_past_the_caps_are_refused(tmp_path: Path) -> None:
    (tmp_path / "wide.j2").write_text("---\ndescription: x\ndefaults: {width: 100000}\n---\na wide photo\n")
    from workbench.prompts.templates import TemplateLibrary

    s = parse_spec({"name": "w", "template": "wide", "backend": "fake", "model": "m", "seeds": [1]})
    with pytest.raises(SpecError, match=r"params.width: 100000 from the 'defaults:' of template 'wide': input "
                                        r"should be less than or equal to 8192; set 'params.width'"):
        expand(s, library=TemplateLibrary([tmp_path]))
    assert expand(parse_spec({**s.model_dump(exclude_defaults=True), "params": {"width": 512}}),
                  library=TemplateLibrary([tmp_path]))[0].width == 512  # the spec's own value wins, and passes


def test_model_defaults_past_the_caps_are_refused() -> None:
    with pytest.raises(SpecError, match=r"params.steps: 5000 from the defaults of model 'm'"):
        expand(spec(params={}), model_defaults=lambda backend, model: {"steps": 5000})


@pytest.mark.parametrize("changes, where", [
    ({"seeds": ["2"]}, "seeds.0"), ({"seeds": [2.0]}, "seeds.0"), ({"seeds": [True]}, "seeds.0"),
    ({"params": {"width": "64"}}, "params.width"), ({"params": {"steps": 4.0}}, "params.steps"),
    ({"params": {"guidance": "7"}}, "params.guidance"), ({"max_images": "100"}, "max_images"),
    ({"loras": [{"name": "a", "source": "x", "scale": "1"}]}, "loras.0.scale"),
])
def test_types_are_strict_not_coerced(changes: dict, where: str) -> None:
    with pytest.raises(SpecError, match=re.escape(f"at '{where}'")):
        spec(**changes)
    assert spec(params={"guidance": 7}).params.guidance == 7.0  # a whole number is a number


def test_a_varied_variable_the_literal_prompt_never_uses_is_refused() -> None:
    with pytest.raises(SpecError, match=r"vary.var.size: the prompt never uses 'size' \(it uses colour\), so its "
                                        r"levels would change nothing"):
        expand(spec(vary={"var.size": ["big", "small"]}))
    with pytest.raises(SpecError, match=r"grid.var.size: the prompt never uses 'size'"):
        expand(spec(grid={"rows": {"factor": "var.size", "levels": ["a", "b"]},
                          "cols": {"factor": "guidance", "levels": [1, 2]}}))
    with pytest.raises(SpecError, match=r"variables: the prompt never uses 'size'"):
        expand(spec(variables={"colour": "red", "size": "big"}))
    # used in the negative prompt only: it changes the images
    assert len(expand(spec(negative_prompt="{{ size }}", variables={"colour": "red", "size": "big"},
                           vary={"var.size": ["small"]}))) == 4


def test_a_level_that_changes_nothing_is_refused(tmp_path: Path) -> None:
    # declared (so the spec may set it) but never used by the body: its levels would be the base's images
    (tmp_path / "t.j2").write_text("---\ndescription: x\nvariables:\n  mood: {description: m, default: calm}\n"
                                   "---\na photo\n")
    from workbench.prompts.templates import TemplateLibrary

    s = parse_spec({"name": "t", "template": "t", "backend": "fake", "model": "m", "seeds": [1],
                    "vary": {"var.mood": ["calm", "wild"]}})
    with pytest.raises(SpecError, match=r"vary.var.mood: level 'wild' gives the same images as the cell 'base', so "
                                        r"it changes nothing"):
        expand(s, library=TemplateLibrary([tmp_path]))
    with pytest.raises(SpecError, match=r"grid: the cells 'width=64, size=32x32' and 'width=32, size=32x32' give "
                                        r"the same images"):
        expand(spec(grid={"rows": {"factor": "width", "levels": [32, 64]},
                          "cols": {"factor": "size", "levels": ["32x32"]}}))


def test_oversized_specs_are_refused_before_they_are_validated(tmp_path: Path) -> None:
    with pytest.raises(BudgetError, match=r"1 cells × 1,000,000 seeds = 1,000,000 images, over max_images=1,000"):
        parse_spec({"name": "s", "prompt": "p", "model": "m", "seeds": list(range(10**6))})
    with pytest.raises(BudgetError, match=r"1,000,001 cells × 1 seeds"):
        parse_spec({"name": "s", "prompt": "p", "model": "m", "seeds": [1], "max_images": 10**5,
                    "grid": {"rows": {"factor": "guidance", "levels": list(range(1000))},
                             "cols": {"factor": "steps", "levels": list(range(1, 1001))}}})
    big = tmp_path / "seeds.yaml"
    big.write_text("name: s\nprompt: p\nmodel: m\nseeds: [" + ", ".join(map(str, range(300_000))) + "]\n")
    with pytest.raises(SpecError, match=r"seeds.yaml is 2.\d MB; a spec is a few KB"):
        load_spec(big)
    bomb = tmp_path / "bomb.yaml"  # a few hundred bytes that hold 9**7 values once the aliases are followed
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 7)]
    bomb.write_text("\n".join(["name: s", "prompt: p", "model: m", "seeds: [1]", *lines]) + "\n")
    with pytest.raises(SpecError, match="holds over 500,000 values"):
        load_spec(bomb)
