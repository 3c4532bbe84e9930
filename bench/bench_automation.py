"""Benchmark: do case discovery and declarative automation keep up at FLARE scale?

    nice -n 19 .venv/bin/python bench/bench_automation.py --cases 4000 10000 \
        --out bench/results/automation.json [--new 200] [--repeat 3] [--storage sqlite]

For each number of registered training cases it builds a fresh Dagster
instance (SQLite storage in a temporary DAGSTER_HOME, what `dagster dev`
uses by default) and a fake data root, then measures:

- the real `training_case_sensor`: one tick with a fresh cursor (what a reset
  cursor costs: every known case's registered files are compared with the
  disk), ticks with nothing new (the steady state, every 30 s) and the size of
  the cursor it keeps, and one tick that finds `--new` new cases;
- `dagster.evaluate_automation_conditions` on the real `defs`: evaluations
  with nothing due (after an untimed initial one), and one right after the new
  cases were added and their files events reported, with what it requested
  (it should request exactly the new cases' registrations);
- the same evaluations through the code path of Dagster's automation daemon
  (`AutomationTickEvaluationContext`, internal, `--no-daemon-path` skips it):
  `evaluate_automation_conditions`, a test helper, builds its new cursor
  outside the evaluation's cache of dynamic partitions and so reads every
  partition key once per condition node; the daemon reads them once.
  The serialized size of Dagster's automation cursor is recorded as well.
- with `--ui-query`, the query behind the UI's partition bar: a real
  `dagster-webserver` on the instance answers GraphQL's
  `assetPartitionStatuses` for `training_case` (every registered case).

"Registered" cases are made cheaply, with no asset code run: each case gets a
copy of one tiny NIfTI, a registry inventory (`flare_core.registry`, what
registration leaves behind), its partition, a runless `training_case_files`
event and a runless `training_case` materialization. Downstream per-case
assets stay missing (no model exists), which is what a platform that has
registered its cases but not trained yet looks like.

Targets, reported, not asserted: each tick under 5 s at 10,000 cases, the
discovery cursor under 10 KB. Timings on a shared machine vary; the load
average before and after each scale is recorded next to them.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from result_files import write_result  # noqa: E402

log = logging.getLogger("bench_automation")

TICK_TARGET_SECONDS = 5.0
CURSOR_TARGET_BYTES = 10_000
CASE_PREFIX = "FLARE23_"
# The measurements the per-tick target applies to (a tick runs every 30 s).
TIMED_TICKS = ("tick_nothing_new", "tick_new_cases", "evaluation_nothing_due", "evaluation_new_cases",
               "daemon_tick_nothing_due", "daemon_tick_new_cases")


# --------------------------------------------------------------- storage


def write_instance_config(home: Path, storage: str, postgres_url: str | None) -> None:
    """The dagster.yaml of the benchmark's DAGSTER_HOME.

    `sqlite` spells out the default storage (what `dagster dev` uses with no
    dagster.yaml), so the numbers are those of the embedded deployment."""
    if storage == "sqlite":
        config = f"storage:\n  sqlite:\n    base_dir: {home / 'storage'}\n"
    elif storage == "postgres":
        # Needs the `.[postgres]` extra and a dedicated, empty database: the
        # benchmark adds thousands of partitions and events and does not clean
        # them up. Without --postgres-url a throw-away local server is started
        # (PostgreSQL's binaries, as the scale-out test does); one scale per run then.
        if not postgres_url:
            raise SystemExit("--storage postgres needs --postgres-url postgresql+psycopg2://user:pass@host:port/db")
        try:
            import dagster_postgres  # noqa: F401
        except ImportError:
            raise SystemExit("--storage postgres needs the dagster-postgres package") from None
        config = f"storage:\n  postgres:\n    postgres_url: {postgres_url}\n"
    else:
        raise SystemExit(f"unknown storage {storage!r}")
    (home / "dagster.yaml").write_text(config)


# --------------------------------------------------------------- fake data


def tiny_nifti() -> bytes:
    """One valid 4x4x4 uint8 NIfTI: the discovery reads only headers."""
    import numpy as np
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tiny.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.uint8)), str(path))
        return path.read_bytes()


def case_ids(first: int, count: int) -> list[str]:
    return [f"{CASE_PREFIX}{number:05d}" for number in range(first, first + count)]


def has_label(case_id: str) -> bool:
    """Every other case has a partial label (labels are optional per case)."""
    return int(case_id[len(CASE_PREFIX):]) % 2 == 0


def write_case_files(data, cases: list[str], payload: bytes) -> None:
    """Separate copies, not hard links: linking a file changes the ctime of
    every name of the inode, which the discovery rightly reads as a change."""
    for case_id in cases:
        paths = [data.train_image(case_id)] + ([data.train_label(case_id)] if has_label(case_id) else [])
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)


def register_cases(instance, data, work, cases: list[str]) -> None:
    """What a registration leaves behind, without running it: an inventory in
    the case registry, the partition, a files event and a materialization."""
    from dagster import AssetKey, AssetMaterialization

    from flare_core import registry
    from flare_core.cases import TRAIN
    from flare_core.inventory import CaseInventory
    from flare_assets.case_discovery import CASE_FILES, PARTITIONS

    for case_id in cases:
        label = data.train_label(case_id) if has_label(case_id) else None
        registry.record_inventory(work, TRAIN, CaseInventory(
            case_id=case_id, split=TRAIN, image_path=str(data.train_image(case_id)), image_sha256="0" * 64,
            geometry={"size": [4, 4, 4]}, intensity={}, label_path=str(label) if label else None,
            label_sha256="0" * 64 if label else None, annotated=[1] if label else None))
    instance.add_dynamic_partitions(PARTITIONS[TRAIN].name, cases)
    for case_id in cases:
        instance.report_runless_asset_event(AssetMaterialization(
            asset_key=CASE_FILES[TRAIN], partition=case_id, metadata={"discovered_as": "new"}))
        instance.report_runless_asset_event(AssetMaterialization(
            asset_key=AssetKey("training_case"), partition=case_id, metadata={"bench": "fake registration"}))


# --------------------------------------------------------------- measuring


@contextmanager
def timed(record: dict, key: str, profile_to: dict | None = None) -> Iterator[None]:
    """Seconds of the block into `record[key]` (a list: one entry per repeat);
    with `profile_to`, also the block's slowest functions under cProfile."""
    profiler = cProfile.Profile() if profile_to is not None else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    try:
        yield
    finally:
        if profiler:
            profiler.disable()
        record.setdefault(key, []).append(round(time.perf_counter() - start, 4))
        if profiler:
            profile_to[key] = top_functions(profiler)


