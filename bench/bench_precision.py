"""Benchmark: the student on the CPU in float32 against bfloat16 autocast.

    .venv/bin/python bench/bench_precision.py --model RESULTS_FOLDER \
        --images IMAGES_DIR --labels LABELS_DIR [--mode fastest] \
        --out bench/results/precision.json

Loads a trained student (an nnU-Net v2 results folder, e.g. the demo's
`work/nnUNet_results/Dataset502_FLARE23Student/<trainer>__<plans>__3d_fullres`)
once per precision and predicts every `<case>_0000.nii.gz` of IMAGES_DIR; with
the cases' ground truth in LABELS_DIR (`<case>.nii.gz`) it scores both by the
official FLARE23 rules. Records per case and precision: seconds (reading,
predicting, writing), windows run, the voxel agreement of the two label maps,
organ and tumor DSC / NSD; and the mean seconds ratio. Use held-out cases (not
the ones the student trained on), and an otherwise idle machine: the load
average is recorded.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from result_files import write_result  # noqa: E402

log = logging.getLogger("bench_precision")
PRECISIONS = ("float32", "bfloat16")


def score(label: np.ndarray, truth_path: Path, case_id: str) -> dict:
    from flare_core import labels, metrics
    from flare_core.io import read_label

    truth, geometry = read_label(truth_path, case_id)
    rows = metrics.evaluate_case(label, truth, geometry.spacing_zyx)
    organs = [r for r in rows if r.class_id != labels.TUMOR]
    tumor = next(r for r in rows if r.class_id == labels.TUMOR)
    return {"organ_dsc": round(float(np.mean([r.dsc for r in organs])), 4),
            "organ_nsd": round(float(np.mean([r.nsd for r in organs])), 4),
            "tumor_dsc": round(tumor.dsc, 4), "tumor_nsd": round(tumor.nsd, 4),
            "class_dsc": {r.class_name: round(r.dsc, 4) for r in rows}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--mode", default="fastest", choices=["fast", "fastest"])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "precision.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from flare_core.nnunet.efficient_predictor import StudentPredictor
    from flare_core.nnunet.environment import cpu_has_native_bfloat16

    images = sorted(args.images.glob("*_0000.nii.gz"))
    record: dict = {"command": "python bench/bench_precision.py " + " ".join(argv or sys.argv[1:]),
                    "model": str(args.model), "mode": args.mode, "cpus": os.cpu_count(),
                    "cpu_native_bfloat16": cpu_has_native_bfloat16(), "load_before": os.getloadavg(),
                    "cases": {}}
    labels_by_precision: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as out:
        for precision in PRECISIONS:
            predictor = StudentPredictor.from_results(args.model, args.mode, device="cpu", backend="torch",
                                                      precision=precision)
            labels_by_precision[precision] = {}
            for image in images:
                case_id = image.name[: -len("_0000.nii.gz")]
                result = predictor.predict_case(image, case_id, Path(out) / f"{precision}_{case_id}.nii.gz")
                labels_by_precision[precision][case_id] = result.label
                row = {"seconds": round(result.seconds, 2), "windows_evaluated": result.windows_evaluated}
                truth = args.labels / f"{case_id}.nii.gz" if args.labels else None
                if truth is not None and truth.is_file():
                    row.update(score(result.label, truth, case_id))
                record["cases"].setdefault(case_id, {})[precision] = row
    for case_id, rows in record["cases"].items():
        a, b = (labels_by_precision[p][case_id] for p in PRECISIONS)
        rows["voxel_agreement"] = round(float(np.mean(a == b)), 6)
    mean = {p: {key: round(float(np.mean([r[p][key] for r in record["cases"].values()])), 4)
                for key in ("seconds", "organ_dsc", "tumor_dsc") if all(key in r[p] for r in record["cases"].values())}
            for p in PRECISIONS}
    record["mean"] = mean
    record["float32_over_bfloat16_seconds"] = round(mean["float32"]["seconds"] / mean["bfloat16"]["seconds"], 2)
    record["load_after"] = os.getloadavg()
    write_result(record, args.out)
    log.info("mean %s, float32/bfloat16 seconds %.2f; wrote %s", mean, record["float32_over_bfloat16_seconds"],
             args.out)


if __name__ == "__main__":
    main()
