"""prompt_diff: what a backend's rewrite dropped and added, and how far it drifted."""

from __future__ import annotations

import pytest

from tests.standins.openai_server import revise
from workbench.prompts.diff import PromptDiff, content_words, diff_prompts, normalise, phrases


def test_no_revision_means_no_drift() -> None:
    diff = diff_prompts("a red fox, oil painting", None)
    assert diff == PromptDiff(requested="a red fox, oil painting", revised=None)
    assert (diff.dropped, diff.added, diff.drift, diff.dropped_elements) == ((), (), 0.0, False)
    assert "revised:   (none" in diff.to_text()
    assert "drift: 0.00" in diff.to_text()


def test_identical_and_reordered_prompts_do_not_drift() -> None:
    same = diff_prompts("a red fox, oil painting", "a red fox, oil painting")
    assert (same.dropped, same.added, same.drift) == ((), (), 0.0)
    assert not same.revised_differs
    assert "(same content words)" in same.to_text()
    reordered = diff_prompts("a red fox, oil painting", "An oil painting of a red fox.")
    assert (reordered.dropped, reordered.added, reordered.drift) == ((), (), 0.0)
    assert reordered.revised_differs


def test_a_whole_phrase_dropped_is_reported_as_the_phrase() -> None:
    diff = diff_prompts("a red fox, oil painting, 35mm lens", "A detailed oil painting of a red fox at dawn.")
    assert diff.dropped == ("35mm lens",)
    assert diff.added == ("detailed", "dawn")
    assert diff.dropped_elements
    # content stems: requested {red, fox, oil, paint, 35mm, len}, revised {detail, oil, paint, red, fox, dawn}
    assert diff.drift == pytest.approx(1 - 4 / 8)


def test_partly_kept_phrases_list_only_the_missing_words() -> None:
    diff = diff_prompts("a small red wooden boat", "a red boat on a lake")
    assert diff.dropped == ("small", "wooden")
    assert diff.added == ("lake",)


def test_normalisation_case_punctuation_and_plurals() -> None:
    diff = diff_prompts("Two CATS, golden-hour light; “soft” shadows", "two cat in golden-hour lights with soft shadow")
    assert diff.dropped == () and diff.added == ()
    assert diff.drift == 0.0
    assert normalise("  A\u00a0Cat\u2019s  TOY ") == "a cat's toy"
    assert phrases("a fox, (oil painting); 35mm\nlens.") == ["a fox", "oil painting", "35mm", "lens"]
    assert content_words("A photo of the red fox with a hat") == ["photo", "red", "fox", "hat"]


def test_completely_different_prompts_drift_fully() -> None:
    diff = diff_prompts("a red fox", "blue ocean waves")
    assert diff.drift == 1.0
    assert diff.dropped == ("red fox",) and diff.added == ("blue ocean waves",)


def test_drift_is_in_the_unit_interval_and_empty_prompts_are_safe() -> None:
    # content words: none on either side is no drift; all lost or all new is full drift; {x} against {x, y, z}
    for requested, revised, drift in [("", "", 0.0), ("", "a fox", 1.0), ("a fox", "", 1.0), ("the of a", "and the", 0.0),
                                      ("x", "x y z", 1 - 1 / 3)]:
        assert diff_prompts(requested, revised).drift == pytest.approx(drift, abs=1e-4), (requested, revised)
    assert diff_prompts("", "").drift == 0.0
    assert diff_prompts("a fox", "").dropped == ("fox",)


def test_report_text() -> None:
    text = diff_prompts("a red fox, oil painting, 35mm lens", revise("a red fox, oil painting, 35mm lens")).to_text()
    lines = text.splitlines()
    assert lines[0] == "requested: a red fox, oil painting, 35mm lens"
    assert lines[1].startswith("revised:   A detailed, vivid depiction of a red fox")
    assert "- 35mm lens" in lines
    assert "+ detailed" in lines and "+ set against a softly lit background" in lines
    # the requested {red, fox, oil, paint, 35mm, lens} and the revision's 11 content stems share 4 of 13
    assert "drift: 0.69 (1 - Jaccard similarity of content words)" in lines
    assert lines[-1] == "dropped elements: 1"


def test_to_dict_round_trips_the_fields() -> None:
    diff = diff_prompts("a red fox, 35mm lens", "a red fox")
    assert diff.to_dict() == {"requested": "a red fox, 35mm lens", "revised": "a red fox", "dropped": ["35mm lens"],
                              "added": [], "drift": 0.5, "dropped_elements": True}  # {red, fox} of {red, fox, 35mm, len}
