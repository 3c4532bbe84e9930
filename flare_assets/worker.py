"""A Celery worker for the platform's steps: `python -m flare_assets.worker`.

    python -m flare_assets.worker --queue gpu      # on each GPU machine: model steps
    python -m flare_assets.worker --queue default  # anywhere: everything else

It serves the queues that `FLARE_EXECUTOR=celery` routes steps to
(`flare_assets.executors`), with the broker and settings the executor uses
(FLARE_CELERY_BROKER, FLARE_CELERY_BACKEND), one step at a time by default
(in the worker's own process; `--concurrency N` runs N in threads).
This process supervises the Celery worker (`flare_assets.worker_supervisor`):
its process id is the one to stop (SIGTERM: a warm shutdown), and a worker
killed mid-step is reported to the waiting run, so the run fails and Dagster's
run retries launch it again, and is replaced by a new one. It needs the same
FLARE_* roots and DAGSTER_HOME (a Postgres instance) as the machines that
launch runs.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from flare_assets.executors import DEFAULT_QUEUE, GPU_QUEUE, celery_settings
from flare_assets.worker_hooks import STATE_VARIABLE
from flare_assets.worker_supervisor import supervise

CONFIG_MODULE = "dagster_celery_config"  # the module dagster_celery's app reads its settings from


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queue", action="append", choices=[GPU_QUEUE, DEFAULT_QUEUE],
                        help="queue to serve (repeatable; default: both)")
    parser.add_argument("--concurrency", type=int, default=1, help="steps at once (default 1)")
    parser.add_argument("--name", help="worker name (default <queues>@<host>)")
    parser.add_argument("--loglevel", default="INFO")
    return parser.parse_args(argv)


def write_config_module(folder: Path) -> Path:
    """The executor's Celery settings as the module the worker's app imports."""
    settings = celery_settings()
    lines = ["import flare_assets.worker_hooks  # noqa: F401  (the running steps, for the supervisor)",
             f"broker_url = {settings['broker']!r}", f"result_backend = {settings['backend']!r}"]
    lines += [f"{key} = {value!r}" for key, value in settings["config_source"].items()]
    path = folder / f"{CONFIG_MODULE}.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def celery_command(args: argparse.Namespace) -> list[str]:
    queues = args.queue or [GPU_QUEUE, DEFAULT_QUEUE]
    name = args.name or f"{'+'.join(queues)}@{socket.gethostname()}"
    celery = shutil.which("celery", path=str(Path(sys.executable).parent)) or shutil.which("celery")
    if celery is None:
        raise SystemExit("celery is not installed: pip install -c constraints.txt -e '.[celery]'")
    # Celery's default pool runs tasks in daemonic processes, which may not
    # start processes of their own; nnU-Net's planning and preprocessing do.
    pool = "solo" if args.concurrency == 1 else "threads"
    return [celery, "-A", "dagster_celery.app", "worker", "-Q", ",".join(queues), "-n", name, "--pool", pool,
            "--concurrency", str(args.concurrency), "--prefetch-multiplier", "1", "--loglevel", args.loglevel]


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/supervisor] %(message)s")
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="flare-worker-"))
    write_config_module(folder)
    state = folder / "running-tasks.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    env[STATE_VARIABLE] = str(state)
    command = celery_command(args)
    try:
        return supervise(command, env, state, celery_settings(), command[command.index("-n") + 1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
