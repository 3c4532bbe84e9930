"""Does the method work? The whole demo on a fresh phantom data set, scored.

    python bench/bench_method.py --out bench/results/method.json [--seed 2026]
        [--train 12 --infer 3] [--profile cpu] [--student-epochs N] [--no-ablation] [--held-out 16]

Runs `python -m flare_assets.demo` from an empty Dagster instance on a data
set generated with a seed the tests do not use (the demo's default sizes),
then scores, against the complete ground truth:
- the training labels (label_quality's sources): the organ pseudo-labels,
  the partial labels, the partial-fused and organ-fused labels, the tumor
  pseudo-labels (DSC / NSD per class, tumor precision / recall, lesions
  found per host organ and false lesions by what they really are);
- the student's predictions on the held-out inference cases, in the demo's
  mode (`fastest`) and in `fast`;
- organ pseudo-labels made for the inference cases by the same generator
  that made the training ones (the FLARE22-model stand-in), so the student
  and the labels it learned from are compared on the same held-out cases;
- the same student on an extended held-out set (`--held-out`: the demo's
  inference cases and more from the same generator), in both modes, beside
  those cases' organ pseudo-labels: with 4 cases one tumor-free case's few
  stray voxels move the tumor mean by 0.25;
- the ablation that shows why organ fusion exists: the same student trained
  on the partial-fused labels only, predicting the same cases (the demo's
  inference cases and, with `--held-out`, the extended held-out set).
Seconds per stage come from the demo's own stage report (logged to the
demo's log file) and the whole demo's wall time.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flare_core import labels as L  # noqa: E402
from flare_core import label_quality as quality  # noqa: E402
from flare_core.io import read_geometry, read_label, write_volume  # noqa: E402
from flare_core.layout import DataLayout, WorkLayout  # noqa: E402
from flare_core.metrics import evaluate_case, summarize  # noqa: E402
from flare_core.nnunet.environment import cpu_has_native_bfloat16  # noqa: E402
from flare_core.phantom import organ_pseudo_label  # noqa: E402
from result_files import write_result  # noqa: E402

log = logging.getLogger("bench.method")


def run_demo(data: Path, work: Path, home: Path, profile: str, seed: int, n_train: int, n_infer: int,
             student_epochs: int | None = None) -> dict:
    """The demo as a user runs it, from an empty instance; returns wall seconds and its stage lines."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "FLARE_DATA_ROOT": str(data), "FLARE_WORK_ROOT": str(work),
           "FLARE_PROFILE": profile}
    command = [sys.executable, "-m", "flare_assets.demo", "--seed", str(seed), "--train", str(n_train),
               "--infer", str(n_infer)] + (["--student-epochs", str(student_epochs)] if student_epochs else [])
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.info("demo exited %d after %.0f s", done.returncode, seconds)
    return {"exit_code": done.returncode, "wall_seconds": round(seconds, 1), "console": done.stdout.splitlines(),
            "stderr_tail": done.stderr.splitlines()[-20:]}


def training_label_scores(data: DataLayout, work: WorkLayout) -> dict:
    """label_quality's sources on every training case, averaged per source and class."""
    rows, tumor_detection, lesions = [], [], []
    for image in sorted(data.folder("train_images").glob("*_0000.nii.gz")):
        case = image.name[: -len("_0000.nii.gz")]
        geometry = read_geometry(image, case)
        sources = {
            quality.TUMOR_PSEUDO: _if_file(work.per_case("tumor_pseudo_labels", case)),
            quality.PARTIAL_ONLY: _if_file(data.train_label(case)),
            quality.ORGAN_PSEUDO_ONLY: _if_file(data.organ_pseudo_label(case)),
            quality.PARTIAL_FUSED: _if_file(work.per_case("partial_fused_labels", case)),
            quality.ORGAN_FUSED: _if_file(work.per_case("organ_fused_labels", case)),
        }
        rows += [{**r, "case": case} for r in quality.score_sources(case, data.ground_truth(case), geometry, sources)]
        if sources[quality.TUMOR_PSEUDO] is not None:
            detection, breakdown = quality.detect_tumors(case, data.ground_truth(case), geometry,
                                                         sources[quality.TUMOR_PSEUDO])
            tumor_detection.append(detection)
            lesions.append(breakdown)
    return {"per_source": quality.source_table(rows), "per_class": quality.class_table(rows),
            "tumor_pseudo_label_voxels": _pooled_detection(tumor_detection),
            "tumor_pseudo_label_lesions": quality.pool_breakdowns(lesions)}


