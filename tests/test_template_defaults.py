"""Template defaults agree with each other and with the levels the example experiments vary.

A prompt that says "late afternoon" beside "neon sign glow", or "a brass desk lamp, made of matte speckled
stoneware", asks the model for two things at once. Per template, a few groups of mutually exclusive words:
a rendered prompt may use words of at most one set of each group. The tables are short on purpose: they
name the contradictions the library's own levels could produce, not every one a user could type.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbench.experiments.expand import expand
from workbench.experiments.spec import load_spec
from workbench.prompts.templates import TemplateLibrary

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = TemplateLibrary()

TIME_OF_DAY = {"morning": ["morning", "dawn", "sunrise"], "midday": ["midday", "noon"],
               "late day": ["afternoon", "golden-hour", "golden hour", "sunset"],
               "twilight": ["twilight", "blue-hour", "blue hour", "dusk"], "night": ["night", "neon", "moonlight"]}
MATERIAL = {"stoneware": ["stoneware"], "ceramic": ["ceramic", "porcelain"],
            "metal": ["brass", "steel", "aluminium", "copper", "chrome"], "glass": ["glass"], "plastic": ["plastic"]}
FINISH = {"matte": ["matte"], "glossy": ["glossy", "high-gloss"]}
BACKGROUND = {"light": ["light background", "white background", "white whiteboard"],
              "dark": ["deep blue", "dark background", "black background"]}
RENDERING = {"hand-drawn": ["hand-drawn", "sketch"], "vector": ["vector"]}
SHAPE = {s: [s] for s in ("circle", "square", "triangle", "cross")}
POSITION = {p: [p] for p in ("left", "right", "top", "bottom", "center")}

EXCLUSIVE = {
    "photoreal": {"time of day": TIME_OF_DAY},
    "concept_art": {"time of day": TIME_OF_DAY},
    "product": {"material": MATERIAL, "finish": FINISH},
    "diagram": {"background": BACKGROUND, "rendering": RENDERING},
    "shapes": {"shape": SHAPE, "position": POSITION},
}


def contradictions(template: str, prompt: str) -> list[str]:
    """What ``prompt`` says twice, one way and another: "time of day: late day (afternoon) vs night (neon)"."""
    found = []
    for group, sets in EXCLUSIVE.get(template, {}).items():
        hits = {name: [w for w in words if re.search(rf"\b{re.escape(w)}\b", prompt, re.IGNORECASE)]
                for name, words in sets.items()}
        used = {name: words for name, words in hits.items() if words}
        if len(used) > 1:
            found.append(f"{group}: " + " vs ".join(f"{name} ({', '.join(words)})" for name, words in used.items()))
    return found


def test_the_check_finds_the_contradictions_it_is_for() -> None:
    assert contradictions("photoreal", "a pier, late afternoon, neon sign glow") == [
        "time of day: late day (afternoon) vs night (neon)"]
    assert contradictions("product", "a brass desk lamp, made of matte speckled stoneware") == [
        "material: stoneware (stoneware) vs metal (brass)"]
    assert contradictions("diagram", "white-line blueprint-style, on a deep blue background") == []
    assert contradictions("photoreal", "a pier, golden hour, warm golden-hour sunlight") == []


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_cell_of_an_example_experiment_says_one_thing(path: Path) -> None:
    requests = expand(load_spec(path))
    assert requests
    for request in requests:
        if request.template:
            assert request.template in EXCLUSIVE, f"add a table for template '{request.template}'"
        assert contradictions(request.template or "", request.prompt) == [], (request.factor, request.level)


@pytest.mark.parametrize("name", LIBRARY.names())
def test_each_allowed_level_agrees_with_the_other_defaults(name: str) -> None:
    template = LIBRARY.get(name)
    assert name in EXCLUSIVE, f"add a table for template '{name}'"
    assert contradictions(name, template.render().prompt) == []
    for variable in template.variables.values():  # one at a time, as an experiment varies them
        for level in variable.allowed or ():
            prompt = template.render({variable.name: level}).prompt
            assert contradictions(name, prompt) == [], (variable.name, level, prompt)


def test_a_product_named_with_its_material_is_not_given_another() -> None:
    prompt = LIBRARY.render("product", {"product": "a brass desk lamp", "background": "gradient"}).prompt
    assert prompt.startswith("product photograph of a brass desk lamp,") and "made of" not in prompt
