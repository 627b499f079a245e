"""The team recipe end to end: deploy/team-server.sh starts PostgreSQL and `mlflow server` on 127.0.0.1, a
sweep runs through the server, and the result is checked through MLflow's REST API (plain HTTP, no
MLflow client), on the server's disk and in PostgreSQL.

Needs Debian's PostgreSQL (`make postgres-deps`): skipped where initdb is missing, failed instead when
WORKBENCH_REQUIRE_POSTGRES=1 (CI). One server for the module (starting it is most of the time), and one of
its own for the test that stops it, so that the order of the tests does not matter.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.requirements import missing
from tests.test_server import free_port
from workbench.provenance.png import read_png_metadata
from workbench.run.runner import run_experiment

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "team-server.sh"
TEAM_HOST = "mlflow.team.test"  # a name clients might use; allowed through ALLOWED_HOSTS

SPEC = """\
name: team
prompt: "a {{ colour }} square on a white table"
variables: {colour: red}
backend: fake
model: m
params: {width: 48, height: 32, steps: 2}
seeds: [1, 2, 3]
vary:
  var.colour: [blue]
"""


def initdb_missing() -> str | None:
    """Why PostgreSQL cannot be used here, or None (the script's own lookup: pg_config, then Debian's)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if shutil.which("pg_config"):
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        found += [f"{bindir}/initdb"] if os.access(f"{bindir}/initdb", os.X_OK) else []
    if not found:
        return "PostgreSQL's initdb is not installed (make postgres-deps, or apt-get install postgresql)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[team-server]')"
    return None


@dataclass
class TeamServer:
    folder: Path
    env: dict[str, str]

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.env['MLFLOW_PORT']}"

    def script(self, command: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCRIPT), command], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def logs(self) -> str:
        tails = []
        for log in sorted((self.folder / "logs").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-25:]
            tails.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(tails)


