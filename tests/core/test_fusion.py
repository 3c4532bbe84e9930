"""Multi-label fusion rules (METHOD.md step 3) on small hand-made arrays."""
from __future__ import annotations

import numpy as np
import pytest

from flare_core import label_counts, labels
from flare_core.fused_case import CHECK_AGREES, CHECK_VALUES, fuse_and_verify
from flare_core.fusion import (FusionError, FusionResult, check_agrees_with_annotation, check_organ_fused,
                               fused_labels, organ_fused_label, partial_fused_label)
from flare_core.io import CaseError, Geometry, write_volume

LIVER, RK, SPLEEN, TUMOR = labels.LIVER, labels.RIGHT_KIDNEY, labels.SPLEEN, labels.TUMOR


def vol(*values: int) -> np.ndarray:
    """A 1x1xN uint8 volume: one voxel per value, easy to read in asserts."""
    return np.array(values, dtype=np.uint8).reshape(1, 1, -1)


def flat(array: np.ndarray) -> list[int]:
    return array.ravel().tolist()


# ---------------------------------------------------------------- step a


def test_tumor_pseudo_label_wins_over_annotated_organ():
    partial = vol(0, LIVER, LIVER, 0, RK)
    tumor = vol(1, 1, 0, 0, 0)
    result = partial_fused_label(partial, {LIVER, RK}, tumor)
    assert flat(result.label) == [TUMOR, TUMOR, LIVER, 0, RK]
    account = result.account
    assert account.overridden_by_tumor[LIVER] == 1
    assert account.tumor_pseudo_label[TUMOR] == 2
    assert account.annotation[LIVER] == 1 and account.annotation[RK] == 1
    assert account.background == 1


def test_case_that_annotates_tumors_keeps_them_and_ignores_tumor_pseudo_label():
    partial = vol(TUMOR, LIVER, 0, TUMOR)
    tumor = vol(0, 1, 1, 0)  # would paint liver and background, and misses the annotated tumors
    result = partial_fused_label(partial, {LIVER, TUMOR}, tumor)
    assert flat(result.label) == [TUMOR, LIVER, 0, TUMOR]
    assert result.account.annotation[TUMOR] == 2
    assert result.account.tumor_pseudo_label.sum() == 0
    assert any("ignored" in note for note in result.account.notes)


def test_unlabelled_case_starts_from_zeros():
    result = partial_fused_label(None, None, vol(0, 1, 1))
    assert flat(result.label) == [0, TUMOR, TUMOR]
    assert result.label.dtype == np.uint8
    empty = partial_fused_label(None, None, None, shape=(2, 3, 4))
    assert empty.label.shape == (2, 3, 4) and not empty.label.any()


def test_tumor_mask_in_0_14_form_is_accepted_and_others_rejected():
    assert flat(partial_fused_label(vol(0, 0), set(), vol(0, 14)).label) == [0, TUMOR]
    for bad in (vol(0, 1, 14), vol(0, 2, 0)):
        with pytest.raises(FusionError, match="tumor pseudo-label has values"):
            partial_fused_label(vol(0, 0, 0), set(), bad)


def test_partial_label_with_unannotated_class_or_bad_value_is_rejected():
    with pytest.raises(FusionError, match="does not annotate"):
        partial_fused_label(vol(0, SPLEEN), {LIVER}, None)
    with pytest.raises(FusionError, match="outside 0..14"):
        partial_fused_label(vol(0, 15), {LIVER}, None)
    with pytest.raises(FusionError, match="shape"):
        partial_fused_label(vol(0, LIVER), {LIVER}, vol(0, 1, 1))


def test_inputs_untouched_unless_overwrite():
    partial, tumor = vol(LIVER, 0), vol(1, 0)
    result = partial_fused_label(partial, {LIVER}, tumor)
    assert flat(partial) == [LIVER, 0] and result.label is not partial
    in_place = partial_fused_label(partial, {LIVER}, tumor, overwrite=True)
    assert in_place.label is partial and flat(partial) == [TUMOR, 0]


# ---------------------------------------------------------------- step b


def test_organ_pseudo_label_fills_only_unannotated_classes():
    partial_fused = partial_fused_label(vol(LIVER, 0, 0, 0, 0), {LIVER, RK}, vol(0, 0, 0, 0, 1))
    organ = vol(SPLEEN, LIVER, RK, SPLEEN, SPLEEN)
    result = organ_fused_label(partial_fused, {LIVER, RK}, organ)
    # voxel 0: annotation kept; 1, 2: annotated classes' absence stays 0;
    # 3: spleen is not annotated -> filled; 4: tumor pseudo-label kept.
    assert flat(result.label) == [LIVER, 0, 0, SPLEEN, TUMOR]
    account = result.account
    assert account.organ_pseudo_label[SPLEEN] == 1 and account.organ_pseudo_label.sum() == 1
    assert account.tumor_pseudo_label[TUMOR] == 1 and account.annotation[LIVER] == 1
    assert account.background == 2


