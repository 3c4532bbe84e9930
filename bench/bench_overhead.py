"""Benchmark: what does Dagster cost the demo? The whole graph through Dagster's
automation against the same flare_core calls in a plain Python loop.

    nice -n 19 .venv/bin/python bench/bench_overhead.py --out bench/results/overhead.json \
        [--profile cpu] [--train 16 --infer 4] [--seed 2026] [--epochs N --iterations N] \
        [--order dagster-first|plain-first] [--device auto] [--keep]

One phantom data set is generated (`flare_core.phantom.generate_dataset`,
tiny, the demo's case counts by default); each run gets its own copy of it
and an empty work root, in its own Python process (so neither inherits the
other's imports, loaded models or torch thread pools; the OS file cache is
shared, which is why `--order` exists):

- `dagster`: `flare_assets.pipeline.run_until_settled` on a fresh SQLite
  instance (temporary DAGSTER_HOME with the project's dagster.yaml), exactly
  what `python -m flare_assets.demo` runs, without its console;
- `plain`: every asset body's flare_core calls, in the same order, in a loop:
  registration with previews, the tumor subset, teacher export / plan / train
  (and its training curve), tumor pseudo-labels (model loaded once), fusion
  with both labels and their previews, label quality and its summary chart,
  student export / plan / train, predictions with previews (model loaded
  once), evaluation and its summary chart. Only Dagster is missing: no
  instance, partitions, runs, events, checks or metadata values.

Both use the same run profile, device and inference mode; their library
output goes to a log file, as the demo's does. `--epochs` / `--iterations`
shorten both trainings equally: the plain loop takes
`get_profile(name, epochs=..., iterations=...)`, and the Dagster run gets a
subclass of the `RunProfile` resource whose `settings` return that same
shortened profile under the same name (the resource only takes a profile
name, and flare_assets is not changed for a benchmark).

Reported: process wall seconds of each run (interpreter start to exit) and
the ratio dagster / plain (the issue's target: <= 1.2), the same for the work
after imports, seconds per stage side by side (the Dagster steps from the
pipeline's own reports; the time between steps split into instance creation,
case discovery and automation evaluations), per Dagster step the time inside
its runs' steps versus around them (from the run event logs, read after the
timing), what each run wrote (file counts, epochs trained) so the two did the
same work, the load average before and after each run and the CPU count.
`dagster_machinery` adds up what Dagster itself spent (evaluations, time
around the asset bodies, setup, extra imports) and gives (plain wall + that) /
plain wall: a second estimate of the ratio that the asset bodies' compute
noise does not move. Timings on a shared machine vary: compare the load
figures (and the two estimates) before trusting a ratio.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Nothing heavy is imported at module level: nnU-Net's spawned workers import
# this module again, and the plain run must not pay for Dagster there.
log = logging.getLogger("bench.overhead")

TARGET_RATIO = 1.2
CHILD = "_run"  # first argument of the per-run child process
PATHS = ("dagster", "plain")
ORDERS = {"dagster-first": ("dagster", "plain"), "plain-first": ("plain", "dagster")}
# The 14 steps of the demo, in the pipeline's topological order.
STEPS = ("training_case", "inference_case", "tumor_subset", "teacher_plans", "teacher_weights",
         "tumor_pseudo_label", "fused_labels", "label_quality", "label_quality_summary", "student_plans",
         "student_weights", "prediction", "evaluation", "evaluation_summary")
# Imported by both runs before their clocks for the work start: the science
# stack (torch, nnU-Net, SimpleITK, matplotlib) both need.
COMMON_MODULES = ("flare_core.inventory", "flare_core.registry", "flare_core.grouping", "flare_core.fused_case",
                  "flare_core.label_quality", "flare_core.metrics", "flare_core.preview", "flare_core.charts",
                  "flare_core.nnunet.dataset_export", "flare_core.nnunet.training",
                  "flare_core.nnunet.tumor_inference", "flare_core.nnunet.efficient_predictor")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# ----------------------------------------------------------------- the parent

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from flare_assets import demo, settings

    demo_defaults = demo.parse_args([])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", help="run profile for both runs (default cpu)")
    parser.add_argument("--train", type=int, default=demo_defaults.train,
                        help=f"training cases (default: the demo's, {demo_defaults.train})")
    parser.add_argument("--infer", type=int, default=demo_defaults.infer,
                        help=f"inference cases (default: the demo's, {demo_defaults.infer})")
    parser.add_argument("--seed", type=int, default=2026, help="phantom data seed (default 2026)")
    parser.add_argument("--epochs", type=int, help="epochs of both trainings (default: the profile's)")
    parser.add_argument("--iterations", type=int,
                        help="iterations per epoch of both trainings (default: the profile's)")
    parser.add_argument("--order", choices=sorted(ORDERS), default="dagster-first",
                        help="which run goes first; the second finds warm file caches (default dagster-first, "
                             "which biases the ratio against Dagster)")
    parser.add_argument("--device", default=settings.device(), help="auto, cpu or cuda (default: the demo's)")
    parser.add_argument("--inference-mode", default=settings.inference_mode(),
                        help="student inference mode (default: the demo's)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "overhead.json",
                        help="results file (default bench/results/overhead.json)")
    parser.add_argument("--scratch", type=Path, help="folder for the temporary runs (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep data, work roots and logs (kept anyway on failure)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD]:
        return child_main(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench_overhead_", dir=args.scratch))
    log.info("bench_overhead: profile %s, %d training + %d inference cases, seed %d, order %s; scratch %s",
             args.profile, args.train, args.infer, args.seed, args.order, scratch)
    source, generation_seconds = generate_data(scratch / "source", args)
    runs = {path: run_once(path, scratch / path, source, args) for path in ORDERS[args.order]}
    result = compose_result(args, runs, generation_seconds)
    write_result(result, args.out)
    report(result, args.out)
    failed = [p for p, r in runs.items() if r["exit_code"] != 0]
    if failed or args.keep:
        log.info("runs kept under %s%s", scratch, f" (failed: {', '.join(failed)})" if failed else "")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0


def generate_data(root: Path, args: argparse.Namespace) -> tuple[Path, float]:
    from flare_core.phantom import generate_dataset

    started = time.perf_counter()
    generate_dataset(root, size="tiny", seed=args.seed, n_train=args.train, n_infer=args.infer)
    return root, time.perf_counter() - started


def run_once(path: str, run_dir: Path, source: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One run in its own process, on its own copy of the data; wall seconds and load around it."""
    data, work, home = run_dir / "data", run_dir / "work", run_dir / "dagster_home"
    shutil.copytree(source, data)
    work.mkdir(parents=True)
    env = {**os.environ, "FLARE_DATA_ROOT": str(data), "FLARE_WORK_ROOT": str(work), "FLARE_PROFILE": args.profile,
           "FLARE_DEVICE": args.device, "FLARE_INFERENCE_MODE": args.inference_mode}
    env.pop("DAGSTER_HOME", None)
    if path == "dagster":
        home.mkdir()
        shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
        env["DAGSTER_HOME"] = str(home)
    result_file, log_file = run_dir / "result.json", run_dir / "run.log"
    command = [sys.executable, str(Path(__file__).resolve()), CHILD, path, "--data", str(data), "--work", str(work),
               "--result", str(result_file), "--profile", args.profile, "--device", args.device,
               "--inference-mode", args.inference_mode]
    for option in ("epochs", "iterations"):
        if getattr(args, option) is not None:
            command += [f"--{option}", str(getattr(args, option))]
    log.info("%s run: started (log %s)", path, log_file)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(log_file, "w") as output:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    log.info("%s run: exit %d after %.1f s (load %.2f -> %.2f)", path, done.returncode, wall, load_before[0],
             load_after[0])
    measured = json.loads(result_file.read_text()) if result_file.exists() else {}
    return {"exit_code": done.returncode, "wall_seconds": round(wall, 2), "load_before": _load(load_before),
            "load_after": _load(load_after), **measured, "outputs": work_outputs(work),
            "log_tail": _tail(log_file) if done.returncode else None, "log": str(log_file)}


