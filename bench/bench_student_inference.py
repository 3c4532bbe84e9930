"""Benchmark: the student's inference modes, backends and precisions on full-size phantom CT (CPU).

Models (--model):
  faithful  (default) the `flare23` profile's student, the FLARE22 small nnU-Net
            (spacing 4.0 x 1.2 x 1.2 mm, patch 32 x 128 x 192, 16..256 features),
            trained briefly on full-size phantom cases so that DSC separates the
            modes (see `train_faithful_student`); results to bench/results/predict_cpu.json
  cpu       the `cpu` profile's small student trained on tiny phantom cases (the
            original benchmark); results to bench/results/student_inference.json
  --weights DIR uses an existing nnU-Net results folder instead of training.

Variants (see flare_core/nnunet/efficient_predictor.py):
  fast / fastest            torch float32: one fold, no TTA, torch preprocessing, Gaussian
                            sliding window, argmax only (`fastest`: + the body box and the
                            FLARE22 skipping rules on a 2 x 2 in-plane grid over the body)
  fastest_whole / bf16_fastest_whole
                            `fastest` without the body box: FLARE22's 3 x 3 grid over the whole
                            field of view (localise=False)
  onnx_fast / onnx_fastest  the same, the network run by onnxruntime on the ONNX export (backend="onnx")
  bf16_fast / bf16_fastest  torch, the network under torch.autocast("cpu", bfloat16): the product's
                            precision="bfloat16" (needs AVX-512 BF16 / AMX for speed)
  onnx_int8_fast / onnx_int8_fastest
                            onnxruntime on an int8 QDQ export (static post-training quantization,
                            per-channel, calibrated on real windows of a training case;
                            flare_core.nnunet.onnx_quantize)
  stock_nomirror            nnU-Net v2's nnUNetPredictor in-process, step 0.5, no mirroring
  stock                     the same with mirroring over all three axes

Every (variant, case) runs in a fresh subprocess, so its peak resident memory is
its own and the model loading is timed once per case, as FLARE times a case:
  seconds          model loading + reading the CT + prediction + writing the label map
  load_seconds     reading plans, dataset.json and the checkpoint, building the network
                   (for ONNX: checking the export against the checkpoint, building the session)
  process_seconds  the whole subprocess (Python start and imports included)
  peak_rss_bytes   the process's peak resident set (VmHWM: getrusage's ru_maxrss would
                   carry the parent's size over exec); baseline_rss_bytes after imports
The ONNX export and the int8 quantization are made once, in their own subprocess,
before any timing (their seconds are recorded separately). The parent scores each
label map against the phantom's complete ground truth (flare_core.metrics.evaluate_case:
mean organ DSC, tumor DSC) and, for every exported / precision variant, against the
torch float32 label map of the same mode on the same case (per-class Dice, `agreement`).
The JSON is rewritten after every row, so an interrupted run keeps what it measured.

    python bench/bench_student_inference.py [--model faithful|cpu] [--cases 2] [--modes ...]
        [--stock-cases 1] [--weights DIR] [--work DIR] [--threads N] [--out FILE] [--log FILE]
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
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

_STARTED = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_student_inference")

# StudentPredictor keyword arguments per mode (also used by gpu_student_inference.py).
MODE_OPTIONS: dict[str, dict[str, Any]] = {
    "fast": {"mode": "fast"},
    "fastest": {"mode": "fastest"},
    "fastest_whole": {"mode": "fastest", "localise": False},
    "onnx_fast": {"mode": "fast", "backend": "onnx"},
    "onnx_fastest": {"mode": "fastest", "backend": "onnx"},
    "stock_nomirror": {"mode": "stock", "mirroring": False},
    # nnU-Net's default: test-time mirroring on every axis (a default 3D
    # trainer allows all three; the FLARE student's checkpoint allows none).
    "stock": {"mode": "stock", "mirroring": True, "mirror_axes": (0, 1, 2)},
}
# Bench-only variants: predictor options plus a window runner swapped in by the worker.
PRECISION_VARIANTS: dict[str, dict[str, Any]] = {
    "bf16_fast": {"options": {"mode": "fast", "backend": "torch", "precision": "bfloat16"}, "precision": "bf16"},
    "bf16_fastest": {"options": {"mode": "fastest", "backend": "torch", "precision": "bfloat16"},
                     "precision": "bf16"},
    "bf16_fastest_whole": {"options": {"mode": "fastest", "backend": "torch", "precision": "bfloat16",
                                       "localise": False}, "precision": "bf16"},
    "onnx_int8_fast": {"options": {"mode": "fast", "backend": "torch"}, "precision": "int8"},
    "onnx_int8_fastest": {"options": {"mode": "fastest", "backend": "torch"}, "precision": "int8"},
}
ALL_VARIANTS = (*MODE_OPTIONS, *PRECISION_VARIANTS)
# The torch float32 variant each other variant is compared with (label-map agreement).
REFERENCE = {"onnx_fast": "fast", "onnx_fastest": "fastest", "bf16_fast": "fast", "bf16_fastest": "fastest",
             "fastest_whole": "fastest", "bf16_fastest_whole": "fastest_whole",
             "onnx_int8_fast": "fast", "onnx_int8_fastest": "fastest", "stock_nomirror": "fast", "stock": "fast"}
# Variants whose network runs in float32 (the ">= 0.99 agreement for float paths").
FLOAT32_VARIANTS = ("onnx_fast", "onnx_fastest")
FASTEST_CPU_VARIANTS = ("fastest", "onnx_fastest", "bf16_fastest", "onnx_int8_fastest", "fastest_whole",
                        "bf16_fastest_whole")
STOCK_VARIANTS = ("stock_nomirror", "stock")

DEFAULT_MODES = {
    "faithful": ("fast", "fastest", "onnx_fast", "onnx_fastest", "bf16_fast", "bf16_fastest", "onnx_int8_fastest",
                 "fastest_whole", "bf16_fastest_whole", "stock_nomirror"),
    "cpu": ("fast", "fastest", "stock_nomirror"),
}
DEFAULT_OUT = {"faithful": REPO / "bench" / "results" / "predict_cpu.json",
               "cpu": REPO / "bench" / "results" / "student_inference.json"}
INT8_NAME = "student_int8.onnx"

# Targets of issue 12.
TARGET_SECONDS = 20.0
TARGET_RSS_BYTES = 4 * 10**9  # "4 GB"
TARGET_DSC_POINTS = 0.01  # organ DSC within 1 point of torch fast
TARGET_SPEEDUP = 10.0
TARGET_AGREEMENT = 0.99
LARGE_CLASS_VOXELS = 1000


# --------------------------------------------------------------- models and cases


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


def faithful_settings(recipe: str, epochs: int, iterations: int, val_iterations: int):
    """The `flare23` student (architecture, spacing, patch, batch 2, no mirroring)
    with a brief training.

    recipe `adamw` (default): the `cpu` profile's optimiser recipe on the faithful
    network: AdamW lr 3e-3, CE class weights ~ frequency^-0.5, bfloat16 autocast
    on CPUs with native bfloat16, elastic deformation off. nnU-Net's SGD (the
    `flare23` recipe, lr 1e-2, unweighted CE) learns nothing but background in
    a few hundred iterations (profiles.CPU documents 0 pseudo-Dice through 150
    iterations), which would make every DSC in the comparison 0.
    recipe `flare23`: the profile's own training block, only shortened.
    """
    from flare_core.nnunet.profiles import get_profile

    student = get_profile("flare23").student
    changes: dict[str, Any] = dict(num_epochs=epochs, iterations_per_epoch=iterations,
                                   val_iterations_per_epoch=val_iterations, save_every=2, plot_every=10**6)
    if recipe == "adamw":
        changes.update(optimizer="adamw", initial_lr=3e-3, ce_class_weight_power=0.5, cpu_bfloat16=True,
                       elastic_probability=0.0)
    elif recipe != "flare23":
        raise ValueError(f"unknown training recipe {recipe!r}")
    return replace(student, training=replace(student.training, **changes))


def train_faithful_student(spec: dict[str, Any]) -> dict[str, Any]:
    """(Subprocess task.) The faithful student trained on `train_cases` full-size
    phantom cases with complete labels; reused when already trained under the
    same work folder with the same settings. Returns the training facts."""
    from flare_core.io import write_volume
    from flare_core.layout import WorkLayout
    from flare_core.nnunet import training
    from flare_core.nnunet.dataset_export import ExportCase, export_student_dataset
    from flare_core.phantom import make_case

    started = time.perf_counter()
    work = Path(spec["work"])
    layout = WorkLayout(work)
    cases = []
    for index in range(spec["train_cases"]):
        case_id = f"train_full_{index:03d}"
        image_path, label_path = work / "train" / f"{case_id}_0000.nii.gz", work / "train" / f"{case_id}.nii.gz"
        if not (image_path.is_file() and label_path.is_file()):
            case = make_case(spec["train_seed"] + index, size="full", lesions=True)
            write_volume(case.image, case.geometry, image_path)
            write_volume(case.labels, case.geometry, label_path)
        cases.append(ExportCase(case_id, image_path, label_path))
    exported = export_student_dataset(cases, layout.nnunet_raw)
    settings = faithful_settings(spec["recipe"], spec["epochs"], spec["iterations"], spec["val_iterations"])
    plan_started = time.perf_counter()
    plan = training.plan_and_preprocess(layout, exported.dataset_name, settings, num_processes=1)
    train_started = time.perf_counter()
    summary = training.train(layout, exported.dataset_name, settings, "cpu", seed=spec["seed"],
                             threads=spec["threads"])
    finished = time.perf_counter()
    log.info("faithful student: %s (%d epochs, pseudo dice %.3f, %.1f min training)", summary.model_folder,
             summary.epochs_completed, summary.final_pseudo_dice, summary.wall_seconds / 60)
    curve = summary.curve
    return {
        "model_folder": str(summary.model_folder),
        "checkpoint_sha256": summary.checkpoint_sha256,
        "profile": "flare23",
        "recipe": spec["recipe"],
        "training_settings": settings.training.to_dict(),
        "plan": {"spacing": list(settings.plan.spacing), "patch_size": list(settings.plan.patch_size),
                 "features_per_stage": list(settings.plan.features_per_stage),
                 "planned_patch_size": plan.plans["configurations"][plan.configuration]["patch_size"],
                 "planned_spacing": plan.plans["configurations"][plan.configuration]["spacing"]},
        "train_cases": spec["train_cases"],
        "train_seed": spec["train_seed"],
        "seed": spec["seed"],
        "threads": spec["threads"],
        "epochs": summary.epochs_completed,
        "iterations_per_epoch": settings.training.iterations_per_epoch,
        "iterations": summary.epochs_completed * settings.training.iterations_per_epoch,
        "final_pseudo_dice": summary.final_pseudo_dice,
        "final_ema_pseudo_dice": summary.final_ema_pseudo_dice,
        "pseudo_dice_curve": curve.pseudo_dice,
        "train_loss_curve": curve.train_loss,
        "epoch_seconds": curve.seconds,
        # nnU-Net's logged epoch times; wall_seconds is this call's (0-ish when reused)
        "training_minutes": sum(curve.seconds) / 60 if curve.seconds else None,
        "training_call_wall_minutes": summary.wall_seconds / 60,
        "reused": summary.skipped,
        "plan_and_preprocess_seconds": train_started - plan_started,
        "case_generation_seconds": plan_started - started,
        "task_seconds": finished - started,
        "calibration_image": str(cases[-1].image),
    }


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


# --------------------------------------------------------------- exports (subprocess, before timing)


def prepare_exports(spec: dict[str, Any]) -> dict[str, Any]:
    """(Subprocess task.) The fp32 ONNX export (as the onnx backend makes it) and,
    if asked, the int8 model; plus a window-level check of both against torch."""
    import numpy as np
    import torch

    from flare_core.io import read_ct, write_json
    from flare_core.nnunet.environment import configure_threads
    from flare_core.nnunet.model_loading import load_student
    from flare_core.nnunet.onnx_export import ensure_onnx
    from flare_core.nnunet.onnx_runner import OnnxWindowRunner

    threads = configure_threads(spec.get("threads"))
    weights = Path(spec["weights"])
    model = load_student(weights)
    started = time.perf_counter()
    artifact = ensure_onnx(model, weights / "fold_all")
    facts: dict[str, Any] = {"onnx_path": str(artifact.path), "onnx_bytes": len(artifact.data),
                             "onnx_exported_now": artifact.exported,
                             "ensure_onnx_seconds": time.perf_counter() - started,
                             "export_seconds": artifact.record.get("export_seconds"),
                             "onnx_record": artifact.record}
    if not spec.get("int8") and not spec.get("check_windows"):
        return facts
    from flare_core.nnunet.onnx_quantize import calibration_windows, quantize_student, quantized_artifact

    int8_path = weights / "fold_all" / INT8_NAME
    int8_record_path = int8_path.with_suffix(".onnx.json")
    if spec.get("int8"):
        record = None
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(int8_record_path.read_text())
        import hashlib
        if (record and record.get("source_onnx_sha256") == artifact.record.get("onnx_sha256") and int8_path.is_file()
                and hashlib.sha256(int8_path.read_bytes()).hexdigest() == record.get("onnx_sha256")):
            facts["int8"] = {**record, "reused": True}
        else:
            try:
                image, geometry = read_ct(Path(spec["calibration_image"]), "calibration")
                windows = calibration_windows(model, image, geometry, count=spec.get("calibration_windows", 8))
                del image
                record = quantize_student(artifact.path, int8_path, windows)
                del windows
                record.update(source_onnx_sha256=artifact.record.get("onnx_sha256"),
                              calibration_image=spec["calibration_image"])
                write_json(record, int8_record_path)
                facts["int8"] = {**record, "reused": False}
            except Exception as error:  # noqa: BLE001 - the float variants must still be measured
                log.exception("int8 quantization failed")
                facts["int8_error"] = f"{type(error).__name__}: {error}"
                int8_path.unlink(missing_ok=True)
    # Window-level agreement on windows of another case than the calibration one.
    image, geometry = read_ct(Path(spec["check_image"]), "check")
    windows = calibration_windows(model, image, geometry, count=spec.get("check_windows", 3))
    network = model.network.to("cpu").eval()
    runners: dict[str, Any] = {"onnx_fp32": OnnxWindowRunner(artifact, threads)}
    if int8_path.is_file() and spec.get("int8"):
        runners["onnx_int8"] = OnnxWindowRunner(quantized_artifact(int8_path), threads)
    checks: dict[str, dict[str, list[float]]] = {}
    for window in windows:
        batch = torch.from_numpy(window)
        with torch.inference_mode():
            t0 = time.perf_counter()
            reference = network(batch)
            reference = (reference[0] if isinstance(reference, (list, tuple)) else reference).float()
            torch_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = network(batch)
            bf16 = (bf16[0] if isinstance(bf16, (list, tuple)) else bf16).float()
            bf16_seconds = time.perf_counter() - t0
        outputs = {"torch_bf16": (bf16, bf16_seconds)}
        for name, runner in runners.items():
            t0 = time.perf_counter()
            logits = runner(batch)
            outputs[name] = (logits, time.perf_counter() - t0)
        labels = reference.argmax(1)
        checks.setdefault("torch_fp32", {}).setdefault("seconds", []).append(torch_seconds)
        for name, (logits, seconds) in outputs.items():
            entry = checks.setdefault(name, {})
            entry.setdefault("seconds", []).append(seconds)
            entry.setdefault("argmax_agreement", []).append(float((logits.argmax(1) == labels).float().mean()))
            entry.setdefault("max_abs_logit_diff", []).append(float((logits - reference).abs().max()))
    facts["window_check"] = {"windows": len(windows), "image": spec["check_image"],
                             "vs_torch_fp32": {k: {m: float(np.mean(v)) for m, v in d.items()}
                                               for k, d in checks.items()}}
    return facts


# --------------------------------------------------------------- one measurement (subprocess)


def current_rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the model, predict one case, report timings and memory."""
    from flare_core.nnunet.efficient_predictor import StudentPredictor, peak_rss_bytes

    imported = time.perf_counter()
    baseline = current_rss_bytes()
    variant = spec["mode"]
    precision = PRECISION_VARIANTS.get(variant, {}).get("precision")
    options = dict(MODE_OPTIONS[variant] if variant in MODE_OPTIONS else PRECISION_VARIANTS[variant]["options"])
    extra: dict[str, Any] = {}
    if precision == "bf16":  # a fact for the report, found before the clock starts
        from flare_core.nnunet.environment import cpu_has_native_bfloat16

        extra["cpu_native_bfloat16"] = cpu_has_native_bfloat16()
    started = time.perf_counter()
    predictor = StudentPredictor.from_results(Path(spec["weights"]), options.pop("mode"), device=spec["device"],
                                              num_threads=spec.get("threads"), **options)
    if precision == "int8":
        from flare_core.nnunet.onnx_quantize import quantized_artifact
        from flare_core.nnunet.onnx_runner import OnnxWindowRunner

        predictor._runner = OnnxWindowRunner(quantized_artifact(Path(spec["int8_path"])), predictor.num_threads)
        predictor.backend = "onnx-int8"
    loaded = time.perf_counter()
    result = predictor.predict_case(Path(spec["image"]), spec["case_id"], Path(spec["output"]))
    finished = time.perf_counter()
    return {
        **result.summary(),
        **extra,
        "bench_mode": variant,
        "seconds": finished - started,
        "load_seconds": loaded - started,
        "predict_seconds": finished - loaded,
        "import_seconds": imported - _STARTED,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak_rss_bytes(),
        "threads": predictor.num_threads,
        "steps": [vars(step) for step in result.step_trace] if result.step_trace else [],
    }


