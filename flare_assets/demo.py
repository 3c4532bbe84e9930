"""The demo: run the platform end to end on an embedded default.

    python -m flare_assets.demo [--data-root DIR] [--work-root DIR] [--profile cpu] [--size small]
                                [--teacher-epochs N] [--student-epochs N]

Without --data-root it generates a FLARE-like synthetic data set (once) under
./demo/data, by default on the ~4 mm `small` phantom grid. It uses the Dagster
instance in $DAGSTER_HOME (default: a project-local ./dagster_home with SQLite
storage), so everything it
materializes is visible afterwards in `dagster dev`. It runs the graph by the
same automation conditions the daemon evaluates (`flare_assets.pipeline`), so
running it again, or opening `dagster dev` afterwards, does no work that is
already up to date, and resumes what a crash or a failure left undone. Pointed at a real FLARE23 download with
--data-root, the same command runs the platform on real data.

The console shows one line per stage (what it did, in how many seconds; on a
terminal a progress bar while training epochs or cases run), then the
method's results: DSC / NSD per class of the student's predictions and of the
training labels, and the tumor pseudo-labels' precision and recall. Library
output (nnU-Net, Dagster, warnings) goes to <work root>/logs/demo-<time>.log,
named at the end; a failed stage prints its name and the reason.

The exit status is 0 only when every stage and case succeeded; 1 when any
failed (the summary names them); 130 / 143 when stopped by SIGINT / SIGTERM,
which end the current step and stop (what finished is kept).
"""
import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

from flare_assets import console, interruption, settings
from flare_core.phantom import SIZES

log = logging.getLogger("flare.demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, help="FLARE23-shaped data root (default: generate a demo set)")
    parser.add_argument("--work-root", type=Path, help="where outputs go (default ./demo/work)")
    parser.add_argument("--profile", default=None, help="run profile: cpu (default), test or flare23")
    parser.add_argument("--teacher-epochs", type=_epoch_count, metavar="N",
                        help="train the teacher N epochs instead of the profile's (FLARE_TEACHER_EPOCHS)")
    parser.add_argument("--student-epochs", type=_epoch_count, metavar="N",
                        help="train the student N epochs instead of the profile's (FLARE_STUDENT_EPOCHS)")
    parser.add_argument("--train", type=int, default=16, help="training cases to generate for the demo")
    parser.add_argument("--infer", type=int, default=4, help="inference cases to generate for the demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="small", choices=sorted(SIZES),
                        help="phantom grid of a generated data set: small (~4 mm, the default), tiny (~6 mm, "
                             "the tests') or full (FLARE's 512 x 512)")
    return parser.parse_args(argv)


def _epoch_count(text: str) -> int:
    try:
        return settings.epoch_count(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def configure_environment(args: argparse.Namespace) -> None:
    """Settings reach resources through FLARE_* variables, as in `dagster dev`."""
    if args.data_root:
        os.environ["FLARE_DATA_ROOT"] = str(args.data_root.resolve())
    if args.work_root:
        os.environ["FLARE_WORK_ROOT"] = str(args.work_root.resolve())
    if args.profile:
        os.environ["FLARE_PROFILE"] = args.profile
    for variable, epochs in (("FLARE_TEACHER_EPOCHS", args.teacher_epochs),
                             ("FLARE_STUDENT_EPOCHS", args.student_epochs)):
        if epochs is not None:
            os.environ[variable] = str(epochs)
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / "dagster_home"))).resolve()
    home.mkdir(parents=True, exist_ok=True)


def log_file_path(work_root: Path) -> Path:
    return work_root / "logs" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.log"


def ensure_demo_data(args: argparse.Namespace) -> str | None:
    """Generate the synthetic data set if there is none; say what was made."""
    root = settings.data_root()
    if args.data_root or (root / "train" / "images").is_dir():
        return None
    from flare_core.phantom import generate_dataset

    log.info("generating a synthetic FLARE-like data set in %s", root)
    started = time.perf_counter()
    generate_dataset(root, size=args.size, seed=args.seed, n_train=args.train, n_infer=args.infer)
    return (f"generated a synthetic {args.size} data set: {args.train} training and {args.infer} inference cases "
            f"({time.perf_counter() - started:.1f} s)")


