"""Multi-label fusion (METHOD.md step 3): partial-fused and organ-fused labels.

Priority, highest first: tumor (annotated, or from the tumor pseudo-label) >
the case's partial annotation > the organ pseudo-label for classes the case
does not annotate > background.

a. Partial-fused label: the partial label (zeros for an unlabelled case) with
   every voxel the tumor pseudo-label marks set to 14. A tumor pseudo-label
   wins over an annotated organ voxel (organ annotations exclude tumors). A
   case that annotates tumors keeps its own 14s and uses no tumor
   pseudo-label; one passed anyway is ignored, logged and noted in the account
   (ignoring rather than raising lets callers pass every case's files
   uniformly, and an annotated tumor can never be lost either way).
b. Organ-fused label: every voxel still 0 takes the organ pseudo-label's class
   if the case does not annotate that class; an annotated class's absence is
   real background and stays 0; 14 never comes from an organ pseudo-label.

How: label values 0..14 fit in 4 bits, so a pair of labels packs into one
uint8 key `(first << 4) | second`. One pass per step, slab by slab, computes
the key, counts all 256 keys (the joint histogram gives the per-class account
and validates the inputs) and maps the key through a 256-entry table to the
fused class. `fused_labels` does both steps in one pass over a 12-bit
(partial, tumor, organ) key. No boolean masks, no int64 copies of the volume:
numpy's `bincount` casts its input to int64, so it only ever sees one slab
(`flare_core.label_counts`).
A full-size volume (512x512x300, 78 M voxels, 78 MB as uint8) fuses with a
few MB of temporaries beyond its inputs and outputs; with `overwrite=True`
the outputs reuse the input buffers.

This module works on arrays; `flare_core.fused_case.fuse_and_verify` fuses a
case from its files and runs the verifiers below.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Sequence

import numpy as np

from flare_core import labels
from flare_core.label_counts import class_counts, slabs

log = logging.getLogger(__name__)

N_CLASSES = labels.MAX_LABEL + 1
_BITS = 4  # label values 0..14 < 2**4


class FusionError(ValueError):
    """Inputs that cannot be fused; `fused_case.fuse_and_verify` re-raises it as `CaseError`."""


@dataclass
class SourceAccount:
    """Where each class's voxels in a fused label came from.

    Every array has one int64 count per class id 0..14. `annotation` counts
    voxels kept from the partial label, `tumor_pseudo_label` voxels set to 14
    by the tumor pseudo-label, `organ_pseudo_label` voxels filled from the
    organ pseudo-label. `overridden_by_tumor[c]` counts voxels annotated as
    class c that the tumor pseudo-label turned into 14. Index 0 of
    `annotation` is the background left in the result.
    """

    annotation: np.ndarray = field(default_factory=lambda: _zeros())
    tumor_pseudo_label: np.ndarray = field(default_factory=lambda: _zeros())
    organ_pseudo_label: np.ndarray = field(default_factory=lambda: _zeros())
    overridden_by_tumor: np.ndarray = field(default_factory=lambda: _zeros())
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> np.ndarray:
        return self.annotation + self.tumor_pseudo_label + self.organ_pseudo_label

    @property
    def background(self) -> int:
        return int(self.annotation[labels.BACKGROUND])

    def to_rows(self) -> list[dict]:
        """One row per foreground class, ready for a table."""
        total = self.total
        return [
            {
                "class_id": c,
                "class_name": labels.CLASS_NAMES[c],
                "annotation": int(self.annotation[c]),
                "tumor_pseudo_label": int(self.tumor_pseudo_label[c]),
                "organ_pseudo_label": int(self.organ_pseudo_label[c]),
                "overridden_by_tumor": int(self.overridden_by_tumor[c]),
                "total": int(total[c]),
            }
            for c in labels.FOREGROUND
        ]

    def totals(self) -> dict[str, int]:
        """Foreground voxel counts per source, for one-line metadata."""
        fg = slice(1, N_CLASSES)
        return {
            "annotation": int(self.annotation[fg].sum()),
            "tumor_pseudo_label": int(self.tumor_pseudo_label[fg].sum()),
            "organ_pseudo_label": int(self.organ_pseudo_label[fg].sum()),
            "overridden_by_tumor": int(self.overridden_by_tumor[fg].sum()),
            "background": self.background,
        }

    def copy(self) -> "SourceAccount":
        return SourceAccount(self.annotation.copy(), self.tumor_pseudo_label.copy(),
                             self.organ_pseudo_label.copy(), self.overridden_by_tumor.copy(), list(self.notes))


class FusionResult(NamedTuple):
    label: np.ndarray
    account: SourceAccount


# --------------------------------------------------------------------------
# Step a: partial-fused label


def partial_fused_label(partial: np.ndarray | None, annotated: Iterable[int] | None,
                        tumor_pseudo: np.ndarray | None, *,
                        shape: tuple[int, ...] | None = None,
                        overwrite: bool = False) -> FusionResult:
    """The partial label with tumor pseudo-label voxels set to 14.

    `partial` None means an unlabelled case (zeros of `shape`, or of the tumor
    pseudo-label's shape). `annotated` is the set of classes the case
    annotates (None for unlabelled). `tumor_pseudo` is a mask with values
    {0, 1} or {0, 14} (or bool). With `overwrite=True` the result is written
    into `partial` itself (which is then undefined if a `FusionError` is raised).
    """
    annotated_set = _annotated_set(annotated)
    account = SourceAccount()
    if tumor_pseudo is not None and labels.TUMOR in annotated_set:
        account.notes.append(_note("tumor pseudo-label ignored: the case annotates tumors"))
        tumor_pseudo = None
    label = _start_label(partial, annotated_set, tumor_pseudo, shape)
    if tumor_pseudo is None:
        out = label if _writable(label, partial, overwrite) else label.copy()
        pairs = np.zeros((16, 16), np.int64)
        pairs[:, 0] = class_counts(label, 16)[:16]
    else:
        tumor = _checked_label(tumor_pseudo, "tumor pseudo-label", label.shape)
        out = label if _writable(label, partial, overwrite) else np.empty_like(label)
        pairs = joint_counts((label, tumor), (_TUMOR_LUT,), (out,))
        _check_tumor_values(pairs)
    _check_annotated(pairs.sum(axis=1), annotated_set)
    _account_tumor(account, pairs)
    return FusionResult(out, account)


def _start_label(partial: np.ndarray | None, annotated: set[int], tumor_pseudo: np.ndarray | None,
                 shape: tuple[int, ...] | None) -> np.ndarray:
    if partial is not None:
        return _checked_label(partial, "partial label", shape)
    if annotated:
        raise FusionError(f"no partial label, yet classes {sorted(annotated)} are said to be annotated")
    shape = shape if shape is not None else getattr(tumor_pseudo, "shape", None)
    if shape is None:
        raise FusionError("an unlabelled case needs a shape or a tumor pseudo-label")
    return np.zeros(shape, dtype=np.uint8)


def _check_tumor_values(pairs: np.ndarray) -> None:
    values = set(np.flatnonzero(pairs.sum(axis=0)).tolist()) - {0}
    if not (values <= {1} or values <= {labels.TUMOR}):
        raise FusionError(f"tumor pseudo-label has values {sorted(values)}; expected a mask with {{0, 1}} or {{0, 14}}")


def _check_annotated(counts: np.ndarray, annotated: set[int]) -> None:
    present = set(np.flatnonzero(counts).tolist()) - {labels.BACKGROUND}
    if not present <= annotated:
        raise FusionError(f"partial label has classes {sorted(present - annotated)} the case does not annotate")


def _account_tumor(account: SourceAccount, pairs: np.ndarray) -> None:
    """Fill the account from the (partial, tumor mask) joint histogram."""
    before = pairs.sum(axis=1)[:N_CLASSES]
    covered = pairs[:N_CLASSES, 1:].sum(axis=1)
    covered[labels.TUMOR] = 0  # an annotated tumor under the mask stays annotation
    account.annotation[:] = before - covered
    account.overridden_by_tumor[1:labels.TUMOR] = covered[1:labels.TUMOR]
    account.tumor_pseudo_label[labels.TUMOR] = covered.sum()


# --------------------------------------------------------------------------
# Step b: organ-fused label


def organ_fused_label(partial_fused: FusionResult | np.ndarray, annotated: Iterable[int] | None,
                      organ_pseudo: np.ndarray | None, *, overwrite: bool = False) -> FusionResult:
    """The partial-fused label with its zeros filled from the organ pseudo-label,
    for classes the case does not annotate only, and never with 14.

    Pass the `FusionResult` of `partial_fused_label` to carry its account
    over; a bare array's voxels are all counted as annotation. With
    `overwrite=True` the result is written into `organ_pseudo`.
    """
    base, prior = _split_result(partial_fused)
    annotated_set = _annotated_set(annotated)
    if organ_pseudo is None:
        account = prior.copy() if prior is not None else _account_of(class_counts(base, N_CLASSES))
        return FusionResult(base.copy(), account)
    organ = _checked_label(organ_pseudo, "organ pseudo-label", base.shape)
    out = organ if _writable(organ, organ_pseudo, overwrite) else np.empty_like(base)
    pairs = joint_counts((base, organ), (_organ_pair_lut(annotated_set),), (out,))
    account = prior.copy() if prior is not None else _account_of(pairs.sum(axis=1))
    _account_organs(account, pairs, annotated_set)
    return FusionResult(out, account)


def organ_lut(annotated: set[int]) -> np.ndarray:
    """256-entry uint8 table: organ pseudo class -> class to fill, 0 for
    annotated classes, tumor and anything outside the organs."""
    lut = np.zeros(256, dtype=np.uint8)
    for c in labels.ORGANS:
        if c not in annotated:
            lut[c] = c
    return lut


def _organ_pair_lut(annotated: set[int]) -> np.ndarray:
    fill = organ_lut(annotated)
    return _pair_lut(lambda base, organ: np.where(base != 0, base, fill[organ]))


def _account_organs(account: SourceAccount, pairs: np.ndarray, annotated: set[int]) -> None:
    """Add the (partial-fused, organ pseudo) joint histogram's fills."""
    fillable = [c for c in labels.ORGANS if c not in annotated]
    account.organ_pseudo_label[fillable] = pairs[0, fillable]
    account.annotation[labels.BACKGROUND] -= int(pairs[0, fillable].sum())
    n_tumor = int(pairs[:, labels.TUMOR].sum())
    if n_tumor:
        account.notes.append(_note(f"organ pseudo-label has {n_tumor} voxels of class 14; "
                                   "ignored (14 never comes from it)"))


def _split_result(partial_fused: FusionResult | np.ndarray) -> tuple[np.ndarray, SourceAccount | None]:
    if isinstance(partial_fused, FusionResult):
        return _checked_label(partial_fused.label, "partial-fused label"), partial_fused.account
    return _checked_label(partial_fused, "partial-fused label"), None


def _account_of(counts: np.ndarray) -> SourceAccount:
    """A bare label's account: every voxel counted as annotation."""
    return SourceAccount(annotation=np.asarray(counts[:N_CLASSES], dtype=np.int64).copy())


# --------------------------------------------------------------------------
# Both steps at once


def fused_labels(partial: np.ndarray | None, annotated: Iterable[int] | None,
                 tumor_pseudo: np.ndarray | None, organ_pseudo: np.ndarray | None, *,
                 shape: tuple[int, ...] | None = None,
                 overwrite: bool = False) -> tuple[FusionResult, FusionResult]:
    """Partial-fused and organ-fused labels, the same as `partial_fused_label`
    then `organ_fused_label`, but in one pass over the volume when both
    pseudo-labels are used (one histogram instead of two: a third less work).
    With `overwrite=True` the outputs reuse `partial` and `organ_pseudo`."""
    annotated_set = _annotated_set(annotated)
    if tumor_pseudo is None or organ_pseudo is None or labels.TUMOR in annotated_set:
        first = partial_fused_label(partial, annotated_set, tumor_pseudo, shape=shape, overwrite=overwrite)
        return first, organ_fused_label(first, annotated_set, organ_pseudo, overwrite=overwrite)
    label = _start_label(partial, annotated_set, tumor_pseudo, shape)
    tumor = _checked_label(tumor_pseudo, "tumor pseudo-label", label.shape)
    organ = _checked_label(organ_pseudo, "organ pseudo-label", label.shape)
    out_a = label if _writable(label, partial, overwrite) else np.empty_like(label)
    out_b = organ if _writable(organ, organ_pseudo, overwrite) else np.empty_like(label)
    counts = joint_counts((label, tumor, organ), _one_pass_luts(annotated_set), (out_a, out_b))
    first, second = _one_pass_accounts(counts, annotated_set)
    return FusionResult(out_a, first), FusionResult(out_b, second)


def _one_pass_luts(annotated: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Tables over (partial, tumor, organ) keys: partial-fused, organ-fused."""
    keys = np.arange(16 ** 3)
    partial_fused = _TUMOR_LUT[keys >> _BITS]
    organ_fused = _organ_pair_lut(annotated)[(partial_fused.astype(np.intp) << _BITS) | (keys & 0xF)]
    return partial_fused, organ_fused


def _one_pass_accounts(counts: np.ndarray, annotated: set[int]) -> tuple[SourceAccount, SourceAccount]:
    pairs_a = counts.sum(axis=2)  # (partial, tumor)
    _check_tumor_values(pairs_a)
    _check_annotated(pairs_a.sum(axis=1), annotated)
    first = SourceAccount()
    _account_tumor(first, pairs_a)
    pairs_b = np.zeros((16, 16), np.int64)  # (partial-fused, organ)
    np.add.at(pairs_b, _TUMOR_LUT, counts.reshape(256, 16))
    second = first.copy()
    _account_organs(second, pairs_b, annotated)
    return first, second


# --------------------------------------------------------------------------
# Verifiers for asset checks


def check_agrees_with_annotation(fused: np.ndarray, partial: np.ndarray | None,
                                 annotated: Iterable[int] | None) -> list[str]:
    """Problems with a fused label against the case's partial annotation.

    Rules: a voxel annotated as organ c stays c or becomes 14 (tumor
    pseudo-label); a voxel annotated as tumor stays 14; a voxel the partial
    label leaves 0 never becomes a class the case annotates. Unlabelled cases
    (partial None) are only checked for valid values.
    """
    problems = value_problems(fused, "fused label")
    if partial is None or problems:
        return problems
    problems = value_problems(partial, "partial label")
    if problems or partial.shape != fused.shape:
        return problems or [f"fused label shape {fused.shape} != partial label shape {partial.shape}"]
    annotated_set = _annotated_set(annotated)
    pairs = joint_counts((partial, fused))  # pairs[annotated class, fused class]
    for c in sorted(annotated_set - {labels.TUMOR}):
        moved = int(pairs[c].sum() - pairs[c, c] - pairs[c, labels.TUMOR])
        if moved:
            problems.append(f"{moved} voxels annotated as {_name(c)} became another class than {_name(c)} or tumor")
    lost = int(pairs[labels.TUMOR].sum() - pairs[labels.TUMOR, labels.TUMOR])
    if lost:
        problems.append(f"{lost} annotated tumor voxels are no longer tumor")
    problems += [f"{int(pairs[0, c])} voxels annotated as background became annotated class {_name(c)}"
                 for c in sorted(annotated_set) if pairs[0, c]]
    unannotated = [c for c in np.flatnonzero(pairs.sum(axis=1)) if c and c not in annotated_set]
    if unannotated:
        problems.append(f"partial label has classes {[int(c) for c in unannotated]} the case does not annotate")
    return problems


def check_organ_fused(organ_fused: np.ndarray, partial_fused: np.ndarray,
                      annotated: Iterable[int] | None) -> list[str]:
    """Problems with an organ-fused label against its partial-fused label:
    every nonzero partial-fused voxel kept, no new tumor, no annotated class
    filled in."""
    problems = value_problems(organ_fused, "organ-fused label") + value_problems(partial_fused, "partial-fused label")
    if problems or organ_fused.shape != partial_fused.shape:
        return problems or [f"organ-fused shape {organ_fused.shape} != partial-fused shape {partial_fused.shape}"]
    pairs = joint_counts((partial_fused, organ_fused))  # pairs[partial-fused class, organ-fused class]
    changed = int(pairs[1:].sum() - np.trace(pairs[1:, 1:]))
    if changed:
        problems.append(f"{changed} nonzero partial-fused voxels changed in the organ-fused label")
    forbidden = sorted(_annotated_set(annotated) | {labels.TUMOR})
    problems += [f"{int(pairs[0, c])} background voxels filled with {_name(c)}, which the organ pseudo-label "
                 "may not give" for c in forbidden if pairs[0, c]]
    return problems


def value_problems(label: np.ndarray, what: str) -> list[str]:
    """Problems with a label's values: not uint8, or outside 0..14."""
    if label.dtype != np.uint8:
        return [f"{what} has dtype {label.dtype}, expected uint8"]
    if label.size == 0 or label.max() <= labels.MAX_LABEL:
        return []
    bad = np.flatnonzero(class_counts(label)[N_CLASSES:]) + N_CLASSES
    return [f"{what} has values {bad.tolist()} outside 0..{labels.MAX_LABEL}"]


# --------------------------------------------------------------------------
# The one-pass kernel and small shared helpers


def joint_counts(arrays: Sequence[np.ndarray], luts: Sequence[np.ndarray] = (),
                 outs: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Counts of the value combinations of 2 or 3 uint8 arrays with values
    < 16, shape (16,) * len(arrays); also writes `lut[key]` into each `out`,
    where key packs the values 4 bits each, first array highest. An `out` may
    be one of the `arrays`: each slab is packed before anything is written."""
    n_keys = 16 ** len(arrays)
    dtype = np.uint8 if len(arrays) == 2 else np.uint16
    counts = _zeros(n_keys)
    for s in slabs(arrays[0].shape):
        key = _pack([a[s] for a in arrays], dtype)
        counts += np.bincount(key.ravel(), minlength=n_keys)
        for lut, out in zip(luts, outs):
            # take with `out` writes in place, about twice as fast as out[s] = lut[key];
            # "wrap" skips the bounds buffer of "raise" (keys are in range anyway).
            np.take(lut, key, out=out[s], mode="wrap")
    return counts.reshape((16,) * len(arrays))


def _pack(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    key = parts[0].astype(dtype)
    for part in parts[1:]:
        np.left_shift(key, _BITS, out=key)
        np.bitwise_or(key, part, out=key)
    return key


def _pair_lut(rule: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """A 256-entry table over packed (first, second) keys."""
    keys = np.arange(256)
    return rule(keys >> _BITS, keys & 0xF).astype(np.uint8)


_TUMOR_LUT = _pair_lut(lambda partial, tumor: np.where(tumor != 0, labels.TUMOR, partial))


def _checked_label(array: np.ndarray, what: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A uint8 array (a view for bool, a copy for other integer dtypes) with
    values 0..14 and, if given, the expected shape."""
    array = np.asarray(array)
    if shape is not None and array.shape != tuple(shape):
        raise FusionError(f"{what} shape {array.shape} != expected {tuple(shape)}")
    if array.dtype == bool:
        return array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise FusionError(f"{what} has dtype {array.dtype}, expected integers")
    if array.size and (array.min() < 0 or array.max() > labels.MAX_LABEL):
        values = np.unique(array)
        bad = values[(values < 0) | (values > labels.MAX_LABEL)]
        raise FusionError(f"{what} has values {bad.tolist()} outside 0..{labels.MAX_LABEL}")
    return array if array.dtype == np.uint8 else array.astype(np.uint8)


def _writable(array: np.ndarray, source: np.ndarray | None, overwrite: bool) -> bool:
    """May a result be written into `array`, the checked form of the caller's
    `source`? Yes if we made it, or if the caller allowed overwriting it."""
    if source is None or not np.may_share_memory(array, source):
        return True
    return overwrite and array is source


def _annotated_set(annotated: Iterable[int] | None) -> set[int]:
    classes = set() if annotated is None else {int(c) for c in annotated} - {labels.BACKGROUND}
    unknown = classes - set(labels.FOREGROUND)
    if unknown:
        raise FusionError(f"annotated classes {sorted(unknown)} are not FLARE classes")
    return classes


def _note(text: str) -> str:
    log.warning(text)
    return text


def _zeros(n: int = N_CLASSES) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


def _name(class_id: int) -> str:
    return f"{labels.CLASS_NAMES.get(class_id, 'unknown')} ({class_id})"
