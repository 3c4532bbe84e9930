"""The demo: run the platform end to end on an embedded default.

    python -m flare_assets.demo [--data-root DIR] [--work-root DIR] [--profile cpu]

Without --data-root it generates a FLARE-like synthetic data set (once) under
./demo/data. It uses the Dagster instance in $DAGSTER_HOME (default: a
project-local ./dagster_home with SQLite storage), so everything it
materializes is visible afterwards in `dagster dev`. Running it again does no
work that is already up to date. Pointed at a real FLARE23 download with
--data-root, the same command runs the platform on real data.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

from dagster import DagsterInstance

from flare_core.cases import TRAIN, discover_cases
from flare_assets import pipeline, settings
from flare_assets.assets import cases
from flare_assets.definitions import build_resources

log = logging.getLogger("flare.demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, help="FLARE23-shaped data root (default: generate a demo set)")
    parser.add_argument("--work-root", type=Path, help="where outputs go (default ./demo/work)")
    parser.add_argument("--profile", default=None, help="run profile: cpu (default), test or flare23")
    parser.add_argument("--train", type=int, default=12, help="training cases to generate for the demo")
    parser.add_argument("--infer", type=int, default=3, help="inference cases to generate for the demo")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def configure_environment(args: argparse.Namespace) -> None:
    """Settings reach resources through FLARE_* variables, as in `dagster dev`."""
    if args.data_root:
        os.environ["FLARE_DATA_ROOT"] = str(args.data_root.resolve())
    if args.work_root:
        os.environ["FLARE_WORK_ROOT"] = str(args.work_root.resolve())
    if args.profile:
        os.environ["FLARE_PROFILE"] = args.profile
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / "dagster_home"))).resolve()
    home.mkdir(parents=True, exist_ok=True)


def ensure_demo_data(args: argparse.Namespace) -> None:
    root = settings.data_root()
    if args.data_root or (root / "train" / "images").is_dir():
        return
    from flare_core.phantom import generate_dataset

    log.info("generating a synthetic FLARE-like data set in %s", root)
    generate_dataset(root, size="tiny", seed=args.seed, n_train=args.train, n_infer=args.infer)


def summarize(reports: list[pipeline.StageReport], instance: DagsterInstance) -> None:
    log.info("%-20s %6s %8s %7s %8s", "stage", "done", "skipped", "failed", "seconds")
    for r in reports:
        log.info("%-20s %6d %8d %7d %8.1f", r.name, len(r.done), len(r.skipped), len(r.failed), r.seconds)
        for case_id, reason in r.failed.items():
            log.info("  failed %s: %s", case_id, reason)
    subset = pipeline.latest_metadata(instance, cases.tumor_subset.key)
    if subset:
        log.info("tumor subset: %s cases (%s excluded): %s", subset["num_cases"], subset["num_excluded"],
                 subset["case_ids"])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    args = parse_args(argv)
    configure_environment(args)
    ensure_demo_data(args)
    if not discover_cases(build_resources()["data_root"].layout, TRAIN).case_ids:
        log.error("no training cases under %s (expected train/images/<case>_0000.nii.gz)", settings.data_root())
        return 1
    with DagsterInstance.get() as instance:
        reports = pipeline.run_all(instance, build_resources())
        summarize(reports, instance)
    return 0


if __name__ == "__main__":
    sys.exit(main())
