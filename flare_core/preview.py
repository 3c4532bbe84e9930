"""Case previews for the Dagster UI: a CT with its label overlay in three planes.

One picture per case and label (registered case, fused labels, prediction),
large enough to judge a segmentation: axial, coronal and sagittal planes
through the most informative position, the CT in an abdominal window, each
class in its own colour with a legend of the classes present, and every plane
drawn at its physical aspect ratio (CT slices are thicker than in-plane
pixels). Dagster has no image metadata type, so assets embed the PNG base64
in markdown; it is stored with a palette to stay well under 300 KB.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from flare_core import labels
from flare_core.io import Geometry
from flare_core.label_counts import present_classes
from flare_core.plotting import render_png

# Abdominal soft-tissue window (HU): level 40, width 400.
WINDOW = (-160.0, 240.0)
OVERLAY_ALPHA = 0.5
TUMOR_ALPHA = 0.8  # small and the point of FLARE23: nearly opaque, never mistaken for an organ

# One fixed colour per class, the same in every picture; tumor stands out.
CLASS_COLORS: dict[int, tuple[float, float, float]] = {c: to_rgb(hexa) for c, hexa in {
    labels.LIVER: "#d62728",
    labels.RIGHT_KIDNEY: "#1f77b4",
    labels.SPLEEN: "#9467bd",
    labels.PANCREAS: "#ff7f0e",
    labels.AORTA: "#e377c2",
    labels.IVC: "#17becf",
    labels.RIGHT_ADRENAL: "#c5b0d5",
    labels.LEFT_ADRENAL: "#8c564b",
    labels.GALLBLADDER: "#2ca02c",
    labels.ESOPHAGUS: "#f7b6d2",
    labels.STOMACH: "#aec7e8",
    labels.DUODENUM: "#ffbb78",
    labels.LEFT_KIDNEY: "#98df8a",
    labels.TUMOR: "#ffff00",
}.items()}
_LUT = np.zeros((256, 3), dtype=np.float32)
for _class, _color in CLASS_COLORS.items():
    _LUT[_class] = _color
_ALPHA = np.full(256, OVERLAY_ALPHA, dtype=np.float32)
_ALPHA[labels.TUMOR] = TUMOR_ALPHA

# Layout in pixels (at 100 dpi).
WIDTH_PX = 1100
MAX_PANEL_HEIGHT_PX = 640
_MARGIN, _GAP, _TITLE, _PANEL_TITLE, _LEGEND_ROW, _LEGEND_COLUMNS = 12, 16, 30, 22, 22, 5

# A class counts towards a slice's information only where its cross-section is
# a real part of the class, not a sliver at its edge.
_SUBSTANTIAL = 0.2
_SELECTION_VOXELS = 4_000_000  # slice selection runs on a subsample above this


@dataclass(frozen=True)
class Plane:
    name: str  # axial, coronal, sagittal
    rgb: np.ndarray  # (rows, columns, 3), display orientation
    width_mm: float
    height_mm: float
    caption: str
    edges: tuple[str, str, str, str]  # patient direction at left, right, top, bottom ("" if unknown)


@dataclass(frozen=True)
class CasePreview:
    """What a preview shows, before it is drawn."""

    title: str
    planes: tuple[Plane, Plane, Plane]
    classes: tuple[int, ...]  # foreground classes present in the label
    has_label: bool

    def legend_entries(self) -> list[tuple[str, tuple[float, float, float]]]:
        return [(f"{c} {labels.CLASS_NAMES[c]}", CLASS_COLORS[c]) for c in self.classes]

    @property
    def panel_scale(self) -> float:
        """Pixels per millimetre, the same for all three planes."""
        usable = WIDTH_PX - 2 * _MARGIN - 2 * _GAP
        scale = usable / sum(p.width_mm for p in self.planes)
        return min(scale, MAX_PANEL_HEIGHT_PX / max(p.height_mm for p in self.planes))

    @property
    def legend_rows(self) -> int:
        return max(1, math.ceil(len(self.classes) / _LEGEND_COLUMNS))

    @property
    def height_px(self) -> int:
        panel = max(p.height_mm for p in self.planes) * self.panel_scale
        return int(round(2 * _MARGIN + _TITLE + _PANEL_TITLE + panel + 8 + self.legend_rows * _LEGEND_ROW))


def preview_png(image: np.ndarray, label: np.ndarray | None = None, geometry: Geometry | None = None,
                title: str = "") -> bytes:
    """PNG of a (z, y, x) CT with an optional label overlay on the same grid.

    `geometry` gives the spacing (physical aspect) and the direction (planes
    shown in radiological orientation); without it, voxels are taken as 1 mm
    cubes in stored order."""
    preview = case_preview(image, label, geometry, title)
    return render_png(lambda figure: draw_preview(figure, preview), WIDTH_PX, preview.height_px)


def case_preview(image: np.ndarray, label: np.ndarray | None = None, geometry: Geometry | None = None,
                 title: str = "") -> CasePreview:
    """The three planes, their captions and the legend's classes, ready to draw."""
    if label is not None and label.shape != image.shape:
        raise ValueError(f"label shape {label.shape} differs from image shape {image.shape}")
    view = _DisplayOrientation.of(geometry, image.shape)
    image = view.apply(image)
    label = None if label is None else view.apply(label)
    spacing = view.spacing_zyx  # display axes: inferior->superior, anterior->posterior, right->left
    position = [image.shape[axis] // 2 if label is None else informative_index(label, axis) for axis in range(3)]
    planes = tuple(_plane(name, image, label, axis, position[axis], spacing, view)
                   for axis, name in enumerate(("axial", "coronal", "sagittal")))
    classes = () if label is None else tuple(c for c in present_classes(label) if c in CLASS_COLORS)
    return CasePreview(title=title, planes=planes, classes=classes, has_label=label is not None)


def draw_preview(figure: Figure, preview: CasePreview) -> None:
    width, height = WIDTH_PX, preview.height_px
    scale = preview.panel_scale
    if preview.title:
        figure.text(_MARGIN / width, 1 - (_MARGIN + _TITLE / 2) / height, preview.title,
                    fontsize=12, fontweight="bold", va="center")
    total = sum(p.width_mm for p in preview.planes) * scale + 2 * _GAP
    left = (width - total) / 2
    top = _MARGIN + _TITLE + _PANEL_TITLE
    for plane in preview.planes:
        w, h = plane.width_mm * scale, plane.height_mm * scale
        axis = figure.add_axes((left / width, 1 - (top + h) / height, w / width, h / height))
        axis.imshow(plane.rgb, extent=(0, plane.width_mm, plane.height_mm, 0), aspect="auto")
        axis.set_axis_off()
        axis.set_title(plane.caption, fontsize=10, pad=4)
        _edge_letters(axis, plane.edges)
        left += w + _GAP
    _legend(figure, preview, (_MARGIN + preview.legend_rows * _LEGEND_ROW) / height)


def _legend(figure: Figure, preview: CasePreview, top_fraction: float) -> None:
    entries = preview.legend_entries()
    if not entries:
        note = "no foreground class in the label" if preview.has_label else "no label"
        figure.text(0.5, top_fraction / 2, note, ha="center", va="center", fontsize=10, color="0.3")
        return
    handles = [Patch(facecolor=color, edgecolor="0.3", label=name) for name, color in entries]
    figure.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, top_fraction),
                  ncol=min(_LEGEND_COLUMNS, len(handles)), fontsize=10, handlelength=1.2,
                  columnspacing=1.6, borderaxespad=0.2)


