"""Shared steps of the two nnU-Net models (teacher and student): export and
plan from a manifest of cases, train fold `all`, and describe the result."""
from pathlib import Path

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, DataVersion

from flare_core.io import write_bytes, write_json
from flare_core.layout import WorkLayout
from flare_core.manifest import Manifest
from flare_core.nnunet import training
from flare_core.nnunet.dataset_export import ExportCase, ExportResult
from flare_core.nnunet.settings import StudentSettings, TeacherSettings
from flare_core.charts import training_curve_png
from flare_assets import metadata as md, progress
from flare_assets.resources import RunProfile

ModelSettings = TeacherSettings | StudentSettings


def plans_metadata(plan: training.PlanResult, manifest: Manifest) -> dict:
    """The configuration as a table plus the manifest the plans were built from."""
    cfg = plan.plans["configurations"][plan.configuration]
    arch = cfg["architecture"]
    kwargs = arch["arch_kwargs"]
    row = {
        "configuration": plan.configuration,
        "spacing": str([round(s, 3) for s in cfg["spacing"]]),
        "patch_size": str(cfg["patch_size"]),
        "features_per_stage": str(kwargs.get("features_per_stage")),
        "strides": str(kwargs.get("strides")),
        "batch_size": cfg["batch_size"],
        "network_class": arch["network_class_name"],
    }
    return {
        "configuration": md.table([row]),
        "num_cases": len(manifest.cases),
        "case_ids": MetadataValue.text(", ".join(manifest.cases)),
        "excluded": md.table([{"case_id": c, "reason": r} for c, r in manifest.excluded.items()]),
        "manifest_digest": manifest.digest,
        "plans_path": MetadataValue.path(str(plan.plans_path)),
        "fingerprint": "recomputed" if plan.fingerprinted else "reused",
        "preprocessing": "ran" if plan.preprocessed else "reused",
        "seconds": round(plan.seconds, 1),
    }


def require_cases(manifest: Manifest, what: str) -> None:
    """Fail clearly, before nnU-Net does, when there is nothing to train on."""
    if not manifest.cases:
        excluded = f"; excluded: {manifest.excluded}" if manifest.excluded else ""
        raise Failure(description=f"no cases to train the {what} on{excluded}")


def export_and_plan(work: WorkLayout, export: ExportResult, settings: ModelSettings, profile: str,
                    num_processes: int = 2) -> training.PlanResult:
    return training.plan_and_preprocess(work, export.dataset_name, settings, num_processes=num_processes,
                                        profile_name=profile)


def train_model(context: AssetExecutionContext, work: WorkLayout, dataset_name: str, settings: ModelSettings,
                run_profile: RunProfile, manifest_digest: str, state_name: str) -> MaterializeResult:
    """Train fold `all`, logging every epoch; metadata with the curve and hashes."""

    def on_epoch(epoch: int, train_loss: float, pseudo_dice: float, seconds: float) -> None:
        context.log.info("epoch %d: train loss %.4f, validation pseudo-Dice %.4f, %.1f s",
                         epoch, train_loss, pseudo_dice, seconds)
        progress.advance("epoch", epoch + 1, settings.training.num_epochs, f"loss {train_loss:.3f}")

    summary = training.train(work, dataset_name, settings, device=run_profile.device, on_epoch=on_epoch,
                             seed=run_profile.seed)
    curve = summary.curve
    png = training_curve_png(curve.train_loss, curve.val_loss, curve.pseudo_dice, curve.ema_pseudo_dice)
    write_bytes(png, summary.model_folder / "fold_all" / "flare_training_curve.png")
    state = {"manifest_digest": manifest_digest, **summary.to_dict()}
    write_json(state, work.manifests / f"{state_name}.json")
    return MaterializeResult(
        metadata={
            "training_curve": md.image(png, "training curve"),
            "final_pseudo_dice": round(summary.final_pseudo_dice, 4),
            "final_ema_pseudo_dice": round(summary.final_ema_pseudo_dice, 4),
            "epochs": summary.epochs_completed,
            "epochs_requested": settings.training.num_epochs,
            "wall_seconds": round(summary.wall_seconds, 1),
            "resumed_from_epoch": summary.resumed_from_epoch if summary.resumed_from_epoch is not None else -1,
            "already_trained": summary.skipped,
            "device": summary.device,
            "checkpoint_sha256": summary.checkpoint_sha256,
            "results_folder": MetadataValue.path(str(summary.model_folder)),
            "manifest_digest": manifest_digest,
        },
        data_version=DataVersion(summary.checkpoint_sha256[:16]),
    )


def export_cases(work: WorkLayout, manifest: Manifest, label_for) -> list[ExportCase]:
    """ExportCase per manifest case, the label file chosen by `label_for(case_id, inventory)`."""
    from flare_core.registry import load_inventory

    cases = []
    for case_id in manifest.cases:
        inventory = load_inventory(work, "train", case_id)
        cases.append(ExportCase(case_id, Path(inventory.image_path), Path(label_for(case_id, inventory))))
    return cases