def top_functions(profiler: cProfile.Profile, limit: int = 12) -> list[str]:
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(limit)
    lines = [line.rstrip() for line in stream.getvalue().splitlines()]
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return [line for line in lines[start:] if line.strip()]


def sensor_tick(instance, data_root: Path, work_root: Path, cursor: str | None):
    from dagster import build_sensor_context

    from flare_assets.defs.discovery import training_case_sensor
    from flare_assets.resources import FlareDataRoot, FlareWorkRoot

    context = build_sensor_context(instance=instance, cursor=cursor, resources={
        "data_root": FlareDataRoot(path=str(data_root)), "work_root": FlareWorkRoot(path=str(work_root))})
    return training_case_sensor(context)


def apply_sensor_result(instance, result) -> None:
    """What the daemon does with a sensor result."""
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for event in result.asset_events or []:
        instance.report_runless_asset_event(event)


def sensor_summary(result) -> dict:
    added = [k for r in (result.dynamic_partitions_requests or []) for k in r.partition_keys]
    return {"added_partitions": len(added), "asset_events": len(result.asset_events or []),
            "skip_reason": result.skip_reason.skip_message if result.skip_reason else None}


def requested(result, asset_keys) -> dict[str, int]:
    """Requested partitions (1 for an unpartitioned asset) per asset, where any."""
    counts = {key.to_user_string(): result.get_num_requested(key) for key in asset_keys}
    return {name: count for name, count in sorted(counts.items()) if count}


def daemon_cursor_bytes(cursor) -> int | None:
    """Size of the automation sensor's cursor as the instance stores it."""
    try:
        from dagster._serdes import serialize_value  # internal, hence guarded
    except ImportError:
        return None
    return len(serialize_value(cursor).encode())


def evaluate(defs, instance, cursor):
    from dagster import evaluate_automation_conditions

    return evaluate_automation_conditions(defs, instance, cursor=cursor)


