"""Shared fixtures: tiny synthetic FLARE-like data on disk and Dagster wiring.

The phantom data set is generated once per session; tests that plant broken
files work on their own copy, so the shared one is never modified.
"""
import os
import shutil
from pathlib import Path

import pytest

# Single-threaded augmentation and few workers: tests run on 2-core machines.
os.environ.setdefault("nnUNet_n_proc_DA", "0")
os.environ.setdefault("nnUNet_def_n_proc", "1")

from flare_assets.resources import FlareDataRoot, FlareWorkRoot, RunProfile  # noqa: E402

TINY_TRAIN = 10
TINY_INFER = 2


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    """A read-only tiny FLARE23-shaped data root shared by the session."""
    from flare_core.phantom import generate_dataset

    root = tmp_path_factory.mktemp("flare_data")
    generate_dataset(root, size="tiny", seed=0, n_train=TINY_TRAIN, n_infer=TINY_INFER)
    return root


@pytest.fixture
def data_root_copy(tiny_data_root, tmp_path) -> Path:
    """A private copy of the tiny data root that a test may break on purpose."""
    copy = tmp_path / "data"
    shutil.copytree(tiny_data_root, copy)
    return copy


def make_resources(data_root: Path, work_root: Path, profile: str = "test") -> dict:
    return {
        "data_root": FlareDataRoot(path=str(data_root)),
        "work_root": FlareWorkRoot(path=str(work_root)),
        "run_profile": RunProfile(name=profile, device="cpu"),
    }


@pytest.fixture
def instance(tmp_path, monkeypatch):
    from dagster import DagsterInstance

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture(scope="session")
def pipeline_run(tiny_data_root, tmp_path_factory):
    """The whole pipeline, run once on tiny data with the `test` profile through
    the real Dagster machinery: what the end-to-end tests (tests/e2e) inspect.
    Asset tests build their own part of the graph (tests/assets/stages.py).

    Returns (instance, resources, reports by stage name, work root)."""
    from dagster import DagsterInstance

    from flare_assets import pipeline

    work = tmp_path_factory.mktemp("pipeline_work")
    home = tmp_path_factory.mktemp("pipeline_dagster_home")
    resources = make_resources(tiny_data_root, work)
    mp = pytest.MonkeyPatch()
    mp.setenv("FLARE_DATA_ROOT", str(tiny_data_root))
    mp.setenv("FLARE_WORK_ROOT", str(work))
    mp.setenv("FLARE_PROFILE", "test")
    mp.setenv("FLARE_DEVICE", "cpu")
    with DagsterInstance.from_config(str(home)) as instance:
        reports = pipeline.run_until_settled(instance, resources)
        yield instance, resources, pipeline.merged_reports(reports), work
    mp.undo()


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Dagster's run tags for one run over partitions first..last: what a
    backfill launches for an asset with a multi-run backfill policy."""
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
