"""Where do the CPU teacher's false tumors land, and does any training change move them?

    python bench/bench_method.py --no-ablation --keep RUN   # once: data + tumor dataset
    python bench/bench_teacher_variants.py --run RUN --out bench/results/teacher_variants.json

Retrains the `cpu` teacher on the tumor dataset a kept `bench_method.py` run
exported (its `work/nnUNet_raw` / `nnUNet_preprocessed`, copied to a scratch
work root per variant, so the run itself is not touched), once per variant
below, and lets each predict the training cases that do not annotate tumors
and every inference case. Against the complete ground truth it reports the
pooled voxel precision / recall, how many tumor-free cases stay clean, the
true lesions found per host organ (a lesion counts as found when any of its
voxels is marked; also on the cases the teacher trained on), and, for every
marked component, its size and the ground-truth class most of its
voxels belong to (14 = a real lesion, 9 = the gallbladder, ...).
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

import numpy as np
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from flare_core import labels as L  # noqa: E402
from flare_core.io import read_ct, read_label  # noqa: E402
from flare_core.label_quality import TumorDetection, lesion_breakdown, pool_breakdowns  # noqa: E402
from flare_core.layout import DataLayout  # noqa: E402
from flare_core.nnunet.profiles import CPU  # noqa: E402
from flare_core.nnunet.settings import TeacherSettings  # noqa: E402
from flare_core.nnunet.training import model_folder, plan_and_preprocess, train  # noqa: E402
from flare_core.nnunet.tumor_inference import TumorPredictor  # noqa: E402
from variant_runs import measure_variants  # noqa: E402

log = logging.getLogger("bench.teacher_variants")
DATASET = "Dataset501_FLARE23Tumor"

# name -> changes to the cpu profile's teacher: "training" / "plan" / "attention"
# settings, and "intensity": "annotated_foreground" to clip and z-score with
# statistics of every annotated voxel of the tumor cases' partial labels
# instead of nnU-Net's (the binary task's foreground: the tumor voxels alone).
_EPOCHS = CPU.teacher.training.num_epochs
VARIANTS: dict[str, dict] = {
    "cpu": {},
    "ce_weight_power_0.25": {"training": {"ce_class_weight_power": 0.25}},
    "plain_ce": {"training": {"ce_class_weight_power": 0.0}},
    "ce_weights_annealed": {"training": {"ce_class_weight_anneal": True}},
    "twice_the_epochs": {"training": {"num_epochs": 2 * _EPOCHS}},
    "twice_the_width": {"plan": {"base_features": 16, "max_features": 128}},
    "four_times_the_epochs": {"training": {"num_epochs": 4 * _EPOCHS}},
    "no_elastic_deformation": {"training": {"elastic_probability": 0.0}},
    "no_elastic_twice_the_epochs": {"training": {"elastic_probability": 0.0, "num_epochs": 2 * _EPOCHS}},
    "batch_8": {"plan": {"batch_size": 8}},
    "five_stages": {"plan": {"n_stages": 5, "max_features": 128}},
    "lr_1e-3": {"training": {"initial_lr": 1e-3}},
    "half_the_patches_on_tumor": {"training": {"oversample_foreground": 0.5}},
    "a_tenth_of_the_patches_on_tumor": {"training": {"oversample_foreground": 0.1}},
    "patch_48_batch_8": {"plan": {"patch_size": (48, 48), "batch_size": 8}},
    "no_non_local_block": {"attention": {"non_local": False}},
    "intensity_of_annotated_foreground": {"intensity": "annotated_foreground"},
    # Tumor-centred patches on one lesion drawn uniformly instead of a uniform tumor voxel.
    "tumor_patches_per_lesion": {"training": {"focus_class": 1, "focus_share": 1.0, "focus_per_lesion": True}},
    "half_the_patches_on_tumor_per_lesion": {"training": {"oversample_foreground": 0.5, "focus_class": 1,
                                                          "focus_share": 1.0, "focus_per_lesion": True}},
}


def variant_settings(variant: dict) -> TeacherSettings:
    teacher = CPU.teacher
    return replace(teacher, training=replace(teacher.training, **variant.get("training", {})),
                   plan=replace(teacher.plan, **variant.get("plan", {})),
                   attention=replace(teacher.attention, **variant.get("attention", {})))


def annotated_foreground_intensities(run: Path, cases: list[str]) -> dict:
    """nnU-Net's intensity statistics (its own per-case sampling, pooled as its
    fingerprint pools them), over every annotated voxel of `cases`' partial labels."""
    data, samples = DataLayout(run / "data"), []
    for case in cases:
        image, _ = read_ct(data.train_image(case), case)
        annotated = read_label(data.train_label(case), case)[0]
        sampled, _ = DatasetFingerprintExtractor.collect_foreground_intensities(annotated[None], image[None])
        samples.append(np.asarray(sampled[0], dtype=np.float64))
    values = np.concatenate(samples)
    return {"max": float(values.max()), "mean": float(values.mean()), "median": float(np.median(values)),
            "min": float(values.min()), "percentile_00_5": float(np.percentile(values, 0.5)),
            "percentile_99_5": float(np.percentile(values, 99.5)), "std": float(values.std())}


