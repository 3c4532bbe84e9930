"""The body box that localised `fastest` slides over: it holds every organ of
a real phantom CT, leaves out the air, and falls back to the whole image
whenever it cannot tell body from air."""
from __future__ import annotations

import numpy as np
import pytest

from flare_core.nnunet.body_box import body_box, box_fraction, whole
from flare_core.phantom import make_case


def inside(box, shape) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[box] = True
    return mask


@pytest.mark.parametrize("seed", [3, 4])
def test_the_box_holds_every_labelled_voxel_of_a_phantom_and_leaves_out_air(seed):
    case = make_case(seed, size="tiny", lesions=True)
    box = body_box(case.image, case.geometry.spacing_zyx)
    assert not (case.labels > 0)[~inside(box, case.image.shape)].any()
    assert box_fraction(box, case.image.shape) < 0.9


def test_air_and_a_table_around_a_body_are_cropped_with_the_margin():
    image = np.full((40, 200, 200), -1000, dtype=np.int16)
    image[5:35, 60:140, 50:150] = 40  # the body: z 5..34, y 60..139, x 50..149
    image[:, 170:174, 20:180] = 300  # a table, apart from the body
    spacing = (2.5, 1.0, 1.0)
    (z, y, x) = body_box(image, spacing, margin_mm=10.0)
    # 10 mm margin plus at most one coarse stride (4 mm) on each side, clipped to the image
    assert 0 <= z.start <= 5 - 4 and 35 + 4 <= z.stop <= 40
    assert 60 - 14 <= y.start <= 60 - 10 and 140 + 10 <= y.stop <= 140 + 14
    assert 50 - 14 <= x.start <= 50 - 10 and 150 + 10 <= x.stop <= 150 + 14
    assert y.stop < 170  # the table is not the largest tissue region


def test_the_box_grows_to_at_least_one_window():
    image = np.full((30, 100, 100), -1000, dtype=np.float32)
    image[10:20, 45:55, 45:55] = 0
    box = body_box(image, (3.0, 1.0, 1.0), min_size_mm=(60.0, 70.0, 200.0), margin_mm=0.0)
    sizes = [s.stop - s.start for s in box]
    assert sizes[0] >= 20 and sizes[1] >= 70 and sizes[2] == 100  # 200 mm is more than the image
    assert all(0 <= s.start < s.stop <= n for s, n in zip(box, image.shape))


@pytest.mark.parametrize("value", [-1000, 40])
def test_all_air_or_all_tissue_gives_the_whole_image(value):
    image = np.full((12, 32, 32), value, dtype=np.int16)
    assert body_box(image, (3.0, 1.0, 1.0)) == whole(image.shape)