class DaemonTick:
    """One tick of the automation sensor as Dagster's daemon runs it (internal
    API, hence optional): unlike `evaluate_automation_conditions`, it builds
    the new cursor inside the evaluation's caching partition context, and it
    builds the run requests / backfills the sensor would launch."""

    def __init__(self, defs, instance):
        from dagster import AssetSelection
        from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor

        self.defs, self.instance = defs, instance
        self.graph = defs.resolve_asset_graph()
        self.selection = AssetSelection.all(include_sources=True) | AssetSelection.all_asset_checks()
        self.cursor = AssetDaemonCursor.empty()

    def __call__(self) -> list:
        """Evaluate once; returns the run requests, keeps the new cursor."""
        from dagster._core.definitions.automation_tick_evaluation_context import AutomationTickEvaluationContext

        context = AutomationTickEvaluationContext(
            evaluation_id=self.cursor.evaluation_id + 1, instance=self.instance, asset_graph=self.graph,
            cursor=self.cursor, materialize_run_tags={}, observe_run_tags={}, auto_observe_asset_keys=set(),
            asset_selection=self.selection, logger=logging.getLogger("bench_automation.daemon_tick"),
            emit_backfills=True, asset_job_keys=set(self.graph.automatable_asset_job_keys))
        run_requests, self.cursor, _ = context.evaluate()
        return list(run_requests)


def daemon_requested(run_requests) -> dict[str, int]:
    """Requested partitions per asset in the daemon's run requests (a
    backfill request holds an asset graph subset, a run one partition)."""
    counts: dict[str, int] = {}
    for request in run_requests:
        if request.asset_graph_subset is not None:
            subset = request.asset_graph_subset
            for key in subset.asset_keys:
                partitions = subset.partitions_subsets_by_asset_key.get(key)
                counts[key.to_user_string()] = counts.get(key.to_user_string(), 0) + (
                    len(partitions) if partitions is not None else 1)
        else:
            for key in request.asset_selection or []:
                counts[key.to_user_string()] = counts.get(key.to_user_string(), 0) + 1
    return dict(sorted(counts.items()))


def condition_nodes(result) -> int:
    """Nodes of an evaluated condition tree: each one's subsets are stored in
    the automation cursor, so the tree's size drives the cursor's cost."""
    return 1 + sum(condition_nodes(child) for child in result.child_results)


# --------------------------------------------------------------- one scale