def use_intensities(work: Path, properties: dict) -> None:
    """Put `properties` into the copied fingerprint and drop the data preprocessed with the old ones."""
    pre = work / "nnUNet_preprocessed" / DATASET
    fingerprint = json.loads((pre / "dataset_fingerprint.json").read_text())
    fingerprint["foreground_intensity_properties_per_channel"] = {"0": properties}
    (pre / "dataset_fingerprint.json").write_text(json.dumps(fingerprint, indent=1))
    for folder in pre.glob("*_2d"):
        shutil.rmtree(folder)


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


def run_variant(name: str, variant: dict, run: Path, scratch: Path) -> dict:
    work = scratch / name
    for sub in ("nnUNet_raw", "nnUNet_preprocessed"):
        shutil.copytree(run / "work" / sub / DATASET, work / sub / DATASET)
    if variant.get("intensity") == "annotated_foreground":
        cases = [p.name[: -len("_0000.nii.gz")] for p in sorted((work / "nnUNet_raw" / DATASET / "imagesTr").glob("*"))]
        use_intensities(work, annotated_foreground_intensities(run, cases))
    settings = variant_settings(variant)
    start = time.perf_counter()
    plan_and_preprocess(work, DATASET, settings)
    summary = train(work, DATASET, settings, "cpu", seed=0)
    seconds = time.perf_counter() - start
    predictor = TumorPredictor.from_results(model_folder(work, DATASET, settings), "cpu")
    pooled, clean, tumor_free, cases = TumorDetection(cases=0), 0, 0, {}
    breakdowns = []
    for case, image, truth_path in scored_cases(run):
        truth, _ = read_label(truth_path, case)
        marked = predictor.predict_case(image, case)[0] > 0
        real = truth == L.TUMOR
        pooled += TumorDetection.of(marked, real)
        if not real.any():
            tumor_free, clean = tumor_free + 1, clean + int(not marked.any())
        cases[case] = {"tumor_voxels": int(real.sum()), "marked_components": marked_components(marked, truth)}
        breakdowns.append(lesion_breakdown(marked, truth))
    own = []  # the tumor-annotated cases it trained on: does it even fit them?
    data = DataLayout(run / "data")
    for image in sorted((work / "nnUNet_raw" / DATASET / "imagesTr").glob("*_0000.nii.gz")):
        case = image.name[: -len("_0000.nii.gz")]
        truth, _ = read_label(data.ground_truth(case), case)
        own.append(lesion_breakdown(predictor.predict_case(data.train_image(case), case)[0] > 0, truth))
    result = {"changes": variant, "train_seconds": round(seconds, 1),
              "final_pseudo_dice": round(summary.final_pseudo_dice, 3),
              "voxel_precision": round(pooled.voxel_precision or 0.0, 3),
              "voxel_recall": round(pooled.voxel_recall or 0.0, 3),
              "tumor_free_cases_clean": f"{clean} of {tumor_free}",
              "lesions": pool_breakdowns(breakdowns),
              "lesions_on_its_training_cases": pool_breakdowns(own), "cases": cases}
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
                     args.variants, lambda name, scratch: run_variant(name, VARIANTS[name], args.run, scratch),
                     "flare-teacher-variants-")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
