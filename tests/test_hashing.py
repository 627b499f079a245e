import math

import pytest

from workbench.hashing import canonical_json, content_hash, run_key
from workbench.types import GenerationRequest


def test_canonical_json_is_sorted_compact_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": [1.0, "é", (2, 3)], "c": None}) == '{"a":[1.0,"é",[2,3]],"b":1,"c":null}'


def test_canonical_json_refuses_nan_and_unknown_types() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        canonical_json({"x": math.nan})
    with pytest.raises(TypeError, match="set"):
        canonical_json({"x": {1, 2}})


def test_run_key_is_a_stable_format_contract() -> None:
    # Changing this value changes every "already done" lookup: bump RUN_KEY_VERSION instead.
    request = GenerationRequest(backend="diffusers", model="embedded:tiny-sd", prompt="a red circle", seed=1,
                                width=64, height=64, steps=10, guidance=7.5)
    assert request.run_key == run_key(request.image_fields())
    assert request.run_key == "69c8d8369d56bff1f0ce50d0d3e99423"
    assert run_key({"a": 1}) == run_key({"a": 1})


def test_run_key_covers_the_image_but_not_provenance() -> None:
    base = GenerationRequest(backend="diffusers", model="m", prompt="p", seed=1)
    assert base.replace(experiment="other", factor="guidance", level=3, template="t").run_key == base.run_key
    for change in ({"seed": 2}, {"prompt": "q"}, {"guidance": 7.6}, {"steps": 31}, {"width": 640},
                   {"scheduler": "ddim"}, {"negative_prompt": "blurry"}, {"options": {"eta": 0.5}},
                   {"model": "n"}, {"backend": "fake"}):
        assert base.replace(**change).run_key != base.run_key, change
    # integer and float guidance are the same number, the same image
    assert base.replace(guidance=7).run_key == base.replace(guidance=7.0).run_key


def test_replicate_index_counts_only_without_a_seed() -> None:
    seeded = GenerationRequest(backend="b", model="m", prompt="p", seed=1)
    assert seeded.replace(replicate=3).run_key == seeded.run_key
    seedless = seeded.replace(seed=None)
    assert seedless.replace(replicate=1).run_key != seedless.run_key


def test_content_hash_is_short_sha256() -> None:
    assert content_hash("abc") == "ba7816bf8f01cfea"
    assert len(content_hash(b"x", length=8)) == 8
