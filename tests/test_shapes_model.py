"""The shipped shapes model (``embedded:shapes``): it loads offline through the real path, it still scores what
its model card says, and the quick start's columns show what they vary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from workbench.experiments.spec import load_spec
from workbench.models import embedded
from workbench.models.shapes import card, scorer
from workbench.run.runner import run_experiment
from workbench.tracking.store import Tracker

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = embedded.SHAPES_WEIGHTS


@pytest.fixture(scope="module")
def trained() -> dict:
    torch.set_num_threads(1)
    report = yaml.safe_load((WEIGHTS / "training.yaml").read_text())
    return report


def test_the_weights_are_shipped_small_fp16_and_with_their_card(trained: dict) -> None:
    files = sorted(WEIGHTS.rglob("*.safetensors"))
    assert {f.parent.name for f in files} == {"unet", "vae", "text_encoder"}
    assert sum(f.stat().st_size for f in files) <= 10 * 2**20
    from safetensors import safe_open

    for path in files:
        with safe_open(str(path), "pt") as weights:
            dtypes = {weights.get_slice(k).get_dtype() for k in weights.keys()}
        assert dtypes == {"F16"}, path
    readme = (WEIGHTS / "README.md").read_text()
    assert "Adherence on the held-out prompts" in readme and (WEIGHTS / "samples.png").is_file()
    assert embedded.build("shapes") == WEIGHTS  # shipped: nothing is built


def test_the_model_still_scores_what_its_card_says(trained: dict) -> None:
    """Twelve of the card's held-out prompts (its first seed) at the default guidance and at guidance 1
    (no guidance), through from_pretrained: the card's figures hold, and guidance visibly matters."""
    prompts = trained["score_prompts"][:12]
    default = f"{card.DEFAULT_GUIDANCE:g}"
    scores, _ = card.evaluate(WEIGHTS, prompts, (card.DEFAULT_GUIDANCE, 1.0), steps=20)
    for guidance in (default, "1"):
        measured, recorded = scores[guidance], trained["scores"][guidance]
        for attribute in ("colour", "background", "overall"):
            # 2 of 12 prompts either way: the card's figure is over all its prompts and both seeds
            assert abs(measured[attribute] - recorded[attribute]) <= 2 / 12 + 1e-9, (guidance, attribute, measured,
                                                                                   recorded)
    assert scores[default]["colour"] >= 0.8 and scores[default]["overall"] >= 0.8
    # without guidance the model often draws another colour or shape: the quick start's guidance column shows it
    assert scores["1"]["overall"] <= scores[default]["overall"] - 0.1, scores


def test_the_quick_start_columns_show_their_colour(tracking_uri: str) -> None:
    spec = load_spec(ROOT / "experiments" / "quickstart.yaml")
    assert spec.model == "embedded:shapes" and spec.template == "shapes"
    colours = spec.vary["var.colour"]
    small = spec.model_copy(update={"name": "qs-colour", "vary": {"var.colour": colours}, "seeds": spec.seeds[:2]})
    summary = run_experiment(small, tracking_uri=tracking_uri, progress=False, make_grids=False)
    assert summary.ok and summary.finished == 2 * (len(colours) + 1)
    tracker = Tracker(tracking_uri)
    right = 0
    records = tracker.records("qs-colour")
    for record in records:
        image = np.asarray(tracker.load_image(record.run_id))
        right += scorer.analyse(image)["colour"] == record.params["var.colour"]
        assert "adherence.colour" in record.metrics  # scored as it was logged
    assert right >= len(records) - 1, f"{right} of {len(records)} images show the colour their column asks"