def _pooled_detection(counts: list[quality.TumorDetection]) -> dict:
    pooled = sum(counts, quality.TumorDetection(cases=0))
    return {"cases": pooled.cases, "precision": _rounded(pooled.voxel_precision), "recall": _rounded(pooled.voxel_recall)}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def score_folder(predictions: Path, data: DataLayout) -> dict:
    """DSC / NSD of every prediction in `predictions` against the inference ground truth."""
    rows, lesions = [], []
    for path in sorted(predictions.glob("*.nii.gz")):
        case = path.name[: -len(".nii.gz")]
        pred, geometry = read_label(path, case)
        truth, _ = read_label(data.infer_label(case), case, image_geometry=geometry)
        rows += [{**s.__dict__, "case": case} for s in evaluate_case(pred, truth, geometry.spacing_zyx)]
        lesions.append(quality.lesion_breakdown(pred == L.TUMOR, truth))
    return {**_summary(rows), "lesions": quality.pool_breakdowns(lesions),
            "tumor_dsc_per_case": {r["case"]: round(float(r["dsc"]), 4) for r in rows if r["class_id"] == L.TUMOR}}


def _summary(rows: list[dict]) -> dict:
    frame = summarize(rows)
    return {"cases": len({r["case"] for r in rows}),
            "per_class": {str(name): {"dsc": round(float(r["dsc"]), 4), "nsd": round(float(r["nsd"]), 4)}
                          for name, r in frame.iterrows()}}


def inference_organ_pseudo_labels(data: DataLayout, out: Path, seed: int) -> Path:
    """Organ pseudo-labels of the inference cases, by the generator of the training ones."""
    out.mkdir(parents=True, exist_ok=True)
    for index, truth_path in enumerate(sorted(data.folder("infer_labels").glob("*.nii.gz"))):
        case = truth_path.name[: -len(".nii.gz")]
        truth, geometry = read_label(truth_path, case)
        write_volume(organ_pseudo_label(truth, np.random.default_rng([seed, 99, index])), geometry, out / truth_path.name)
    return out


def predict_folder(model_folder: Path, data: DataLayout, out: Path, mode: str) -> dict:
    from flare_core.nnunet.efficient_predictor import StudentPredictor

    out.mkdir(parents=True, exist_ok=True)
    predictor = StudentPredictor.from_results(model_folder, mode=mode, device="cpu")
    seconds = []
    for image in sorted(data.folder("infer_images").glob("*_0000.nii.gz")):
        case = image.name[: -len("_0000.nii.gz")]
        result = predictor.predict_case(image, case, out / f"{case}.nii.gz")
        seconds.append(result.seconds)
    return {"mode": mode, "seconds_per_case": [round(s, 2) for s in seconds]}


def extended_held_out(model_folder: Path, root: Path, seed: int, size: str, n_cases: int) -> dict:
    """The student on `n_cases` held-out cases of the same generator (the demo's
    inference cases first, then more), so that one case's few stray tumor voxels
    do not move the tumor mean by a quarter, as they do on the demo's 4 cases."""
    from flare_core.phantom import generate_dataset

    data = DataLayout(root / "data")
    generate_dataset(data.root, size=size, seed=seed, n_train=0, n_infer=n_cases)
    out = {"cases": n_cases}
    for mode in ("fastest", "fast"):
        out[f"student_{mode}_run"] = predict_folder(model_folder, data, root / f"pred_{mode}", mode)
        out[f"student_{mode}"] = score_folder(root / f"pred_{mode}", data)
    out["organ_pseudo_labels"] = score_folder(inference_organ_pseudo_labels(data, root / "organ_pseudo", seed), data)
    return out


def partial_fused_only_student(data: DataLayout, work: WorkLayout, profile: str) -> tuple[Path, float]:
    """The ablation: the same student, trained on the partial-fused labels (no organ fusion)."""
    from flare_core.nnunet.dataset_export import ExportCase, export_student_dataset
    from flare_core.nnunet.profiles import get_profile
    from flare_core.nnunet.training import plan_and_preprocess, train

    started = time.perf_counter()
    cases = [ExportCase(p.name[: -len(".nii.gz")], data.train_image(p.name[: -len(".nii.gz")]), p)
             for p in sorted(work.artifact_dir("partial_fused_labels").glob("*.nii.gz"))]
    exported = export_student_dataset(cases, work.nnunet_raw, dataset_id=503, name="FLARE23StudentPartialFusedOnly")
    settings = get_profile(profile).student
    plan_and_preprocess(work, exported.dataset_name, settings, profile_name=profile)
    summary = train(work, exported.dataset_name, settings, "cpu", seed=0)
    return summary.model_folder, time.perf_counter() - started


