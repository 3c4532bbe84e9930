"""GPU benchmark of the student's inference modes, as one prepared script.

Needs CUDA torch, nnunetv2 and SimpleITK (and this repository); runs on CPU
too, only slower, so it can be tried anywhere with `--device cpu --size tiny`.

1. Weights: `--weights <nnU-Net results folder>`, else a CPU-profile student
   is trained on tiny phantom cases (see bench_student_inference.py).
   `--faithful-untrained` adds a second model: the FLARE22 small nnU-Net
   (spacing 4.0/1.2/1.2 mm, patch 32x128x192, 16..256 features) with random
   weights, for timing only (its label maps are noise, its DSC meaningless,
   and its `fastest` skipping is not representative).
2. `--cases` full-size phantom cases with lesions (image + ground truth).
3. For every model, mode and case: load the model, predict the case (read,
   predict, write), timed together as FLARE times a case; peak GPU memory
   (`torch.cuda.max_memory_allocated`, reset before loading) and reserved
   memory; windows evaluated and skipped; organ / tumor DSC against the
   ground truth. The CUDA context is created once before the first mode, so
   no mode pays for it; the first case of each mode includes cuDNN autotuning.

    python bench/gpu_student_inference.py --out OUT_DIR [--weights DIR] [--cases 2]
        [--modes fast fastest stock_nomirror stock] [--faithful-untrained] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402

from flare_core.io import write_json  # noqa: E402
from result_files import write_result  # noqa: E402

from bench_student_inference import (  # noqa: E402
    MODE_OPTIONS,
    environment,
    score,
    train_cpu_student,
    write_bench_cases,
)

log = logging.getLogger("gpu_student_inference")
# The ONNX backend runs on the CPU only (CPUExecutionProvider): not a GPU mode.
GPU_MODES = sorted(name for name, options in MODE_OPTIONS.items() if options.get("backend") != "onnx")

FLARE22_STUDENT = {
    "spacing": [4.0, 1.2, 1.2],
    "patch_size": [32, 128, 192],
    "features_per_stage": [16, 32, 64, 128, 256],
    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
}


def faithful_untrained_model(trained: Path, out: Path) -> Path:
    """A results folder with the FLARE22 small nnU-Net and random weights,
    reusing the trained model's dataset.json and intensity statistics."""
    from flare_core.nnunet.model_loading import build_network
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((trained / "plans.json").read_text())
    dataset_json = json.loads((trained / "dataset.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    config.update(spacing=FLARE22_STUDENT["spacing"], patch_size=FLARE22_STUDENT["patch_size"], batch_size=2)
    config["architecture"]["arch_kwargs"].update(
        n_stages=5, features_per_stage=FLARE22_STUDENT["features_per_stage"],
        kernel_sizes=FLARE22_STUDENT["kernel_sizes"], strides=FLARE22_STUDENT["strides"],
        n_conv_per_stage=[2] * 5, n_conv_per_stage_decoder=[2] * 4)
    # the FLARE22 spacing is given in (z, y, x): no transposition
    plans.update(transpose_forward=[0, 1, 2], transpose_backward=[0, 1, 2],
                 configurations={"3d_fullres": config})
    folder = out / "FaithfulUntrained__FLARE22Plans__3d_fullres"
    write_json(plans, folder / "plans.json")
    write_json(dataset_json, folder / "dataset.json")
    manager = PlansManager(plans)
    torch.manual_seed(0)
    network = build_network(manager, manager.get_configuration("3d_fullres"), dataset_json)
    network.apply(network.initialize)
    (folder / "fold_all").mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": network.state_dict(), "init_args": {"configuration": "3d_fullres"},
                "trainer_name": "untrained", "inference_allowed_mirroring_axes": None},
               folder / "fold_all" / "checkpoint_final.pth")
    return folder


def measure(model: str, weights: Path, mode: str, case: dict[str, Any], out: Path,
            device: torch.device) -> dict[str, Any]:
    from flare_core.nnunet.efficient_predictor import StudentPredictor

    options = dict(MODE_OPTIONS[mode])
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    predictor = StudentPredictor.from_results(weights, options.pop("mode"), device=device, **options)
    loaded = time.perf_counter()
    result = predictor.predict_case(Path(case["image"]), case["case_id"],
                                    out / model / mode / f"{case['case_id']}.nii.gz")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    finished = time.perf_counter()
    row = {**result.summary(), "model": model, "bench_mode": mode, "seconds": finished - started,
           "load_seconds": loaded - started, "predict_seconds": finished - loaded}
    if device.type == "cuda":
        row.update(peak_gpu_allocated_bytes=int(torch.cuda.max_memory_allocated(device)),
                   peak_gpu_reserved_bytes=int(torch.cuda.max_memory_reserved(device)))
    return row


