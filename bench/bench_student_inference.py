"""Benchmark: the student's inference modes on full-size phantom CT (CPU).

Modes (see flare_core/nnunet/efficient_predictor.py):
  fast            one fold, no TTA, torch preprocessing, Gaussian sliding window, argmax only
  fastest         fast + the FLARE22 window-skipping rules
  stock_nomirror  nnU-Net v2's nnUNetPredictor in-process, step 0.5, no mirroring
  stock           nnU-Net's default inference: step 0.5, mirroring over all three axes

Every (mode, case) runs in a fresh subprocess, so its peak resident memory is
its own and model loading is timed once per case, as FLARE times a case:
  seconds          model loading + reading the CT + prediction + writing the label map
  load_seconds     reading plans, dataset.json and the checkpoint, building the network
  process_seconds  the whole subprocess (Python start and imports included)
  peak_rss_bytes   the process's peak resident set (VmHWM: getrusage's ru_maxrss would
                   carry the parent's size over exec); baseline_rss_bytes after imports
The parent then scores each label map against the phantom's complete ground
truth with flare_core.metrics.evaluate_case (mean organ DSC, tumor DSC) and
writes everything to --out.

Weights: --weights <nnU-Net results folder>; without it a CPU-profile student
(flare_core.nnunet.profiles "cpu") is trained first on tiny phantom cases
through flare_core.nnunet.training (kept under --work for reuse).

    python bench/bench_student_inference.py [--cases 2] [--modes fast fastest stock_nomirror]
        [--weights DIR] [--work DIR] [--threads N] [--out bench/results/student_inference.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

_STARTED = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_student_inference")

MODE_OPTIONS: dict[str, dict[str, Any]] = {
    "fast": {"mode": "fast"},
    "fastest": {"mode": "fastest"},
    "stock_nomirror": {"mode": "stock", "mirroring": False},
    # nnU-Net's default: test-time mirroring on every axis (a default 3D
    # trainer allows all three; the FLARE student's checkpoint allows none).
    "stock": {"mode": "stock", "mirroring": True, "mirror_axes": (0, 1, 2)},
}
DEFAULT_MODES = ("fast", "fastest", "stock_nomirror")
DEFAULT_OUT = REPO / "bench" / "results" / "student_inference.json"


# --------------------------------------------------------------- model and cases


def train_cpu_student(work: Path, n_cases: int = 8, epochs: int | None = 40, iterations: int | None = 10,
                      seed: int = 0, device: str = "cpu") -> Path:
    """A CPU-profile student trained on tiny phantom cases (complete labels);
    returns its nnU-Net results folder. Reused when already trained."""
    from flare_core.io import write_volume
    from flare_core.layout import WorkLayout
    from flare_core.nnunet import training
    from flare_core.nnunet.dataset_export import ExportCase, export_student_dataset
    from flare_core.nnunet.profiles import get_profile
    from flare_core.phantom import make_case

    layout = WorkLayout(Path(work))
    cases = []
    for index in range(n_cases):
        case = make_case(seed * 100 + index, size="tiny", lesions=True)
        case_id = f"bench_{index:03d}"
        image = write_volume(case.image, case.geometry, Path(work) / "train" / f"{case_id}_0000.nii.gz")
        label = write_volume(case.labels, case.geometry, Path(work) / "train" / f"{case_id}.nii.gz")
        cases.append(ExportCase(case_id, image, label))
    exported = export_student_dataset(cases, layout.nnunet_raw)
    settings = get_profile("cpu").student
    training.plan_and_preprocess(layout, exported.dataset_name, settings, num_processes=1)
    # One thread: a small network gains little from more, and on a shared
    # machine more threads thrash (10x slower epochs were measured).
    summary = training.train(layout, exported.dataset_name, settings, device, epochs=epochs,
                             iterations=iterations, seed=seed, threads=1)
    log.info("student: %s (%d epochs, pseudo dice %.3f)", summary.model_folder, summary.epochs_completed,
             summary.final_pseudo_dice)
    return summary.model_folder


def write_bench_cases(folder: Path, n_cases: int, size: str = "full", seed: int = 1000) -> list[dict[str, Any]]:
    """Full-size phantom cases with lesions: image and complete ground truth."""
    from flare_core.io import write_volume
    from flare_core.phantom import make_case

    cases = []
    for index in range(n_cases):
        case_id = f"bench_{size}_{index:03d}"
        image_path = Path(folder) / f"{case_id}_0000.nii.gz"
        truth_path = Path(folder) / f"{case_id}.nii.gz"
        if not (image_path.is_file() and truth_path.is_file()):
            case = make_case(seed + index, size=size, lesions=True)
            write_volume(case.image, case.geometry, image_path)
            write_volume(case.labels, case.geometry, truth_path)
        cases.append({"case_id": case_id, "image": str(image_path), "truth": str(truth_path)})
    return cases


# --------------------------------------------------------------- one measurement (subprocess)


def current_rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the model, predict one case, report timings and memory."""
    from flare_core.nnunet.efficient_predictor import StudentPredictor, peak_rss_bytes

    imported = time.perf_counter()
    baseline = current_rss_bytes()
    options = dict(MODE_OPTIONS[spec["mode"]])
    started = time.perf_counter()
    predictor = StudentPredictor.from_results(Path(spec["weights"]), options.pop("mode"), device=spec["device"],
                                              num_threads=spec.get("threads"), **options)
    loaded = time.perf_counter()
    result = predictor.predict_case(Path(spec["image"]), spec["case_id"], Path(spec["output"]))
    finished = time.perf_counter()
    return {
        **result.summary(),
        "bench_mode": spec["mode"],
        "seconds": finished - started,
        "load_seconds": loaded - started,
        "predict_seconds": finished - loaded,
        "import_seconds": imported - _STARTED,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak_rss_bytes(),
        "threads": predictor.num_threads,
    }