def run_task(spec: dict[str, Any], report: Path) -> dict[str, Any]:
    """Run one task (predict / train / prepare) in a fresh interpreter."""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec),
                    "--report", str(report)], check=True)
    row = json.loads(report.read_text())
    row["process_seconds"] = time.perf_counter() - started
    return row


def measure(mode: str, case: dict[str, Any], weights: Path, out_dir: Path, device: str,
            threads: int | None, int8_path: Path | None = None) -> dict[str, Any]:
    """Run one (variant, case) in a fresh interpreter."""
    spec = {"task": "predict", "mode": mode, "case_id": case["case_id"], "image": case["image"],
            "weights": str(weights), "output": str(out_dir / mode / f"{case['case_id']}.nii.gz"), "device": device,
            "threads": threads, "int8_path": str(int8_path) if int8_path else None}
    load_before = os.getloadavg()
    row = run_task(spec, out_dir / mode / f"{case['case_id']}.json")
    row["load_average_before"], row["load_average_after"] = load_before, os.getloadavg()
    return row


# --------------------------------------------------------------- scoring and reporting


def score(prediction: Path, truth: Path, case_id: str) -> dict[str, Any]:
    from flare_core import labels
    from flare_core.io import read_label
    from flare_core.metrics import evaluate_case

    gt, geometry = read_label(truth, case_id)
    pred, _ = read_label(prediction, case_id, image_geometry=geometry)
    scores = {s.class_id: s for s in evaluate_case(pred, gt, geometry.spacing_zyx)}
    organ_dsc = sum(scores[c].dsc for c in labels.ORGANS) / len(labels.ORGANS)
    return {"organ_dsc": organ_dsc, "tumor_dsc": scores[labels.TUMOR].dsc,
            "organ_nsd": sum(scores[c].nsd for c in labels.ORGANS) / len(labels.ORGANS),
            "class_dsc": {str(c): s.dsc for c, s in scores.items()}}