@contextmanager
def started_team_server() -> Iterator[TeamServer]:
    """A team server of its own (folder, ports) from deploy/team-server.sh, stopped and removed afterwards."""
    reason = initdb_missing()
    if reason:
        missing(reason, "WORKBENCH_REQUIRE_POSTGRES")
    # Under /tmp itself, not pytest's tmp_path: as root the cluster runs as the `postgres` user, which cannot
    # enter /tmp/pytest-of-root (0700); the short path also keeps the unix socket under 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="wb-team-", dir="/tmp"))
    folder.chmod(0o755)
    env = {**os.environ, "WORKBENCH_SERVER_DIR": str(folder), "HOST": "127.0.0.1",
           "PGPORT": str(free_port()), "MLFLOW_PORT": str(free_port()), "MLFLOW_WORKERS": "2",
           "MLFLOW": str(Path(sys.executable).with_name("mlflow")),
           "ALLOWED_HOSTS": f"127.0.0.1:*,localhost:*,{TEAM_HOST}:*"}
    for setting in ("BACKEND_STORE_URI", "ARTIFACTS_DESTINATION", "MLFLOW_SERVER_ARGS", "HTTP_SERVER",
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"):  # the recipe's defaults, whatever the caller's shell
        env.pop(setting, None)
    server = TeamServer(folder, env)
    try:
        started = server.script("start")
        if started.returncode != 0:
            pytest.fail(f"deploy/team-server.sh start failed ({started.returncode}):\n{started.stdout}"
                        f"{started.stderr}\n{server.logs()}")
        yield server
    finally:
        stopped = server.script("stop", timeout=120)
        if stopped.returncode == 0:
            shutil.rmtree(folder, ignore_errors=True)
        else:  # keep the folder and its logs to look at
            print(f"deploy/team-server.sh stop failed; {folder} kept:\n{stopped.stdout}{stopped.stderr}")


@pytest.fixture(scope="module")
def team_server() -> Iterator[TeamServer]:
    """One server for the module's tests that only use it (none of them stops it)."""
    with started_team_server() as server:
        yield server


def api(server: TeamServer, path: str, body: dict[str, Any] | None = None, *,
        host: str | None = None) -> dict[str, Any]:
    request = urllib.request.Request(server.uri + path, method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    if host:
        request.add_unredirected_header("Host", host)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def fetch(server: TeamServer, path: str) -> bytes:
    with urllib.request.urlopen(server.uri + path, timeout=30) as response:
        return response.read()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def sweep(team_server: TeamServer, tmp_path_factory: pytest.TempPathFactory, session_home: Path
          ) -> subprocess.CompletedProcess[str]:
    """`workbench run` from the command line, unchanged but for --tracking-uri http://…"""
    folder = tmp_path_factory.mktemp("team-sweep")
    (folder / "team.yaml").write_text(SPEC)
    return subprocess.run(
        [sys.executable, "-m", "workbench", "run", str(folder / "team.yaml"),
         "--tracking-uri", team_server.uri, "--no-progress", "--grids-dir", str(folder / "grids")],
        env={**os.environ, "WORKBENCH_HOME": str(session_home)}, capture_output=True, text=True, timeout=300,
        check=False)


def image_runs(server: TeamServer) -> tuple[str, list[dict[str, Any]]]:
    experiment = api(server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=team")["experiment"]
    found = api(server, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [experiment["experiment_id"]], "filter": "tags.`workbench.kind` = 'image'",
        "max_results": 100})
    return experiment["experiment_id"], found.get("runs", [])


def test_the_script_reports_a_running_server(team_server: TeamServer) -> None:
    status = team_server.script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "PostgreSQL: running" in status.stdout and f"tracking URI {team_server.uri}" in status.stdout
    again = team_server.script("start")  # idempotent: nothing is started twice
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr


def test_a_sweep_through_the_server_lands_in_postgres_and_the_artifact_folder(
        team_server: TeamServer, sweep: subprocess.CompletedProcess[str]) -> None:
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr + team_server.logs()
    assert "6 planned: 6 generated" in sweep.stdout
    experiment_id, runs = image_runs(team_server)
    assert len(runs) == 6 and {r["info"]["status"] for r in runs} == {"FINISHED"}

    params = [{p["key"]: p["value"] for p in r["data"]["params"]} for r in runs]
    assert sorted((p["var.colour"], p["seed"]) for p in params) == \
        [(c, str(s)) for c in ("blue", "red") for s in (1, 2, 3)]
    assert {p["prompt"] for p in params} == {f"a {c} square on a white table" for c in ("red", "blue")}
    assert {(p["width"], p["height"], p["backend"]) for p in params} == {("48", "32", "fake")}
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    assert {t["workbench.factor"] for t in tags} == {"base", "var.colour"}
    assert all(t["workbench.run_key"] == p["run_key"] for t, p in zip(tags, params, strict=True))
    assert all(t.get("mlflow.parentRunId") for t in tags)

    # The artifacts of one run, listed and downloaded through the server (--serve-artifacts).
    run = next(r for r, p in zip(runs, params, strict=True) if p["var.colour"] == "blue" and p["seed"] == "2")
    run_id, artifact_uri = run["info"]["run_id"], run["info"]["artifact_uri"]
    assert artifact_uri == f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"
    listed = api(team_server, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}")
    files = {f["path"]: f for f in listed["files"]}
    assert {"image.png", "request.json", "prompt.txt", "environment.json"} <= set(files)
    png = fetch(team_server, f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/"
                             f"image.png")
    assert png == fetch(team_server, f"/get-artifact?path=image.png&run_uuid={run_id}")
    assert len(png) == int(files["image.png"]["file_size"])

    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (48, 32)
    meta = read_png_metadata(png)  # verifies the request still hashes to its run key
    assert meta.run_id == run_id and meta.experiment_id == experiment_id
    assert meta.tracking_uri == team_server.uri
    assert meta.request().prompt == "a blue square on a white table" and meta.request().seed == 2
    assert meta.a1111 is not None and meta.a1111["Seed"] == "2"

    # Really on the server's disk, under its artifact folder, byte for byte.
    on_disk = team_server.folder / "artifacts" / experiment_id / run_id / "artifacts" / "image.png"
    assert on_disk.read_bytes() == png
    assert len(list((team_server.folder / "artifacts" / experiment_id).glob("*/artifacts/image.png"))) == 6

    # Really in PostgreSQL: six image runs and the parent run, with their params.
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=int(team_server.env["PGPORT"]), user="mlflow",
                          dbname="mlflow") as db, db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(experiment_id),))
        assert cursor.fetchone() == (7,)
        cursor.execute("SELECT value FROM params WHERE run_uuid = %s AND key = 'var.colour'", (run_id,))
        assert cursor.fetchone() == ("blue",)
    db.close()


