"""Predicting every CT of a folder with one loaded student (`flare predict`).

Each `<case>_0000.nii.gz` (or `.nii`) of the input folder becomes
`<out>/<case>.nii.gz`, a uint8 label map with the input's exact geometry,
written atomically (`flare_core.io`), so an interrupted run leaves only whole
outputs and a rerun skips them. A case that fails (a corrupt file, an
unreadable header, a prediction error) is named with the reason and the
others go on.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from flare_core.integrity import verify_whole
from flare_core.io import CaseError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = ("_0000.nii.gz", "_0000.nii")
OUTPUT_SUFFIX = ".nii.gz"
PREDICTED, SKIPPED, FAILED = "predicted", "skipped", "failed"


class CasePredictor(Protocol):
    """What the loop needs of a predictor (`StudentPredictor` is one)."""

    def predict_case(self, image_path: Path, case_id: str, output_path: Path | None = None): ...


@dataclass(frozen=True)
class InputCase:
    case_id: str
    image: Path


@dataclass(frozen=True)
class CaseOutcome:
    case_id: str
    status: str  # PREDICTED, SKIPPED or FAILED
    output: Path
    seconds: float = 0.0
    reason: str | None = None


@dataclass
class FolderResult:
    outcomes: list[CaseOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def _count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def predicted(self) -> int:
        return self._count(PREDICTED)

    @property
    def skipped(self) -> int:
        return self._count(SKIPPED)

    @property
    def failed(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    @property
    def seconds_per_case(self) -> float | None:
        """Mean wall time of a predicted case (reading, predicting, writing)."""
        times = [o.seconds for o in self.outcomes if o.status == PREDICTED]
        return sum(times) / len(times) if times else None


def list_cases(images_dir: Path) -> list[InputCase]:
    """Every `<case>_0000.nii.gz` / `_0000.nii` in `images_dir`, sorted by case id.
    Hidden files (the temporary files of atomic writes among them) are ignored."""
    found: dict[str, list[Path]] = {}
    for path in sorted(Path(images_dir).iterdir()):
        suffix = next((s for s in IMAGE_SUFFIXES if path.name.endswith(s)), None)
        if suffix and not path.name.startswith(".") and path.is_file():
            found.setdefault(path.name[:-len(suffix)], []).append(path)
    cases = []
    for case_id, paths in sorted(found.items()):
        paths.sort(key=lambda p: not p.name.endswith(IMAGE_SUFFIXES[0]))  # .nii.gz first
        if len(paths) > 1:
            log.warning("%s: both %s; predicting %s", case_id, " and ".join(p.name for p in paths), paths[0].name)
        cases.append(InputCase(case_id, paths[0]))
    return cases


def predict_folder(predictor: CasePredictor, images_dir: Path, out_dir: Path, *, overwrite: bool = False,
                   progress: bool = True) -> FolderResult:
    """Predict every case of `images_dir` into `out_dir` (see the module docstring).

    An existing output is kept (and the case counted as skipped) unless
    `overwrite`. `progress`: a tqdm bar over the cases on stderr."""
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise NotADirectoryError(f"input folder {images_dir} does not exist")
    cases = list_cases(images_dir)
    if not cases:
        log.warning("no *_0000.nii.gz or *_0000.nii images in %s", images_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = FolderResult()
    failed = 0
    bar = tqdm(cases, desc="predict", unit="case", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for case in bar:
        outcome = _predict_one(predictor, case, out_dir / f"{case.case_id}{OUTPUT_SUFFIX}", overwrite)
        result.outcomes.append(outcome)
        failed += outcome.status == FAILED
        bar.set_postfix(failed=failed, refresh=False)
    result.seconds = time.perf_counter() - started
    return result


def _predict_one(predictor: CasePredictor, case: InputCase, output: Path, overwrite: bool) -> CaseOutcome:
    if output.exists() and not overwrite:
        log.info("%s: %s exists, skipped (--overwrite predicts it again)", case.case_id, output.name)
        return CaseOutcome(case.case_id, SKIPPED, output)
    started = time.perf_counter()
    try:
        # SimpleITK reads a gzip stream cut short without an error (the missing
        # voxels become 0), so the file is proven whole first, as registration does.
        verify_whole(case.image, case.case_id)
        predictor.predict_case(case.image, case.case_id, output)
    except CaseError as error:
        return _failed(case, output, error.problem)
    except Exception as error:  # noqa: BLE001 - one case's failure must not stop the others
        log.debug("%s failed", case.case_id, exc_info=True)
        return _failed(case, output, f"{type(error).__name__}: {error}")
    return CaseOutcome(case.case_id, PREDICTED, output, time.perf_counter() - started)


def _failed(case: InputCase, output: Path, reason: str) -> CaseOutcome:
    log.error("%s failed: %s", case.case_id, reason)
    return CaseOutcome(case.case_id, FAILED, output, reason=reason)
