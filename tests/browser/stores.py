"""A store holding the quick start's runs, generated once per test session and shared."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


def quickstart_store(tmp_path_factory: pytest.TempPathFactory, migrated_db: Path) -> str:
    """The tracking URI of a store that ``experiments/quickstart.yaml`` filled (27 runs on the embedded
    shapes model). Built by the first caller in the session, reused by the others (pass the ``embedded_model``
    and ``migrated_db`` fixtures' work in: the home must hold the model)."""
    from workbench.run.runner import run_experiment

    folder = tmp_path_factory.getbasetemp() / "quickstart-store"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    done = folder / "filled"
    if done.exists():
        return uri
    shutil.rmtree(folder, ignore_errors=True)  # a half-filled store from an interrupted first caller
    folder.mkdir()
    shutil.copy(migrated_db, folder / "mlflow.db")
    summary = run_experiment(QUICKSTART, tracking_uri=uri, progress=False, grids_dir=folder / "grids")
    assert summary.finished == 27 and summary.ok, summary
    done.touch()
    return uri
