"""The teacher (steps 1-2): a 2D attention nnU-Net trained on the tumor subset,
and its tumor pseudo-labels for every case that does not annotate tumors."""
import json
import math

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from flare_core.layout import TUMOR_PSEUDO_LABELS
from flare_core.manifest import Manifest
from flare_core.nnunet.dataset_export import export_tumor_dataset
from flare_core.registry import require_inventory
from flare_assets import conditions, model_cache, settings
from flare_assets.defs.cases import tumor_subset
from flare_assets.model_steps import export_and_plan, export_cases, plans_metadata, require_cases, train_model
from flare_assets.batching import run_batch
from flare_assets.partitions import training_cases
from flare_assets.resources import FlareWorkRoot, RunProfile
from flare_assets.executors import MODEL_STEP_TAGS

TEACHER_STATE = "teacher_weights"


@asset(deps=[tumor_subset], group_name="teacher", kinds={"nnunet", "json"},
       automation_condition=conditions.retrains(settings.retrain_cron(), settle_depth=2))
def teacher_plans(context: AssetExecutionContext, work_root: FlareWorkRoot,
                  run_profile: RunProfile) -> MaterializeResult:
    """The tumor subset exported as nnU-Net's binary task (14 -> 1), fingerprinted,
    planned with the teacher planner (2D attention U-Net) and preprocessed."""
    work = work_root.layout
    manifest = Manifest.read(work.manifests / "tumor_subset.json")
    require_cases(manifest, "teacher (the tumor subset is empty)")
    export = export_tumor_dataset(export_cases(work, manifest, lambda _, inv: inv.label_path), work.nnunet_raw)
    plan = export_and_plan(work, export, run_profile.settings.teacher, run_profile.name)
    teacher_manifest = Manifest(name="teacher_plans", cases=manifest.cases, excluded=manifest.excluded,
                                details={"dataset": export.dataset_name, "profile": run_profile.name})
    teacher_manifest.write(work.manifests / "teacher_plans.json")
    context.log.info("teacher planned on %d cases (%d excluded)", len(manifest.cases), len(manifest.excluded))
    return MaterializeResult(metadata=plans_metadata(plan, teacher_manifest),
                             data_version=DataVersion(f"{teacher_manifest.digest}-{run_profile.name}"))


@asset(deps=[teacher_plans], group_name="teacher", pool="gpu", op_tags=MODEL_STEP_TAGS, kinds={"nnunet", "pytorch"},
       automation_condition=conditions.trains())
def teacher_weights(context: AssetExecutionContext, work_root: FlareWorkRoot,
                    run_profile: RunProfile) -> MaterializeResult:
    """The teacher trained on fold `all` (resuming an interrupted run). A
    standard nnU-Net v2 results folder."""
    work = work_root.layout
    manifest = Manifest.read(work.manifests / "teacher_plans.json")
    return train_model(context, work, manifest.details["dataset"], run_profile.settings.teacher, run_profile,
                       manifest.digest, TEACHER_STATE)


@asset(
    partitions_def=training_cases,
    deps=["training_case", teacher_weights],
    group_name="teacher",
    pool="gpu", op_tags=MODEL_STEP_TAGS,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=100),
    kinds={"nifti"},
    automation_condition=conditions.per_case(),
)
def tumor_pseudo_label(context: AssetExecutionContext, work_root: FlareWorkRoot,
                       run_profile: RunProfile) -> MaterializeResult:
    """The teacher's binary tumor mask (0/1 uint8, the image's exact grid) for a
    case that does not annotate tumors; none for a case that does, whose own
    annotation is authoritative. The model is loaded once per run."""
    work = work_root.layout
    predictor = _LazyTeacher(work, run_profile)

    def predict(case_id: str) -> dict:
        inventory = require_inventory(work, "train", case_id)
        output = work.per_case(TUMOR_PSEUDO_LABELS, case_id)
        if inventory.annotates_tumor:
            output.unlink(missing_ok=True)  # a stale mask from before the annotation changed
            return {"prediction": "none: the case annotates tumors; its annotation is authoritative",
                    "model_sha256": "not needed"}
        teacher = predictor.get()
        path, voxels, seconds = teacher.predict_to_file(inventory.image_path, case_id, output)
        voxel_ml = math.prod(inventory.geometry["spacing"]) / 1000.0
        return {"prediction": "teacher", "path": MetadataValue.path(str(path)), "lesion_voxels": voxels,
                "lesion_volume_ml": round(voxels * voxel_ml, 2), "seconds": round(seconds, 2),
                "model_sha256": teacher.checkpoint_sha256}

    outcome = run_batch(context, predict)
    return MaterializeResult(metadata={**outcome.summary, "model_load_seconds": round(predictor.load_seconds, 2)})


class _LazyTeacher:
    """Loads the teacher on first use: a batch of tumor-annotating cases needs none."""

    def __init__(self, work, run_profile: RunProfile):
        self.work, self.run_profile = work, run_profile
        self.predictor = None
        self.load_seconds = 0.0

    def get(self):
        if self.predictor is None:
            state = json.loads((self.work.manifests / f"{TEACHER_STATE}.json").read_text())
            self.predictor = model_cache.teacher(state["model_folder"], state["checkpoint_sha256"],
                                                 self.run_profile.device, str(self.work.root))
            self.load_seconds = self.predictor.load_seconds
        return self.predictor
