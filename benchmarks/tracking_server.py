"""Where a shared tracking server becomes the bottleneck: MLflow log throughput against a local server.

Starts the team recipe (``deploy/team-server.sh``: PostgreSQL + ``mlflow server`` with served artifacts) with
each HTTP server MLflow offers on Linux (gunicorn, the recipe's default, and uvicorn, MLflow's default), and
for comparison a SQLite-backed ``mlflow server`` with the same flags, all on 127.0.0.1. Against each:

- **image runs**: N image runs logged exactly as ``workbench run`` logs them (``Tracker.log_image_run`` on
  ``BackgroundLogger`` writer threads: create, one ``log_batch``, the artifacts one PUT each, terminate),
  from fake-backend 512×512 images generated beforehand, with 1, 2, 4 and 8 writer threads;
- **small calls**: single-metric ``log_metric`` calls from the same numbers of threads: the server's ceiling
  for its cheapest write.

REST calls are counted on the server, from its access log (so the count is what really reached it); the
CPU time of the server's processes (mlflow's workers, PostgreSQL's backends) is read from /proc.
Medians and spread over repeats go to docs/benchmarks.md, between ``<!-- tracking-server:begin -->`` and
``<!-- tracking-server:end -->``; the rest of the file is left alone.

    .venv/bin/python benchmarks/tracking_server.py          # defaults: 24 runs, threads 1,2,4,8, 3 repeats
    .venv/bin/python benchmarks/tracking_server.py --runs 20 --threads 1,4 --repeats 2 --out -   # print only
    .venv/bin/python benchmarks/tracking_server.py --servers postgres:uvicorn                    # one server
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCRIPT = ROOT / "deploy" / "team-server.sh"
MLFLOW = Path(sys.executable).with_name("mlflow")
BEGIN, END = "<!-- tracking-server:begin -->", "<!-- tracking-server:end -->"
ACCESS = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(uri: str, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server at {uri} exited while starting (rc {proc.returncode})")
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as response:
                if response.read().strip() == b"OK":
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{uri} did not answer /health within {timeout_s:.0f}s")


@dataclass
class Server:
    """One running tracking server and the access log its requests are counted in."""

    name: str
    uri: str
    log: Path
    stop: Callable[[], None]
    group: int  # mlflow's process group: the CLI, the HTTP server and its workers
    postmaster: int | None = None  # PostgreSQL's postmaster (its backends are its children)
    label: str = ""

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's processes, database included (from /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, ppid, pgrp = int(stat.parent.name), int(fields[1]), int(fields[2])
            if pgrp == self.group or (self.postmaster and self.postmaster in (pid, ppid)):
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / tick

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request in the access log so far, /health excluded."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = ACCESS.search(line)
            if match and match[2] != "/health":
                found.append((match[1], match[2].split("?")[0]))
        return found

    def settled_count(self) -> int:
        """The request count once the log has stopped growing (lines land just after the responses)."""
        last = -1
        while True:
            count = len(self.requests())
            if count == last:
                return count
            last = count
            time.sleep(0.3)


@contextlib.contextmanager
def postgres_server(folder: Path, workers: int, http: str) -> Iterator[Server]:
    """The team recipe, exactly as documented (deploy/team-server.sh)."""
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)  # as root, PostgreSQL runs as `postgres`, which must reach it
    port = free_port()
    env = {**os.environ, "WORKBENCH_SERVER_DIR": str(folder), "HOST": "127.0.0.1", "PGPORT": str(free_port()),
           "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": str(workers), "MLFLOW": str(MLFLOW),
           "HTTP_SERVER": http}

    def stop() -> None:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120, check=False)

    try:
        started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True,
                                 timeout=300, check=False)
        if started.returncode:
            raise RuntimeError(f"deploy/team-server.sh start failed:\n{started.stdout}{started.stderr}")
        yield Server(f"PostgreSQL, {http}", f"http://127.0.0.1:{port}", folder / "logs" / "mlflow.log", stop,
                     group=int((folder / "run" / "mlflow.pid").read_text()),
                     postmaster=int((folder / "pgdata" / "postmaster.pid").read_text().split()[0]),
                     label=postgres_version(int(env["PGPORT"])))
    finally:
        stop()


@contextlib.contextmanager
def sqlite_server(folder: Path, workers: int, http: str) -> Iterator[Server]:
    """`mlflow server` on a SQLite file with the same flags as the recipe (MLflow's SQLite defaults)."""
    folder.mkdir()
    port = free_port()
    log = folder / "mlflow.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    flavour = ["--gunicorn-opts", "--access-logfile - --timeout 120"] if http == "gunicorn" else []
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--serve-artifacts", "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers), *flavour], stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        yield Server(f"SQLite, {http}", f"http://127.0.0.1:{port}", log, stop, group=proc.pid)
    finally:
        stop()


@dataclass
class Sample:
    seconds: float
    items: int  # image runs or metric calls
    calls: int  # REST requests the server saw
    client_cpu_s: float
    server_cpu_s: float

    @property
    def per_s(self) -> float:
        return self.items / self.seconds

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds


@dataclass
class Result:
    store: str
    kind: str  # "image runs" | "small calls"
    threads: int
    samples: list[Sample] = field(default_factory=list)


def make_images(count: int, size: int) -> list:  # type: ignore[type-arg]
    from workbench.backends.fake import FakeBackend
    from workbench.types import GenerationRequest

    requests = [GenerationRequest(backend="fake", model="fake-512", prompt="a lighthouse on a rocky cliff at dusk",
                                  negative_prompt="blurry", seed=seed, width=size, height=size, steps=30,
                                  experiment="tracking-bench", factor="seed", level=seed)
                for seed in range(count)]
    return FakeBackend().generate(requests)  # type: ignore[return-value]


def log_images(server: Server, experiment_id: str, images: list, threads: int) -> Sample:  # type: ignore[type-arg]
    """All ``images`` as image runs through one BackgroundLogger, the way the runner does it."""
    from workbench.tracking.logger import BackgroundLogger
    from workbench.tracking.store import Tracker

    tracker = Tracker(server.uri)
    tracker.client.get_experiment(experiment_id)  # connect outside the timed part
    before, server_cpu = server.settled_count(), server.cpu_seconds()
    cpu, start = time.process_time(), time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints "View run … at" per run on a server
        logger = BackgroundLogger(tracker, experiment_id, None, workers=threads, max_pending=len(images))
        for image in images:
            logger.submit(image)
        done = logger.close()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    failed = [d for d in done if d.run_id is None]
    if failed:
        raise RuntimeError(f"{len(failed)} image runs were not logged: {failed[0].error}")
    calls, server_cpu = server.settled_count() - before, server.cpu_seconds() - server_cpu
    return Sample(seconds, len(images), calls, cpu, server_cpu)