def agreement(prediction: Path, reference: Path, case_id: str, num_classes: int = 15) -> dict[str, Any]:
    """Per-class Dice between two label maps of the same case (classes present in either)."""
    import numpy as np

    from flare_core.io import read_label

    ref, geometry = read_label(reference, case_id)
    pred, _ = read_label(prediction, case_id, image_geometry=geometry)
    joint = np.bincount(ref.ravel().astype(np.int64) * num_classes + pred.ravel(),
                        minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    dice, large = {}, {}
    for c in range(1, num_classes):
        both, size = int(joint[c, c]), int(joint[c, :].sum() + joint[:, c].sum())
        if size:
            dice[str(c)] = 2 * both / size
            if joint[c, :].sum() >= LARGE_CLASS_VOXELS:
                large[str(c)] = dice[str(c)]
    foreground = joint[1:, 1:]
    pooled = 2 * float(np.trace(foreground)) / float(joint[1:, :].sum() + joint[:, 1:].sum() or 1)
    return {"class_dice": dice, "min_class_dice": min(dice.values()) if dice else 1.0,
            "mean_class_dice": sum(dice.values()) / len(dice) if dice else 1.0,
            # classes the reference gives at least LARGE_CLASS_VOXELS voxels: a class that
            # one map has as a few stray voxels and the other not at all scores 0 above
            f"min_class_dice_ref_ge_{LARGE_CLASS_VOXELS}_voxels": min(large.values()) if large else 1.0,
            "foreground_dice": pooled,  # all foreground classes pooled (same class counted)
            "reference_voxels": {str(c): int(joint[c, :].sum()) for c in range(1, num_classes)},
            "voxel_agreement": float(np.trace(joint) / joint.sum()),
            "differing_voxels": int(joint.sum() - np.trace(joint))}


def fmt_gb(value: float) -> str:
    return f"{value / 2**30:.2f}Gi"


def table(rows: Sequence[dict[str, Any]]) -> str:
    header = (f"{'case':<15} {'mode':<18} {'seconds':>8} {'load':>6} {'peak RSS':>9} {'windows':>7} "
              f"{'skipped':>7} {'organ DSC':>9} {'tumor DSC':>9} {'agree min':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        agree = r.get("agreement", {}).get("min_class_dice")
        lines.append(f"{r['case_id']:<15} {r['bench_mode']:<18} {r['seconds']:>8.2f} {r['load_seconds']:>6.2f} "
                     f"{fmt_gb(r['peak_rss_bytes']):>9} {r['windows_evaluated']:>7} {r['windows_skipped']:>7} "
                     f"{r['organ_dsc']:>9.4f} {r['tumor_dsc']:>9.4f} "
                     f"{(f'{agree:.4f}' if agree is not None else '-'):>9}")
    return "\n".join(lines)


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    by_mode: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_mode.setdefault(row["bench_mode"], []).append(row)
    keys = ("seconds", "load_seconds", "predict_seconds", "process_seconds", "peak_rss_bytes", "windows_evaluated",
            "windows_skipped", "organ_dsc", "tumor_dsc", "organ_nsd")
    summary = {}
    for mode, group in by_mode.items():
        entry = {f"mean_{k}": sum(r[k] for r in group) / len(group) for k in keys}
        entry.update(cases=len(group), max_seconds=max(r["seconds"] for r in group),
                     max_peak_rss_bytes=max(r["peak_rss_bytes"] for r in group))
        agreements = [r["agreement"] for r in group if "agreement" in r]
        if agreements:
            entry["agreement_reference"] = group[0]["agreement_reference"]
            entry["min_agreement_dice"] = min(a["min_class_dice"] for a in agreements)
            large = f"min_class_dice_ref_ge_{LARGE_CLASS_VOXELS}_voxels"
            if all(large in a for a in agreements):
                entry["min_agreement_dice_large_classes"] = min(a[large] for a in agreements)
                entry["min_agreement_foreground_dice"] = min(a["foreground_dice"] for a in agreements)
            entry["mean_voxel_agreement"] = sum(a["voxel_agreement"] for a in agreements) / len(agreements)
        summary[mode] = entry
    return summary


def ratios(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """stock_nomirror seconds / each variant's seconds, on the case(s) stock ran on."""
    stock = {r["case_id"]: r["seconds"] for r in rows if r["bench_mode"] == "stock_nomirror"}
    out: dict[str, Any] = {}
    for mode in dict.fromkeys(r["bench_mode"] for r in rows):
        same = [stock[r["case_id"]] / r["seconds"] for r in rows if r["bench_mode"] == mode and r["case_id"] in stock]
        if same:
            out[mode] = {"stock_nomirror_over_mode": sum(same) / len(same), "cases": len(same)}
    return out


def judge(summary: dict[str, dict[str, float]], speedups: dict[str, Any]) -> dict[str, Any]:
    """Which variants are kept (organ DSC within 1 point of torch fast) and which targets are met."""
    fast = summary.get("fast", {}).get("mean_organ_dsc")
    kept, rejected, targets = [], [], {}
    for mode, entry in summary.items():
        if mode in ("fast", *STOCK_VARIANTS) or fast is None:
            continue
        delta = entry["mean_organ_dsc"] - fast
        (kept if delta >= -TARGET_DSC_POINTS else rejected).append(
            {"mode": mode, "mean_organ_dsc": entry["mean_organ_dsc"], "delta_vs_fast": delta})
    for mode in FASTEST_CPU_VARIANTS:
        entry = summary.get(mode)
        if entry is None or fast is None:
            continue
        speed = speedups.get(mode, {}).get("stock_nomirror_over_mode")
        targets[mode] = {
            "seconds_le_20": {"max_seconds": entry["max_seconds"], "mean_seconds": entry["mean_seconds"],
                              "met": entry["max_seconds"] <= TARGET_SECONDS},
            "peak_rss_le_4GB": {"max_peak_rss_bytes": entry["max_peak_rss_bytes"],
                                "met": entry["max_peak_rss_bytes"] <= TARGET_RSS_BYTES},
            "organ_dsc_within_1_point_of_torch_fast": {"mean_organ_dsc": entry["mean_organ_dsc"],
                                                       "torch_fast_mean_organ_dsc": fast,
                                                       "delta": entry["mean_organ_dsc"] - fast,
                                                       "met": entry["mean_organ_dsc"] - fast >= -TARGET_DSC_POINTS},
            "speedup_ge_10x_vs_stock_nomirror": {"ratio": speed, "met": speed is not None and speed >= TARGET_SPEEDUP},
        }
        targets[mode]["all_met"] = all(t["met"] for t in targets[mode].values())
    for mode in FLOAT32_VARIANTS + ("bf16_fast", "bf16_fastest", "onnx_int8_fast", "onnx_int8_fastest"):
        entry = summary.get(mode)
        if entry and "min_agreement_dice" in entry:
            targets.setdefault("agreement_ge_0.99", {})[mode] = {
                "min_class_dice": entry["min_agreement_dice"], "reference": entry["agreement_reference"],
                "min_class_dice_large_classes": entry.get("min_agreement_dice_large_classes"),
                "min_foreground_dice": entry.get("min_agreement_foreground_dice"),
                "float32_path": mode in FLOAT32_VARIANTS, "met": entry["min_agreement_dice"] >= TARGET_AGREEMENT}
    return {"kept": kept, "rejected": rejected, "targets": targets,
            "rule": "kept: mean organ DSC >= torch fast's - 0.01 (1 point)", "caveats": caveats(summary)}


def caveats(summary: dict[str, dict[str, float]]) -> list[str]:
    """What limits the reading of this run's figures, found from the figures."""
    notes = []
    fast = summary.get("fast", {}).get("mean_organ_dsc")
    if fast is not None and fast < 0.5:
        notes.append(f"torch fast's mean organ DSC is {fast:.3f}: the model is far from converged, so organ-DSC "
                     "deltas of 1 point say little; the label-map agreements are the sharper test")
    idle = [mode for mode in FASTEST_CPU_VARIANTS if summary.get(mode, {}).get("mean_windows_skipped") == 0]
    if idle:
        notes.append(f"{', '.join(idle)} skipped no window: the FLARE22 skipping rules never fired (the model "
                     "finds foreground in every centre window), so `fastest` gains only from its 3x3 in-plane grid")
    return notes


def cpu_facts() -> dict[str, Any]:
    model, flags = None, set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")
    return {"cpu_model": model, "cpu_flags": {f: f in flags for f in wanted}, "memory_total_bytes": memory,
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}


def environment(device: str) -> dict[str, Any]:
    import torch

    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("onnxruntime", "onnx", "onnxscript", "nnunetv2"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    # The load average says how much other work shared the CPUs during the run.
    return {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
            "cuda": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            **versions, **cpu_facts()}


# --------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="faithful", choices=("faithful", "cpu"))
    parser.add_argument("--modes", nargs="+", choices=ALL_VARIANTS,
                        help="default: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in DEFAULT_MODES.items()))
    parser.add_argument("--cases", type=int, default=2, help="number of phantom cases")
    parser.add_argument("--stock-cases", type=int, help="run the stock variants on the first N cases only "
                        "(default: 1 for --model faithful, every case for --model cpu)")
    parser.add_argument("--size", default="full", choices=("tiny", "full"))
    parser.add_argument("--weights", type=Path, help="nnU-Net results folder of a trained student")
    parser.add_argument("--work", type=Path, help="keeps the trained student, cases and predictions for reuse")
    parser.add_argument("--threads", type=int, help="torch / onnxruntime CPU threads (default: every available CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-cases", type=int, help="default: 5 full-size (faithful), 8 tiny (cpu)")
    parser.add_argument("--train-epochs", type=int, help="default: 8 (faithful), 40 (cpu)")
    parser.add_argument("--train-iterations", type=int, help="per epoch; default: 12 (faithful), 10 (cpu)")
    parser.add_argument("--train-val-iterations", type=int, default=2, help="faithful only")
    parser.add_argument("--train-recipe", default="adamw", choices=("adamw", "flare23"),
                        help="faithful only; see faithful_settings")
    parser.add_argument("--train-threads", type=int, default=2, help="faithful only")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--calibration-windows", type=int, default=8, help="int8 calibration windows")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--log", type=Path, help="human-readable summary (default: --out with .log)")
    parser.add_argument("--rescore", action="store_true",
                        help="recompute agreements and summaries of an existing --out from its label maps")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    faithful = args.model == "faithful"
    args.modes = list(args.modes or DEFAULT_MODES[args.model])
    args.out = args.out or DEFAULT_OUT[args.model]
    args.log = args.log or args.out.with_suffix(".log")
    if args.stock_cases is None:
        args.stock_cases = 1 if faithful else args.cases
    if args.train_cases is None:
        args.train_cases = 5 if faithful else 8
    if args.train_epochs is None:
        args.train_epochs = 8 if faithful else 40
    if args.train_iterations is None:
        args.train_iterations = 12 if faithful else 10
    return args


def ordered_modes(modes: Sequence[str]) -> list[str]:
    """References before the variants compared with them, stock last (the slowest)."""
    first = [m for m in ("fast", "fastest", "fastest_whole") if m in modes]
    rest = [m for m in modes if m not in first and m not in STOCK_VARIANTS]
    return first + rest + [m for m in STOCK_VARIANTS if m in modes]


def run_benchmark(args: argparse.Namespace, work: Path, result: dict[str, Any],
                  save) -> dict[str, Any]:
    modes = ordered_modes(args.modes)
    training_facts: dict[str, Any] | None = None
    if args.weights:
        weights = args.weights
    elif args.model == "faithful":
        training_facts = run_task({"task": "train", "work": str(work / "student_faithful"),
                                   "train_cases": args.train_cases, "train_seed": 100, "epochs": args.train_epochs,
                                   "iterations": args.train_iterations, "val_iterations": args.train_val_iterations,
                                   "recipe": args.train_recipe, "seed": args.seed, "threads": args.train_threads},
                                  work / "reports" / "train.json")
        weights = Path(training_facts["model_folder"])
    else:
        weights = train_cpu_student(work / "student", args.train_cases, args.train_epochs, args.train_iterations)
    result.update(weights=str(weights), training=training_facts)
    save()
    cases = write_bench_cases(work / "cases", args.cases, args.size)
    needs_onnx = any(m.startswith("onnx") for m in modes)
    needs_int8 = any(PRECISION_VARIANTS.get(m, {}).get("precision") == "int8" for m in modes)
    int8_path = None
    if needs_onnx:
        calibration = (training_facts or {}).get("calibration_image") or cases[-1]["image"]
        result["exports"] = run_task({"task": "prepare", "weights": str(weights), "int8": needs_int8,
                                      "threads": args.threads, "calibration_image": calibration,
                                      "calibration_windows": args.calibration_windows,
                                      "check_image": cases[0]["image"], "check_windows": 3 if needs_int8 else 0},
                                     work / "reports" / "prepare.json")
        int8_path = weights / "fold_all" / INT8_NAME if needs_int8 else None
        if result["exports"].get("int8_error"):
            skipped = [m for m in modes if PRECISION_VARIANTS.get(m, {}).get("precision") == "int8"]
            result["skipped_modes"] = {m: result["exports"]["int8_error"] for m in skipped}
            modes = [m for m in modes if m not in skipped]
            int8_path = None
        save()
    rows: list[dict[str, Any]] = result["rows"]
    for index, case in enumerate(cases):
        for mode in modes:
            if mode in STOCK_VARIANTS and index >= args.stock_cases:
                continue
            row = measure(mode, case, weights, work / "predictions", args.device, args.threads, int8_path)
            row.update(score(Path(row["output_path"]), Path(case["truth"]), case["case_id"]))
            reference = REFERENCE.get(mode)
            ref_row = next((r for r in rows if r["bench_mode"] == reference and r["case_id"] == case["case_id"]), None)
            if ref_row is not None:
                row["agreement_reference"] = reference
                row["agreement"] = agreement(Path(row["output_path"]), Path(ref_row["output_path"]), case["case_id"])
            rows.append(row)
            log.info("%s %s: %.2f s (load %.2f), peak RSS %.2f GiB, windows %d/%d, organ DSC %.4f, tumor DSC %.4f%s",
                     case["case_id"], mode, row["seconds"], row["load_seconds"], row["peak_rss_bytes"] / 2**30,
                     row["windows_evaluated"], row["windows_skipped"], row["organ_dsc"], row["tumor_dsc"],
                     f", agreement min {row['agreement']['min_class_dice']:.4f}" if "agreement" in row else "")
            result["summary"] = summarize(rows)
            result["ratio_to_stock"] = ratios(rows)
            result["verdict"] = judge(result["summary"], result["ratio_to_stock"])
            save()
    log.info("student inference\n%s", table(rows))
    return result


def summary_text(result: dict[str, Any]) -> str:
    env = result.get("environment", {})
    lines = [f"bench_student_inference ({result.get('model')} model) - {result.get('command')}",
             f"machine: {env.get('cpu_model')}, {env.get('usable_cpus')} usable CPUs, flags {env.get('cpu_flags')}",
             f"torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, nnunetv2 {env.get('nnunetv2')}",
             f"load average before {env.get('load_average')}, after {result.get('load_average_after')}",
             f"wall minutes: {result.get('wall_minutes')}"]
    training = result.get("training")
    if training:
        lines.append(f"training: {training['recipe']} recipe, {training['epochs']} epochs x "
                     f"{training['iterations_per_epoch']} iterations = {training['iterations']} iterations on "
                     f"{training['train_cases']} full-size cases, {training['training_minutes']:.1f} min "
                     f"(threads {training['threads']}, seed {training['seed']}), final pseudo-Dice "
                     f"{training['final_pseudo_dice']:.3f}, "
                     f"plan+preprocess {training['plan_and_preprocess_seconds']:.0f} s"
                     f"{' (reused)' if training['reused'] else ''}")
    exports = result.get("exports")
    if exports:
        lines.append(f"onnx export: {exports.get('export_seconds')} s (made now: {exports.get('onnx_exported_now')})")
        if exports.get("int8"):
            lines.append(f"int8 quantization: {exports['int8'].get('seconds')} s on "
                         f"{exports['int8'].get('calibration_windows')} windows "
                         f"(reused: {exports['int8'].get('reused')})")
        if exports.get("window_check"):
            lines.append(f"window check vs torch fp32: {json.dumps(exports['window_check']['vs_torch_fp32'])}")
    lines += ["", table(result.get("rows", [])), "", "per-mode means:"]
    for mode, s in result.get("summary", {}).items():
        ratio = result.get("ratio_to_stock", {}).get(mode, {}).get("stock_nomirror_over_mode")
        lines.append(f"  {mode:<18} {s['mean_seconds']:8.2f} s (max {s['max_seconds']:.2f}), peak RSS "
                     f"{fmt_gb(s['max_peak_rss_bytes'])} max, windows {s['mean_windows_evaluated']:.1f} run / "
                     f"{s['mean_windows_skipped']:.1f} skipped, organ DSC {s['mean_organ_dsc']:.4f}, tumor DSC "
                     f"{s['mean_tumor_dsc']:.4f}"
                     + (f", agreement vs {s['agreement_reference']}: min class Dice {s['min_agreement_dice']:.4f}"
                        if "min_agreement_dice" in s else "")
                     + (f" (classes >= {LARGE_CLASS_VOXELS} reference voxels "
                        f"{s['min_agreement_dice_large_classes']:.4f}, "
                        f"pooled foreground {s['min_agreement_foreground_dice']:.4f})"
                        if "min_agreement_dice_large_classes" in s else "")
                     + (f", stock/this {ratio:.2f}x" if ratio else ""))
    verdict = result.get("verdict")
    if verdict:
        lines += ["", f"kept ({verdict['rule']}): " + ", ".join(f"{k['mode']} ({k['delta_vs_fast']:+.4f})"
                                                                for k in verdict["kept"]),
                  "rejected: " + (", ".join(f"{k['mode']} ({k['delta_vs_fast']:+.4f})" for k in verdict["rejected"])
                                  or "none"),
                  "caveats: " + ("; ".join(verdict.get("caveats", [])) or "none"),
                  "targets:"]
        for mode, t in verdict["targets"].items():
            lines.append(f"  {mode}: {json.dumps(t)}")
    return "\n".join(lines) + "\n"


def rescore(args: argparse.Namespace) -> int:
    """Recompute the label-map agreements, summaries, ratios and verdict of an
    existing --out JSON from the label maps still on disk (nothing is timed
    again; the timings, memory and DSC rows are kept as measured)."""
    from result_files import write_log, write_result

    result = json.loads(args.out.read_text())
    rows = result["rows"]
    for row in rows:
        reference = REFERENCE.get(row["bench_mode"])
        ref_row = next((r for r in rows if r["bench_mode"] == reference and r["case_id"] == row["case_id"]), None)
        if ref_row is not None:
            row["agreement_reference"] = reference
            row["agreement"] = agreement(Path(row["output_path"]), Path(ref_row["output_path"]), row["case_id"])
    result["summary"] = summarize(rows)
    result["ratio_to_stock"] = ratios(rows)
    result["verdict"] = judge(result["summary"], result["ratio_to_stock"])
    result.setdefault("rescored", []).append(
        {"at": time.strftime("%Y-%m-%d %H:%M:%S"), "what": "agreement, summary, ratio_to_stock, verdict",
         "command": "python bench/bench_student_inference.py --rescore " + " ".join(
             a for a in sys.argv[1:] if a != "--rescore")})
    write_result(result, args.out, indent=2, sort_keys=True)
    write_log(summary_text(result), args.log)
    log.info("rescored %s and %s", args.out, args.log)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.worker:
        spec = json.loads(args.worker)
        task = spec.get("task", "predict")
        handler = {"predict": run_worker, "train": train_faithful_student, "prepare": prepare_exports}[task]
        args.report.write_text(json.dumps(handler(spec)))
        return 0
    if args.rescore:
        return rescore(args)
    from result_files import write_log, write_result

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_student_"))
    result: dict[str, Any] = {
        "benchmark": "student_inference", "model": args.model, "size": args.size, "modes": ordered_modes(args.modes),
        "cases": args.cases, "stock_cases": args.stock_cases, "environment": environment(args.device),
        "command": "python bench/bench_student_inference.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "targets": {"fastest_seconds": TARGET_SECONDS, "peak_rss_bytes": TARGET_RSS_BYTES,
                    "organ_dsc_points": TARGET_DSC_POINTS, "speedup_vs_stock_nomirror": TARGET_SPEEDUP,
                    "float_agreement_dice": TARGET_AGREEMENT},
        "rows": [],
    }
    started = time.perf_counter()

    def save() -> None:
        result["load_average_after"] = os.getloadavg()
        result["wall_minutes"] = (time.perf_counter() - started) / 60
        write_result(result, args.out, indent=2, sort_keys=True)
        write_log(summary_text(result), args.log)

    try:
        run_benchmark(args, work, result, save)
    finally:
        save()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    log.info("wrote %s and %s", args.out, args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