def measure(mode: str, case: dict[str, Any], weights: Path, out_dir: Path, device: str,
            threads: int | None) -> dict[str, Any]:
    """Run one (mode, case) in a fresh interpreter."""
    spec = {"mode": mode, "case_id": case["case_id"], "image": case["image"], "weights": str(weights),
            "output": str(out_dir / mode / f"{case['case_id']}.nii.gz"), "device": device, "threads": threads}
    report = out_dir / mode / f"{case['case_id']}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec),
                    "--report", str(report)], check=True)
    row = json.loads(report.read_text())
    row["process_seconds"] = time.perf_counter() - started
    return row


# --------------------------------------------------------------- scoring and reporting


def score(prediction: Path, truth: Path, case_id: str) -> dict[str, float]:
    from flare_core import labels
    from flare_core.io import read_label
    from flare_core.metrics import evaluate_case

    gt, geometry = read_label(truth, case_id)
    pred, _ = read_label(prediction, case_id, image_geometry=geometry)
    scores = {s.class_id: s for s in evaluate_case(pred, gt, geometry.spacing_zyx)}
    organ_dsc = sum(scores[c].dsc for c in labels.ORGANS) / len(labels.ORGANS)
    return {"organ_dsc": organ_dsc, "tumor_dsc": scores[labels.TUMOR].dsc,
            "organ_nsd": sum(scores[c].nsd for c in labels.ORGANS) / len(labels.ORGANS)}


def log_table(rows: Sequence[dict[str, Any]]) -> None:
    header = (f"{'case':<18} {'mode':<15} {'seconds':>8} {'load':>6} {'peak RSS':>10} {'windows':>9} "
              f"{'skipped':>8} {'organ DSC':>9} {'tumor DSC':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['case_id']:<18} {r['bench_mode']:<15} {r['seconds']:>8.2f} {r['load_seconds']:>6.2f} "
                     f"{r['peak_rss_bytes'] / 2**30:>8.2f}Gi {r['windows_evaluated']:>9} {r['windows_skipped']:>8} "
                     f"{r['organ_dsc']:>9.3f} {r['tumor_dsc']:>9.3f}")
    log.info("student inference\n%s", "\n".join(lines))


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by_mode: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_mode.setdefault(row["bench_mode"], []).append(row)
    keys = ("seconds", "load_seconds", "peak_rss_bytes", "windows_evaluated", "windows_skipped",
            "organ_dsc", "tumor_dsc")
    return {mode: {f"mean_{k}": sum(r[k] for r in group) / len(group) for k in keys}
            for mode, group in by_mode.items()}


def environment(device: str) -> dict[str, Any]:
    import torch

    # The load average says how much other work shared the CPUs during the run.
    return {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
            "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None}


# --------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=sorted(MODE_OPTIONS))
    parser.add_argument("--cases", type=int, default=2, help="number of phantom cases")
    parser.add_argument("--size", default="full", choices=("tiny", "full"))
    parser.add_argument("--weights", type=Path, help="nnU-Net results folder of a trained student")
    parser.add_argument("--work", type=Path, help="keeps the trained student, cases and predictions for reuse")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: every available CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-cases", type=int, default=8)
    parser.add_argument("--train-epochs", type=int, default=40,
                        help="the cpu profile's 10 x 8 iterations learn nothing usable for a DSC comparison")
    parser.add_argument("--train-iterations", type=int, default=10)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    weights = args.weights or train_cpu_student(work / "student", args.train_cases, args.train_epochs,
                                                args.train_iterations)
    cases = write_bench_cases(work / "cases", args.cases, args.size)
    rows = []
    for case in cases:
        for mode in args.modes:
            row = measure(mode, case, weights, work / "predictions", args.device, args.threads)
            row.update(score(Path(row["output_path"]), Path(case["truth"]), case["case_id"]))
            rows.append(row)
            log.info("%s %s: %.2f s, peak RSS %.2f GiB, organ DSC %.3f", case["case_id"], mode, row["seconds"],
                     row["peak_rss_bytes"] / 2**30, row["organ_dsc"])
    log_table(rows)
    return {"benchmark": "student_inference", "weights": str(weights), "size": args.size,
            "environment": environment(args.device), "modes": args.modes, "rows": rows,
            "summary": summarize(rows)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.worker:
        args.report.write_text(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    from flare_core.io import write_json

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_student_"))
    try:
        result = run_benchmark(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    write_json(result, args.out)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