def work_outputs(work: Path) -> dict[str, Any]:
    """Files per output folder and what each training did: the two runs must have done the same work."""
    counts = {}
    for folder in sorted(p for p in work.iterdir() if p.is_dir() and p.name != "logs"):
        counts[folder.name] = sum(1 for f in folder.rglob("*") if f.is_file())
    trainings = {}
    for name in ("teacher_weights", "student_weights"):
        state = work / "manifests" / f"{name}.json"
        if state.exists():
            summary = json.loads(state.read_text())
            trainings[name] = {k: summary.get(k) for k in ("epochs_completed", "wall_seconds", "final_pseudo_dice",
                                                           "device")}
    return {"files": counts, "trainings": trainings}


def compose_result(args: argparse.Namespace, runs: dict[str, dict], generation_seconds: float) -> dict[str, Any]:
    from importlib.metadata import version

    from flare_core.nnunet.profiles import get_profile

    profile = get_profile(args.profile, epochs=args.epochs, iterations=args.iterations)
    dagster_run, plain_run = runs["dagster"], runs["plain"]
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "target_ratio": TARGET_RATIO,
        "ratio": _ratio(dagster_run.get("wall_seconds"), plain_run.get("wall_seconds")),
        "ratio_after_imports": _ratio(dagster_run.get("work_seconds"), plain_run.get("work_seconds")),
        "meets_target": _meets(_ratio(dagster_run.get("wall_seconds"), plain_run.get("wall_seconds"))),
        "wall_seconds": {p: runs[p].get("wall_seconds") for p in PATHS},
        "work_seconds": {p: runs[p].get("work_seconds") for p in PATHS},
        "profile": args.profile,
        "training": {role: {"epochs": s.training.num_epochs, "iterations_per_epoch": s.training.iterations_per_epoch,
                            "val_iterations_per_epoch": s.training.val_iterations_per_epoch}
                     for role, s in (("teacher", profile.teacher), ("student", profile.student))},
        "training_shortened": args.epochs is not None or args.iterations is not None,
        "device": args.device,
        "inference_mode": args.inference_mode,
        "seed": args.seed,
        "cases": {"train": args.train, "infer": args.infer},
        "order": list(ORDERS[args.order]),
        "data_generation_seconds": round(generation_seconds, 2),
        "machine": {"cpu_count": os.cpu_count(), "cpus_available": len(os.sched_getaffinity(0)),
                    "nice": os.nice(0), "load_before": {p: runs[p]["load_before"] for p in ORDERS[args.order]},
                    "load_after": {p: runs[p]["load_after"] for p in ORDERS[args.order]}},
        "versions": {"python": sys.version.split()[0], "dagster": version("dagster"), "torch": version("torch"),
                     "nnunetv2": version("nnunetv2")},
        "note": ("plumbing check only: the test profile trains for seconds, so the ratio says nothing about "
                 "the demo" if args.profile == "test" else None),
        "dagster_machinery": machinery(dagster_run, plain_run),
        "stages": stage_table(dagster_run.get("stages", {}), plain_run.get("stages", {})),
        "dagster_steps": dagster_run.get("steps", {}),
        "automation_evaluations": dagster_run.get("automation_evaluations"),
        "runs": runs,
    }