def test_organ_pseudo_label_never_gives_tumor():
    result = organ_fused_label(vol(0, 0), None, vol(TUMOR, LIVER))
    assert flat(result.label) == [0, LIVER]
    assert any("class 14" in note for note in result.account.notes)


def test_unlabelled_case_takes_tumor_then_all_organs():
    first = partial_fused_label(None, None, vol(1, 0, 0, 0))
    second = organ_fused_label(first, None, vol(LIVER, LIVER, labels.LEFT_KIDNEY, 0))
    assert flat(second.label) == [TUMOR, LIVER, labels.LEFT_KIDNEY, 0]
    rows = {row["class_id"]: row for row in second.account.to_rows()}
    assert rows[TUMOR]["tumor_pseudo_label"] == 1 and rows[TUMOR]["total"] == 1
    assert rows[LIVER] == {"class_id": LIVER, "class_name": "liver", "annotation": 0, "tumor_pseudo_label": 0,
                           "organ_pseudo_label": 1, "overridden_by_tumor": 0, "total": 1}
    assert second.account.totals() == {"annotation": 0, "tumor_pseudo_label": 1, "organ_pseudo_label": 2,
                                       "overridden_by_tumor": 0, "background": 1}


def test_organ_step_without_pseudo_label_copies_and_bare_array_counts_as_annotation():
    base = vol(LIVER, 0)
    result = organ_fused_label(base, {LIVER}, None)
    assert flat(result.label) == [LIVER, 0] and result.label is not base
    assert result.account.annotation[LIVER] == 1


def test_organ_step_overwrite_reuses_organ_buffer():
    organ = vol(SPLEEN, SPLEEN)
    result = organ_fused_label(vol(LIVER, 0), {LIVER}, organ, overwrite=True)
    assert result.label is organ and flat(organ) == [LIVER, SPLEEN]


def reference_fusion(partial, annotated, tumor, organ):
    """Straightforward np.where version of the rules, to check the slab code."""
    annotated = annotated or set()
    fused = partial.copy()
    if TUMOR not in annotated:
        fused = np.where(tumor != 0, TUMOR, fused).astype(np.uint8)
    allowed = np.isin(organ, [c for c in labels.ORGANS if c not in annotated])
    return fused, np.where((fused == 0) & allowed, organ, fused).astype(np.uint8)


@pytest.mark.parametrize("annotated", [None, {LIVER, SPLEEN}, {LIVER, TUMOR}, set(labels.ORGANS)])
def test_slabbed_fusion_matches_reference(monkeypatch, annotated):
    monkeypatch.setattr(label_counts, "SLAB_VOXELS", 50)  # many slabs on a small volume
    rng = np.random.default_rng(7)
    shape = (9, 6, 7)
    classes = sorted(annotated or [])
    partial = rng.choice([0] + classes, size=shape).astype(np.uint8) if annotated is not None else None
    tumor = (rng.random(shape) < 0.2).astype(np.uint8)
    organ = rng.integers(0, 14, size=shape, dtype=np.uint8)
    start = partial if partial is not None else np.zeros(shape, np.uint8)
    expected_partial, expected_organ = reference_fusion(start, annotated, tumor, organ)
    first = partial_fused_label(partial, annotated, tumor, shape=shape)
    second = organ_fused_label(first, annotated, organ)
    np.testing.assert_array_equal(first.label, expected_partial)
    np.testing.assert_array_equal(second.label, expected_organ)
    np.testing.assert_array_equal(second.account.total, np.bincount(expected_organ.ravel(), minlength=15))
    assert check_agrees_with_annotation(second.label, partial, annotated) == []
    assert check_organ_fused(second.label, first.label, annotated) == []
    one_first, one_second = fused_labels(partial, annotated, tumor, organ, shape=shape)
    np.testing.assert_array_equal(one_first.label, expected_partial)
    np.testing.assert_array_equal(one_second.label, expected_organ)
    for mine, reference in ((one_first.account, first.account), (one_second.account, second.account)):
        assert mine.to_rows() == reference.to_rows() and mine.totals() == reference.totals()


def test_one_pass_fusion_overwrites_inputs_only_when_asked():
    partial, tumor, organ = vol(LIVER, 0, 0), vol(1, 0, 0), vol(0, SPLEEN, LIVER)
    first, second = fused_labels(partial, {LIVER}, tumor, organ)
    assert flat(first.label) == [TUMOR, 0, 0] and flat(second.label) == [TUMOR, SPLEEN, 0]
    assert flat(partial) == [LIVER, 0, 0] and flat(organ) == [0, SPLEEN, LIVER]
    first, second = fused_labels(partial, {LIVER}, tumor, organ, overwrite=True)
    assert first.label is partial and second.label is organ
    assert flat(partial) == [TUMOR, 0, 0] and flat(organ) == [TUMOR, SPLEEN, 0]
    with pytest.raises(FusionError, match="tumor pseudo-label has values"):
        fused_labels(vol(0, 0), set(), vol(1, 14), vol(0, 0))


