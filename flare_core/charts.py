"""Charts shown in the Dagster UI: training curves and per-class scores.

All are drawn through `flare_core.plotting.render_png`, so nnU-Net's seaborn
settings never reach them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from flare_core import labels
from flare_core.plotting import render_png

DSC_COLOR, NSD_COLOR = "#1f5fa8", "#f28e2b"
CLASS_ROW, SUMMARY_ROW = "class", "summary"  # summary rows (means, tumor) are marked


def training_curve_png(train_loss: Sequence[float], val_loss: Sequence[float], pseudo_dice: Sequence[float],
                       ema_pseudo_dice: Sequence[float] = ()) -> bytes:
    """Loss and pseudo-Dice per epoch, the picture nnU-Net users look at first."""

    def draw(figure: Figure) -> None:
        loss_axis = figure.add_subplot()
        markers = "o" if max(len(train_loss), len(val_loss), len(pseudo_dice)) <= 30 else None
        lines = [loss_axis.plot(range(len(train_loss)), train_loss, color="tab:blue", marker=markers,
                                label="train loss")[0]]
        if val_loss:
            lines += loss_axis.plot(range(len(val_loss)), val_loss, color="tab:red", marker=markers,
                                    label="validation loss")
        loss_axis.set_xlabel("epoch")
        loss_axis.set_ylabel("loss")
        loss_axis.grid(alpha=0.3)
        dice_axis = loss_axis.twinx()
        if pseudo_dice:
            lines += dice_axis.plot(range(len(pseudo_dice)), pseudo_dice, color="tab:green", linestyle="--",
                                    marker=markers, label="pseudo-Dice (validation)")
        if ema_pseudo_dice:
            lines += dice_axis.plot(range(len(ema_pseudo_dice)), ema_pseudo_dice, color="tab:green",
                                    alpha=0.6, label="pseudo-Dice, moving average")
        dice_axis.set_ylabel("pseudo-Dice")
        dice_axis.set_ylim(0, 1)
        if len(train_loss) <= 10:
            loss_axis.set_xticks(range(max(1, len(train_loss))))
        loss_axis.set_title(f"training: {len(train_loss)} epochs")
        loss_axis.legend(handles=lines, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(lines))
        figure.subplots_adjust(left=0.08, right=0.92, top=0.92, bottom=0.24)

    return render_png(draw, 900, 440)


@dataclass(frozen=True)
class ScoreRow:
    name: str
    dsc: float | None
    nsd: float | None
    kind: str = CLASS_ROW


def evaluation_rows(summary: pd.DataFrame) -> list[ScoreRow]:
    """Chart rows from `flare_core.metrics.summarize`: the organs in class-id
    order, then the marked rows organs mean, tumor and all."""
    rows = [ScoreRow(name, _number(r.dsc), _number(r.nsd)) for name, r in summary.iterrows()
            if not pd.isna(r.class_id) and int(r.class_id) in labels.ORGANS]
    rows.sort(key=lambda row: list(labels.CLASS_NAMES.values()).index(row.name))
    for name in ("organs mean", "tumor", "all"):
        if name in summary.index:
            rows.append(ScoreRow(name, _number(summary.loc[name, "dsc"]), _number(summary.loc[name, "nsd"]),
                                 SUMMARY_ROW))
    return rows


def score_chart_png(rows: Sequence[ScoreRow], title: str) -> bytes:
    """Horizontal bars of DSC and NSD, one row per class (top to bottom);
    summary rows are set apart by a line, bold names and a shaded band."""
    height = 100 + 34 * len(rows)

    def draw(figure: Figure) -> None:
        axis = figure.add_subplot()
        y = np.arange(len(rows))
        for offset, key, color, name in ((-0.19, "dsc", DSC_COLOR, "DSC"), (0.19, "nsd", NSD_COLOR, "NSD")):
            values = [getattr(r, key) for r in rows]
            bars = axis.barh(y + offset, [v or 0.0 for v in values], height=0.36, color=color, label=name)
            for bar, value in zip(bars, values):
                text = "n/a" if value is None else f"{value:.2f}"
                axis.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, text,
                          va="center", fontsize=8, color="0.2")
        axis.set_yticks(y, [r.name for r in rows], fontsize=10)
        axis.invert_yaxis()
        _mark_summary_rows(axis, rows)
        axis.set_xlim(0, 1.1)
        axis.set_xticks(np.linspace(0, 1, 6))
        axis.grid(axis="x", alpha=0.3)
        axis.set_axisbelow(True)
        axis.set_xlabel("score (1 = perfect)")
        axis.set_title(title, loc="left", pad=8)
        axis.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, borderaxespad=0.2)
        for side in ("top", "right"):
            axis.spines[side].set_visible(False)
        names_px = max(label.get_window_extent().width for label in axis.get_yticklabels())
        figure.subplots_adjust(left=(names_px + 24) / 900, right=0.97, top=1 - 44 / height, bottom=54 / height)

    return render_png(draw, 900, height)


def _mark_summary_rows(axis, rows: Sequence[ScoreRow]) -> None:
    summary = [i for i, r in enumerate(rows) if r.kind == SUMMARY_ROW]
    for label, row in zip(axis.get_yticklabels(), rows):
        if row.kind == SUMMARY_ROW:
            label.set_fontweight("bold")
    if not summary:
        return
    if summary[0] > 0:
        axis.axhline(summary[0] - 0.5, color="0.3", linewidth=1.0)
    for i in summary:
        axis.axhspan(i - 0.5, i + 0.5, color="0.92", zorder=0)


def label_quality_rows(by_source: Iterable[dict]) -> list[ScoreRow]:
    """Chart rows from `flare_core.label_quality.source_table`: organ means
    per source, then tumor per source (marked)."""
    by_source = list(by_source)
    rows = [ScoreRow(f"{r['source']}: organs", r.get("organ_dsc"), r.get("organ_nsd"))
            for r in by_source if r.get("organ_dsc") is not None]
    rows += [ScoreRow(f"{r['source']}: tumor", r.get("tumor_dsc"), r.get("tumor_nsd"), SUMMARY_ROW)
             for r in by_source if r.get("tumor_dsc") is not None]
    return rows


def _number(value) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return None
    return float(value)
