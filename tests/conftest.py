"""Shared fixtures: a session workbench home with the embedded model, a migrated MLflow DB per test.

Real parts only: a real SQLite MLflow store (migrated once per session, copied per test, as
MLflow's own tests do), the real embedded diffusers pipeline, real PNGs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Tiny models on 2 cores: torch's default threading thrashes (23 ms vs 540 ms per UNet call).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
os.environ.pop("MLFLOW_TRACKING_URI", None)
for key in ("OPENAI_API_KEY", "REPLICATE_API_TOKEN", "OPENAI_BASE_URL", "REPLICATE_BASE_URL"):
    os.environ.pop(key, None)

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workbench home shared by the session (the embedded model is built once, lazily)."""
    home = tmp_path_factory.mktemp("workbench-home")
    return home


@pytest.fixture(autouse=True)
def workbench_home(session_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WORKBENCH_HOME", str(session_home))
    return session_home


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite DB with the schema created once (migrations take seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, migrated_db: Path) -> str:
    """A fresh, real MLflow store for one test."""
    target = tmp_path / "store" / "mlflow.db"
    target.parent.mkdir()
    shutil.copy(migrated_db, target)
    return f"sqlite:///{target}"


@pytest.fixture(scope="session")
def embedded_model(session_home: Path) -> Path:
    """The embedded tiny pipeline, built once per session."""
    os.environ["WORKBENCH_HOME"] = str(session_home)
    from workbench.models import embedded

    return embedded.build("tiny-sd")


@pytest.fixture
def fake_backend():  # type: ignore[no-untyped-def]
    """A fresh fake backend registered as 'fake' for the test (and removed afterwards)."""
    from workbench.backends import registry
    from workbench.backends.fake import FakeBackend

    backend = FakeBackend()
    registry._instances["fake"] = backend
    yield backend
    registry._instances.pop("fake", None)