def bench_scale(n_cases: int, n_new: int, repeat: int, args, payload: bytes) -> dict:
    from dagster import AssetKey, DagsterInstance

    from flare_core.layout import DataLayout, WorkLayout

    scratch = Path(tempfile.mkdtemp(prefix=f"bench_automation_{n_cases}_", dir=args.scratch))
    data_root, work_root, home = scratch / "data", scratch / "work", scratch / "dagster_home"
    home.mkdir(parents=True)
    write_instance_config(home, args.storage, args.postgres_url)
    data, work = DataLayout(data_root), WorkLayout(work_root)
    seconds: dict[str, list[float]] = {}
    # Profiled runs are extra repeats of the idle paths, kept out of `seconds`:
    # cProfile slows Dagster's many small calls down by half or more.
    profiles: dict[str, list[str]] | None = {} if args.profile else None
    profiled: dict[str, list[float]] = {}
    out: dict[str, Any] = {"cases_registered": n_cases, "new_cases": n_new, "scratch": str(scratch),
                           "load_before": list(os.getloadavg())}

    with DagsterInstance.from_config(str(home)) as instance:
        from flare_assets.definitions import defs

        asset_keys = sorted(defs.resolve_asset_graph().get_all_asset_keys())

        log.info("[%d] writing and registering %d fake cases", n_cases, n_cases)
        with timed(seconds, "setup_write_files"):
            write_case_files(data, case_ids(1, n_cases), payload)
        with timed(seconds, "setup_register"):
            register_cases(instance, data, work, case_ids(1, n_cases))
        time.sleep(args.settle_seconds + 0.5)  # the files have settled

        log.info("[%d] discovery ticks", n_cases)
        with timed(seconds, "tick_fresh_cursor"):
            first = sensor_tick(instance, data_root, work_root, None)
        out["tick_fresh_cursor"] = sensor_summary(first)
        cursor = first.cursor
        for _ in range(repeat):
            with timed(seconds, "tick_nothing_new"):
                idle = sensor_tick(instance, data_root, work_root, cursor)
            cursor = idle.cursor
        out["tick_nothing_new"] = sensor_summary(idle)
        if profiles is not None:
            with timed(profiled, "tick_nothing_new", profiles):
                sensor_tick(instance, data_root, work_root, cursor)
        out["cursor_bytes"] = len(cursor.encode())
        out["cursor"] = cursor

        log.info("[%d] automation evaluations", n_cases)
        with timed(seconds, "evaluation_initial"):
            automation = evaluate(defs, instance, None)
        out["evaluation_initial_requested"] = requested(automation, asset_keys)
        out["condition_nodes"] = {r.key.to_user_string(): condition_nodes(r) for r in automation.results}
        for _ in range(repeat):
            with timed(seconds, "evaluation_nothing_due"):
                automation = evaluate(defs, instance, automation.cursor)
        out["evaluation_nothing_due_requested"] = requested(automation, asset_keys)
        if profiles is not None:  # from the same cursor: the chain goes on from `automation`
            with timed(profiled, "evaluation_nothing_due", profiles):
                evaluate(defs, instance, automation.cursor)
        daemon = DaemonTick(defs, instance) if args.daemon_path else None
        if daemon:
            with timed(seconds, "daemon_tick_initial"):
                daemon()
            for _ in range(repeat):
                with timed(seconds, "daemon_tick_nothing_due"):
                    idle_requests = daemon()
            out["daemon_tick_nothing_due_requested"] = daemon_requested(idle_requests)
            if profiles is not None:
                with timed(profiled, "daemon_tick_nothing_due", profiles):
                    daemon()

        if args.ui_query:
            log.info("[%d] the UI's partition status query", n_cases)
            out["ui_partition_status"] = ui_partition_status(home, data_root, work_root, seconds, repeat)

        log.info("[%d] %d new cases", n_cases, n_new)
        new = case_ids(n_cases + 1, n_new)
        write_case_files(data, new, payload)
        time.sleep(args.settle_seconds + 0.5)
        with timed(seconds, "tick_new_cases"):
            found = sensor_tick(instance, data_root, work_root, cursor)
        out["tick_new_cases"] = sensor_summary(found)
        out["cursor_bytes_after_new"] = len(found.cursor.encode())
        with timed(seconds, "apply_sensor_result"):
            apply_sensor_result(instance, found)
        with timed(seconds, "evaluation_new_cases"):
            automation = evaluate(defs, instance, automation.cursor)
        counts = requested(automation, asset_keys)
        out["evaluation_new_cases_requested"] = counts
        registrations = automation.get_requested_partitions(AssetKey("training_case"))
        out["evaluation_new_cases_requests_the_new_registrations"] = (
            sorted(registrations) == sorted(new) and sum(counts.values()) == n_new)
        out["automation_cursor_bytes"] = daemon_cursor_bytes(automation.cursor)
        if daemon:
            with timed(seconds, "daemon_tick_new_cases"):
                new_requests = daemon()
            out["daemon_tick_new_cases_requested"] = daemon_requested(new_requests)
            out["daemon_tick_new_cases_runs"] = len(new_requests)
            out["daemon_cursor_bytes"] = daemon_cursor_bytes(daemon.cursor)

    out["load_after"] = list(os.getloadavg())
    out["seconds"] = seconds
    out["best_seconds"] = {key: min(values) for key, values in seconds.items()}
    out["median_seconds"] = {key: round(statistics.median(values), 4) for key, values in seconds.items()}
    if profiles is not None:
        out["profiled_seconds"] = profiled
        out["profiles"] = profiles
    out["targets"] = {f"{key}_under_{TICK_TARGET_SECONDS:g}s": min(seconds[key]) < TICK_TARGET_SECONDS
                      for key in TIMED_TICKS if key in seconds}
    out["targets"]["cursor_under_10kb"] = out["cursor_bytes"] < CURSOR_TARGET_BYTES
    if not args.keep:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return out


PARTITION_STATUS_QUERY = """
query PartitionStatus($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions unmaterializedPartitions }
      }
    }
  }
}
"""