def _edge_letters(axis, edges: tuple[str, str, str, str]) -> None:
    spots = ((0.01, 0.5, "left", "center"), (0.99, 0.5, "right", "center"),
             (0.5, 0.99, "center", "top"), (0.5, 0.01, "center", "bottom"))
    for letter, (x, y, ha, va) in zip(edges, spots):
        if letter:
            axis.text(x, y, letter, transform=axis.transAxes, ha=ha, va=va, fontsize=9,
                      color="white", fontweight="bold")


def png_markdown(png: bytes, title: str = "preview") -> str:
    """Markdown that shows PNG bytes inline (Dagster's MetadataValue.md)."""
    encoded = base64.b64encode(png).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})"


# --------------------------------------------------------------------------
# What to show


def informative_index(label: np.ndarray, axis: int) -> int:
    """The slice along `axis` through a tumor when there is one (FLARE23's
    hardest target), showing the most classes at a substantial cross-section,
    then the most labelled voxels; the middle slice without foreground."""
    if not label.any():
        return label.shape[axis] // 2
    stride = max(1, math.ceil((label.size / _SELECTION_VOXELS) ** (1 / 3)))
    sample = label[::stride, ::stride, ::stride]
    counts = _per_slice_counts(sample, axis)
    peak = counts.max(axis=0)
    substantial = (counts > 0) & (counts >= _SUBSTANTIAL * peak)
    weight = np.ones(counts.shape[1])
    weight[labels.BACKGROUND] = 0
    weight[labels.TUMOR] = counts.shape[1]  # outweighs all other classes together
    score = substantial @ weight
    foreground = counts[:, 1:].sum(axis=1)
    best = np.flatnonzero(score == score.max())
    return int(best[np.argmax(foreground[best])] * stride)