def test_a_second_run_resumes_against_the_server(team_server: TeamServer,
                                                 sweep: subprocess.CompletedProcess[str],
                                                 fake_backend, tmp_path: Path) -> None:
    assert sweep.returncode == 0
    (tmp_path / "team.yaml").write_text(SPEC)
    again = run_experiment(tmp_path / "team.yaml", tracking_uri=team_server.uri, progress=False,
                           grids_dir=tmp_path / "grids")
    assert again.ok and again.skipped == 6 and again.finished == 0 and fake_backend.calls == []
    assert len(image_runs(team_server)[1]) == 6


def test_the_server_answers_only_the_host_names_it_is_told(team_server: TeamServer) -> None:
    path = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=team"
    assert api(team_server, path, host=f"{TEAM_HOST}:{team_server.env['MLFLOW_PORT']}")["experiment"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        api(team_server, path, host="attacker.example")
    assert refused.value.code == 403  # MLflow's DNS-rebinding guard: --allowed-hosts (ALLOWED_HOSTS here)


def live_processes(*, pids: set[int] = frozenset(), group: int | None = None) -> list[int]:  # type: ignore[assignment]
    """Which of ``pids`` (or of process group ``group``) still run; zombies count as ended."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except OSError:
            continue
        pid = int(stat.parent.name)
        if fields[0] != "Z" and (pid in pids or (group is not None and int(fields[2]) == group)):
            found.append(pid)
    return found


def test_stop_ends_mlflow_and_postgres() -> None:
    with started_team_server() as server:  # its own: stopping the module's server would break later tests
        pid = int((server.folder / "run" / "mlflow.pid").read_text())
        postmaster = int((server.folder / "pgdata" / "postmaster.pid").read_text().split()[0])
        assert set(live_processes(pids={pid, postmaster})) == {pid, postmaster}
        assert len(live_processes(group=pid)) >= 3  # mlflow, the HTTP server (gunicorn) and its 2 workers
        stopped = server.script("stop", timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert live_processes(pids={pid, postmaster}) == []
        assert live_processes(group=pid) == [], "HTTP server workers outlived `stop`"
        status = server.script("status")
        assert status.returncode == 1 and "mlflow: not running" in status.stdout


def test_the_same_spec_run_twice_at_once_through_the_server_logs_each_image_once(
        team_server: TeamServer, tmp_path: Path, session_home: Path) -> None:
    """Two `workbench run`s of one spec against the PostgreSQL-backed server: the experiment's lease in the
    store makes the later one wait, then skip; each run key has one FINISHED image run."""
    (tmp_path / "twice.yaml").write_text(SPEC.replace("name: team", "name: team-twice"))
    env = {**os.environ, "WORKBENCH_HOME": str(session_home), "WORKBENCH_FAKE_DELAY_S": "0.5",
           "WORKBENCH_LEASE_POLL_S": "0.2"}
    procs = [subprocess.Popen([sys.executable, "-m", "workbench", "run", str(tmp_path / "twice.yaml"),
                               "--tracking-uri", team_server.uri, "--no-progress", "--grids-dir",
                               str(tmp_path / f"grids-{i}")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(outputs) + team_server.logs()
    # exactly one waited: a round both lost to the other's try is contention, and is not reported
    assert sum("another run is generating" in text for text in outputs) == 1, outputs
    worker, waiter = sorted(outputs, key=lambda text: "another run is generating" in text)
    assert "6 planned: 6 generated" in worker and "6 planned: 0 generated, 6 already logged" in waiter, outputs
    experiment = api(team_server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=team-twice")["experiment"]
    found = api(team_server, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in found]
    images = [(t["workbench.run_key"], r["info"]["status"]) for r, t in zip(found, tags, strict=True)
              if t.get("workbench.kind") == "image"]
    assert len(images) == 6 and len({key for key, _ in images}) == 6 and {s for _, s in images} == {"FINISHED"}
    parents = [r["info"]["status"] for r, t in zip(found, tags, strict=True) if t.get("workbench.kind") == "parent"]
    assert parents == ["FINISHED"]  # the waiter deleted its own (search returns active runs only)