# ---------------------------------------------------------------- verifiers


def test_verifier_reports_each_kind_of_disagreement():
    partial = vol(LIVER, 0, TUMOR, RK)
    annotated = {LIVER, RK, TUMOR}
    assert check_agrees_with_annotation(vol(LIVER, 0, TUMOR, TUMOR), partial, annotated) == []
    problems = check_agrees_with_annotation(vol(SPLEEN, RK, 0, RK), partial, annotated)
    assert any("annotated as liver (1) became another class" in p for p in problems)
    assert any("annotated tumor voxels are no longer tumor" in p for p in problems)
    assert any("became annotated class right_kidney (2)" in p for p in problems)
    assert len(problems) == 3
    assert check_agrees_with_annotation(vol(0, 15, 0, 0), partial, annotated) == [
        "fused label has values [15] outside 0..14"]


def test_organ_verifier():
    partial_fused = vol(LIVER, 0, 0, TUMOR)
    assert check_organ_fused(vol(LIVER, SPLEEN, 0, TUMOR), partial_fused, {LIVER}) == []
    problems = check_organ_fused(vol(SPLEEN, LIVER, TUMOR, TUMOR), partial_fused, {LIVER})
    assert len(problems) == 3


# ---------------------------------------------------------------- from files


@pytest.fixture
def geometry() -> Geometry:
    return Geometry(size=(5, 4, 3), spacing=(0.8, 0.8, 2.5), origin=(1.0, 2.0, 3.0),
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def write(tmp_path, name: str, array: np.ndarray, geometry: Geometry):
    return write_volume(array, geometry, tmp_path / f"{name}.nii.gz")


def test_fuse_and_verify_reads_checks_and_fuses(tmp_path, geometry):
    shape = geometry.shape_zyx
    partial = np.zeros(shape, np.uint8)
    partial[0, :2] = LIVER
    tumor = np.zeros(shape, np.uint8)
    tumor[0, 0, 0] = 1
    organ = np.full(shape, SPLEEN, np.uint8)
    organ[2] = LIVER
    result = fuse_and_verify("case_01", geometry, write(tmp_path, "partial", partial, geometry),
                             write(tmp_path, "tumor", tumor, geometry), write(tmp_path, "organ", organ, geometry),
                             {LIVER})
    expected_partial, expected_organ = reference_fusion(partial, {LIVER}, tumor, organ)
    np.testing.assert_array_equal(result.partial_fused, expected_partial)
    np.testing.assert_array_equal(result.organ_fused, expected_organ)
    assert result.accounts["organ_fused"].overridden_by_tumor[LIVER] == 1
    assert result.accounts["organ_fused"].total.sum() == partial.size
    for output in ("partial_fused", "organ_fused"):
        assert result.problems[output][CHECK_VALUES] == [] and result.problems[output][CHECK_AGREES] == []


def test_fuse_and_verify_unlabelled_without_any_file(geometry):
    result = fuse_and_verify("case_02", geometry, None, None, None, None)
    assert result.organ_fused.shape == geometry.shape_zyx and not result.organ_fused.any()


def test_fuse_and_verify_rejects_pseudo_label_with_other_geometry(tmp_path, geometry):
    other = Geometry(size=geometry.size, spacing=(0.8, 0.8, 5.0), origin=geometry.origin,
                     direction=geometry.direction)
    organ = write(tmp_path, "organ", np.zeros(geometry.shape_zyx, np.uint8), other)
    with pytest.raises(CaseError, match="case_03.*geometry differs"):
        fuse_and_verify("case_03", geometry, None, None, organ, None)


def test_fuse_and_verify_rejects_values_above_14(tmp_path, geometry):
    organ = np.zeros(geometry.shape_zyx, np.uint8)
    organ[0, 0, 0] = 15
    with pytest.raises(CaseError, match="case_04.*outside 0..14"):
        fuse_and_verify("case_04", geometry, None, None, write(tmp_path, "organ", organ, geometry), None)


def test_fuse_and_verify_names_the_case_for_a_non_binary_tumor_mask(tmp_path, geometry):
    tumor = np.zeros(geometry.shape_zyx, np.uint8)
    tumor[0, 0, :2] = [1, 2]
    with pytest.raises(CaseError, match="case_05.*tumor pseudo-label has values"):
        fuse_and_verify("case_05", geometry, None, write(tmp_path, "tumor", tumor, geometry), None, None)


def test_fuse_and_verify_names_the_case_for_a_missing_file(tmp_path, geometry):
    with pytest.raises(CaseError, match="case_06.*organ pseudo-label organ.nii.gz does not exist"):
        fuse_and_verify("case_06", geometry, None, None, tmp_path / "organ.nii.gz", None)


def test_fusion_result_is_a_named_pair():
    label, account = partial_fused_label(vol(0), set(), None)
    assert isinstance(partial_fused_label(vol(0), set(), None), FusionResult)
    assert label.dtype == np.uint8 and account.background == 1