def _per_slice_counts(label: np.ndarray, axis: int) -> np.ndarray:
    """(slices along axis, classes) voxel counts, in one pass."""
    n, bins = label.shape[axis], labels.MAX_LABEL + 1
    index = np.arange(n, dtype=np.int32).reshape([-1 if a == axis else 1 for a in range(3)])
    flat = (index * bins + np.minimum(label, labels.MAX_LABEL)).ravel()
    return np.bincount(flat, minlength=n * bins).reshape(n, bins)


def overlay_rgb(image_slice: np.ndarray, label_slice: np.ndarray | None) -> np.ndarray:
    """The CT slice in the abdominal window, classes blended in their colours."""
    low, high = WINDOW
    gray = np.clip((image_slice.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    if label_slice is not None:
        mask = label_slice > 0
        alpha = _ALPHA[label_slice[mask]][:, None]
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * _LUT[label_slice[mask]]
    return rgb


def _plane(name: str, image: np.ndarray, label: np.ndarray | None, axis: int, index: int,
           spacing: tuple[float, float, float], view: "_DisplayOrientation") -> Plane:
    take = lambda volume: np.take(volume, index, axis=axis)  # noqa: E731
    image_slice, label_slice = take(image), None if label is None else take(label)
    if axis != 0:  # coronal and sagittal: superior at the top
        image_slice = image_slice[::-1]
        label_slice = None if label_slice is None else label_slice[::-1]
    rows_axis, columns_axis = [a for a in range(3) if a != axis]
    height, width = (image_slice.shape[0] * spacing[rows_axis], image_slice.shape[1] * spacing[columns_axis])
    caption = f"{name} · {view.stored_position(axis, index)}"
    return Plane(name, overlay_rgb(image_slice, label_slice), width, height, caption, view.edges(name))


@dataclass(frozen=True)
class _DisplayOrientation:
    """How stored (z, y, x) arrays map onto display axes: axis 0 runs
    inferior->superior, 1 anterior->posterior, 2 patient right->left (LPS), so
    axial planes read radiologically (patient right on the viewer's left,
    anterior at the top). Found from the direction cosines when they are an
    axis permutation with signs; otherwise the stored order is shown."""

    transpose: tuple[int, int, int]  # stored array axis for each display axis
    flip: tuple[bool, bool, bool]  # per display axis
    spacing_zyx: tuple[float, float, float]  # per display axis
    shape: tuple[int, int, int]  # stored array shape
    known: bool

    @classmethod
    def of(cls, geometry: Geometry | None, shape: tuple[int, ...]) -> "_DisplayOrientation":
        shape = tuple(int(s) for s in shape)
        if geometry is None:
            return cls((0, 1, 2), (False, False, False), (1.0, 1.0, 1.0), shape, False)
        spacing = geometry.spacing_zyx
        cosines = np.asarray(geometry.direction, dtype=float).reshape(3, 3)  # column j: index axis j (x, y, z)
        physical = np.abs(cosines).argmax(axis=0)
        if sorted(physical) != [0, 1, 2]:
            return cls((0, 1, 2), (False, False, False), spacing, shape, False)
        transpose, flip, display_spacing = [], [], []
        for display_axis in range(3):  # display axis k shows physical axis 2 - k (z, y, x)
            index_axis = int(np.flatnonzero(physical == 2 - display_axis)[0])
            transpose.append(2 - index_axis)  # numpy axis of ITK index axis j is 2 - j
            flip.append(bool(cosines[2 - display_axis, index_axis] < 0))
            display_spacing.append(float(geometry.spacing[index_axis]))
        return cls(tuple(transpose), tuple(flip), tuple(display_spacing), shape, True)

    def apply(self, volume: np.ndarray) -> np.ndarray:
        volume = np.transpose(volume, self.transpose)
        flips = tuple(a for a, f in enumerate(self.flip) if f)
        return np.flip(volume, flips) if flips else volume

    def stored_position(self, display_axis: int, index: int) -> str:
        stored_axis = self.transpose[display_axis]
        n = self.shape[stored_axis]
        stored = n - 1 - index if self.flip[display_axis] else index
        return f"{'zyx'[stored_axis]} = {stored} of {n}"

    def edges(self, plane: str) -> tuple[str, str, str, str]:
        if not self.known:
            return ("", "", "", "")
        return {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"),
                "sagittal": ("A", "P", "S", "I")}[plane]