def ui_partition_status(home: Path, data_root: Path, work_root: Path, seconds: dict, repeat: int) -> dict:
    """Time the partition-status query of the `training_case` asset page on a real webserver."""
    import subprocess

    from tests.e2e.dagster_dev import free_port, graphql

    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "FLARE_DATA_ROOT": str(data_root),
           "FLARE_WORK_ROOT": str(work_root), "FLARE_SENSORS": "off"}
    server = subprocess.Popen([str(Path(sys.executable).with_name("dagster-webserver")), "-w",
                               str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                graphql(port, "{ version }")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("dagster-webserver did not come up") from None
                time.sleep(1)
        variables = {"key": {"path": ["training_case"]}}
        for _ in range(repeat + 1):  # the first answer warms the webserver's caches
            with timed(seconds, "ui_partition_status"):
                data = graphql(port, PARTITION_STATUS_QUERY, variables)
        statuses = data["assetNodeOrError"]["assetPartitionStatuses"]
        return {"materialized": len(statuses["materializedPartitions"]),
                "unmaterialized": len(statuses["unmaterializedPartitions"])}
    finally:
        server.terminate()
        server.wait(timeout=60)


# --------------------------------------------------------------- main


@contextlib.contextmanager
def _storage_for_one_scale(args: argparse.Namespace):
    """A fresh throw-away Postgres server per scale, unless a URL was given."""
    if args.storage != "postgres" or args.postgres_url_given:
        yield
        return
    from tests.e2e.services import postgres_server

    with postgres_server() as pg:
        args.postgres_url = (f"postgresql+psycopg2://{pg['DAGSTER_PG_USER']}:x@{pg['DAGSTER_PG_HOST']}:"
                             f"{pg['DAGSTER_PG_PORT']}/{pg['DAGSTER_PG_DB']}")
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, nargs="+", default=[4000, 10_000],
                        help="registered training cases, one fresh instance per number")
    parser.add_argument("--new", type=int, default=200, help="new cases the second tick finds")
    parser.add_argument("--repeat", type=int, default=3, help="idle ticks / idle evaluations per scale")
    parser.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default=None,
                        help="with --storage postgres: an empty database (default: start a throw-away local server)")
    parser.add_argument("--settle-seconds", type=float, default=1.0,
                        help="FLARE_SETTLE_SECONDS for the sensor (the platform's default is 10)")
    parser.add_argument("--scratch", default=None, help="folder for the temporary data roots and instances")
    parser.add_argument("--profile", action="store_true",
                        help="one more idle tick / evaluation each under cProfile: its slowest functions")
    parser.add_argument("--no-daemon-path", dest="daemon_path", action="store_false",
                        help="skip the ticks through Dagster's internal AutomationTickEvaluationContext")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument("--ui-query", action="store_true",
                        help="also time the UI's partition status query on a real dagster-webserver")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "automation.json")
    args = parser.parse_args(argv)
    args.postgres_url_given = args.postgres_url is not None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Dagster's evaluator logs one line per asset and evaluation (with every
    # requested partition key); only its warnings matter here.
    for name in ("dagster", "dagster.automation_condition_tester", "bench_automation.daemon_tick", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)

    scratch = Path(tempfile.mkdtemp(prefix="bench_automation_", dir=args.scratch))
    args.scratch = str(scratch)
    # Before `defs` is imported: its resources and the sensor read these.
    os.environ["DAGSTER_HOME"] = str(scratch)
    os.environ["FLARE_DATA_ROOT"] = str(scratch / "unused_data")
    os.environ["FLARE_WORK_ROOT"] = str(scratch / "unused_work")
    os.environ["FLARE_SETTLE_SECONDS"] = str(args.settle_seconds)
    os.environ["FLARE_SENSORS"] = "off"

    import dagster

    results: dict[str, Any] = {
        "command": " ".join(["python", "bench/bench_automation.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "storage": args.storage,
        "dagster": dagster.__version__,
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "nice": os.nice(0), "load_before": list(os.getloadavg())},
        "targets": {"tick_seconds": TICK_TARGET_SECONDS, "cursor_bytes": CURSOR_TARGET_BYTES},
        "scales": [],
    }
    payload = tiny_nifti()
    started = time.perf_counter()
    for n_cases in args.cases:
        with _storage_for_one_scale(args):
            results["scales"].append(bench_scale(n_cases, args.new, args.repeat, args, payload))
        log.info("[%d] %s", n_cases, json.dumps(results["scales"][-1]["best_seconds"]))
    results["machine"]["load_after"] = list(os.getloadavg())
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_result(results, args.out)
    log.info("wrote %s", args.out)
    if not args.keep:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