def cpu_agreement(weights: Path, case: dict[str, Any], out: Path, rows: Sequence[dict[str, Any]]
                  ) -> dict[str, Any] | None:
    """Per-class Dice between the device's `fast` label map and a CPU `fast` run."""
    from flare_core.io import read_label

    device_row = next((r for r in rows if r["model"] == "student" and r["bench_mode"] == "fast"
                       and r["case_id"] == case["case_id"]), None)
    if device_row is None:
        return None
    cpu_row = measure("student_cpu", weights, "fast", case, out, torch.device("cpu"))
    device_label, _ = read_label(Path(device_row["output_path"]), case["case_id"])
    cpu_label, _ = read_label(Path(cpu_row["output_path"]), case["case_id"])
    dice = {}
    for c in range(1, int(max(device_label.max(), cpu_label.max())) + 1):
        a, b = device_label == c, cpu_label == c
        total = int(a.sum() + b.sum())
        if total:
            dice[str(c)] = float(2 * (a & b).sum() / total)
    identical = float((device_label == cpu_label).mean())
    log.info("device vs CPU `fast`: %.5f of voxels identical, per-class Dice %s (CPU %.2f s)", identical,
             {k: round(v, 4) for k, v in dice.items()}, cpu_row["seconds"])
    return {"case_id": case["case_id"], "identical_fraction": identical, "dice": dice,
            "cpu_seconds": cpu_row["seconds"]}


def log_table(rows: Sequence[dict[str, Any]]) -> None:
    lines = [f"{'model':<10} {'case':<18} {'mode':<15} {'seconds':>8} {'GPU peak':>10} {'windows':>8} "
             f"{'skipped':>8} {'organ DSC':>9} {'tumor DSC':>9}"]
    for r in rows:
        gpu = r.get("peak_gpu_allocated_bytes")
        gpu_text = f"{gpu / 2**30:8.2f}Gi" if gpu is not None else f"{'-':>10}"
        lines.append(f"{r['model']:<10} {r['case_id']:<18} {r['bench_mode']:<15} {r['seconds']:>8.2f} {gpu_text} "
                     f"{r['windows_evaluated']:>8} {r['windows_skipped']:>8} {r['organ_dsc']:>9.3f} "
                     f"{r['tumor_dsc']:>9.3f}")
    log.info("student inference on %s\n%s", rows[0]["device"] if rows else "?", "\n".join(lines))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and the label maps")
    parser.add_argument("--weights", type=Path, help="nnU-Net results folder of a trained student")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--size", default="full", choices=("tiny", "full"))
    parser.add_argument("--modes", nargs="+", default=["fast", "fastest", "stock_nomirror", "stock"],
                        choices=GPU_MODES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--faithful-untrained", action="store_true")
    parser.add_argument("--faithful-modes", nargs="+", default=["fast", "fastest", "stock_nomirror"],
                        choices=GPU_MODES)
    parser.add_argument("--work", type=Path, help="where cases (and a trained student) go; default: a temp folder")
    parser.add_argument("--keep-predictions", action="store_true")
    parser.add_argument("--stock-cases", type=int, help="run the stock modes on only the first N cases (slow)")
    parser.add_argument("--cpu-reference", action="store_true",
                        help="also run `fast` on the CPU (float32) for the first case and report its agreement "
                             "with the device's label map (half precision on GPU)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_student_"))
    if device.type == "cuda":
        torch.zeros(1, device=device)  # create the CUDA context before any timing
    weights = args.weights or train_cpu_student(work / "student", device=device.type)
    models = {"student": Path(weights)}
    if args.faithful_untrained:
        models["flare22"] = faithful_untrained_model(Path(weights), work / "faithful")
    cases = write_bench_cases(work / "cases", args.cases, args.size)
    predictions = args.out / "predictions" if args.keep_predictions else work / "predictions"
    rows: list[dict[str, Any]] = []
    report = {"benchmark": "gpu_student_inference", "environment": environment(str(device)),
              "models": {k: str(v) for k, v in models.items()}, "rows": rows, "cpu_agreement": None}
    for model, folder in models.items():
        for mode in (args.modes if model == "student" else args.faithful_modes):
            limit = args.stock_cases if mode.startswith("stock") and args.stock_cases is not None else len(cases)
            for case in cases[:limit]:
                row = measure(model, folder, mode, case, predictions, device)
                row.update(score(Path(row["output_path"]), Path(case["truth"]), case["case_id"]))
                row["device"] = str(device)
                rows.append(row)
                log.info("%s %s %s: %.2f s", model, mode, case["case_id"], row["seconds"])
                write_result(report, args.out / "gpu_student_inference.json", indent=2, sort_keys=True)  # partial results survive a timeout
    log_table(rows)
    if args.cpu_reference:
        report["cpu_agreement"] = cpu_agreement(models["student"], cases[0], predictions, rows)
    write_result(report, args.out / "gpu_student_inference.json", indent=2, sort_keys=True)
    log.info("wrote %s", args.out / "gpu_student_inference.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