def machinery(dagster_run: dict, plain_run: dict) -> dict[str, Any] | None:
    """Where the Dagster run's extra seconds went, from its own clocks and event
    logs: automation evaluations, the runs around the asset bodies, setup and
    imports. Unlike the wall ratio it does not move with the bodies' compute,
    which on a shared machine varies more than Dagster's cost does."""
    stages, steps = dagster_run.get("stages"), dagster_run.get("steps")
    if not stages or not steps or not plain_run.get("wall_seconds"):
        return None
    seconds = lambda name: stages.get(name, {}).get("seconds", 0.0)  # noqa: E731
    runs = sum(s.get("runs", 0) for s in steps.values())
    around_bodies = sum(s.get("pipeline_seconds", 0.0) - s.get("body_seconds", 0.0) for s in steps.values())
    setup = seconds("load_definitions") + seconds("instance") + seconds("discovery") + seconds("other")
    imports = seconds("imports") - plain_run.get("stages", {}).get("imports", {}).get("seconds", 0.0)
    evaluations = seconds("automation_evaluation")
    total = evaluations + around_bodies + setup + imports
    return {
        "automation_evaluation_seconds": round(evaluations, 2),
        "automation_evaluations": stages.get("automation_evaluation", {}).get("done", 0),
        "runs": runs,
        "seconds_around_asset_bodies": round(around_bodies, 2),
        "seconds_per_run_around_body": round(around_bodies / runs, 3) if runs else None,
        "setup_seconds": round(setup, 2),
        "extra_import_seconds": round(imports, 2),
        "total_seconds": round(total, 2),
        "ratio_from_machinery": _ratio(plain_run["wall_seconds"] + total, plain_run["wall_seconds"]),
        "asset_bodies_minus_plain_steps_seconds": round(
            sum(s.get("body_seconds", 0.0) for s in steps.values())
            - sum(plain_run["stages"].get(n, {}).get("seconds", 0.0) for n in STEPS), 2),
    }


