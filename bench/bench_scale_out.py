"""Benchmark: the tiny graph on one machine's defaults against the scale-out profile.

    .venv/bin/python bench/bench_scale_out.py --out bench/results/scale_out.json

Runs the whole graph (`test` profile, a tiny phantom data set with a seed the
tests do not use) twice, from an empty instance each time, through the code
location's step jobs (`pipeline.run_until_settled(..., through_jobs=True)`,
what a head node driving the platform does):

- `sqlite_multiprocess`: SQLite storage in a temporary DAGSTER_HOME and
  FLARE_EXECUTOR=multiprocess (the defaults of `dagster dev`);
- `postgres_celery`: deploy/dagster-postgres.yaml on a throw-away PostgreSQL
  server, FLARE_EXECUTOR=celery with a throw-away Redis broker and one `gpu`
  and one `default` worker (`python -m flare_assets.worker`), as
  tests/e2e/test_scale_out.py starts them.

It records wall seconds, runs and steps for each, and their ratio. The graph
is tiny, so this measures orchestration cost (a Celery round trip and a
Postgres event log per step), not model work. Run it on an otherwise idle
machine: the load average before and after is recorded.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from result_files import write_result  # noqa: E402

log = logging.getLogger("bench_scale_out")

DRIVER = """
import json, time
from dagster import DagsterEventType, DagsterInstance
from flare_assets import pipeline
from flare_assets.definitions import build_resources
started = time.perf_counter()
with DagsterInstance.get() as instance:
    reports = pipeline.merged_reports(pipeline.run_until_settled(instance, build_resources(), through_jobs=True))
    seconds = time.perf_counter() - started
    runs = instance.get_runs()
    steps = sum(len(instance.get_records_for_run(r.run_id, of_type=DagsterEventType.STEP_SUCCESS).records)
                for r in runs)
print(json.dumps({"seconds": round(seconds, 1), "runs": len(runs), "steps": steps,
                  "failed": {name: report.failed for name, report in reports.items() if report.failed}}))
"""


def drive(env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "-c", DRIVER], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-4000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def base_env(root: Path, data: Path, executor: str) -> dict[str, str]:
    home = root / "dagster_home"
    home.mkdir(parents=True)
    return {**os.environ, "DAGSTER_HOME": str(home), "FLARE_EXECUTOR": executor, "FLARE_DATA_ROOT": str(data),
            "FLARE_WORK_ROOT": str(root / "work"), "FLARE_PROFILE": "test", "FLARE_DEVICE": "cpu",
            "FLARE_SENSORS": "off", "nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"}


def sqlite_multiprocess(root: Path, data: Path) -> dict:
    env = base_env(root, data, "multiprocess")
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", Path(env["DAGSTER_HOME"]) / "dagster.yaml")
    return drive(env)


def postgres_celery(root: Path, data: Path) -> dict:
    from tests.e2e.services import celery_worker, postgres_server, redis_server

    env = base_env(root, data, "celery")
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", Path(env["DAGSTER_HOME"]) / "dagster.yaml")
    with postgres_server() as pg_env, redis_server() as broker:
        env = {**env, **pg_env, "FLARE_CELERY_BROKER": broker}
        with celery_worker("gpu", env, root / "gpu-worker.log"), \
                celery_worker("default", env, root / "default-worker.log"):
            return drive(env)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="flare-bench-scale-out-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale_out.json")
    parser.add_argument("--seed", type=int, default=31, help="phantom seed (the tests use 0)")
    parser.add_argument("--train", type=int, default=10)
    parser.add_argument("--infer", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from flare_core.phantom import generate_dataset

    record: dict = {"command": "python bench/bench_scale_out.py " + " ".join(argv or sys.argv[1:]),
                    "cases": {"train": args.train, "infer": args.infer, "seed": args.seed},
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "modes": {}}
    with scratch() as root:
        data = root / "data"
        generate_dataset(data, size="tiny", seed=args.seed, n_train=args.train, n_infer=args.infer)
        for name, mode in (("sqlite_multiprocess", sqlite_multiprocess), ("postgres_celery", postgres_celery)):
            load_before = os.getloadavg()
            log.info("%s ...", name)
            result = mode(root / name, data)
            record["modes"][name] = {**result, "load_before": [round(v, 2) for v in load_before],
                                     "load_after": [round(v, 2) for v in os.getloadavg()]}
            log.info("%s: %s", name, result)
    modes = record["modes"]
    record["postgres_celery_over_sqlite_multiprocess"] = round(
        modes["postgres_celery"]["seconds"] / modes["sqlite_multiprocess"]["seconds"], 2)
    write_result(record, args.out)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
