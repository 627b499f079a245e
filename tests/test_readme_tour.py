"""The README's tour, as a new user runs it: every ``$ workbench ...`` line of its "A short tour" section, in
order, then its Python snippet, in a fresh workbench home laid out as a checkout after ``make demo``.

The commands are read from README.md, never copied here, so an edit to the tour is tested as written. The
tour's placeholders are filled in as a user would: ``<run-id>`` and ``<run>`` with an image run of the tour's
experiment, ``image.png`` with a copy of that run's PNG. ``workbench ui`` is started on a free port, must
answer, and is stopped. Real parts: the CLI, the MLflow store, the embedded models.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from workbench.cli import cli
from workbench.experiments.spec import load_spec
from workbench.tracking.store import Tracker

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
WORKBENCH = Path(sys.executable).with_name("workbench")

pytestmark = pytest.mark.slow  # the quick start itself, twice through the CLI, plus a UI start


def section(text: str, title: str) -> str:
    """The text of the README section ``## title``, up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def tour_commands() -> list[list[str]]:
    """The argument lists of the tour's ``$ workbench ...`` lines (comments dropped, quotes as a shell reads them)."""
    lines = [line[2:] for block in blocks(section(README.read_text(), "A short tour"), "console")
             for line in block.splitlines() if line.startswith("$ ")]
    commands = [shlex.split(line, comments=True) for line in lines]
    assert commands and all(c[0] == "workbench" for c in commands), commands
    return [c[1:] for c in commands]


def python_snippets() -> list[str]:
    return blocks(README.read_text(), "python")


def test_the_tour_is_read_from_the_readme() -> None:
    commands = tour_commands()
    assert {c[0] for c in commands} <= set(cli.commands), "the tour names a command the CLI does not have"
    assert [c[0] for c in commands].count("run") >= 1 and any(c[0] == "reproduce" for c in commands)
    assert all("#" not in " ".join(c) for c in commands)  # comments dropped, quoted words kept whole
    assert python_snippets() and all("import" in s for s in python_snippets())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_briefly(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Start a serving command (``workbench ui``) on a free port, wait until it answers, stop it."""
    port = free_port()
    process = subprocess.Popen([str(WORKBENCH), *args, "--port", str(port)], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240  # a cold MLflow server on a busy 2-core machine
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[0].decode(errors="replace")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    return response.read().decode()
            except OSError:
                time.sleep(1)
        raise AssertionError(f"`workbench {' '.join(args)}` did not answer on port {port}")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0


@pytest.fixture
def checkout(tmp_path: Path, migrated_db: Path, embedded_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder laid out as the checkout after ``make demo``: experiments/, and .workbench/ as the home with
    the embedded model built (the session's, linked) and an empty MLflow store."""
    folder = tmp_path / "checkout"
    home = folder / ".workbench"
    home.mkdir(parents=True)
    (folder / "experiments").symlink_to(ROOT / "experiments")
    (home / "models").symlink_to(embedded_model.parent)
    shutil.copy(migrated_db, home / "mlflow.db")  # migrated once per session: MLflow's migrations take seconds
    monkeypatch.chdir(folder)
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "100")
    return folder


def test_the_readme_tour_runs_as_written(checkout: Path) -> None:
    commands = tour_commands()
    spec = next(c[1] for c in commands if c[0] == "run")
    experiment = load_spec(ROOT / spec).name
    image_run: str | None = None
    runs = 0
    for args in commands:
        if any("<run" in a for a in args) or "image.png" in args:
            if image_run is None:  # the first image run of the tour's experiment, and its PNG as image.png
                tracker = Tracker()
                image_run = next(r.run_id for r in tracker.records(experiment) if r.outcome == "FINISHED")
                (checkout / "image.png").write_bytes(tracker.load_bytes(image_run, "image.png"))
            args = [re.sub(r"<run(-id)?>", image_run, a) for a in args]
        shown = "workbench " + shlex.join(args)
        if args[0] == "ui":
            assert serve_briefly(args, dict(os.environ), checkout), shown
            continue
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, f"{shown} exited {result.exit_code}:\n{result.output}"
        if args[0] == "run":
            runs += 1
            if runs > 1:  # "again: every image is already logged, nothing is generated"
                assert "nothing to generate" in result.output, result.output
        if args[0] == "grid":
            output = args[args.index("-o") + 1]
            assert (checkout / output).is_file(), shown
        if args[0] == "reproduce":
            assert "verdict:      bit-exact" in result.output, f"{shown}:\n{result.output}"
    assert image_run is not None and runs >= 1

    # then the README's Python, as written, in the same checkout (the quick start is logged: nothing generates)
    for snippet in python_snippets():
        exec(compile(snippet, "README.md", "exec"), {"__name__": "readme"})
