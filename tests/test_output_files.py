"""Files the workbench writes for people: grids in the format their name says, and permissions that honour
the umask (0644 / 0755 under umask 022, not mkstemp's 0600 / 0700). Real files, a real MLflow store.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from workbench.cli import cli
from workbench.experiments.spec import parse_spec
from workbench.files import current_umask, temp_folder, write_atomic
from workbench.models import weights
from workbench.run.runner import run_experiment

SPEC = {"name": "files", "prompt": "a cat", "backend": "fake", "model": "m", "params": {"width": 16, "height": 16},
        "seeds": [1, 2], "vary": {"guidance": [2.0, 9.0]}}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask for one test (022: the usual one; 027: a stricter one, honoured as well)."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.fixture
def store(tracking_uri: str, fake_backend: Any, tmp_path: Path) -> str:
    summary = run_experiment(parse_spec(SPEC), tracking_uri=tracking_uri, progress=False,
                             grids_dir=tmp_path / "run-grids")
    assert summary.ok and summary.finished == 6
    return tracking_uri


def grid(uri: str, output: Path) -> Any:
    return CliRunner().invoke(cli, ["grid", "files", "--tracking-uri", uri, "--cols", "guidance", "-o", str(output)],
                              catch_exceptions=False)


def test_the_umask_is_read_as_set(umask: int) -> None:
    assert current_umask() == umask


def test_atomic_files_and_folders_get_what_open_and_mkdir_would(umask: int, tmp_path: Path) -> None:
    written = write_atomic(tmp_path / "sub" / "a.json", lambda f: f.write(b"{}"))
    plain = tmp_path / "plain.json"
    plain.write_bytes(b"{}")
    assert written.read_bytes() == b"{}" and mode(written) == mode(plain) == 0o666 & ~umask
    folder = temp_folder(tmp_path, ".model-")
    (tmp_path / "plain").mkdir()
    assert mode(folder) == mode(tmp_path / "plain") == 0o777 & ~umask
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []  # no temporary file left behind


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary_one(tmp_path: Path) -> None:
    def broken(handle: Any) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path / "grid.png", broken)
    assert list(tmp_path.iterdir()) == []


def test_grids_of_a_run_and_of_grid_dash_o_honour_the_umask(umask: int, tracking_uri: str, fake_backend: Any,
                                                            tmp_path: Path) -> None:
    summary = run_experiment(parse_spec(SPEC), tracking_uri=tracking_uri, progress=False,
                             grids_dir=tmp_path / "run-grids")  # under the umask of the fixture
    assert summary.ok and summary.grids
    assert {mode(Path(p)) for p in summary.grids} == {0o666 & ~umask}
    result = grid(tracking_uri, tmp_path / "out" / "lighting.png")
    assert result.exit_code == 0, result.output
    assert mode(tmp_path / "out" / "lighting.png") == 0o666 & ~umask


def test_the_weights_cache_honours_the_umask(umask: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    assert weights.weights_hash(model)
    cache = tmp_path / "home" / "cache" / "weights-hashes.json"
    assert str(model.resolve()) in cache.read_text() and mode(cache) == 0o666 & ~umask


def test_the_embedded_model_folder_honours_the_umask(embedded_model: Path) -> None:
    # built once per session, under the umask pytest runs with: every folder as mkdir would make it
    folders = [embedded_model, *(p for p in embedded_model.rglob("*") if p.is_dir())]
    assert {mode(p) for p in folders} == {0o777 & ~current_umask()}


@pytest.mark.parametrize(("name", "fmt"), [("g.png", "PNG"), ("g.jpg", "JPEG"), ("g.JPEG", "JPEG"),
                                           ("g.webp", "WEBP")])
def test_grid_dash_o_writes_the_format_its_suffix_names(store: str, tmp_path: Path, name: str, fmt: str) -> None:
    out = tmp_path / name
    result = grid(store, out)
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.format == fmt and image.mode == "RGB" and image.width > 2 * 16
        cells = image.info.get("workbench-grid")
    if fmt == "PNG":  # only PNG keeps the run of every cell
        assert cells and "note:" not in result.output
    else:
        assert f"note: a {fmt} grid holds the pixels only" in result.output


@pytest.mark.parametrize("name", ["g.gif", "g.tiff", "grid", "g.png.bak"])
def test_grid_dash_o_refuses_a_suffix_it_cannot_write(store: str, tmp_path: Path, name: str) -> None:
    out = tmp_path / "out" / name
    result = grid(store, out)
    assert result.exit_code == 2, result.output
    assert f"cannot write a grid as '{name}'" in result.output and ".png, .jpg, .jpeg, .webp" in result.output
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder
