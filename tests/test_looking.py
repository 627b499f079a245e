"""Looking changes nothing, and a home that cannot be written says so at once.

Read-only commands on a store that does not exist create nothing (no folder, no database) and say that it does
not exist; a read-only or broken WORKBENCH_HOME names the path and the fix instead of "cannot reach ... Start the
server", a long stall in MLflow's retries, or a traceback. Every command here is the real console script.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WORKBENCH = Path(sys.executable).with_name("workbench")
SPEC = "name: look\nprompt: a {{ colour }} circle\nvariables: {colour: red}\nbackend: fake\nmodel: m\nseeds: [1, 2]\n"


def workbench(*args: object, home: Path, user_without_override: bool = False, timeout: float = 300
              ) -> subprocess.CompletedProcess[str]:
    """The console script with WORKBENCH_HOME=home; ``user_without_override``: as a user that file modes bind
    (root ignores them: run it with CAP_DAC_OVERRIDE dropped, as setpriv does)."""
    command = [str(WORKBENCH), *map(str, args)]
    if user_without_override and os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: file modes cannot bind here")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *command]
    env = {**os.environ, "WORKBENCH_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "look.yaml"
    path.write_text(SPEC)
    return path


def test_plan_on_a_store_that_does_not_exist_creates_nothing(spec: Path, tmp_path: Path) -> None:
    home, missing = tmp_path / "home", tmp_path / "nonexistent" / "dir" / "x.db"
    result = workbench("plan", spec, "--tracking-uri", f"sqlite:///{missing}", home=home)
    assert result.returncode == 0, result.stderr
    assert f"store: sqlite:///{missing}, which does not exist yet (nothing is logged there; `workbench run` " \
           f"creates it). Nothing was generated." in result.stdout
    assert re.search(r"total\s+│\s+1 cells × 2 seeds\s+│\s+2\s+│\s+0\s+│\s+2\s+│", result.stdout), result.stdout
    assert not (tmp_path / "nonexistent").exists() and not home.exists()
    # the default store too: the quick start's first `plan` on a fresh clone creates no home
    result = workbench("plan", spec, "--json", home=home)
    assert result.returncode == 0 and json.loads(result.stdout)["to_run"] == 2
    assert not home.exists()


@pytest.mark.parametrize("command", [
    ["grid", "look", "--cols", "guidance", "-o", "OUT/grid.png"],
    ["reproduce", "0123456789abcdef0123456789abcdef"],
    ["reproduce", "0123456789abcdef0123456789abcdef", "--check", "--no-log"],
    ["score", "look"],
    ["rate", "0123456789abcdef0123456789abcdef", "4"],
    ["report", "look"],
    ["ui"],
])
def test_read_only_commands_on_a_missing_store_say_so_and_create_nothing(command: list[str], tmp_path: Path) -> None:
    home, missing = tmp_path / "home", tmp_path / "nonexistent" / "x.db"
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    result = workbench(*args, "--tracking-uri", f"sqlite:///{missing}", home=home)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no MLflow store at sqlite:///{missing}: {missing} does not exist, so nothing was logged there" \
           in result.stderr
    assert not (tmp_path / "nonexistent").exists() and not home.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["info"], ["templates", "list"], ["embedded", "list"], ["--help"]])
def test_commands_that_only_show_things_create_no_home(command: list[str], tmp_path: Path) -> None:
    result = workbench(*command, home=tmp_path / "home")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "home").exists()


@pytest.mark.timeout(900)  # a hang guard (MLflow once stalled 105 s here); each command takes ~2 s idle
def test_a_read_only_home_names_the_path_at_once(spec: Path, tmp_path: Path, migrated_db: Path) -> None:
    full, empty = tmp_path / "full", tmp_path / "empty"
    empty.mkdir()
    full.mkdir()
    shutil.copy(migrated_db, full / "mlflow.db")  # a home with a real store in it
    before = files_under(full)
    for home in (full, empty):
        for folder in (home, *home.rglob("*")):
            folder.chmod(folder.stat().st_mode & ~0o222)
    try:
        for home, command, expected in [
            (full, ["plan", spec], f"{full} is not writable by this user (it holds the MLflow store"),
            (full, ["run", spec, "--no-progress"], f"{full} is not writable by this user (it holds the MLflow store"),
            (full, ["grid", "look", "--cols", "guidance", "-o", tmp_path / "g.png"], f"{full} is not writable"),
            (empty, ["run", spec, "--no-progress"], f"{empty} is not writable by this user (the MLflow store "
                                                    f"sqlite:///{empty}/mlflow.db would be created in it)"),
            (empty, ["embedded", "build"], f"cannot write {empty}/models (in the workbench home {empty}): "
                                           f"Permission denied; make it writable, or set WORKBENCH_HOME"),
        ]:
            result = workbench(*command, home=home, user_without_override=True)
            assert result.returncode == 2, (command, result.stdout, result.stderr)
            assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
            assert "Start the server" not in result.stderr
        # a read-only empty home still plans (nothing is logged there yet), creating nothing
        result = workbench("plan", spec, home=empty, user_without_override=True)
        assert result.returncode == 0 and "does not exist yet" in result.stdout, result.stderr
    finally:
        for home in (full, empty):
            for folder in (home, *home.rglob("*")):
                folder.chmod(folder.stat().st_mode | 0o200)
    assert files_under(full) == before and files_under(empty) == []


def test_a_broken_home_names_the_path(spec: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    home = blocker / "home"
    result = workbench("run", spec, "--no-progress", home=home)
    assert result.returncode == 2 and f"cannot create {home} for the MLflow store" in result.stderr, result.stderr
    assert "Not a directory" in result.stderr
    result = workbench("embedded", "build", home=home)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot write {home}/models" in result.stderr and "a file stands where a folder should be" in result.stderr
