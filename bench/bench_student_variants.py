"""Which student training gives the most held-out DSC for the demo's seconds?

    python bench/bench_method.py --no-ablation --keep RUN   # once: data, fused labels, held-out set
    python bench/bench_student_variants.py --run RUN --method RUN_METHOD_JSON --out bench/results/student_variants.json

Retrains the `cpu` student on the organ-fused dataset a kept `bench_method.py`
run exported (its `work/nnUNet_raw` / `nnUNet_preprocessed`, copied to a
scratch work root per variant; the run is not touched), once per variant
below, with the demo's seed, and lets each predict the run's extended held-out
set (`RUN/held_out`, made by `bench_method.py --held-out`) in the demo's
`fastest` mode. Reports per-class DSC / NSD, per-case tumor DSC and training
seconds beside the demo's own student and the held-out cases' organ
pseudo-labels (both scored by bench_method.py, read from its --method file).
Variant `complete_ground_truth_labels` is the ceiling: the same student on the
training cases' complete ground truth instead of their fused labels.
Variant `demo_student_continued_to_twice_the_epochs` continues the run's own
trained student from its final checkpoint, as raising the student's epochs
after a demo does.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_method import predict_folder, score_folder  # noqa: E402
from flare_core.layout import DataLayout  # noqa: E402
from flare_core.nnunet.profiles import CPU  # noqa: E402
from flare_core.nnunet.settings import StudentSettings  # noqa: E402
from flare_core.nnunet.dataset_export import ExportCase, export_student_dataset  # noqa: E402
from flare_core.nnunet.training import model_folder, plan_and_preprocess, train  # noqa: E402
from variant_runs import measure_variants  # noqa: E402

log = logging.getLogger("bench.student_variants")
DATASET = "Dataset502_FLARE23Student"
DEMO_SEED = 0  # flare_assets.resources' default run seed
_CPU_TRAINING = CPU.student.training
GROUND_TRUTH = "complete_ground_truth_labels"
CONTINUED = "demo_student_continued_to_twice_the_epochs"

# name -> (training changes, plan changes) relative to the cpu profile's student
VARIANTS: dict[str, tuple[dict, dict]] = {
    "cpu": ({}, {}),
    # One case per iteration costs half the seconds (0.27 vs 0.55 s for the
    # network's step here), so twice the iterations fit the same time.
    "batch_1_twice_the_iterations": ({"iterations_per_epoch": 2 * _CPU_TRAINING.iterations_per_epoch},
                                     {"batch_size": 1}),
    "constant_ce_weights": ({"ce_class_weight_anneal": False}, {}),
    # The former default, against today's 60 epochs ("cpu"; student_variants_train24.json
    # calls it "60_epochs": it was measured while 48 was the default).
    "48_epochs": ({"num_epochs": 48}, {}),
    # Is the student held back by the demo's training budget? Twice the epochs, twice the minutes.
    "twice_the_epochs": ({"num_epochs": 2 * _CPU_TRAINING.num_epochs}, {}),
    # What a user gets by raising the student's epochs after the demo (FLARE_STUDENT_EPOCHS):
    # the demo's trained student continued from its final checkpoint to twice the epochs.
    CONTINUED: ({"num_epochs": 2 * _CPU_TRAINING.num_epochs}, {}),
    # A share of the foreground patches centred on the tumor (nnU-Net: ~1 in 14).
    "tumor_focus_half": ({"focus_class": 14, "focus_share": 0.5}, {}),
    # ... on one lesion drawn uniformly, so small kidney / pancreas lesions are centres too.
    "tumor_focus_half_per_lesion": ({"focus_class": 14, "focus_share": 0.5, "focus_per_lesion": True}, {}),
    # The ceiling: the same student trained on the complete ground truth of the
    # same training cases instead of their organ-fused labels (a perfect teacher
    # and perfect organ pseudo-labels). Planned and preprocessed afresh.
    GROUND_TRUTH: ({}, {}),
    # Does tumor-focused sampling raise that ceiling?
    f"{GROUND_TRUTH}_tumor_focus_half_per_lesion": ({"focus_class": 14, "focus_share": 0.5,
                                                    "focus_per_lesion": True}, {}),
}


def variant_settings(training: dict, plan: dict) -> StudentSettings:
    student = CPU.student
    return replace(student, training=replace(student.training, **training), plan=replace(student.plan, **plan))


def run_variant(name: str, training: dict, plan: dict, run: Path, scratch: Path) -> dict:
    """Plans are edited, not re-planned: the batch size lives in the plans and
    every other value stays the run's, so only the named change differs."""
    work = scratch / name
    settings = variant_settings(training, plan)
    start = time.perf_counter()
    if name.startswith(GROUND_TRUTH):
        dataset = _export_ground_truth(run, work, settings)
    else:
        dataset = DATASET
        for sub in ("nnUNet_raw", "nnUNet_preprocessed") + (("nnUNet_results",) if name == CONTINUED else ()):
            shutil.copytree(run / "work" / sub / DATASET, work / sub / DATASET)
    if "batch_size" in plan:
        _set_batch_size(work / "nnUNet_preprocessed" / DATASET, plan["batch_size"])
    summary = train(work, dataset, settings, "cpu", seed=DEMO_SEED)
    seconds = time.perf_counter() - start
    held_out = DataLayout(run / "held_out" / "data")
    predicted = scratch / f"{name}_predictions"
    predict_folder(model_folder(work, dataset, settings), held_out, predicted, "fastest")
    scores = score_folder(predicted, held_out)
    per_class = scores["per_class"]
    log.info("%s: organ DSC %.4f, tumor DSC %.4f on %d cases, %.0f s", name, per_class["organs mean"]["dsc"],
             per_class["tumor"]["dsc"], scores["cases"], seconds)
    return {"training_changes": training, "plan_changes": plan, "train_seconds": round(seconds, 1),
            "resumed_from_epoch": summary.resumed_from_epoch, "epochs": summary.epochs_completed,
            "final_pseudo_dice": round(summary.final_pseudo_dice, 3), "fastest": scores}


