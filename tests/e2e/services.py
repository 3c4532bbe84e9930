"""Real services for the scale-out tests, started and stopped by process id:
a PostgreSQL server and a Redis server on 127.0.0.1 (Debian's packages, which
`make setup` installs), Celery workers started with the project's own
command (`python -m flare_assets.worker`), and a `dagster-daemon` (queued runs,
run retries) on the repository's workspace."""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from tests.e2e.dagster_dev import free_port

REPO = Path(__file__).resolve().parents[2]
PG_USER, PG_DB = "flare", "dagster"


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    path = found[-1] if found else shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (make setup installs postgresql)")
    return path


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the package's `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")
        time.sleep(0.2)


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop one service by its process id: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


@contextlib.contextmanager
def postgres_server() -> Iterator[dict[str, str]]:
    """A throw-away PostgreSQL cluster; yields the DAGSTER_PG_* variables."""
    folder = Path(tempfile.mkdtemp(prefix="flare-pg-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(_as_postgres_user([_postgres_bin("initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
                                      "--no-sync"]), check=True, capture_output=True)
    server = subprocess.Popen(_as_postgres_user([_postgres_bin("postgres"), "-D", str(data), "-p", str(port),
                                                 "-k", str(folder), "-c", "listen_addresses=127.0.0.1",
                                                 "-c", "fsync=off"]),
                              stdout=subprocess.DEVNULL, stderr=open(folder / "postgres.log", "wb"))
    try:
        _wait_for_port(port, server, "postgres")
        subprocess.run([_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, PG_DB],
                       check=True, capture_output=True)
        yield {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": PG_USER,
               "DAGSTER_PG_PASSWORD": "unused-trust-auth", "DAGSTER_PG_DB": PG_DB}
    finally:
        stop(server)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A Redis server without persistence; yields its URL."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (make setup installs redis-server)")
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, server, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(server)


@contextlib.contextmanager
def celery_worker(queue: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`python -m flare_assets.worker --queue <queue>`, until it reports ready."""
    handle = open(log, "w")
    worker = subprocess.Popen([sys.executable, "-m", "flare_assets.worker", "--queue", queue, "--name",
                               f"{queue}-worker"], cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "ready." not in log.read_text():
            if worker.poll() is not None:
                raise RuntimeError(f"the {queue} worker exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {queue} worker never became ready: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield worker
    finally:
        stop(worker)
        handle.close()


@contextlib.contextmanager
def dagster_daemon(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`dagster-daemon run` on workspace.yaml, until it stops."""
    handle = open(log, "w")
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w",
                               str(REPO / "workspace.yaml")], cwd=REPO, env=env, stdout=handle,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield daemon
    finally:
        stop(daemon)
        handle.close()
