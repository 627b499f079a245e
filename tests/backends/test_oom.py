"""A real ``torch.OutOfMemoryError`` raised inside a real pipeline: mapped, memory released, batch halved, recorded.

A forward pre-hook on the embedded pipeline's UNet raises torch's own error whenever the UNet is asked for
more than a given batch (as a GPU would), so the error comes out of diffusers' call exactly as a real one does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.backends import diffusers as diffusers_backend
from workbench.backends.registry import get_backend
from workbench.experiments.spec import parse_spec
from workbench.run.runner import run_experiment
from workbench.tracking.store import Tracker

SPEC = {"name": "oom", "prompt": "a red circle", "backend": "diffusers", "model": "embedded:tiny-sd",
        "params": {"width": 32, "height": 32, "steps": 2, "guidance": 3.0}, "seeds": [1, 2, 3, 4], "max_batch": 4}


@pytest.fixture
def unet_fits(embedded_model: Path):  # type: ignore[no-untyped-def]
    """Make the shared pipeline's UNet fail above ``fits[0]`` latents per call; record every batch it was given."""
    torch.set_num_threads(1)
    pipe = get_backend("diffusers").pipeline("embedded:tiny-sd")
    fits, seen = [2], []

    def hook(module, args, kwargs):  # type: ignore[no-untyped-def]
        sample = args[0] if args else kwargs["sample"]
        seen.append(sample.shape[0])
        if sample.shape[0] > fits[0]:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (batch {sample.shape[0]})")

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    yield fits, seen
    handle.remove()


def test_a_real_torch_oom_halves_the_batch_and_is_recorded(unet_fits, tracking_uri: str, tmp_path: Path,
                                                           monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fits, seen = unet_fits
    released = []
    real_release = diffusers_backend.release_device_memory
    monkeypatch.setattr(diffusers_backend, "release_device_memory",
                        lambda torch_, device: released.append(device) or real_release(torch_, device))
    # guidance 3 doubles the UNet batch (CFG): 4 images = 8 latents, 2 images = 4; only 1 image (2) fits
    summary = run_experiment(parse_spec(SPEC), tracking_uri=tracking_uri, progress=False, make_grids=False)
    assert summary.ok and summary.finished == 4, summary
    assert summary.oom_splits == 3  # 4 -> 2 + 2, and each 2 -> 1 + 1
    # the UNet failed at 8 latents, then at 4 (twice); every image then ran alone, both of its 2 steps
    assert [n for n in seen if n > 2] == [8, 4, 4] and seen.count(2) == 4 * 2
    assert released == ["cpu"] * 3
    tracker = Tracker(tracking_uri)
    records = tracker.records("oom", statuses=["FINISHED"])
    assert len(records) == 4
    for record in records:
        env = json.loads(tracker.load_bytes(record.run_id, "environment.json"))
        assert env["oom_split"] == "out of memory at batch size 4, then 2; generated in a batch of 1"
    # the halved images are the ones a sweep of batches of 1 makes, bit for bit
    fits[0] = 99
    alone = run_experiment(parse_spec({**SPEC, "name": "oom-alone", "max_batch": 1}), tracking_uri=tracking_uri,
                           progress=False, make_grids=False)
    assert alone.finished == 4 and alone.oom_splits == 0
    by_seed = {r.params["seed"]: np.asarray(tracker.load_image(r.run_id)) for r in records}
    for record in tracker.records("oom-alone"):
        assert np.array_equal(by_seed[record.params["seed"]], np.asarray(tracker.load_image(record.run_id)))


def test_even_a_batch_of_one_that_does_not_fit_is_a_failed_run_with_the_reason(
        unet_fits, tracking_uri: str) -> None:  # type: ignore[no-untyped-def]
    fits, _ = unet_fits
    fits[0] = 1  # CFG needs 2 latents per image: nothing fits
    summary = run_experiment(parse_spec({**SPEC, "name": "oom-never", "seeds": [1, 2]}), tracking_uri=tracking_uri,
                             progress=False, make_grids=False)
    assert summary.finished == 0 and summary.failed == 2
    [first, *_] = Tracker(tracking_uri).records("oom-never", statuses=["FAILED"])
    reason = first.tags.get("workbench.failure_reason") or json.dumps(first.tags)
    assert "OutOfMemoryError" in reason and "even a batch of 1 does not fit" in reason


def test_release_device_memory_empties_the_cache_of_the_device_in_use(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append("cuda"))
    diffusers_backend.release_device_memory(torch, "cuda")
    diffusers_backend.release_device_memory(torch, "cpu")
    assert emptied == ["cuda"]
