"""The whole graph once, on good cases mixed with every defect of tests/defects.py:
each bad case is stopped at the right stage by a message naming it and the
check, every good case completes, no input changes, and nothing refused is in
any model's training set."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from flare_core.layout import DataLayout, WorkLayout
from flare_assets import case_discovery, pipeline
from tests.conftest import make_resources
from tests.defects import ACCEPTED, DISCOVERY, NOT_IN_STUDENT, REGISTRATION, plant_defects

REPO = Path(__file__).resolve().parents[2]
# Good cases of every label group (tumor only, all organs + tumor, partial, all organs, unlabelled).
GOOD_TRAINING = ("FLARE23_0001", "FLARE23_0002", "FLARE23_0004", "FLARE23_0006", "FLARE23_0009")
TRAIN_CHAIN = ("training_case", "tumor_pseudo_label", "partial_fused_label", "organ_fused_label")
INFER_CHAIN = ("inference_case", "prediction", "evaluation")


def _input_hashes(root: Path) -> dict[str, str]:
    """Regular files only: reading the planted FIFO would block, /dev/zero never ends."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def defect_run(tiny_data_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("defects")
    root, outside = base / "data", base / "outside"
    shutil.copytree(tiny_data_root, root)
    _keep_training_cases(root, GOOD_TRAINING)  # fewer good cases: the defects are the point here
    outside.mkdir()
    good = {"train": set(DataLayout(root).folder("train_images").iterdir()),
            "infer": set(DataLayout(root).folder("infer_images").iterdir())}
    good = {split: {p.name.removesuffix("_0000.nii.gz") for p in paths} for split, paths in good.items()}
    expected = plant_defects(root, outside)
    before = _input_hashes(root)
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    resources = make_resources(root, base / "work")
    with DagsterInstance.from_config(str(home)) as instance:
        problems = {split: case_discovery.discover(instance, resources["data_root"].layout,
                                                   resources["work_root"].layout, split, None).problems
                    for split in ("train", "infer")}
        reports = pipeline.merged_reports(pipeline.run_until_settled(instance, resources))
        yield dict(instance=instance, reports=reports, problems=problems, expected=expected, good=good,
                   before=before, root=root, work=WorkLayout(base / "work"))


def _keep_training_cases(root: Path, keep: tuple[str, ...]) -> None:
    for path in (root / "train").rglob("*.nii.gz"):
        if path.name.removesuffix(".nii.gz").removesuffix("_0000") not in keep:
            path.unlink()


def _of(run, stage):
    return {case_id: e for case_id, e in run["expected"].items() if e.stage == stage}


def test_discovery_refuses_what_cannot_be_read_safely_and_never_adds_it(defect_run):
    instance = defect_run["instance"]
    partitions = set(instance.get_dynamic_partitions("training_cases"))
    for case_id, expected in _of(defect_run, DISCOVERY).items():
        messages = [m for key, m in defect_run["problems"][expected.split].items() if case_id in key or case_id in m]
        assert messages, f"{case_id!r} was not reported by discovery"
        assert any(expected.says in m for m in messages), (case_id, messages)
        assert case_id not in partitions


def test_registration_fails_each_corrupt_case_alone_naming_it_and_the_check(defect_run):
    reports = defect_run["reports"]
    refused = _of(defect_run, REGISTRATION)
    for split, asset in (("train", "training_case"), ("infer", "inference_case")):
        want = {c for c, e in refused.items() if e.split == split}
        assert set(reports[asset].failed) == want, reports[asset].failed
        for case_id in want:
            message = reports[asset].failed[case_id]
            assert case_id in message and refused[case_id].says in message, (case_id, message)


def test_every_good_case_completes_and_no_refused_case_goes_further(defect_run):
    instance, expected = defect_run["instance"], defect_run["expected"]
    accepted = {s: {c for c, e in expected.items() if e.stage == ACCEPTED and e.split == s} for s in ("train", "infer")}
    stopped = {c for c, e in expected.items() if e.stage in (DISCOVERY, REGISTRATION)}
    for split, chain in (("train", TRAIN_CHAIN), ("infer", INFER_CHAIN)):
        complete = defect_run["good"][split] | accepted[split]
        for asset in chain:
            done = instance.get_materialized_partitions(AssetKey(asset))
            assert complete <= done, (asset, sorted(complete - done))
            if asset != chain[0]:
                assert not done & stopped, (asset, sorted(done & stopped))
    for asset in ("teacher_weights", "student_weights", "evaluation_summary"):
        assert pipeline.latest_metadata(instance, AssetKey(asset)), asset


def test_no_input_was_modified(defect_run):
    assert _input_hashes(defect_run["root"]) == defect_run["before"]


def test_nothing_refused_or_empty_is_in_a_training_set(defect_run):
    manifests = defect_run["work"].manifests
    teacher = json.loads((manifests / "tumor_subset.json").read_text())
    student = json.loads((manifests / "student_plans.json").read_text())
    refused = {c for c, e in defect_run["expected"].items() if e.stage != ACCEPTED}
    assert not refused & set(teacher["cases"]) and not refused & set(student["cases"])
    for case_id in _of(defect_run, NOT_IN_STUDENT):
        assert "neither a partial label nor an organ pseudo-label" in student["excluded"][case_id]


def test_names_that_once_collided_are_cases_of_their_own(defect_run):
    work, root = defect_run["work"], defect_run["root"]
    previews = {p.relative_to(work.root / "previews").as_posix() for p in (work.root / "previews").rglob("*.png")}
    # A training and an inference case with one id keep apart, in previews too.
    assert {"train_case/FLARE23_0002.png", "infer_case/FLARE23_0002.png"} <= previews
    assert {"train_case/FLARE23_0001.error.png", "train_case/FLARE23_0001.png"} <= previews
    assert "organ_fused/FLARE23_0002.partial_fused.png" in previews
    assert (work.root / "predictions" / "FLARE23_0002.nii.gz").is_file()
    assert DataLayout(root).train_image("FLARE23_0001").is_file()


def test_the_demo_would_exit_non_zero_naming_every_refused_case_by_stage(defect_run):
    """What the demo prints and returns after this run: discovery refusals count
    as failures too, and each failed stage names its cases."""
    from flare_assets import demo

    reports = list(defect_run["reports"].values())
    assert demo.exit_status(reports) == 1
    lines = demo.failure_lines(reports)
    by_stage = {line.split(":")[1].strip(): line for line in lines}
    assert {"discovery", "training_case", "inference_case"} <= set(by_stage), lines
    named = {c for c, e in defect_run["expected"].items() if e.stage == REGISTRATION and e.split == "train"}
    for case_id in sorted(named)[:demo.NAMED_CASES]:
        assert case_id in by_stage["training_case"], (case_id, by_stage["training_case"])
    assert "BADTs_FLIPPED" in by_stage["inference_case"]
    refused = [c for c, e in defect_run["expected"].items() if e.stage == DISCOVERY]
    assert f"discovery: {len(defect_run['reports']['discovery'].failed)} (" in by_stage["discovery"]
    assert len(defect_run["reports"]["discovery"].failed) >= len(refused)