def unannotated_class_comparison(organ_fused: dict, partial_fused_only: dict) -> dict:
    """Per class: the student from organ-fused labels vs the one from partial-fused labels only
    (two `score_folder` results on the same cases, both in `fast` mode).

    Every organ is unannotated in some training cases (partial labels, unlabelled
    cases); where a case does not annotate a class, the partial-fused label calls
    it background, which is what organ fusion repairs.
    """
    fused, partial = organ_fused["per_class"], partial_fused_only["per_class"]
    rows = {name: {"organ_fused_student_dsc": fused[name]["dsc"], "partial_fused_only_student_dsc": partial[name]["dsc"]}
            for name in fused if name in partial}
    organs = [L.CLASS_NAMES[c] for c in L.ORGANS]
    return {"per_class": rows, "organ_fused_wins_on": sorted(n for n in organs if n in rows and
                                                             rows[n]["organ_fused_student_dsc"] >
                                                             rows[n]["partial_fused_only_student_dsc"])}


def _write(results: dict, out: Path) -> None:
    write_result(results, out)


def _if_file(path: Path) -> Path | None:
    return path if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "method.json")
    parser.add_argument("--seed", type=int, default=2026, help="data set seed (the tests use 0)")
    parser.add_argument("--train", type=int, default=None, help="training cases (default: the demo's)")
    parser.add_argument("--infer", type=int, default=None, help="inference cases (default: the demo's)")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--student-epochs", type=int, default=None,
                        help="the demo's --student-epochs (default: the profile's)")
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="keep data and work here instead of a temp folder")
    parser.add_argument("--held-out", type=int, default=16,
                        help="cases in the extended held-out set (the demo's inference cases and more; 0: none)")
    parser.add_argument("--scores-only", action="store_true",
                        help="score an earlier run kept with --keep (its demo figures are read from --out)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from flare_assets.demo import parse_args as demo_defaults

    defaults = demo_defaults([])
    n_train, n_infer = args.train or defaults.train, args.infer or defaults.infer
    root = args.keep or Path(tempfile.mkdtemp(prefix="flare-bench-method-"))
    data_root, work_root = root / "data", root / "work"
    results: dict = {"seed": args.seed, "profile": args.profile, "train_cases": n_train, "infer_cases": n_infer,
                     "student_epochs": args.student_epochs or "the profile's",
                     "machine": {"cpus": os.cpu_count(), "native_bfloat16": cpu_has_native_bfloat16(),
                                 "load_before": os.getloadavg()}}
    if args.scores_only:
        results["demo"] = json.loads(args.out.read_text())["demo"]
    else:
        results["demo"] = run_demo(data_root, work_root, root / "dagster_home", args.profile, args.seed, n_train,
                                   n_infer, args.student_epochs)
        results["machine"]["load_after_demo"] = os.getloadavg()
        _write(results, args.out)  # the demo's figures are kept even if scoring fails
    data, work = DataLayout(data_root), WorkLayout(work_root)
    results["training_labels"] = training_label_scores(data, work)
    results["student_fastest"] = score_folder(work.artifact_dir("predictions"), data)
    model = next(work.nnunet_results.glob("Dataset502_*/*__3d_fullres"))
    results["student_fast_run"] = predict_folder(model, data, root / "pred_fast", "fast")
    results["student_fast"] = score_folder(root / "pred_fast", data)
    results["inference_organ_pseudo_labels"] = score_folder(
        inference_organ_pseudo_labels(data, root / "infer_organ_pseudo", args.seed), data)
    _write(results, args.out)
    if args.held_out:
        results["held_out_extended"] = extended_held_out(model, root / "held_out", args.seed, defaults.size,
                                                          args.held_out)
        _write(results, args.out)
    if not args.no_ablation:
        ablation_model, seconds = partial_fused_only_student(data, work, args.profile)
        predict_folder(ablation_model, data, root / "pred_partial_only", "fast")
        results["ablation_partial_fused_only_fast"] = {**score_folder(root / "pred_partial_only", data),
                                                       "train_seconds": round(seconds, 1)}
        results["ablation_on_unannotated_classes"] = unannotated_class_comparison(
            results["student_fast"], results["ablation_partial_fused_only_fast"])
        if args.held_out:  # the same comparison on the extended held-out set, less at the mercy of 4 cases
            extended, held_out = results["held_out_extended"], root / "held_out"
            held_out_data, predicted = DataLayout(held_out / "data"), held_out / "pred_partial_only"
            predict_folder(ablation_model, held_out_data, predicted, "fast")
            extended["ablation_partial_fused_only_fast"] = score_folder(predicted, held_out_data)
            extended["ablation_on_unannotated_classes"] = unannotated_class_comparison(
                extended["student_fast"], extended["ablation_partial_fused_only_fast"])
    _write(results, args.out)
    log.info("wrote %s (work kept in %s)", args.out, root)
    return 0 if results["demo"]["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
