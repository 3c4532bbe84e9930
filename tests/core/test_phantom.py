"""The synthetic FLARE-like data generator: anatomy, labels, data roots, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flare_core import labels as L
from flare_core import phantom
from flare_core.io import file_sha256, read_volume
from flare_core.layout import DataLayout

HOSTS = (L.LIVER, L.RIGHT_KIDNEY, L.LEFT_KIDNEY, L.PANCREAS)
BIG_ORGANS = (L.LIVER, L.SPLEEN, L.RIGHT_KIDNEY, L.LEFT_KIDNEY, L.STOMACH)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "data"
    phantom.generate_dataset(out, size="tiny", seed=0, n_train=10, n_infer=2)
    return out


@pytest.fixture(scope="module")
def manifest(root: Path) -> dict:
    return json.loads((root / phantom.MANIFEST_NAME).read_text())


# --- single cases -------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_case_has_all_organs_valid_ids_and_tiny_size(seed: int) -> None:
    case = phantom.make_case(seed, "tiny")
    assert case.image.dtype == np.int16 and case.labels.dtype == np.uint8
    assert case.image.shape == case.labels.shape == case.geometry.shape_zyx
    assert case.labels.size <= 64 ** 3
    values = set(np.unique(case.labels).tolist())
    assert values <= set(range(L.MAX_LABEL + 1))
    assert set(L.ORGANS) <= values


@pytest.mark.parametrize("seed", [0, 4])
def test_the_small_grid_holds_the_same_anatomy_at_finer_spacing(seed: int) -> None:
    tiny, small = phantom.make_case(seed, "tiny", lesions=True), phantom.make_case(seed, "small", lesions=True)
    sx, sy, sz = small.geometry.spacing
    assert 3.8 <= sx == sy <= 4.2 and 4.8 <= sz <= 5.4
    assert small.labels.size > 3 * tiny.labels.size

    def volume_ml(case: phantom.PhantomCase, organ: int) -> float:
        return float((case.labels == organ).sum()) * float(np.prod(case.geometry.spacing)) / 1000.0

    # Shapes are defined in mm, so volumes agree whatever the grid; an adrenal
    # gland is too thin at 6 mm for its volume to be measured to 35 %.
    for organ in sorted(set(L.ORGANS) - {L.RIGHT_ADRENAL, L.LEFT_ADRENAL}):
        assert volume_ml(small, organ) == pytest.approx(volume_ml(tiny, organ), rel=0.35), L.CLASS_NAMES[organ]
    # A thin organ spans more voxels across, which is what the finer grid is for.
    widest = [max(np.ptp(np.nonzero(c.labels == L.LEFT_ADRENAL)[axis]) + 1 for axis in (1, 2)) for c in (tiny, small)]
    assert widest[1] > widest[0]


def test_geometry_is_anisotropic_offset_and_optionally_flipped() -> None:
    plain, flipped = phantom.make_case(5), phantom.make_case(5, direction_flip=True)
    sx, sy, sz = plain.geometry.spacing
    assert sx == sy and abs(sz - sx) > 1.0
    assert all(abs(o) > 1.0 for o in plain.geometry.origin)
    assert plain.geometry.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert flipped.geometry.direction == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    # Same physical anatomy, voxels stored in mirrored order.
    np.testing.assert_array_equal(flipped.labels, plain.labels[:, ::-1, ::-1])


def test_anatomy_sits_on_the_expected_sides() -> None:
    labels = phantom.make_case(7, lesions=False).labels

    def centre(organ: int, axis: int) -> float:  # axis 2: x grows to the patient's left; 1: y grows posterior
        return float(np.nonzero(labels == organ)[axis].mean())

    assert centre(L.LIVER, 2) < centre(L.SPLEEN, 2) and centre(L.RIGHT_KIDNEY, 2) < centre(L.LEFT_KIDNEY, 2)
    assert centre(L.IVC, 2) < centre(L.AORTA, 2)
    assert centre(L.GALLBLADDER, 1) < centre(L.RIGHT_KIDNEY, 1) and centre(L.STOMACH, 1) < centre(L.AORTA, 1)


def test_intensities_are_plausible() -> None:
    case = phantom.make_case(2)
    assert 40 <= case.image[case.labels == L.LIVER].mean() <= 90
    assert case.image[case.labels == L.AORTA].mean() > 140
    soft = case.image[(case.image > -500) & (case.labels == 0)]  # body outside the organs
    assert np.percentile(soft, 25) < -50  # fat
    assert case.image.min() >= -1024 and (case.image > 300).any()  # air and bone


@pytest.mark.parametrize("seed", [0, 4, 9])
def test_lesions_replace_only_liver_kidney_or_pancreas(seed: int) -> None:
    with_lesions = phantom.make_case(seed, lesions=True)
    without = phantom.make_case(seed, lesions=False)
    tumor = with_lesions.labels == L.TUMOR
    assert 1 <= len(with_lesions.lesions) <= 3 and tumor.any()
    assert not (without.labels == L.TUMOR).any()
    assert set(np.unique(without.labels[tumor]).tolist()) <= set(HOSTS)
    np.testing.assert_array_equal(with_lesions.labels[~tumor], without.labels[~tumor])
    # Lesions are hypodense: darker than the organ tissue they replace.
    assert with_lesions.image[tumor].mean() < without.image[tumor].mean() - 20


def test_make_case_is_deterministic_by_seed() -> None:
    a, b, c = phantom.make_case(11), phantom.make_case(11), phantom.make_case(12)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.geometry == b.geometry
    assert a.geometry != c.geometry or not np.array_equal(a.image, c.image)


# --- label derivations --------------------------------------------------------

def test_partial_label_keeps_annotated_classes_only() -> None:
    full = phantom.make_case(3, lesions=True).labels
    organs = {L.LIVER, L.PANCREAS, L.RIGHT_KIDNEY}
    for annotated in (organs, organs | {L.TUMOR}, {L.TUMOR}):
        part = phantom.partial_label(full, annotated)
        kept = np.isin(full, list(annotated))
        np.testing.assert_array_equal(part[kept], full[kept])
        assert not part[~kept].any()
    # Without tumor annotation a lesion inside an annotated organ is background.
    assert not phantom.partial_label(full, organs)[full == L.TUMOR].any()


def test_organ_pseudo_label_is_imperfect_but_close() -> None:
    full = phantom.make_case(6, lesions=True).labels
    pseudo = phantom.organ_pseudo_label(full, np.random.default_rng(0))
    again = phantom.organ_pseudo_label(full, np.random.default_rng(0))
    np.testing.assert_array_equal(pseudo, again)
    assert pseudo.dtype == np.uint8 and not (pseudo == L.TUMOR).any()
    assert not np.array_equal(pseudo, full)
    for organ in BIG_ORGANS:
        assert dice(pseudo == organ, full == organ) > 0.7, L.CLASS_NAMES[organ]


# --- data roots ---------------------------------------------------------------

def test_data_root_has_layout_files_with_one_geometry_per_case(root: Path, manifest: dict) -> None:
    layout = DataLayout(root)
    for case_id, entry in manifest["train"].items():
        image, geometry = read_volume(layout.train_image(case_id), case_id)
        assert image.dtype == np.int16 and geometry.spacing[2] != geometry.spacing[0]
        others = [layout.ground_truth(case_id), layout.organ_pseudo_label(case_id)]
        has_label = entry["group"] != L.GROUP_UNLABELLED
        assert layout.train_label(case_id).exists() == has_label
        others += [layout.train_label(case_id)] if has_label else []
        for path in others:
            array, other = read_volume(path, case_id)
            assert array.dtype == np.uint8 and not geometry.differences(other), path
    for case_id in manifest["infer"]:
        _, geometry = read_volume(layout.infer_image(case_id), case_id)
        truth, other = read_volume(layout.infer_label(case_id), case_id)
        assert not geometry.differences(other)
        assert set(L.ORGANS) <= set(np.unique(truth).tolist())
    directions = {tuple(e["geometry"]["direction"]) for e in {**manifest["train"], **manifest["infer"]}.values()}
    assert len(directions) == 2  # identity and flipped cases both occur


def test_label_files_match_their_group_and_ground_truth(root: Path, manifest: dict) -> None:
    layout = DataLayout(root)
    for case_id, entry in manifest["train"].items():
        truth, _ = read_volume(layout.ground_truth(case_id), case_id)
        pseudo, _ = read_volume(layout.organ_pseudo_label(case_id), case_id)
        assert not (pseudo == L.TUMOR).any() and dice(pseudo == L.LIVER, truth == L.LIVER) > 0.7
        if entry["annotated"] is None:
            continue
        label, _ = read_volume(layout.train_label(case_id), case_id)
        annotated = set(entry["annotated"])
        np.testing.assert_array_equal(label, phantom.partial_label(truth, annotated))
        assert set(np.unique(label).tolist()) - {0} == annotated  # inventory recovers the group
        assert L.label_group(annotated) == entry["group"]


def test_group_mix_of_the_demo_root(root: Path) -> None:
    summary = phantom.summarize(json.loads((root / phantom.MANIFEST_NAME).read_text()), root)
    groups = summary["groups"]
    assert len(summary["train"]) == 10 and summary["infer"] == ["FLARE23Ts_0001", "FLARE23Ts_0002"]
    assert len(summary["tumor_annotated_with_lesions"]) >= 3
    assert groups[L.GROUP_ALL_ORGANS] and groups[L.GROUP_PARTIAL_ORGANS] and groups[L.GROUP_UNLABELLED]


@pytest.mark.parametrize("n_train", [8, 9, 12, 20, 40])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_group_plan_meets_the_mix_for_any_seed(seed: int, n_train: int) -> None:
    groups = phantom.plan_groups(seed, n_train)
    tumor = {L.GROUP_ALL_ORGANS_TUMOR, L.GROUP_TUMOR_PARTIAL_ORGANS, L.GROUP_TUMOR_ONLY}
    assert len(groups) == n_train
    assert sum(g in tumor for g in groups) >= 3
    assert {L.GROUP_ALL_ORGANS, L.GROUP_PARTIAL_ORGANS, L.GROUP_UNLABELLED} <= set(groups)
    assert groups.count(L.GROUP_UNLABELLED) == max(1, round(0.2 * n_train))
    assert phantom.plan_groups(seed, n_train) == groups


def _arrays(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): read_volume(p, p.name)[0] for p in sorted(root.rglob("*.nii.gz"))}


def test_data_roots_are_deterministic_by_seed(tmp_path: Path) -> None:
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        phantom.generate_dataset(tmp_path / name, seed=seed, n_train=3, n_infer=1, n_unlabelled=1)
    a, b, c = (_arrays(tmp_path / n) for n in "abc")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train/images/FLARE23_0001_0000.nii.gz"], c["train/images/FLARE23_0001_0000.nii.gz"])


def test_add_cases_appends_without_touching_existing_files(tmp_path: Path) -> None:
    out = tmp_path / "data"
    phantom.generate_dataset(out, seed=2, n_train=3, n_infer=1, n_unlabelled=1)
    before = {p: file_sha256(p) for p in out.rglob("*.nii.gz")}
    summary = phantom.add_cases(out, n_train=2, n_infer=1)
    assert {p: file_sha256(p) for p in before} == before
    assert summary["train"][-2:] == ["FLARE23_0004", "FLARE23_0005"]
    assert summary["groups"][L.GROUP_UNLABELLED][-2:] == ["FLARE23_0004", "FLARE23_0005"]
    assert summary["infer"] == ["FLARE23Ts_0001", "FLARE23Ts_0002"]
    layout = DataLayout(out)
    assert layout.train_image("FLARE23_0005").exists() and not layout.train_label("FLARE23_0005").exists()
    # A new case is the same one a bigger root would have held from the start.
    bigger = phantom.make_case(phantom.case_seed(2, phantom.TRAIN_ROLE, 4), direction_flip=4 % 3 == 1)
    image, _ = read_volume(layout.train_image("FLARE23_0005"), "FLARE23_0005")
    np.testing.assert_array_equal(image, bigger.image)


def test_cli_writes_a_data_root(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "flare_core.phantom", "--out", str(out), "--size", "tiny", "--seed", "1",
         "--train", "3", "--infer", "1", "--unlabelled", "1"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # logging only, no print()
    manifest = json.loads((out / phantom.MANIFEST_NAME).read_text())
    assert manifest["seed"] == 1 and len(manifest["train"]) == 3 and len(manifest["infer"]) == 1
    assert DataLayout(out).infer_label("FLARE23Ts_0001").exists()


def test_unknown_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown phantom size"):
        phantom.make_case(0, size="huge")
