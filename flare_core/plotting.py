"""Every picture the platform renders goes through `render_png`.

nnU-Net's logger calls `seaborn.set(font_scale=2.5)` process-wide whenever it
draws its progress plot; those settings stay in `matplotlib.rcParams` and
would give every later figure in the process giant fonts and clipped labels.
`render_png` draws inside `matplotlib.rc_context` on matplotlib's own defaults
plus a small platform style, on a pyplot-free `Figure`, so neither seaborn nor
any other global state reaches the picture, and nothing leaks back out.
"""
from __future__ import annotations

import contextlib
import io as _io
from typing import Any, Callable, Iterator, Mapping

import matplotlib
from matplotlib.figure import Figure

# On top of matplotlib's defaults: what a picture embedded in the Dagster UI needs.
PLATFORM_STYLE: Mapping[str, Any] = {
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
}

# `backend` is the process's choice (Agg in step processes), not a style.
_DEFAULTS = {key: value for key, value in matplotlib.rcParamsDefault.items() if key != "backend"}


@contextlib.contextmanager
def isolated_style(overrides: Mapping[str, Any] | None = None) -> Iterator[None]:
    """matplotlib's defaults + PLATFORM_STYLE (+ overrides), whatever the process set."""
    with matplotlib.rc_context({**_DEFAULTS, **PLATFORM_STYLE, **(overrides or {})}):
        yield


def render_png(draw: Callable[[Figure], None], width_px: int, height_px: int, dpi: int = 100,
               palette: bool = True) -> bytes:
    """PNG bytes of a `width_px` x `height_px` figure that `draw(figure)` fills.

    With `palette`, the PNG is stored with a 256-colour palette: about a third
    of the bytes of true colour, and the pictures are embedded base64 in
    markdown metadata."""
    with isolated_style():
        figure = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
        draw(figure)
        buffer = _io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
    png = buffer.getvalue()
    return _to_palette(png) if palette else png


def _to_palette(png: bytes) -> bytes:
    from PIL import Image

    with Image.open(_io.BytesIO(png)) as image:
        rgb = image.convert("RGB")
    quantized = rgb.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buffer = _io.BytesIO()
    quantized.save(buffer, format="png", optimize=True)
    return buffer.getvalue()
