"""Case previews on real phantom arrays: three planes at their physical aspect,
a legend of the classes in the label, the tumor shown, and a small PNG."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from flare_core import labels as L
from flare_core import phantom
from flare_core import preview as pv
from flare_core.label_counts import present_classes
from flare_core.plotting import render_png

BYTE_BUDGET = 300_000


@pytest.fixture(scope="module")
def case() -> phantom.PhantomCase:
    return phantom.make_case(0, "tiny", lesions=True)


def _drawn(preview: pv.CasePreview):
    """Render `preview` and hand back the figure as drawn."""
    drawn = {}

    def draw(figure):
        pv.draw_preview(figure, preview)
        drawn["figure"] = figure

    png = render_png(draw, pv.WIDTH_PX, preview.height_px)
    return drawn["figure"], png


def _size(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as image:
        return image.size


def test_preview_shows_three_planes_at_their_physical_aspect(case):
    preview = pv.case_preview(case.image, case.labels, case.geometry, "case 0")
    figure, png = _drawn(preview)
    width, height = _size(png)
    assert width == pv.WIDTH_PX and 300 <= height <= 900
    panels = [axis for axis in figure.axes if axis.images]
    assert [p.name for p in preview.planes] == ["axial", "coronal", "sagittal"] and len(panels) == 3
    sz, sy, sx = case.geometry.spacing_zyx
    nz, ny, nx = case.image.shape
    assert sz > 1.1 * sx  # the phantom's slices are thicker than its pixels, as in FLARE
    expected = [(nx * sx) / (ny * sy), (nx * sx) / (nz * sz), (ny * sy) / (nz * sz)]  # width / height
    for panel, ratio in zip(panels, expected):
        box = panel.get_position()
        drawn_ratio = (box.width * width) / (box.height * height)
        assert drawn_ratio == pytest.approx(ratio, rel=0.02)
    assert min(panel.get_position().width * width for panel in panels) >= 300


def test_legend_lists_exactly_the_classes_in_the_label(case):
    partial = np.where(np.isin(case.labels, (L.LIVER, L.SPLEEN, L.TUMOR)), case.labels, 0).astype(np.uint8)
    figure, _ = _drawn(pv.case_preview(case.image, partial, case.geometry))
    entries = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert entries == [f"{c} {L.CLASS_NAMES[c]}" for c in (L.LIVER, L.SPLEEN, L.TUMOR)]

    figure, _ = _drawn(pv.case_preview(case.image, case.labels, case.geometry))
    entries = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    assert entries == [f"{c} {L.CLASS_NAMES[c]}" for c in present_classes(case.labels)]
    assert len(entries) == len(L.FOREGROUND)


def test_without_a_label_the_picture_says_so(case):
    figure, png = _drawn(pv.case_preview(case.image, None, case.geometry))
    assert not figure.legends and "no label" in [t.get_text() for t in figure.texts]
    assert _size(png)[0] == pv.WIDTH_PX


def test_planes_pass_through_the_tumor(case):
    assert (case.labels == L.TUMOR).any()
    for axis in range(3):
        index = pv.informative_index(case.labels, axis)
        assert (np.take(case.labels, index, axis=axis) == L.TUMOR).any()


def test_a_flipped_scan_is_shown_in_the_same_orientation():
    """`direction_flip` changes only the voxel order, so the pictures (of the
    label on a flat image) must be the same."""
    plain = phantom.make_case(2, "tiny", lesions=True)
    flipped = phantom.make_case(2, "tiny", lesions=True, direction_flip=True)
    assert not np.array_equal(plain.labels, flipped.labels)
    flat = np.zeros(plain.labels.shape, dtype=np.float32)
    a = pv.case_preview(flat, plain.labels, plain.geometry)
    b = pv.case_preview(flat, flipped.labels, flipped.geometry)
    for left, right in zip(a.planes, b.planes):
        np.testing.assert_array_equal(left.rgb, right.rgb)
    assert a.planes[0].edges == ("R", "L", "A", "P")


def test_preview_png_stays_under_the_byte_budget(case):
    assert len(pv.preview_png(case.image, case.labels, case.geometry, "tiny")) < BYTE_BUDGET
    full = phantom.make_case(1, "full", lesions=True)  # 512 x 512 in-plane, FLARE-sized
    png = pv.preview_png(full.image.astype(np.float32), full.labels, full.geometry, "full")
    assert png[:4] == b"\x89PNG" and _size(png)[0] == pv.WIDTH_PX and len(png) < BYTE_BUDGET


def test_label_on_another_grid_is_rejected(case):
    with pytest.raises(ValueError, match="shape"):
        pv.case_preview(case.image, case.labels[:-1], case.geometry)
