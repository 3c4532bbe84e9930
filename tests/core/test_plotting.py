"""nnU-Net's `seaborn.set(font_scale=2.5)` must not reach any picture the
platform renders, and rendering must not change the process's settings."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import seaborn

from flare_core import charts
from flare_core import labels as L
from flare_core import phantom
from flare_core.metrics import summarize
from flare_core.plotting import PLATFORM_STYLE, render_png
from flare_core.preview import preview_png


@pytest.fixture
def seaborn_as_nnunet_leaves_it():
    """The process after nnU-Net's logger has drawn its progress plot."""
    with matplotlib.rc_context():  # restores the test process's settings afterwards
        seaborn.set(font_scale=2.5)
        yield


def _score_summary():
    rng = np.random.default_rng(0)
    rows = [{"class_id": c, "dsc": float(rng.uniform(0.3, 1)), "nsd": float(rng.uniform(0.3, 1))}
            for c in L.FOREGROUND for _ in range(2)]
    return summarize(rows)


CASE = phantom.make_case(0, "tiny", lesions=True)
PICTURES = {
    "case preview": lambda: preview_png(CASE.image, CASE.labels, CASE.geometry, "case 0"),
    "training curve": lambda: charts.training_curve_png([1.0, 0.8, 0.7], [1.1, 0.9, 0.8], [0.1, 0.3, 0.4],
                                                        [0.1, 0.2, 0.3]),
    "evaluation chart": lambda: charts.score_chart_png(charts.evaluation_rows(_score_summary()), "scores"),
    "label quality chart": lambda: charts.score_chart_png(charts.label_quality_rows(
        [{"source": "organ_fused_label", "organ_dsc": 0.8, "organ_nsd": 0.7, "tumor_dsc": 0.5,
          "tumor_nsd": None}]), "label quality"),
}


def test_text_inside_the_helper_has_default_sizes_under_seaborn(seaborn_as_nnunet_leaves_it):
    default = matplotlib.rcParamsDefault["font.size"]
    assert matplotlib.rcParams["font.size"] >= 2 * default  # the premise: seaborn's setting is active
    sizes = {}

    def draw(figure):
        axis = figure.add_subplot()
        axis.plot([0, 1], [0, 1], label="line")
        axis.set_xlabel("epoch")
        axis.legend()
        figure.canvas.draw()
        sizes.update(label=axis.xaxis.label.get_fontsize(), tick=axis.get_xticklabels()[0].get_fontsize(),
                     legend=axis.get_legend().get_texts()[0].get_fontsize(),
                     grid_style=matplotlib.rcParams["axes.facecolor"])

    render_png(draw, 400, 300)
    assert sizes["label"] == PLATFORM_STYLE["axes.labelsize"] == default
    assert sizes["tick"] == default  # ticks follow font.size ("medium")
    assert sizes["legend"] == PLATFORM_STYLE["legend.fontsize"]
    assert sizes["grid_style"] == "white"  # matplotlib's, not seaborn's grey "darkgrid" background
    assert matplotlib.rcParams["font.size"] >= 2 * default  # the process's settings are left alone


@pytest.mark.parametrize("name", list(PICTURES))
def test_every_picture_is_the_same_with_or_without_seaborn(name):
    render = PICTURES[name]
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        clean = render()
    with matplotlib.rc_context():
        seaborn.set(font_scale=2.5)
        leaked = render()
    assert clean[:4] == b"\x89PNG" and leaked == clean
