"""Small PNG previews of a CT slice with a label overlay, for the Dagster UI.

Dagster has no image metadata type, so assets embed these as base64 PNG in
markdown; they are kept small (at most `max_pixels` on the long side).
"""
from __future__ import annotations

import base64
import io as _io

import matplotlib

matplotlib.use("Agg")  # headless: previews are rendered in step processes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Abdominal soft-tissue window (HU).
WINDOW = (-160.0, 240.0)
_COLORS = plt.get_cmap("tab20")(np.arange(20))[:, :3]


def informative_slice(label: np.ndarray | None, depth: int) -> int:
    """The axial slice with the most labelled voxels, else the middle one."""
    if label is None or not label.any():
        return depth // 2
    return int(np.argmax((label > 0).reshape(depth, -1).sum(axis=1)))


def overlay_rgb(image_slice: np.ndarray, label_slice: np.ndarray | None, alpha: float = 0.45) -> np.ndarray:
    low, high = WINDOW
    gray = np.clip((image_slice.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    if label_slice is not None:
        mask = label_slice > 0
        colors = _COLORS[label_slice[mask] % len(_COLORS)]
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colors
    return rgb


def preview_png(image: np.ndarray, label: np.ndarray | None = None, max_pixels: int = 256) -> bytes:
    """PNG bytes of the most informative axial slice of a (z, y, x) volume."""
    z = informative_slice(label, image.shape[0])
    rgb = overlay_rgb(image[z], None if label is None else label[z])
    step = max(1, int(np.ceil(max(rgb.shape[:2]) / max_pixels)))
    rgb = rgb[::step, ::step]
    buffer = _io.BytesIO()
    plt.imsave(buffer, rgb, format="png")
    return buffer.getvalue()


def png_markdown(png: bytes, title: str = "preview") -> str:
    """Markdown that shows PNG bytes inline (Dagster's MetadataValue.md)."""
    encoded = base64.b64encode(png).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})"


def training_curve_png(train_loss: list[float], val_loss: list[float], pseudo_dice: list[float]) -> bytes:
    """Loss and pseudo-Dice per epoch, the picture nnU-Net users look at first."""
    fig, loss_axis = plt.subplots(figsize=(5, 3), dpi=80)
    epochs = range(len(train_loss))
    loss_axis.plot(epochs, train_loss, label="train loss", color="tab:blue")
    if val_loss:
        loss_axis.plot(range(len(val_loss)), val_loss, label="val loss", color="tab:red")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    dice_axis = loss_axis.twinx()
    if pseudo_dice:
        dice_axis.plot(range(len(pseudo_dice)), pseudo_dice, label="pseudo-Dice", color="tab:green", linestyle="--")
    dice_axis.set_ylabel("pseudo-Dice")
    dice_axis.set_ylim(0, 1)
    fig.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def score_bars_png(names: list[str], dsc: list[float], nsd: list[float]) -> bytes:
    """Per-class DSC and NSD as grouped bars: the evaluation summary's plot."""
    fig, axis = plt.subplots(figsize=(7, 3), dpi=80)
    x = np.arange(len(names))
    axis.bar(x - 0.2, dsc, width=0.4, label="DSC")
    axis.bar(x + 0.2, nsd, width=0.4, label="NSD")
    axis.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    axis.set_ylim(0, 1)
    axis.legend(fontsize=7)
    fig.tight_layout()
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
