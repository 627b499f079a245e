"""Per-request latency of `mlflow server` on a kept-alive connection vs a new connection per request.

Why (docs/scale.md, uvicorn#3149): uvicorn with more than one worker leaves Nagle's algorithm on, so a
client that keeps its connection open (MLflow's client does) waits on every small request; gunicorn does
not. This starts `mlflow server` on a SQLite file with each HTTP server, sends ``--requests`` ``GET /health``
with ``http.client`` on one kept-alive connection and on a new connection each, and reports the median of
the last ``--requests - 5`` (the first few warm the server up).

    python benchmarks/keepalive.py            # writes its table into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVERS = [("uvicorn", 1), ("uvicorn", 2), ("gunicorn", 2)]
START, END = "<!-- keepalive:start -->", "<!-- keepalive:end -->"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(kind: str, workers: int, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    command = [mlflow, "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers)]
    if kind == "gunicorn":
        command += ["--gunicorn-opts", "--timeout 120"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"mlflow server ({kind}, {workers} workers) did not start within 120 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


def median_ms(port: int, requests: int, keep_alive: bool) -> float:
    times = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(requests):
        if not keep_alive:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        start = time.perf_counter()
        conn.request("GET", "/health")
        conn.getresponse().read()
        times.append(time.perf_counter() - start)
        if not keep_alive:
            conn.close()
    return statistics.median(times[5:]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--write", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    rows = []
    for kind, workers in SERVERS:
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = start_server(kind, workers, Path(tmp))
            try:
                kept, fresh = median_ms(port, args.requests, True), median_ms(port, args.requests, False)
            finally:
                stop(proc)
        rows.append(f"| {kind}, `--workers {workers}` | {kept:.1f} ms | {fresh:.1f} ms |")
        print(rows[-1], flush=True)
    block = "\n".join([
        START,
        f"`benchmarks/keepalive.py --requests {args.requests}`, measured {time.strftime('%Y-%m-%d')} on "
        f"{os.cpu_count()} cores ({platform.machine()}), MLflow {version('mlflow')}, uvicorn {version('uvicorn')}, "
        f"gunicorn {version('gunicorn')}: `mlflow server` on a SQLite file, `GET /health` with `http.client`, "
        f"median of the last {args.requests - 5}.",
        "",
        "| HTTP server | kept-alive connection | new connection per request |",
        "|---|---|---|",
        *rows,
        END,
    ])
    text = args.write.read_text()
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
        args.write.write_text(text)
        print(f"wrote {args.write}")
    else:
        print(block)


if __name__ == "__main__":
    main()
