"""The student (step 4): a small 3D nnU-Net trained on the organ-fused labels
of every usable training case."""
from dagster import AssetExecutionContext, DataVersion, Failure, MaterializeResult, asset

from flare_core.io import file_sha256
from flare_core.layout import ORGAN_FUSED_LABELS
from flare_core.manifest import Manifest
from flare_core.nnunet.dataset_export import export_student_dataset
from flare_core.nnunet.trained_student import STUDENT_STATE, NoTrainedStudent, TrainedStudent, read_trained_student
from flare_assets import conditions, settings
from flare_assets.defs.cases import registered_cases
from flare_assets.model_steps import export_and_plan, export_cases, plans_metadata, require_cases, train_model
from flare_assets.resources import FlareWorkRoot, RunProfile
from flare_assets.executors import MODEL_STEP_TAGS


def fused_label_manifest(context: AssetExecutionContext, work) -> Manifest:
    """Every registered training case with an organ-fused label, by file hash;
    the others listed as excluded with the reason."""
    inventories, unavailable = registered_cases(context, work, "train")
    manifest = Manifest(name="student_plans", excluded=dict(unavailable))
    for inventory in inventories:
        fused = work.per_case(ORGAN_FUSED_LABELS, inventory.case_id)
        if not inventory.ok:
            manifest.excluded[inventory.case_id] = "registration checks failed"
        elif inventory.label_path is None and inventory.organ_pseudo_label_path is None:
            # Its fused label would call every organ background: it would teach the student wrong.
            manifest.excluded[inventory.case_id] = "neither a partial label nor an organ pseudo-label"
        elif not fused.exists():
            manifest.excluded[inventory.case_id] = "no organ-fused label yet"
        else:
            manifest.cases[inventory.case_id] = {"image": inventory.image_sha256, "label": file_sha256(fused)}
    return manifest


# Settled when nothing up to the registrations (organ-fused <- partial-fused
# <- tumor pseudo-label <- registration, teacher weights) is running or due.
@asset(deps=["organ_fused_label"], group_name="student", kinds={"nnunet", "json"},
       automation_condition=conditions.retrains(settings.retrain_cron(), settle_depth=4))
def student_plans(context: AssetExecutionContext, work_root: FlareWorkRoot,
                  run_profile: RunProfile) -> MaterializeResult:
    """The organ-fused labels exported as nnU-Net's 15-class task, fingerprinted,
    planned as the FLARE22 small 3D nnU-Net and preprocessed."""
    work = work_root.layout
    manifest = fused_label_manifest(context, work)
    require_cases(manifest, "student (no organ-fused labels)")
    cases = export_cases(work, manifest, lambda case_id, _: work.per_case(ORGAN_FUSED_LABELS, case_id))
    export = export_student_dataset(cases, work.nnunet_raw)
    plan = export_and_plan(work, export, run_profile.settings.student, run_profile.name)
    manifest.details = {"dataset": export.dataset_name, "profile": run_profile.name}
    manifest.write(work.manifests / "student_plans.json")
    context.log.info("student planned on %d cases (%d excluded)", len(manifest.cases), len(manifest.excluded))
    return MaterializeResult(metadata=plans_metadata(plan, manifest),
                             data_version=DataVersion(f"{manifest.digest}-{run_profile.name}"))


@asset(deps=[student_plans], group_name="student", pool="gpu", op_tags=MODEL_STEP_TAGS, kinds={"nnunet", "pytorch"},
       automation_condition=conditions.trains())
def student_weights(context: AssetExecutionContext, work_root: FlareWorkRoot,
                    run_profile: RunProfile) -> MaterializeResult:
    """The student trained on fold `all` (resuming an interrupted run). A
    standard nnU-Net v2 results folder."""
    work = work_root.layout
    manifest = Manifest.read(work.manifests / "student_plans.json")
    return train_model(context, work, manifest.details["dataset"], run_profile.settings.student, run_profile,
                       manifest.digest, STUDENT_STATE)


def trained_student(work) -> TrainedStudent:
    """The current student's results folder and checkpoint hash (what `flare predict` reads too)."""
    try:
        return read_trained_student(work.root)
    except NoTrainedStudent as error:
        raise Failure(description=str(error)) from None
