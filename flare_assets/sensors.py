"""Sensors that notice cases appearing (or changing) under the data root.

Each sensor keeps a cursor of file signatures per case, adds partitions only
for new cases, and requests work only for new or changed files: the case's
registration and, once the model it needs is trained, its per-case chain
(tumor pseudo-label, fused labels, label quality; or prediction, evaluation).
A run key derived from the signature makes a repeated request a no-op. Unsafe
names and unreadable files are reported in the sensor's log and never crash it.
"""

import hashlib
import json
from dataclasses import dataclass

import SimpleITK as sitk
from dagster import (
    AssetKey,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from flare_core.cases import INFER, TRAIN, case_files, case_signature, discover_cases
from flare_core.layout import DataLayout
from flare_assets import settings
from flare_assets.partitions import inference_cases, training_cases
from flare_assets.resources import FlareDataRoot, FlareWorkRoot


@dataclass
class ScanResult:
    new: list[str]
    changed: list[str]
    signatures: dict[str, str]
    problems: dict[str, str]


def header_problem(path) -> str | None:
    """Read only the NIfTI header: cheap enough for every sensor tick."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return f"{path.name}: unreadable NIfTI header (corrupt or not NIfTI)"
    if reader.GetDimension() != 3:
        return f"{path.name}: {reader.GetDimension()}D, expected 3D"
    return None


def scan(layout: DataLayout, split: str, previous: dict[str, str]) -> ScanResult:
    """Compare the data root with the cursor's signatures."""
    discovery = discover_cases(layout, split)
    result = ScanResult(new=[], changed=[], signatures={}, problems=dict(discovery.rejected))
    for case_id in discovery.case_ids:
        signature = case_signature(layout, split, case_id)
        result.signatures[case_id] = signature
        if previous.get(case_id) == signature:
            continue
        problem = header_problem(case_files(layout, split, case_id)["image"])
        if problem:
            result.problems[case_id] = f"case {case_id!r}: {problem}"
        elif case_id not in previous:
            result.new.append(case_id)
        else:
            result.changed.append(case_id)
    return result


def _run_key(split: str, case_id: str, signature: str) -> str:
    return f"{split}:{case_id}:{hashlib.sha1(signature.encode()).hexdigest()[:12]}"


# What a new or changed case gets, once the model it needs exists.
DOWNSTREAM = {
    TRAIN: ("teacher_weights", [AssetKey("tumor_pseudo_label"), AssetKey("partial_fused_label"),
                                AssetKey("organ_fused_label"), AssetKey("label_quality")]),
    INFER: ("student_weights", [AssetKey("prediction"), AssetKey("evaluation")]),
}


def case_selection(split: str, asset_key: AssetKey, work_root: FlareWorkRoot) -> list[AssetKey]:
    """Registration, plus the per-case chain when its model has been trained."""
    model_state, chain = DOWNSTREAM[split]
    trained = (work_root.layout.manifests / f"{model_state}.json").exists()
    return [asset_key] + (chain if trained else [])


def _build_case_sensor(name: str, split: str, partitions: DynamicPartitionsDefinition, asset_key: AssetKey):
    @sensor(
        name=name,
        asset_selection=[asset_key] + DOWNSTREAM[split][1],
        minimum_interval_seconds=30,
        default_status=(DefaultSensorStatus.RUNNING if settings.sensors_start_running()
                        else DefaultSensorStatus.STOPPED),
        description=f"Registers {split} cases that appear or change under the data root.",
    )
    def _case_sensor(context: SensorEvaluationContext, data_root: FlareDataRoot, work_root: FlareWorkRoot):
        previous = json.loads(context.cursor) if context.cursor else {}
        result = scan(data_root.layout, split, previous)
        for subject, problem in sorted(result.problems.items()):
            context.log.warning("skipped %s: %s", subject, problem)
        # Broken cases keep their signature in the cursor: reported once, and
        # again only when the file changes.
        cursor = json.dumps(result.signatures, sort_keys=True)
        selection = case_selection(split, asset_key, work_root)
        requests = [
            RunRequest(run_key=_run_key(split, case_id, result.signatures[case_id]), partition_key=case_id,
                       asset_selection=selection, tags={"flare/trigger": "new" if case_id in result.new else "changed"})
            for case_id in result.new + result.changed
        ]
        if not requests:
            return SensorResult(skip_reason=SkipReason(f"no new or changed {split} cases"), cursor=cursor)
        context.log.info("%d new and %d changed %s cases", len(result.new), len(result.changed), split)
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[partitions.build_add_request(result.new)] if result.new else [],
            cursor=cursor,
        )

    return _case_sensor


training_case_sensor = _build_case_sensor("training_case_sensor", TRAIN, training_cases, AssetKey("training_case"))
inference_case_sensor = _build_case_sensor("inference_case_sensor", INFER, inference_cases, AssetKey("inference_case"))