def log_metrics(server: Server, run_id: str, calls: int, threads: int) -> Sample:
    """``threads`` threads, each making ``calls`` single-metric log_metric calls (one REST call each)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)
    client.get_run(run_id)
    before, server_cpu = server.settled_count(), server.cpu_seconds()

    def work(index: int) -> None:
        for step in range(calls):
            client.log_metric(run_id, f"thread_{index}", float(step), step=step)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    cpu, start = time.process_time(), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    seen, server_cpu = server.settled_count() - before, server.cpu_seconds() - server_cpu
    return Sample(seconds, calls * threads, seen, cpu, server_cpu)


def calls_per_run(server: Server, experiment_id: str, image: object) -> dict[str, int]:
    """The REST requests of one image run, by endpoint (artifact paths folded into one name)."""
    from workbench.tracking.store import Tracker

    tracker = Tracker(server.uri)
    before = server.settled_count()
    with contextlib.redirect_stdout(io.StringIO()):
        tracker.log_image_run(experiment_id, None, image)  # type: ignore[arg-type]
    server.settled_count()
    counted: collections.Counter[str] = collections.Counter()
    for method, path in server.requests()[before:]:
        if "/mlflow-artifacts/artifacts/" in path:
            path = "/api/2.0/mlflow-artifacts/artifacts/… (one per file)"
        counted[f"{method} {path}"] += 1
    return dict(counted)


def machine() -> str:
    import mlflow

    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()}, {os.cpu_count()} cores ({model}), Python {platform.python_version()}, "
            f"MLflow {mlflow.__version__}; load average {load:.1f} when the benchmark started")


def postgres_version(port: int) -> str:
    try:
        import psycopg2

        db = psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", dbname="mlflow")
        with contextlib.closing(db), db.cursor() as cursor:
            cursor.execute("SHOW server_version")
            return f"PostgreSQL {cursor.fetchone()[0].split()[0]}"
    except Exception:  # noqa: BLE001 - a label only
        return "PostgreSQL"


def fmt(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def report(results: list[Result], breakdown: dict[str, int], args: argparse.Namespace, pg_version: str,
           header: str, seconds: float) -> str:
    shared = " **Shared**: other work ran on the machine during the measurement." if args.shared else ""
    lines = [
        (f"`benchmarks/tracking_server.py --runs {args.runs} --calls {args.calls} --threads "
         f"{','.join(map(str, args.threads))} --repeats {args.repeats} --servers {args.servers}"
         f"{' --shared' if args.shared else ''}`, measured {time.strftime('%Y-%m-%d')} in {seconds / 60:.1f} min."),
        "",
        (f"Machine: {header}.{shared} The client (PNG encoding, HTTP) ran on the same {os.cpu_count()} cores as "
         f"the server and its database, so the rates are floors for a dedicated server; the server CPU per call "
         f"is the steadier figure."),
        "",
        (f"Servers on 127.0.0.1, `--workers {args.workers}`, artifacts served from a local folder "
         f"(`--serve-artifacts`): {pg_version} started by `deploy/team-server.sh` with `HTTP_SERVER=gunicorn` "
         f"(the recipe's default) or `uvicorn` (MLflow's default), and a SQLite file (MLflow's defaults) for "
         f"comparison. MLflow's job runner off on all (`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`)."),
        "",
        (f"Image runs: {args.size}×{args.size} fake-backend images logged exactly as `workbench run` does "
         f"(`Tracker.log_image_run` on `BackgroundLogger` threads), {args.runs} per sample. Small calls: "
         f"single-metric `log_metric`, {args.calls} per thread per sample. Median (min–max) of {args.repeats} "
         f"samples; REST calls counted in the server's access log; server CPU = mlflow's processes plus "
         f"PostgreSQL's, from /proc."),
        "",
        "| server | kind | client threads | per second | REST calls/s | server CPU per call | client CPU each |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        unit = "image runs" if r.kind == "image runs" else "calls"
        server_cpu = statistics.median(1000 * s.server_cpu_s / s.calls for s in r.samples)
        cpu = statistics.median(1000 * s.client_cpu_s / s.items for s in r.samples)
        lines.append(f"| {r.store} | {r.kind} | {r.threads} | {fmt([s.per_s for s in r.samples])} {unit} | "
                     f"{fmt([s.calls_per_s for s in r.samples], 0)} | {server_cpu:.1f} ms | {cpu:.0f} ms |")
    if breakdown:
        by_count = sorted(breakdown.items(), key=lambda kv: -kv[1])
        lines += ["", f"REST requests of one image run ({sum(breakdown.values())}, counted in the server's "
                      f"access log): " + ", ".join(f"{path} × {n}" for path, n in by_count) + "."]
    lines.append("")
    for store in dict.fromkeys(r.store for r in results):
        best = max((r for r in results if r.store == store and r.kind == "image runs"),
                   key=lambda r: statistics.median(s.per_s for s in r.samples), default=None)
        if best:
            rate = statistics.median(s.per_s for s in best.samples)
            calls = statistics.median(s.calls_per_s for s in best.samples)
            lines.append(f"- {store}: at most **{rate:.1f} image runs/s** ({calls:.0f} REST calls/s), with "
                         f"{best.threads} writer thread(s).")
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Replace the text between the markers (or append a section with them); nothing else changes."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    block = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        text = before + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Tracking server throughput (docs/scale.md)\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=24, help="image runs per sample")
    parser.add_argument("--calls", type=int, default=40, help="log_metric calls per thread per sample")
    parser.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8],
                        help="writer thread counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="the servers' --workers")
    parser.add_argument("--size", type=int, default=512, help="image width and height")
    parser.add_argument("--servers", default="postgres:gunicorn,postgres:uvicorn,sqlite:gunicorn",
                        help="STORE:HTTP pairs, comma-separated (STORE postgres|sqlite, HTTP gunicorn|uvicorn)")
    parser.add_argument("--shared", action="store_true",
                        help="say in the results that other work ran on the machine meanwhile")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"),
                        help="markdown file whose tracking-server section is replaced; '-' prints only")
    args = parser.parse_args()
    started = time.perf_counter()
    header = machine()
    print(header, flush=True)
    images = make_images(args.runs + 1, args.size)
    results: list[Result] = []
    breakdown: dict[str, int] = {}
    pg_version = "PostgreSQL"
    # Under /tmp itself: as root the cluster runs as `postgres`, which must reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="wb-bench-", dir="/tmp"))
    folder.chmod(0o755)
    starters = {"postgres": postgres_server, "sqlite": sqlite_server}
    try:
        for index, pair in enumerate(args.servers.split(",")):
            store, _, http = pair.partition(":")
            with starters[store](folder / f"{index}-{store}", args.workers, http or "gunicorn") as server:
                from workbench.tracking.store import Tracker

                pg_version = server.label or pg_version
                tracker = Tracker(server.uri)
                experiment_id = tracker.experiment_id("tracking-bench")
                assert experiment_id is not None
                one = calls_per_run(server, experiment_id, images[-1])  # also warms the server up
                breakdown = breakdown or one
                metric_run = tracker.client.create_run(experiment_id, run_name="small calls").info.run_id
                for threads in args.threads:
                    runs = Result(server.name, "image runs", threads)
                    calls = Result(server.name, "small calls", threads)
                    for _ in range(args.repeats):
                        runs.samples.append(log_images(server, experiment_id, images[:args.runs], threads))
                        calls.samples.append(log_metrics(server, metric_run, args.calls, threads))
                    results += [runs, calls]
                    for r in (runs, calls):
                        cpu = statistics.median(1000 * s.server_cpu_s / s.calls for s in r.samples)
                        print(f"{r.store:20} {r.kind:11} threads={threads}: {fmt([s.per_s for s in r.samples])}/s, "
                              f"{fmt([s.calls_per_s for s in r.samples], 0)} REST calls/s, server CPU "
                              f"{cpu:.1f} ms/call", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    body = report(results, breakdown, args, pg_version, header, time.perf_counter() - started)
    print(body)
    if args.out != "-":
        write_section(Path(args.out), body)
        print(f"wrote the tracking-server section of {args.out}")


if __name__ == "__main__":
    main()