def stage_detail(instance, report) -> str | None:
    """A global stage's result in a few words, from its latest materialization."""
    from dagster import AssetKey

    from flare_assets import pipeline

    if report.done != ["all"]:
        return None
    meta = pipeline.latest_metadata(instance, AssetKey(report.name)) or {}
    try:
        if report.name == "tumor_subset":
            excluded = f", {meta['num_excluded']} excluded" if meta.get("num_excluded") else ""
            return f"{meta['num_cases']} cases annotate tumors{excluded}"
        if report.name in ("teacher_plans", "student_plans"):
            return f"planned on {meta['num_cases']} cases"
        if report.name in ("teacher_weights", "student_weights"):
            if meta.get("already_trained"):
                return "weights current, not retrained"
            return f"trained {meta['epochs']} epochs, pseudo-Dice {meta['final_pseudo_dice']:.3f}"
        if report.name == "label_quality_summary":
            skipped = f", {meta['cases_skipped']} without ground truth" if meta.get("cases_skipped") else ""
            return f"{meta['cases_scored']} cases scored{skipped}"
        if report.name == "evaluation_summary":
            return f"{meta.get('cases_evaluated', 0)} cases evaluated"
    except (KeyError, TypeError, ValueError):
        return None
    return None


def run(args: argparse.Namespace, ui: console.Console, log_path: Path) -> int:
    """The demo proper, once the console and the log are set up."""
    from dagster import DagsterInstance

    from flare_core.cases import TRAIN, discover_cases
    from flare_core.layout import WorkLayout
    from flare_core.report import results_lines
    from flare_assets import pipeline, progress
    from flare_assets.definitions import build_resources

    ui.line(f"FLARE demo, profile {settings.profile()}{_epoch_overrides()}: data {settings.data_root()}, "
            f"work {settings.work_root()}")
    note = float32_training_note()
    if note:
        ui.line(note)
    generated = ensure_demo_data(args)
    if generated:
        ui.line(generated)
    resources = build_resources()
    if not discover_cases(resources["data_root"].layout, TRAIN).case_ids:
        ui.error(f"no training cases under {settings.data_root()} (expected train/images/<case>_0000.nii.gz)")
        ui.error(f"log: {log_path}")
        return 1
    with DagsterInstance.get() as instance:
        ui.describe = lambda report: stage_detail(instance, report)
        with progress.listening(ui):
            reports = pipeline.run_until_settled(instance, resources)
        overrides = epoch_override_notes(instance)
    stopped = next((r for r in reports if "all" in r.failed), None)
    if all(r.name == "discovery" for r in reports):
        ui.line("nothing to do: every asset is up to date with the data root")
    ui.line()
    if stopped is not None:
        ui.error(f"{stopped.name} failed, and the steps that need its output did not run: fix the cause "
                 "above and run the demo again (what is done stays done)")
    else:
        for text in results_lines(WorkLayout(settings.work_root())):
            ui.line(text)
        if settings.profile() == "test":
            ui.line("(profile test: the models train for seconds; these numbers check the plumbing, not the method)")
        ui.line()
    for text in overrides:
        ui.line(text)
    if stopped is None:
        for text in failure_lines(reports):
            ui.error(text)
    ui.line(f"full log: {log_path}")
    ui.line("browse every asset, its metadata and plots: make ui (http://127.0.0.1:3000)")
    return exit_status(reports)


def _epoch_overrides() -> str:
    """' (student 120 epochs)' when FLARE_*_EPOCHS override the profile, else ''."""
    named = [f"{model} {epochs} epochs" for model, epochs in (("teacher", settings.teacher_epochs()),
                                                               ("student", settings.student_epochs()))
             if epochs is not None]
    return f" ({', '.join(named)})" if named else ""


