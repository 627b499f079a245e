"""Training checkpoints of the shapes model: everything a stopped run needs to go on exactly where it was.

A checkpoint holds the phase and step, every model's and optimizer's state, the EMA weights, the state
of the one random generator all draws come from, the logged losses and the seconds spent so far.
Resuming from it gives the same weights, bit for bit, as a run that never stopped (on the same
device and library versions): the data is drawn again from the seed, and latents are encoded again
from the restored VAE.

Checkpoints live outside the work tree (``~/.cache/workbench/shapes-train/<run>``), named by a hash of
the configuration and seed, so ``--resume`` never continues a run with other settings. Each write goes
to a temporary file that is then renamed: a run killed while writing leaves the previous checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...hashing import canonical_json, content_hash

__all__ = ["default_dir", "run_id", "save", "load"]

FILE = "checkpoint.pt"


def run_id(cfg: dict[str, Any], seed: int, device: str) -> str:
    """Names one training run: its configuration, seed and device (torch's kernels differ by device)."""
    return content_hash(canonical_json({"cfg": cfg, "seed": seed, "device": device.split(":")[0]}), 12)


def default_dir(run: str) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "workbench" / "shapes-train" / run


def save(folder: Path, state: dict[str, Any]) -> Path:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load(folder: Path, run: str) -> dict[str, Any] | None:
    """The checkpoint of ``run`` in ``folder``, or None where there is none."""
    import torch

    path = folder / FILE
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("run") != run:
        raise ValueError(f"{path} belongs to training run {state.get('run')!r}, not {run!r} (other settings or "
                         f"seed); pass another --checkpoint-dir, or delete that folder to start over")
    return state
