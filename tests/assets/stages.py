"""The part of the graph an asset test module needs, built on an instance and a
work root of its own (no module depends on another's run or on the order tests run in).

`through(...)` (and `Stage.settle`) runs Dagster's automation over the upstream closure of the named
assets with the real assets (tiny `test` profile), as the demo does.
`planted_tumor_pseudo_labels` stands in for the teacher where a module tests
what comes after it: the ground-truth lesions moved by one voxel, written as
real NIfTI files and reported to Dagster as the teacher's materializations, so
fusion and quality run on imperfect pseudo-labels without training a model.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from dagster import AssetKey, AssetMaterialization, AssetSelection, DagsterInstance

from flare_core.io import read_volume, write_volume
from flare_core.layout import TUMOR_PSEUDO_LABELS, DataLayout, WorkLayout
from flare_core.registry import require_inventory
from flare_assets import pipeline
from tests.conftest import make_resources

TUMOR = 14


@dataclass
class Stage:
    instance: DagsterInstance
    resources: dict
    reports: dict[str, pipeline.StageReport]
    work: Path

    def settle(self, *assets: str, upstream: bool = True) -> None:
        """Materialize what automation requests for `assets` (and their upstream)."""
        selection = AssetSelection.assets(*assets)
        reports = pipeline.run_until_settled(self.instance, self.resources,
                                             selection=selection.upstream() if upstream else selection)
        self.reports.update(pipeline.merged_reports(reports))


@contextlib.contextmanager
def stage(data_root: Path, base: Path) -> Iterator[Stage]:
    """An empty instance and work root for `data_root`, with the environment the
    code location reads (as `dagster dev` would have it)."""
    work = base / "work"
    env = pytest.MonkeyPatch()
    for name, value in (("FLARE_DATA_ROOT", data_root), ("FLARE_WORK_ROOT", work), ("FLARE_PROFILE", "test"),
                        ("FLARE_DEVICE", "cpu")):
        env.setenv(name, str(value))
    try:
        with DagsterInstance.from_config(str(_home(base))) as instance:
            yield Stage(instance, make_resources(data_root, work), {}, work)
    finally:
        env.undo()


def through(data_root: Path, base: Path, *assets: str) -> Iterator[Stage]:
    """A fixture body: the graph up to and including `assets`, by automation."""
    with stage(data_root, base) as built:
        built.settle(*assets)
        yield built


def after_planted_teacher(data_root: Path, base: Path, *assets: str,
                          registrations: tuple[str, ...] = ("training_case",)) -> Iterator[Stage]:
    """A fixture body: cases registered, tumor pseudo-labels planted, then `assets` by automation."""
    with stage(data_root, base) as built:
        built.settle(*registrations)
        planted_tumor_pseudo_labels(built, data_root)
        built.settle(*assets, upstream=False)
        yield built


def planted_tumor_pseudo_labels(built: Stage, data_root: Path) -> list[str]:
    """Pseudo-labels for the registered cases without a tumor annotation; returns them."""
    data, work = DataLayout(data_root), WorkLayout(built.work)
    planted = []
    for case_id in built.instance.get_dynamic_partitions("training_cases"):
        if require_inventory(work, "train", case_id).annotates_tumor:
            continue
        truth, geometry = read_volume(data.ground_truth(case_id), case_id)
        lesions = np.roll(truth == TUMOR, 1, axis=0).astype(np.uint8)  # near, not equal, to the truth
        write_volume(lesions, geometry, work.per_case(TUMOR_PSEUDO_LABELS, case_id))
        planted.append(case_id)
    for name in ("tumor_subset", "teacher_plans", "teacher_weights"):
        built.instance.report_runless_asset_event(AssetMaterialization(AssetKey(name)))
    for case_id in built.instance.get_dynamic_partitions("training_cases"):
        built.instance.report_runless_asset_event(AssetMaterialization(AssetKey("tumor_pseudo_label"),
                                                                       partition=case_id))
    return planted


def _home(base: Path) -> Path:
    home = base / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    return home