def float32_training_note() -> str | None:
    """A line when the profile's models would train in bfloat16 autocast on
    this CPU but it has no native bfloat16, so they train in float32: the
    demo then takes a multiple of the minutes the README quotes."""
    from flare_core.nnunet import environment
    from flare_core.nnunet.profiles import get_profile

    if settings.profile() == "test":
        return None
    try:
        device = environment.select_device(settings.device())
    except (RuntimeError, ValueError):  # the stage that trains names the problem
        return None
    if device.type != "cpu":
        return None
    profile = get_profile(settings.profile())
    if not (profile.student.training.cpu_bfloat16 or profile.teacher.training.cpu_bfloat16):
        return None
    if environment.cpu_has_native_bfloat16():
        return None
    return ("this CPU has no native bfloat16 (AVX-512 BF16 or AMX), so the models train in float32: the demo "
            "takes several times the README's bfloat16 minutes (about an hour on 2 cores); --student-epochs N "
            "shortens the student's share, at a cost in accuracy (the README gives both figures)")


def epoch_override_notes(instance) -> list[str]:
    """A line per model trained (before this run) for fewer epochs than
    FLARE_*_EPOCHS now ask for: the override applies the next time its weights
    are materialized, which automation does only when their plans change."""
    from dagster import AssetKey

    from flare_assets.pipeline import latest_metadata

    notes = []
    for model, requested in (("teacher", settings.teacher_epochs()), ("student", settings.student_epochs())):
        meta = latest_metadata(instance, AssetKey(f"{model}_weights")) if requested else None
        if meta and meta.get("epochs", requested) < requested:
            notes.append(f"the {model} was trained for {meta['epochs']} epochs before this run; to continue it to "
                         f"{requested}, materialize {model}_weights (make ui, then Materialize on the asset): "
                         "training resumes from its final checkpoint and automation refreshes what it made")
    return notes


# Cases named per failed stage before the rest is only counted (the log has every message).
NAMED_CASES = 8


def failure_lines(reports) -> list[str]:
    """One line per stage that failed anywhere, naming its failed cases."""
    from flare_assets.pipeline import merged_reports

    lines = []
    for name, report in merged_reports(list(reports)).items():
        if not report.failed:
            continue
        subjects = sorted(repr(s) if s != s.strip() or " " in s else s for s in report.failed)
        more = len(subjects) - NAMED_CASES
        named = ", ".join(subjects[:NAMED_CASES]) + (f" and {more} more" if more > 0 else "")
        lines.append(f"failed: {name}: {len(subjects)} ({named}); every reason is in the log")
    return lines


def exit_status(reports) -> int:
    """0 when every stage and case succeeded, 1 when any failed."""
    return 1 if any(r.failed for r in reports) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_environment(args)
    log_path = log_file_path(settings.work_root())
    bars = sys.stdout.isatty()
    with console.output_to_log(log_path) as streams:
        ui = console.Console(streams.out, streams.err, bars=bars)
        with interruption.stopping_on_signals():
            try:
                return run(args, ui, log_path)
            except KeyboardInterrupt as stop:
                ui.abandon()
                if not isinstance(stop, interruption.StopRequested):
                    stop = interruption.StopRequested(interruption.stop_signal() or signal.SIGINT)
                ui.error(f"stopped by {stop.reason}{_during(ui)}; what finished is kept, and the next run "
                         f"resumes what is not done. log: {log_path}")
                return stop.exit_code
            except Exception as error:  # noqa: BLE001 - the console gets the reason, the log the traceback
                ui.abandon()
                log.exception("the demo failed")
                ui.error(f"the demo failed{_during(ui)}: {type(error).__name__}: {error}")
                ui.error(f"traceback and library output: {log_path}")
                return 1


def _during(ui: console.Console) -> str:
    return f" during {ui.stage}" if ui.stage else ""


if __name__ == "__main__":
    sys.exit(main())
