"""Teacher inference time and peak memory per full-size phantom case.

Usage:
    python -m bench.bench_teacher_inference [--model-folder DIR] [--cases 2] [--threads N]

Without `--model-folder` a teacher is trained first with the `cpu` profile on
tiny phantom data (about a minute on 2 cores), so the numbers describe the
CPU demo's teacher. Each case is a full-size phantom (512 x 512, 100-140
slices, 0.7-0.9 mm in-plane) written to NIfTI; the timed step is
`TumorPredictor.predict_case` (read, preprocess, sliding window, resample
back), after the model was loaded once. Peak RSS is sampled every 20 ms
during each case. Results go to bench/results/teacher_inference.json.

Note: nnU-Net resamples each image to the spacing the teacher was planned
for; a teacher trained on tiny (about 6 mm) data therefore predicts a full
case at about 6 mm, far cheaper than the faithful teacher at about 0.8 mm.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import psutil
import torch

from flare_core.io import write_volume
from flare_core.layout import DataLayout, WorkLayout

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules, also under python -m
from result_files import write_result  # noqa: E402

log = logging.getLogger("bench.teacher_inference")
RESULTS = Path(__file__).resolve().parent / "results" / "teacher_inference.json"


class PeakRss:
    """Largest resident set size of this process seen while the block runs."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._process = psutil.Process()

    def __enter__(self) -> "PeakRss":
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def train_demo_teacher(work_dir: Path, threads: int) -> Path:
    """A cpu-profile teacher on tiny phantom data; returns its model folder."""
    from flare_core.io import read_label
    from flare_core.nnunet import training
    from flare_core.nnunet.dataset_export import ExportCase, export_tumor_dataset
    from flare_core.nnunet.profiles import get_profile
    from flare_core.phantom import generate_dataset

    data = DataLayout(work_dir / "data")
    generate_dataset(data.root, size="tiny", seed=0, n_train=10, n_infer=0)
    cases = []
    for image in sorted(data.folder("train_images").glob("*_0000.nii.gz")):
        case_id = image.name[: -len("_0000.nii.gz")]
        label = data.train_label(case_id)
        if label.is_file() and (read_label(label, case_id)[0] == 14).any():
            cases.append(ExportCase(case_id, image, label))
    work = WorkLayout(work_dir / "work")
    exported = export_tumor_dataset(cases, work.nnunet_raw)
    settings = get_profile("cpu").teacher
    training.plan_and_preprocess(work, exported.dataset_name, settings, num_processes=1, profile_name="cpu")
    summary = training.train(work, exported.dataset_name, settings, "cpu", seed=0, threads=threads)
    log.info("trained demo teacher on %d cases in %.0f s", len(cases), summary.wall_seconds)
    return summary.model_folder


def run(model_folder: Path | None, n_cases: int, threads: int, device: str, out: Path) -> dict:
    from flare_core.nnunet.environment import configure_threads, select_device
    from flare_core.nnunet.tumor_inference import TumorPredictor
    from flare_core.phantom import make_case

    configure_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench_teacher_") as tmp:
        tmp = Path(tmp)
        trained_here = model_folder is None
        if trained_here:
            model_folder = train_demo_teacher(tmp / "train", threads)
        torch_device = select_device(device)
        rss_before_load = psutil.Process().memory_info().rss
        predictor = TumorPredictor.from_results(model_folder, torch_device)
        rows = []
        for index in range(n_cases):
            case = make_case(1000 + index, size="full", lesions=True)
            image = write_volume(case.image, case.geometry, tmp / f"full_{index:02d}_0000.nii.gz")
            with PeakRss() as memory:
                mask, geometry, seconds = predictor.predict_case(image, f"full_{index:02d}")
            rows.append({"case": f"full_{index:02d}", "shape_zyx": list(case.image.shape),
                         "spacing_xyz": list(case.geometry.spacing), "seconds": round(seconds, 3),
                         "peak_rss_mib": round(memory.peak / 2**20, 1), "tumor_voxels": int(mask.sum())})
            log.info("%s %s: %.2f s, peak RSS %.0f MiB", rows[-1]["case"], rows[-1]["shape_zyx"], seconds,
                     rows[-1]["peak_rss_mib"])
        plans = json.loads((Path(model_folder) / "plans.json").read_text())
    configuration = next(iter(plans["configurations"].values()))
    result = {
        "benchmark": "teacher_inference",
        "model": {"folder": str(model_folder) if not trained_here else "trained by this script (cpu profile)",
                  "profile": plans.get("flare_profile", ""), "patch_size": configuration["patch_size"],
                  "target_spacing": configuration["spacing"],
                  "features_per_stage": configuration["architecture"]["arch_kwargs"]["features_per_stage"]},
        "machine": {"device": str(torch_device), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "model_load_seconds": round(predictor.load_seconds, 3),
        "rss_before_load_mib": round(rss_before_load / 2**20, 1),
        "cases": rows,
        "mean_seconds": round(float(np.mean([r["seconds"] for r in rows])), 3),
        "max_peak_rss_mib": max(r["peak_rss_mib"] for r in rows),
    }
    write_result(result, out, indent=2, sort_keys=True)
    return result


def log_table(result: dict) -> None:
    log.info("%-8s %-16s %9s %14s", "case", "shape (z,y,x)", "seconds", "peak RSS MiB")
    for row in result["cases"]:
        log.info("%-8s %-16s %9.2f %14.0f", row["case"], "x".join(map(str, row["shape_zyx"])), row["seconds"],
                 row["peak_rss_mib"])
    log.info("mean %.2f s per case on %s (%d torch threads); model load %.2f s", result["mean_seconds"],
             result["machine"]["device"], result["machine"]["torch_threads"], result["model_load_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-folder", type=Path, default=None,
                        help="nnU-Net results folder <Trainer>__<Plans>__2d; default: train a cpu-profile teacher")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all available CPUs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("nnUNet_def_n_proc", "2")
    log_table(run(args.model_folder, args.cases, args.threads, args.device, args.out))


if __name__ == "__main__":
    main()