def _export_ground_truth(run: Path, work: Path, settings: StudentSettings) -> str:
    """The run's training cases with their complete ground truth as the student's dataset, planned."""
    data = DataLayout(run / "data")
    cases = [ExportCase(p.name[: -len("_0000.nii.gz")], p, data.ground_truth(p.name[: -len("_0000.nii.gz")]))
             for p in sorted(data.folder("train_images").glob("*_0000.nii.gz"))]
    exported = export_student_dataset(cases, work / "nnUNet_raw", dataset_id=504, name="FLARE23StudentGroundTruth")
    plan_and_preprocess(work, exported.dataset_name, settings, profile_name=CPU.name)
    return exported.dataset_name


def _set_batch_size(preprocessed: Path, batch_size: int) -> None:
    for plans_file in preprocessed.glob("*Plans*.json"):
        plans = json.loads(plans_file.read_text())
        for configuration in plans["configurations"].values():
            configuration["batch_size"] = batch_size
        plans_file.write_text(json.dumps(plans, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a folder kept by bench_method.py --keep")
    parser.add_argument("--method", type=Path, required=True, help="bench_method.py's output for that run")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "student_variants.json")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                        help="the variants to measure (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    method = json.loads(args.method.read_text())
    held_out = method["held_out_extended"]
    results = {"run": args.run.name, "seed": method["seed"], "held_out_cases": held_out["cases"],
               "demo_student_fastest": held_out["student_fastest"],
               "organ_pseudo_labels": held_out["organ_pseudo_labels"], "variants": {}}
    measure_variants(args.out, results,
                     lambda earlier: (earlier.get("run"), earlier.get("seed")) == (results["run"], results["seed"]),
                     args.variants, lambda name, scratch: run_variant(name, *VARIANTS[name], args.run, scratch),
                     "flare-student-variants-")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
