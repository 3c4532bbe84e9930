"""Where do the CPU teacher's false tumors land, and does any training change move them?

    python bench/bench_method.py --no-ablation --keep RUN   # once: data + tumor dataset
    python bench/bench_teacher_variants.py --run RUN --out bench/results/teacher_variants.json

Retrains the `cpu` teacher on the tumor dataset a kept `bench_method.py` run
exported (its `work/nnUNet_raw` / `nnUNet_preprocessed`, copied to a scratch
work root per variant, so the run itself is not touched), once per variant
below, and lets each predict the training cases that do not annotate tumors
and every inference case. Against the complete ground truth it reports the
pooled voxel precision / recall, how many tumor-free cases stay clean, and,
for every marked component, its size and the ground-truth class most of its
voxels belong to (14 = a real lesion, 9 = the gallbladder, ...).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from flare_core import labels as L  # noqa: E402
from flare_core.io import read_label  # noqa: E402
from flare_core.label_quality import TumorDetection  # noqa: E402
from flare_core.layout import DataLayout  # noqa: E402
from flare_core.nnunet.profiles import CPU  # noqa: E402
from flare_core.nnunet.settings import TeacherSettings  # noqa: E402
from flare_core.nnunet.training import model_folder, plan_and_preprocess, train  # noqa: E402
from flare_core.nnunet.tumor_inference import TumorPredictor  # noqa: E402
from variant_runs import measure_variants  # noqa: E402

log = logging.getLogger("bench.teacher_variants")
DATASET = "Dataset501_FLARE23Tumor"

# name -> (training changes, plan changes) relative to the cpu profile's teacher
VARIANTS: dict[str, tuple[dict, dict]] = {
    "cpu": ({}, {}),
    "ce_weight_power_0.25": ({"ce_class_weight_power": 0.25}, {}),
    "plain_ce": ({"ce_class_weight_power": 0.0}, {}),
    "ce_weights_annealed": ({"ce_class_weight_anneal": True}, {}),
    "twice_the_epochs": ({"num_epochs": 2 * CPU.teacher.training.num_epochs}, {}),
    "twice_the_width": ({}, {"base_features": 16, "max_features": 128}),
    "four_times_the_epochs": ({"num_epochs": 4 * CPU.teacher.training.num_epochs}, {}),
    "no_elastic_deformation": ({"elastic_probability": 0.0}, {}),
    "no_elastic_twice_the_epochs": ({"elastic_probability": 0.0,
                                     "num_epochs": 2 * CPU.teacher.training.num_epochs}, {}),
    "batch_8": ({}, {"batch_size": 8}),
    "five_stages": ({}, {"n_stages": 5, "max_features": 128}),
    "lr_1e-3": ({"initial_lr": 1e-3}, {}),
    "half_the_patches_on_tumor": ({"oversample_foreground": 0.5}, {}),
    "a_tenth_of_the_patches_on_tumor": ({"oversample_foreground": 0.1}, {}),
}


def variant_settings(training: dict, plan: dict) -> TeacherSettings:
    teacher = CPU.teacher
    return replace(teacher, training=replace(teacher.training, **training), plan=replace(teacher.plan, **plan))


def scored_cases(run: Path) -> list[tuple[str, Path, Path]]:
    """(case, image, complete ground truth): training cases the run pseudo-labelled, then inference cases."""
    data = DataLayout(run / "data")
    pseudo_labelled = [p.name[: -len(".nii.gz")] for p in sorted((run / "work" / "tumor_pseudo_labels").glob("*.nii.gz"))]
    out = [(case, data.train_image(case), data.ground_truth(case)) for case in pseudo_labelled]
    for image in sorted(data.folder("infer_images").glob("*_0000.nii.gz")):
        case = image.name[: -len("_0000.nii.gz")]
        out.append((case, image, data.infer_label(case)))
    return out


def marked_components(mask: np.ndarray, truth: np.ndarray) -> list[list[int]]:
    """[size, ground-truth class under most of it] per face-connected component of `mask`."""
    components, count = ndimage.label(mask)
    rows = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        inside = components[box] == index
        rows.append([int(inside.sum()), int(np.bincount(truth[box][inside], minlength=L.TUMOR + 1).argmax())])
    return rows


def run_variant(name: str, training: dict, plan: dict, run: Path, scratch: Path) -> dict:
    work = scratch / name
    for sub in ("nnUNet_raw", "nnUNet_preprocessed"):
        shutil.copytree(run / "work" / sub / DATASET, work / sub / DATASET)
    settings = variant_settings(training, plan)
    start = time.perf_counter()
    plan_and_preprocess(work, DATASET, settings)
    summary = train(work, DATASET, settings, "cpu", seed=0)
    seconds = time.perf_counter() - start
    predictor = TumorPredictor.from_results(model_folder(work, DATASET, settings), "cpu")
    pooled, clean, tumor_free, cases = TumorDetection(cases=0), 0, 0, {}
    for case, image, truth_path in scored_cases(run):
        truth, _ = read_label(truth_path, case)
        marked = predictor.predict_case(image, case)[0] > 0
        real = truth == L.TUMOR
        pooled += TumorDetection.of(marked, real)
        if not real.any():
            tumor_free, clean = tumor_free + 1, clean + int(not marked.any())
        cases[case] = {"tumor_voxels": int(real.sum()), "marked_components": marked_components(marked, truth)}
    result = {"training_changes": training, "plan_changes": plan, "train_seconds": round(seconds, 1),
              "final_pseudo_dice": round(summary.final_pseudo_dice, 3),
              "voxel_precision": round(pooled.voxel_precision or 0.0, 3),
              "voxel_recall": round(pooled.voxel_recall or 0.0, 3),
              "tumor_free_cases_clean": f"{clean} of {tumor_free}", "cases": cases}
    log.info("%s: precision %.3f recall %.3f, %s tumor-free cases clean, %.0f s", name,
             result["voxel_precision"], result["voxel_recall"], result["tumor_free_cases_clean"], seconds)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a folder kept by bench_method.py --keep")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "teacher_variants.json")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                        help="the variants to measure (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = {"run": args.run.name, "scored_cases": [c for c, _, _ in scored_cases(args.run)], "variants": {}}
    measure_variants(args.out, results, lambda earlier: earlier.get("scored_cases") == results["scored_cases"],
                     args.variants, lambda name, scratch: run_variant(name, *VARIANTS[name], args.run, scratch),
                     "flare-teacher-variants-")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