def stage_table(dagster: dict[str, dict], plain: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per stage, both runs side by side (a stage one run does not have reads 0)."""
    names = ["imports", "load_definitions", "instance", "discovery", "automation_evaluation", *STEPS, "other"]
    names += [n for n in {**dagster, **plain} if n not in names]
    rows = []
    for name in names:
        a, b = dagster.get(name, {}), plain.get(name, {})
        if not a and not b:
            continue
        seconds_a, seconds_b = a.get("seconds", 0.0), b.get("seconds", 0.0)
        rows.append({"stage": name, "dagster_seconds": round(seconds_a, 2), "plain_seconds": round(seconds_b, 2),
                     "difference": round(seconds_a - seconds_b, 2), "ratio": _ratio(seconds_a, seconds_b),
                     "dagster_done": a.get("done"), "plain_done": b.get("done"),
                     "dagster_failed": a.get("failed"), "plain_failed": b.get("failed")})
    return rows


def write_result(result: dict, out: Path) -> None:
    from result_files import write_result as write_portable

    write_portable(result, out, indent=2)


def report(result: dict, out: Path) -> None:
    log.info("")
    log.info("%-24s %10s %10s %9s %7s", "stage", "dagster s", "plain s", "diff s", "ratio")
    for row in result["stages"]:
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        log.info("%-24s %10.2f %10.2f %9.2f %7s", row["stage"], row["dagster_seconds"], row["plain_seconds"],
                 row["difference"], ratio)
    walls, works = result["wall_seconds"], result["work_seconds"]
    log.info("%-24s %10s %10s", "process wall", walls["dagster"], walls["plain"])
    log.info("%-24s %10s %10s", "after imports", works["dagster"], works["plain"])
    log.info("ratio dagster/plain: %s wall, %s after imports (target <= %.1f: %s)", result["ratio"],
             result["ratio_after_imports"], TARGET_RATIO, "met" if result["meets_target"] else "not met")
    m = result["dagster_machinery"]
    if m:
        log.info("Dagster machinery %.1f s: %d automation evaluations %.1f s, %d runs %.1f s around the asset bodies "
                 "(%.2f s each), setup %.1f s, extra imports %.1f s; (plain + machinery) / plain = %s",
                 m["total_seconds"], m["automation_evaluations"], m["automation_evaluation_seconds"], m["runs"],
                 m["seconds_around_asset_bodies"], m["seconds_per_run_around_body"] or 0.0, m["setup_seconds"],
                 m["extra_import_seconds"], m["ratio_from_machinery"])
        log.info("asset bodies minus the plain loop's steps: %+.1f s (compute noise between the runs)",
                 m["asset_bodies_minus_plain_steps_seconds"])
    machine = result["machine"]
    for path in result["order"]:
        log.info("load %s run: %s -> %s", path, machine["load_before"][path], machine["load_after"][path])
    log.info("%d CPUs (%d available), nice %d; profile %s%s, %d + %d cases, seed %d; written to %s",
             machine["cpu_count"], machine["cpus_available"], machine["nice"], result["profile"],
             " (training shortened)" if result["training_shortened"] else "", result["cases"]["train"],
             result["cases"]["infer"], result["seed"], out)
    outputs = {p: result["runs"][p]["outputs"]["files"] for p in PATHS}
    if outputs["dagster"] != outputs["plain"]:
        log.warning("the runs wrote different files: %s", outputs)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _meets(ratio: float | None) -> bool | None:
    return None if ratio is None else ratio <= TARGET_RATIO


def _load(values: tuple[float, float, float]) -> list[float]:
    return [round(v, 2) for v in values]


def _tail(path: Path, lines: int = 30) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:]


# ------------------------------------------------------------------ the child

def child_main(argv: list[str]) -> int:
    """One run (`dagster` or `plain`): time it, write what was measured to --result."""
    parser = argparse.ArgumentParser(prog=f"bench_overhead.py {CHILD}")
    parser.add_argument("path", choices=PATHS)
    for option in ("--data", "--work", "--result"):
        parser.add_argument(option, type=Path, required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--inference-mode", required=True)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--iterations", type=int)
    args = parser.parse_args(argv)
    # Library output to the log (this process's stdout/stderr), root logger at INFO, as in the demo.
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    logging.captureWarnings(True)
    started = time.perf_counter()
    for module in COMMON_MODULES:
        importlib.import_module(module)
    common_imports = time.perf_counter() - started
    runner = run_dagster if args.path == "dagster" else run_plain
    measured = runner(args)
    measured["stages"]["imports"]["seconds"] += common_imports
    measured["common_import_seconds"] = round(common_imports, 2)
    write_result(measured, args.result)
    return 0 if not measured.get("failed_steps") else 1


class StageClock:
    """Seconds and per-case outcomes per stage of a run."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, Any]] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        entry = self.stages.setdefault(name, {"seconds": 0.0, "done": 0, "failed": 0})
        started = time.perf_counter()
        try:
            yield entry
        finally:
            entry["seconds"] += time.perf_counter() - started


# ------------------------------------------------------- (a) through Dagster

def run_dagster(args: argparse.Namespace) -> dict[str, Any]:
    clock = StageClock()
    with clock.stage("imports"):
        from dagster import DagsterInstance

        from flare_assets import pipeline
    with clock.stage("load_definitions"):
        from flare_assets.definitions import defs  # what run_until_settled loads when given none
    evaluations = _instrument(pipeline, clock)
    resources = dagster_resources(args)
    started = time.perf_counter()
    with clock.stage("instance"):
        instance = DagsterInstance.get()  # $DAGSTER_HOME: a fresh SQLite instance, as the demo's
    with instance:
        reports = pipeline.run_until_settled(instance, resources)
        work_seconds = time.perf_counter() - started
        steps = step_breakdown(instance, defs, pipeline.merged_reports(reports))
    for name, report in pipeline.merged_reports(reports).items():
        clock.stages[name] = {"seconds": report.seconds, "done": len(report.done), "failed": len(report.failed)}
    accounted = sum(s["seconds"] for n, s in clock.stages.items() if n not in ("imports", "load_definitions"))
    clock.stages["other"] = {"seconds": max(0.0, work_seconds - accounted)}
    failed = {r.name: r.failed for r in reports if r.failed}
    return {"work_seconds": round(work_seconds, 2), "stages": clock.stages, "steps": steps,
            "reports": [{"step": r.name, "done": len(r.done), "skipped": len(r.skipped), "failed": r.failed,
                         "seconds": round(r.seconds, 2)} for r in reports],
            "automation_evaluations": {"count": len(evaluations), "seconds": [round(s, 3) for s in evaluations]},
            "failed_steps": failed}


def _instrument(pipeline, clock: StageClock) -> list[float]:
    """Time the pipeline's automation evaluations and case discovery, the work
    between its steps, by wrapping the names it calls (nothing else changes)."""
    evaluations: list[float] = []
    evaluate, discover = pipeline.evaluate_automation_conditions, pipeline.discover_cases

    def timed_evaluate(*a, **kw):
        with clock.stage("automation_evaluation") as entry:
            started = time.perf_counter()
            result = evaluate(*a, **kw)
            evaluations.append(time.perf_counter() - started)
            entry["done"] += 1
        return result

    def timed_discover(*a, **kw):
        with clock.stage("discovery"):
            return discover(*a, **kw)

    pipeline.evaluate_automation_conditions, pipeline.discover_cases = timed_evaluate, timed_discover
    return evaluations


def dagster_resources(args: argparse.Namespace) -> dict:
    """The demo's resources (`build_resources`) for these roots; with shorter
    training, a RunProfile whose settings apply the same shortening as the plain run."""
    from flare_assets.resources import FlareDataRoot, FlareWorkRoot, RunProfile
    from flare_core.nnunet.profiles import get_profile

    class ShortenedRunProfile(RunProfile):
        """`RunProfile` with `get_profile(name, epochs=..., iterations=...)`: same name, shorter training."""

        epochs: int | None = None
        iterations: int | None = None

        @property
        def settings(self):
            return get_profile(self.name, epochs=self.epochs, iterations=self.iterations)

    options = dict(name=args.profile, device=args.device, inference_mode=args.inference_mode)
    shortened = args.epochs is not None or args.iterations is not None
    profile = (ShortenedRunProfile(**options, epochs=args.epochs, iterations=args.iterations) if shortened
               else RunProfile(**options))
    return {"data_root": FlareDataRoot(path=str(args.data)), "work_root": FlareWorkRoot(path=str(args.work)),
            "run_profile": profile}


def step_breakdown(instance, defs, merged: dict) -> dict[str, dict[str, Any]]:
    """Per step, from the runs' event logs (read after the timing): how much of
    the pipeline's seconds for the step passed inside its runs' steps (the
    asset body, up to its first output event), around the body inside the
    step (output, materialization and check events), inside the run around
    the step, and outside the runs' event logs (building the job, creating the run)."""
    from dagster import AssetsDefinition

    step_names = {a.node_def.name for a in defs.assets if isinstance(a, AssetsDefinition)}
    steps: dict[str, dict[str, Any]] = {}
    for run in instance.get_runs():
        timeline = _run_timeline(instance.all_logs(run.run_id))
        name = timeline.pop("step", None) or run.job_name
        entry = steps.setdefault(name if name in step_names else run.job_name,
                                 {"runs": 0, "events": 0, "body_seconds": 0.0, "step_after_body_seconds": 0.0,
                                  "run_around_step_seconds": 0.0})
        entry["runs"] += 1
        for key, value in timeline.items():
            entry[key] += value
    for name, entry in steps.items():
        if name in merged:
            in_runs = entry["body_seconds"] + entry["step_after_body_seconds"] + entry["run_around_step_seconds"]
            entry["pipeline_seconds"] = merged[name].seconds
            entry["outside_run_events_seconds"] = merged[name].seconds - in_runs
            entry["dagster_seconds_per_run"] = (merged[name].seconds - entry["body_seconds"]) / entry["runs"]
        for key, value in entry.items():
            entry[key] = round(value, 3) if isinstance(value, float) else value
    return steps


_OUTPUTS = {"STEP_OUTPUT", "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION", "STEP_FAILURE", "STEP_SUCCESS"}


def _run_timeline(entries) -> dict[str, Any]:
    events = [(e.timestamp, e.dagster_event.event_type_value, e.dagster_event.step_key)
              for e in entries if e.dagster_event is not None]
    if not events:
        return {"events": 0}
    first, last = events[0][0], events[-1][0]
    start = next(((t, step) for t, kind, step in events if kind == "STEP_START"), None)
    if start is None:
        return {"events": len(events), "run_around_step_seconds": last - first}
    body_end = next((t for t, kind, _ in events if kind in _OUTPUTS and t >= start[0]), last)
    step_end = next((t for t, kind, _ in events if kind in ("STEP_SUCCESS", "STEP_FAILURE")), last)
    return {"step": start[1], "events": len(events), "body_seconds": body_end - start[0],
            "step_after_body_seconds": step_end - body_end,
            "run_around_step_seconds": (start[0] - first) + (last - step_end)}


# ------------------------------------------------------ (b) the plain loop

def run_plain(args: argparse.Namespace) -> dict[str, Any]:
    """The asset bodies' flare_core calls in the pipeline's step order, no Dagster."""
    from flare_core.layout import DataLayout, WorkLayout
    from flare_core.nnunet.profiles import get_profile

    clock = StageClock()
    clock.stages["imports"] = {"seconds": 0.0}
    started = time.perf_counter()
    plain = PlainPipeline(DataLayout(args.data), WorkLayout(args.work),
                          get_profile(args.profile, epochs=args.epochs, iterations=args.iterations),
                          args.device, args.inference_mode, clock)
    plain.run()
    work_seconds = time.perf_counter() - started
    accounted = sum(s["seconds"] for n, s in clock.stages.items() if n != "imports")
    clock.stages["other"] = {"seconds": max(0.0, work_seconds - accounted)}
    failed = {n: s["failed"] for n, s in clock.stages.items() if s.get("failed")}
    return {"work_seconds": round(work_seconds, 2), "stages": clock.stages, "failed_steps": failed,
            "case_failures": plain.failures}


@dataclass
class PlainPipeline:
    """Mirrors `flare_assets/defs/*.py`, body by body (same calls, arguments, files)."""

    data: Any  # flare_core.layout.DataLayout
    work: Any  # flare_core.layout.WorkLayout
    profile: Any  # flare_core.nnunet.profiles.RunProfile
    device: str
    inference_mode: str
    clock: StageClock
    cases: dict[str, list[str]] = field(default_factory=dict)
    blocked: set[tuple[str, str]] = field(default_factory=set)  # (split, case): a failed step or blocking check
    failures: dict[str, dict[str, str]] = field(default_factory=dict)

    def run(self) -> None:
        self.discover()
        self.register("training_case", "train")
        self.register("inference_case", "infer")
        self.tumor_subset()
        self.teacher_plans()
        self.teacher_weights()
        self.tumor_pseudo_label()
        self.fused_labels()
        self.label_quality()
        self.label_quality_summary()
        self.student_plans()
        self.student_weights()
        self.prediction()
        self.evaluation()
        self.evaluation_summary()

    # -- per-case work as `flare_assets.batching.run_batch` does it: a bad case fails alone

    def per_case(self, step: str, split: str, work) -> None:
        from flare_core.io import CaseError

        with self.clock.stage(step) as entry:
            for case_id in self.cases[split]:
                if (split, case_id) in self.blocked:
                    continue
                try:
                    problems = work(case_id)
                except CaseError as error:
                    problems = [str(error)]
                if problems:  # failed, or failed a blocking check: later steps skip the case
                    self.failures.setdefault(step, {})[case_id] = "; ".join(problems)
                    self.blocked.add((split, case_id))
                    entry["failed"] += 1
                else:
                    entry["done"] += 1

    def discover(self) -> None:
        from flare_core.cases import discover_cases

        with self.clock.stage("discovery"):
            self.cases = {split: discover_cases(self.data, split).case_ids for split in ("train", "infer")}

    def register(self, step: str, split: str) -> None:
        """defs/cases.py `_register`."""
        from flare_core import registry
        from flare_core.cases import case_signature
        from flare_core.inventory import inspect_case
        from flare_core.io import CaseError, write_bytes
        from flare_core.layout import PREVIEWS

        def work(case_id: str) -> list[str]:
            case_signature(self.data, split, case_id)
            try:
                inventory = inspect_case(self.data, split, case_id, with_preview=True)
            except CaseError as error:
                registry.record_failure(self.work, split, case_id, str(error))
                raise
            write_bytes(inventory.preview_png, self.work.per_case(PREVIEWS, f"{case_id}.{split}_case", ".png"))
            registry.record_inventory(self.work, split, inventory)
            return [p for plist in inventory.problems.values() for p in plist]  # the blocking checks

        self.per_case(step, split, work)

    def tumor_subset(self) -> None:
        from flare_core.grouping import build_tumor_subset
        from flare_core.registry import collect_inventories

        with self.clock.stage("tumor_subset") as entry:
            inventories, unavailable = collect_inventories(self.work, "train", self.cases["train"])
            build_tumor_subset(inventories, unavailable).write(self.work.manifests / "tumor_subset.json")
            entry["done"] += 1

    def teacher_plans(self) -> None:
        from flare_core.manifest import Manifest
        from flare_core.nnunet.dataset_export import export_tumor_dataset

        with self.clock.stage("teacher_plans") as entry:
            manifest = Manifest.read(self.work.manifests / "tumor_subset.json")
            _require_cases(manifest, "teacher")
            export = export_tumor_dataset(self.export_cases(manifest, lambda _, inv: inv.label_path),
                                          self.work.nnunet_raw)
            self.plan(export, self.profile.teacher)
            Manifest(name="teacher_plans", cases=manifest.cases, excluded=manifest.excluded,
                     details={"dataset": export.dataset_name, "profile": self.profile.name}
                     ).write(self.work.manifests / "teacher_plans.json")
            entry["done"] += 1

    def teacher_weights(self) -> None:
        self.train("teacher_weights", "teacher_plans", self.profile.teacher)

    def tumor_pseudo_label(self) -> None:
        """defs/teacher.py: the teacher loaded once, on the first case that needs it."""
        from flare_core.layout import TUMOR_PSEUDO_LABELS
        from flare_core.nnunet.tumor_inference import TumorPredictor
        from flare_core.registry import require_inventory

        teacher = []

        def work(case_id: str) -> list[str]:
            inventory = require_inventory(self.work, "train", case_id)
            output = self.work.per_case(TUMOR_PSEUDO_LABELS, case_id)
            if inventory.annotates_tumor:
                output.unlink(missing_ok=True)
                return []
            if not teacher:
                state = json.loads((self.work.manifests / "teacher_weights.json").read_text())
                teacher.append(TumorPredictor.from_results(state["model_folder"], device=self.device))
            teacher[0].predict_to_file(inventory.image_path, case_id, output)
            return []

        self.per_case("tumor_pseudo_label", "train", work)

    def fused_labels(self) -> None:
        """defs/fusion.py: both labels in one pass, written, verified, previewed."""
        from flare_core import fused_case as fc
        from flare_core.io import Geometry, read_ct, write_bytes, write_volume
        from flare_core.layout import ORGAN_FUSED_LABELS, PARTIAL_FUSED_LABELS, PREVIEWS, TUMOR_PSEUDO_LABELS
        from flare_core.preview import preview_png
        from flare_core.registry import require_inventory

        outputs = {"partial_fused": ("partial_fused_label", PARTIAL_FUSED_LABELS),
                   "organ_fused": ("organ_fused_label", ORGAN_FUSED_LABELS)}

        def work(case_id: str) -> list[str]:
            inventory = require_inventory(self.work, "train", case_id)
            geometry = Geometry.from_dict(inventory.geometry)
            tumor = None if inventory.annotates_tumor else self.work.per_case(TUMOR_PSEUDO_LABELS, case_id)
            fused = fc.fuse_and_verify(case_id, geometry, inventory.label_path, tumor,
                                       inventory.organ_pseudo_label_path, inventory.annotated)
            image, _ = read_ct(Path(inventory.image_path), case_id)
            problems = []
            for name, (asset_name, folder) in outputs.items():
                label = getattr(fused, name)
                path = write_volume(label, geometry, self.work.per_case(folder, case_id))
                problems += [p for found in fused.problems[name].values() for p in found]
                problems += fc.written_geometry_problems(path, case_id, geometry)
                png = preview_png(image, label, geometry, f"{case_id} · {asset_name}")
                write_bytes(png, self.work.per_case(PREVIEWS, f"{case_id}.{name}", ".png"))
            return problems

        self.per_case("fused_labels", "train", work)

    def label_quality(self) -> None:
        """defs/quality.py `label_quality`."""
        from flare_core import label_quality as lq
        from flare_core.io import Geometry, write_json
        from flare_core.layout import LABEL_QUALITY, ORGAN_FUSED_LABELS, PARTIAL_FUSED_LABELS, TUMOR_PSEUDO_LABELS
        from flare_core.registry import require_inventory

        def work(case_id: str) -> list[str]:
            truth = self.data.ground_truth(case_id)
            path = self.work.per_case(LABEL_QUALITY, case_id, ".json")
            if not truth.exists():
                write_json({"case_id": case_id, "skipped": "no ground truth"}, path)
                return []
            inventory = require_inventory(self.work, "train", case_id)
            tumor = self.work.per_case(TUMOR_PSEUDO_LABELS, case_id)
            sources = {
                lq.TUMOR_PSEUDO: tumor if tumor.exists() and not inventory.annotates_tumor else None,
                lq.PARTIAL_ONLY: inventory.label_path,
                lq.ORGAN_PSEUDO_ONLY: inventory.organ_pseudo_label_path,
                lq.PARTIAL_FUSED: self.work.per_case(PARTIAL_FUSED_LABELS, case_id),
                lq.ORGAN_FUSED: self.work.per_case(ORGAN_FUSED_LABELS, case_id),
            }
            geometry = Geometry.from_dict(inventory.geometry)
            rows = lq.score_sources(case_id, truth, geometry, sources)
            record = {"case_id": case_id, "rows": rows}
            if sources[lq.TUMOR_PSEUDO] is not None:
                detection, breakdown = lq.detect_tumors(case_id, truth, geometry, sources[lq.TUMOR_PSEUDO])
                record["tumor_detection"], record["lesion_breakdown"] = detection.to_dict(), breakdown
            write_json(record, path)
            lq.source_table(rows)  # the asset's per-case metadata table
            return []

        self.per_case("label_quality", "train", work)

    def label_quality_summary(self) -> None:
        from flare_core import label_quality as lq
        from flare_core.charts import label_quality_rows, score_chart_png
        from flare_core.io import write_json
        from flare_core.layout import LABEL_QUALITY

        with self.clock.stage("label_quality_summary") as entry:
            rows, scored, skipped, detections = [], [], [], []
            for case_id in sorted(self.cases["train"]):
                path = self.work.per_case(LABEL_QUALITY, case_id, ".json")
                if not path.exists():
                    continue
                record = json.loads(path.read_text())
                (skipped if "skipped" in record else scored).append(case_id)
                rows += record.get("rows", [])
                if "tumor_detection" in record:
                    detections.append(record["tumor_detection"])
            table = lq.source_table(rows) if rows else []
            pooled = lq.pool_detections(detections)
            write_json({"cases": scored, "skipped": skipped, "by_source": table, "by_class": lq.class_table(rows),
                        "tumor_detection": pooled.to_dict() if pooled else None},
                       self.work.manifests / "label_quality_summary.json")
            chart_rows = label_quality_rows(table)
            if chart_rows:
                score_chart_png(chart_rows, f"mean DSC and NSD per label source over {len(scored)} cases")
            entry["done"] += 1

    def student_plans(self) -> None:
        """defs/student.py: the manifest of organ-fused labels, export, plan."""
        from flare_core.io import file_sha256
        from flare_core.layout import ORGAN_FUSED_LABELS
        from flare_core.manifest import Manifest
        from flare_core.nnunet.dataset_export import export_student_dataset
        from flare_core.registry import collect_inventories

        with self.clock.stage("student_plans") as entry:
            inventories, unavailable = collect_inventories(self.work, "train", self.cases["train"])
            manifest = Manifest(name="student_plans", excluded=dict(unavailable))
            for inventory in inventories:
                fused = self.work.per_case(ORGAN_FUSED_LABELS, inventory.case_id)
                if not inventory.ok:
                    manifest.excluded[inventory.case_id] = "registration checks failed"
                elif not fused.exists():
                    manifest.excluded[inventory.case_id] = "no organ-fused label yet"
                else:
                    manifest.cases[inventory.case_id] = {"image": inventory.image_sha256,
                                                         "label": file_sha256(fused)}
            _require_cases(manifest, "student")
            cases = self.export_cases(manifest, lambda case_id, _: self.work.per_case(ORGAN_FUSED_LABELS, case_id))
            export = export_student_dataset(cases, self.work.nnunet_raw)
            self.plan(export, self.profile.student)
            manifest.details = {"dataset": export.dataset_name, "profile": self.profile.name}
            manifest.write(self.work.manifests / "student_plans.json")
            entry["done"] += 1

    def student_weights(self) -> None:
        self.train("student_weights", "student_plans", self.profile.student)

    def prediction(self) -> None:
        """defs/inference.py `prediction`: the student loaded once for the batch."""
        from flare_core.io import read_ct, write_bytes, write_volume
        from flare_core.layout import PREDICTIONS, PREVIEWS
        from flare_core.nnunet.efficient_predictor import StudentPredictor
        from flare_core.preview import preview_png
        from flare_core.registry import require_inventory

        with self.clock.stage("prediction"):
            state = json.loads((self.work.manifests / "student_weights.json").read_text())
            predictor = StudentPredictor.from_results(state["model_folder"], mode=self.inference_mode,
                                                      device=self.device)

        def work(case_id: str) -> list[str]:
            inventory = require_inventory(self.work, "infer", case_id)
            image, geometry = read_ct(inventory.image_path, case_id)
            result = predictor.predict_array(image, geometry)
            write_volume(result.label, geometry, self.work.per_case(PREDICTIONS, case_id))
            png = preview_png(image, result.label, geometry, f"{case_id} · prediction ({result.mode})")
            write_bytes(png, self.work.per_case(PREVIEWS, f"{case_id}.prediction", ".png"))
            return []

        self.per_case("prediction", "infer", work)

    def evaluation(self) -> None:
        """defs/inference.py `evaluation`."""
        from flare_core.io import Geometry, read_label, write_json
        from flare_core.layout import EVALUATIONS, PREDICTIONS
        from flare_core.metrics import evaluate_case, summarize
        from flare_core.registry import require_inventory

        def work(case_id: str) -> list[str]:
            truth_path = self.data.infer_label(case_id)
            out = self.work.per_case(EVALUATIONS, case_id, ".json")
            if not truth_path.exists():
                write_json({"case_id": case_id, "skipped": "no ground truth"}, out)
                return []
            inventory = require_inventory(self.work, "infer", case_id)
            geometry = Geometry.from_dict(inventory.geometry)
            truth, _ = read_label(truth_path, case_id, image_geometry=geometry)
            predicted, _ = read_label(self.work.per_case(PREDICTIONS, case_id), case_id, image_geometry=geometry)
            scores = [vars(s) for s in evaluate_case(predicted, truth, geometry.spacing_zyx)]
            write_json({"case_id": case_id, "scores": scores}, out)
            summarize(scores)  # the asset's organ and tumor DSC metadata
            return []

        self.per_case("evaluation", "infer", work)

    def evaluation_summary(self) -> None:
        from flare_core.charts import evaluation_rows, score_chart_png
        from flare_core.io import write_json
        from flare_core.layout import EVALUATIONS
        from flare_core.metrics import summarize

        with self.clock.stage("evaluation_summary") as entry:
            rows, evaluated = [], []
            for case_id in sorted(self.cases["infer"]):
                path = self.work.per_case(EVALUATIONS, case_id, ".json")
                record = json.loads(path.read_text()) if path.exists() else {}
                if record.get("scores"):
                    evaluated.append(case_id)
                    rows += record["scores"]
            entry["done"] += 1
            if not rows:
                return
            summary = summarize(rows)
            table = summary.reset_index()
            records = [{k: _json_number(v) for k, v in r.items()} for r in table.to_dict("records")]
            write_json({"cases": evaluated, "summary": records}, self.work.manifests / "evaluation_summary.json")
            score_chart_png(evaluation_rows(summary), f"mean DSC and NSD per class over {len(evaluated)} cases")

    # -- the shared model steps (flare_assets/model_steps.py)

    def export_cases(self, manifest, label_for) -> list:
        from flare_core.nnunet.dataset_export import ExportCase
        from flare_core.registry import load_inventory

        cases = []
        for case_id in manifest.cases:
            inventory = load_inventory(self.work, "train", case_id)
            cases.append(ExportCase(case_id, Path(inventory.image_path), Path(label_for(case_id, inventory))))
        return cases

    def plan(self, export, settings) -> None:
        from flare_core.nnunet import training

        training.plan_and_preprocess(self.work, export.dataset_name, settings, num_processes=2,
                                     profile_name=self.profile.name)

    def train(self, step: str, plans_manifest: str, settings) -> None:
        from flare_core.charts import training_curve_png
        from flare_core.io import write_bytes, write_json
        from flare_core.manifest import Manifest
        from flare_core.nnunet import training

        def on_epoch(epoch: int, train_loss: float, pseudo_dice: float, seconds: float) -> None:
            log.info("epoch %d: train loss %.4f, validation pseudo-Dice %.4f, %.1f s", epoch, train_loss,
                     pseudo_dice, seconds)

        with self.clock.stage(step) as entry:
            manifest = Manifest.read(self.work.manifests / f"{plans_manifest}.json")
            summary = training.train(self.work, manifest.details["dataset"], settings, device=self.device,
                                     on_epoch=on_epoch)
            curve = summary.curve
            png = training_curve_png(curve.train_loss, curve.val_loss, curve.pseudo_dice, curve.ema_pseudo_dice)
            write_bytes(png, summary.model_folder / "fold_all" / "flare_training_curve.png")
            write_json({"manifest_digest": manifest.digest, **summary.to_dict()},
                       self.work.manifests / f"{step}.json")
            entry["done"] += 1


def _json_number(value):
    """As defs/inference.py `_round`: plain rounded floats (NaN as None) for JSON."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return None if value != value else round(value, 4)
    return value


def _require_cases(manifest, what: str) -> None:
    if not manifest.cases:
        raise RuntimeError(f"no cases to train the {what} on; excluded: {manifest.excluded}")


if __name__ == "__main__":
    sys.exit(main())
