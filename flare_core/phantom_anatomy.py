"""Anatomy of the synthetic FLARE-like abdomen, in millimetres, rasterised on a case grid.

Shapes live in a body frame (u, v, w) in mm: u towards the patient's left, v
posterior, w superior, origin at the body's centre at about the level of the
renal hila. That is ITK's LPS physical frame, shifted and rotated about z, so
the liver (patient's right) has negative u and the spine positive v. Because
shapes are defined in mm, a case looks anatomically the same at any spacing.

Grids have an axis-aligned direction (each axis +1 or -1). That keeps physical
coordinates separable per axis, so every shape is evaluated only inside its own
bounding box; a 512x512x140 case then paints in a few seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from flare_core import labels as L

Bounds = tuple[np.ndarray, np.ndarray]
Crop = tuple[slice, slice, slice]

# Contrast-enhanced (portal venous) CT values in HU; a case scales them slightly.
AIR, LUNG, FAT, VISCERAL_FAT, SKIN, MUSCLE = -1000.0, -850.0, -100.0, -90.0, 10.0, 50.0
CANCELLOUS, CORTICAL, DISC, CSF = 350.0, 700.0, 90.0, 15.0
ORGAN_HU: dict[int, tuple[float, float]] = {  # (low, high) of the per-case mean
    L.LIVER: (55, 70), L.RIGHT_KIDNEY: (150, 185), L.SPLEEN: (45, 60),
    L.PANCREAS: (40, 55), L.AORTA: (160, 220), L.IVC: (115, 145),
    L.RIGHT_ADRENAL: (30, 45), L.LEFT_ADRENAL: (30, 45), L.GALLBLADDER: (5, 18),
    L.ESOPHAGUS: (35, 50), L.STOMACH: (35, 50), L.DUODENUM: (30, 45),
    L.LEFT_KIDNEY: (150, 185),
}
# Organs a lesion may grow in, with how often each is chosen.
LESION_HOSTS: dict[int, float] = {L.LIVER: 0.5, L.RIGHT_KIDNEY: 0.15, L.LEFT_KIDNEY: 0.15, L.PANCREAS: 0.2}
LESION_RADIUS_MM: dict[int, tuple[float, float]] = {
    L.LIVER: (8, 22), L.RIGHT_KIDNEY: (7, 16), L.LEFT_KIDNEY: (7, 16), L.PANCREAS: (6, 12),
}
# How much darker than its host a lesion is (HU). Kidney lesions drop further
# because the enhancing cortex is so bright; they must stay below the medulla.
LESION_DROP_HU: dict[int, tuple[float, float]] = {
    L.LIVER: (30, 60), L.RIGHT_KIDNEY: (80, 130), L.LEFT_KIDNEY: (80, 130), L.PANCREAS: (30, 50),
}
# Nominal cavity half-axes (mm) the organ positions below were laid out for.
NOMINAL_CAVITY = (126.0, 85.0)


class Shape(Protocol):
    def bounds(self) -> Bounds: ...
    def mask(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid turned by `tilt` about w, its outline rippled by `lobes` bumps."""

    centre: tuple[float, float, float]
    semi: tuple[float, float, float]
    tilt: float = 0.0
    ripple: float = 0.0
    lobes: int = 3
    phase: float = 0.0

    def bounds(self) -> Bounds:
        c, s = np.asarray(self.centre), np.asarray(self.semi) * (1 + self.ripple)
        r = max(s[0], s[1])
        half = np.array([r, r, s[2]])
        return c - half, c + half

    def mask(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        cu, cv, cw = self.centre
        su, sv, sw = self.semi
        du, dv = u - cu, v - cv
        a = np.cos(self.tilt) * du + np.sin(self.tilt) * dv
        b = -np.sin(self.tilt) * du + np.cos(self.tilt) * dv
        radial = (a / su) ** 2 + (b / sv) ** 2
        limit = 1.0 + self.ripple * np.sin(self.lobes * np.arctan2(b, a) + self.phase)
        axial = ((w - cw) / sw) ** 2
        return radial[None] + axial[:, None, None] <= (limit ** 2)[None]


@dataclass(frozen=True)
class Tube:
    """A chain of capsules through `points` (mm), radius interpolated along it."""

    points: tuple[tuple[float, float, float], ...]
    radii: tuple[float, ...]

    def bounds(self) -> Bounds:
        p, r = np.asarray(self.points), max(self.radii)
        return p.min(axis=0) - r, p.max(axis=0) + r

    def mask(self, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
        out = np.zeros((w.size,) + u.shape, dtype=bool)
        pts = np.asarray(self.points, dtype=float)
        for (a, b), (ra, rb) in zip(zip(pts[:-1], pts[1:]), zip(self.radii[:-1], self.radii[1:])):
            out |= _capsule(u, v, w, a, b, ra, rb)
        return out


def _capsule(u, v, w, a, b, ra, rb) -> np.ndarray:
    d = b - a
    length2 = float(d @ d)
    # Projection of every voxel on the segment, split into an in-plane and a z part.
    t = ((u - a[0]) * d[0] + (v - a[1]) * d[1])[None] + ((w - a[2]) * d[2])[:, None, None]
    t = np.clip(t / length2, 0.0, 1.0)
    dist2 = (u[None] - a[0] - t * d[0]) ** 2 + (v[None] - a[1] - t * d[1]) ** 2
    dist2 += (w[:, None, None] - a[2] - t * d[2]) ** 2
    return dist2 <= (ra + t * (rb - ra)) ** 2


@dataclass
class Grid:
    """Physical coordinates of a case grid and where the body frame sits in it."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    centre: tuple[float, float, float]  # physical (x, y, z) of the body frame origin
    angle: float  # rotation of the body about z, radians
    spacing_zyx: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.z.size, self.y.size, self.x.size

    def crop(self, lo: np.ndarray, hi: np.ndarray) -> Crop | None:
        """Index box holding the body-frame box [lo, hi], None when off the grid."""
        corners = np.array([[u, v] for u in (lo[0], hi[0]) for v in (lo[1], hi[1])])
        c, s = np.cos(self.angle), np.sin(self.angle)
        px = self.centre[0] + c * corners[:, 0] - s * corners[:, 1]
        py = self.centre[1] + s * corners[:, 0] + c * corners[:, 1]
        parts = (
            _axis_range(self.z, self.centre[2] + lo[2], self.centre[2] + hi[2]),
            _axis_range(self.y, py.min(), py.max()),
            _axis_range(self.x, px.min(), px.max()),
        )
        return None if any(p is None for p in parts) else parts

    def body_coords(self, crop: Crop) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """u, v on the crop's (y, x) plane and w along its z."""
        zs, ys, xs = crop
        dx = self.x[xs][None, :] - self.centre[0]
        dy = self.y[ys][:, None] - self.centre[1]
        c, s = np.cos(self.angle), np.sin(self.angle)
        return c * dx + s * dy, -s * dx + c * dy, self.z[zs] - self.centre[2]

    def full_crop(self) -> Crop:
        return slice(None), slice(None), slice(None)


def _axis_range(coords: np.ndarray, lo: float, hi: float) -> slice | None:
    inside = np.flatnonzero((coords >= lo) & (coords <= hi))
    return slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else None


@dataclass
class Canvas:
    """The volumes being painted: intensities, labels and where organs may go."""

    grid: Grid
    hu: np.ndarray = field(init=False)
    labels: np.ndarray = field(init=False)
    allowed: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.hu = np.full(self.grid.shape, AIR, dtype=np.float32)
        self.labels = np.zeros(self.grid.shape, dtype=np.uint8)
        self.allowed = np.zeros(self.grid.shape, dtype=bool)

    def region(self, shape: Shape) -> tuple[Crop, np.ndarray] | None:
        crop = self.grid.crop(*shape.bounds())
        if crop is None:
            return None
        return crop, shape.mask(*self.grid.body_coords(crop))

    def paint_organ(self, shape: Shape, label: int, hu: float) -> None:
        """Later organs win over earlier ones; organs stay inside the cavity."""
        found = self.region(shape)
        if found:
            crop, mask = found
            mask &= self.allowed[crop]
            self.labels[crop][mask] = label
            self.hu[crop][mask] = hu

    def paint_hu(self, shape: Shape, hu: float, within: int | None = None) -> None:
        """Intensity only: inside organ `within`, or in free cavity when None."""
        found = self.region(shape)
        if found:
            crop, mask = found
            if within is None:
                mask &= self.allowed[crop] & (self.labels[crop] == 0)
            else:
                mask &= self.labels[crop] == within
            self.hu[crop][mask] = hu


@dataclass(frozen=True)
class Body:
    """Cross-section of the trunk: nested ellipses for skin, fat, muscle, cavity."""

    half_width: float
    half_depth: float
    fat: float
    muscle: float
    spine_v: float
    spine_r: float
    taper_phase: float

    @property
    def cavity(self) -> tuple[float, float]:
        inset = 2.5 + self.fat + self.muscle
        return self.half_width - inset, self.half_depth - inset

    def scale_at(self, w: np.ndarray) -> np.ndarray:
        # The trunk widens gently towards the lower ribs and narrows at the waist.
        return 1.0 + 0.04 * np.sin(w / 110.0 + self.taper_phase)


def sample_body(rng: np.random.Generator) -> Body:
    return Body(
        half_width=rng.uniform(150, 168), half_depth=rng.uniform(110, 126),
        fat=rng.uniform(10, 28), muscle=rng.uniform(8, 14),
        spine_v=rng.uniform(52, 60), spine_r=rng.uniform(16, 20),
        taper_phase=rng.uniform(0, 2 * np.pi),
    )


def paint_body(canvas: Canvas, body: Body) -> None:
    """Skin, fat, muscle wall, spine, psoas and ribs, slice by slice.

    The cross-section maps are computed once; a slice only compares them with
    its own scale, which keeps a 512x512 slice cheap.
    """
    crop = canvas.grid.full_crop()
    u, v, w = canvas.grid.body_coords(crop)
    layers = _layer_maps(u, v, body)
    spine = _spine_maps(u, v, body)
    for k, wk in enumerate(w):
        f2 = float(body.scale_at(np.asarray(wk))) ** 2
        hu, allowed = _body_slice(layers, spine, f2, float(wk), body)
        canvas.hu[k] = hu
        canvas.allowed[k] = allowed


def _layer_maps(u: np.ndarray, v: np.ndarray, body: Body) -> list[np.ndarray]:
    # skin, subcutaneous fat, muscle, cavity, then the band inside the muscle wall the ribs occupy
    insets = (0.0, 2.5, 2.5 + body.fat, 2.5 + body.fat + body.muscle,
              2.5 + body.fat + 0.2 * body.muscle, 2.5 + body.fat + 0.8 * body.muscle)
    return [(u / (body.half_width - t)) ** 2 + (v / (body.half_depth - t)) ** 2 for t in insets]


def _spine_maps(u: np.ndarray, v: np.ndarray, body: Body) -> dict[str, np.ndarray]:
    r = body.spine_r
    canal_v = body.spine_v + r + 9
    return {
        "body2": u ** 2 + (v - body.spine_v) ** 2,
        "canal2": u ** 2 + (v - canal_v) ** 2,
        "process": (u / 5.0) ** 2 + ((v - canal_v - 22) / 14.0) ** 2 <= 1,
        "paraspinal": ((np.abs(u) - 30) / 22.0) ** 2 + ((v - canal_v - 14) / 20.0) ** 2 <= 1,
        "psoas2": (np.abs(u) - (r + 20)) ** 2 + (v - body.spine_v + 4) ** 2,
        # lateral and posterolateral arcs; the anterior wall has cartilage instead
        "rib_sector": (np.arctan2(v, np.abs(u)) > -0.5) & (np.arctan2(v, np.abs(u)) < 1.1),
    }


def _body_slice(layers, spine, f2: float, w: float, body: Body) -> tuple[np.ndarray, np.ndarray]:
    inside = [m <= f2 for m in layers]
    hu = np.select(inside[3::-1], [VISCERAL_FAT, MUSCLE, FAT, SKIN], default=AIR).astype(np.float32)
    cavity = inside[3]
    r = body.spine_r
    # Vertebrae repeat every ~38 mm with an intervertebral disc between them.
    in_disc = (w % 38.0) < 8.0
    vert = spine["body2"] <= r ** 2
    hu[vert] = DISC if in_disc else CANCELLOUS
    if not in_disc:
        hu[vert & (spine["body2"] > (r - 2.5) ** 2)] = CORTICAL
    arch = (spine["canal2"] <= 14.0 ** 2) | spine["process"]
    hu[arch] = CORTICAL * 0.85
    hu[spine["canal2"] <= 9.0 ** 2] = CSF
    hu[spine["paraspinal"] & inside[2]] = MUSCLE
    psoas = np.zeros_like(cavity)
    if w < -5:  # the psoas muscles grow as they run down to the pelvis
        psoas = spine["psoas2"] <= min(6 + 0.2 * (-5 - w), 24) ** 2
        hu[psoas] = MUSCLE
    if w > -40 and (w % 26.0) < 8.0:  # lower ribs cross the lateral wall
        hu[spine["rib_sector"] & inside[4] & ~inside[5]] = CORTICAL * 0.8
    allowed = cavity & ~vert & ~arch & ~spine["paraspinal"] & ~psoas
    return hu, allowed


@dataclass(frozen=True)
class Placement:
    """Maps the nominal layout (laid out for NOMINAL_CAVITY) onto one case's body."""

    pu: float
    pv: float
    size: float

    @classmethod
    def for_body(cls, body: Body, rng: np.random.Generator) -> "Placement":
        cu, cv = body.cavity
        pu, pv = cu / NOMINAL_CAVITY[0], cv / NOMINAL_CAVITY[1]
        return cls(pu, pv, float(np.sqrt(pu * pv) * rng.uniform(0.95, 1.05)))

    def point(self, p, shift) -> tuple[float, float, float]:
        return (p[0] * self.pu + shift[0], p[1] * self.pv + shift[1], p[2] * self.size + shift[2])

    def ellipsoid(self, rng, shift, k, centre, semi, tilt=0.0, ripple=0.0) -> Ellipsoid:
        return Ellipsoid(self.point(centre, shift), tuple(s * k for s in semi),
                         tilt + rng.normal(0, 0.08), ripple, int(rng.integers(2, 5)),
                         rng.uniform(0, 2 * np.pi))

    def tube(self, shift, k, points, radii) -> Tube:
        return Tube(tuple(self.point(p, shift) for p in points), tuple(r * k for r in radii))


# Organs in painting order: a later organ wins where two overlap, which is how
# the small organs (adrenals, gallbladder, vessels) keep their shape.
def organ_shapes(place: Placement, rng: np.random.Generator) -> list[tuple[int, list[Shape]]]:
    def jitter(sd: float = 3.0) -> np.ndarray:
        return np.clip(rng.normal(0, sd, 3), -2 * sd, 2 * sd)

    def k(spread: float = 0.1) -> float:
        return place.size * rng.uniform(1 - spread, 1 + spread)

    e, t = place.ellipsoid, place.tube
    j, s = jitter(), k()
    liver = [e(rng, j, s, (-58, -5, 38), (62, 70, 52), 0.2, 0.06),
             e(rng, j, s, (-5, -42, 50), (48, 28, 30), 0.3, 0.05)]
    j, s = jitter(), k()
    stomach = [e(rng, j, s, (48, -28, 42), (42, 36, 45), 0.5, 0.05),
               t(j, s, [(48, -28, 20), (20, -50, 5), (-12, -42, -2)], [22, 16, 12])]
    return [
        (L.LIVER, liver),
        (L.SPLEEN, [e(rng, jitter(), k(), (82, 35, 38), (22, 46, 42), 0.7, 0.05)]),
        (L.RIGHT_KIDNEY, [e(rng, jitter(), k(), (-66, 44, -28), (26, 21, 48), -0.4, 0.03)]),
        (L.LEFT_KIDNEY, [e(rng, jitter(), k(), (66, 44, -18), (26, 21, 48), 0.4, 0.03)]),
        (L.STOMACH, stomach),
        (L.PANCREAS, [t(jitter(), k(), [(-30, 2, -12), (-8, -8, -4), (30, 0, 4), (62, 22, 12), (76, 28, 16)],
                        [15, 11, 10, 9, 7])]),
        (L.DUODENUM, [t(jitter(2), k(0.05), [(-12, -42, -2), (-40, -28, -6), (-52, -5, -18), (-50, 0, -50),
                                              (-28, -8, -62), (5, -12, -60), (22, -5, -42), (20, -5, -28)],
                        [11, 12, 11, 11, 11, 11, 10, 9])]),
        (L.GALLBLADDER, [e(rng, jitter(), k(0.15), (-48, -48, 5), (14, 16, 30), 0.4, 0.04)]),
        (L.IVC, [t(jitter(1.5), k(0.05), [(-20, 22, -110), (-22, 20, -20), (-24, 14, 40), (-18, 8, 95)],
                   [12, 12, 13, 13])]),
        (L.AORTA, [t(jitter(1.5), k(0.05), [(14, 28, -105), (16, 24, -20), (16, 30, 50), (26, 40, 110),
                                             (26, 40, 300)], [10, 11, 11, 12, 12])]),
        (L.ESOPHAGUS, [t(jitter(1.5), k(0.05), [(26, 0, 55), (14, 14, 70), (0, 22, 90), (-4, 24, 140),
                                                 (-4, 26, 300)], [9, 9, 9, 8, 8])]),
        (L.RIGHT_ADRENAL, [e(rng, jitter(2), k(), (-40, 34, 28), (5, 15, 16), -0.5)]),
        (L.LEFT_ADRENAL, [e(rng, jitter(2), k(), (38, 30, 18), (5, 15, 16), 0.5)]),
    ]


def organ_intensities(rng: np.random.Generator) -> dict[int, float]:
    """Per-case mean HU; paired organs share one value (same contrast phase)."""
    hu = {organ: float(rng.uniform(*ORGAN_HU[organ])) for organ in L.ORGANS}
    hu[L.LEFT_KIDNEY] = hu[L.RIGHT_KIDNEY]
    hu[L.LEFT_ADRENAL] = hu[L.RIGHT_ADRENAL]
    return hu


def paint_surroundings(canvas: Canvas, place: Placement, rng: np.random.Generator) -> None:
    """Unlabelled structures (lung bases, heart, bowel, bladder) that the
    organs then overwrite: they give a model something to confuse organs with."""
    p = place
    for side in (-1, 1):
        canvas.paint_hu(Ellipsoid(p.point((78 * side, 30, 140), (0, 0, 0)), (60, 62, 75)), LUNG)
    canvas.paint_hu(Ellipsoid(p.point((15, -35, 155), (0, 0, 0)), (60, 50, 50)), 120.0)
    canvas.paint_hu(Ellipsoid(p.point((0, -40, -205), (0, 0, 0)), (45, 35, 35)), 8.0)
    colon = [((-92, 5, -120), (-95, 0, -15)), ((-95, 0, -15), (-60, -55, -20), (0, -60, -30), (60, -55, -15),
                                              (95, 10, 0)), ((95, 10, 0), (95, 15, -120))]
    for points in colon:
        scaled = tuple(p.point(q, (0, 0, 0)) for q in points)
        canvas.paint_hu(Tube(scaled, (18,) * len(scaled)), 30.0)
        content = AIR if rng.random() < 0.6 else 15.0
        canvas.paint_hu(Tube(scaled, (13,) * len(scaled)), content)
    for _ in range(int(rng.integers(2, 6))):  # small-bowel loops in the lower abdomen
        centre = (rng.uniform(-60, 60), rng.uniform(-60, -10), rng.uniform(-120, -45))
        canvas.paint_hu(Ellipsoid(p.point(centre, (0, 0, 0)), tuple(rng.uniform(15, 28, 3))), rng.uniform(20, 40))


def paint_organs(canvas: Canvas, place: Placement, rng: np.random.Generator) -> dict[int, float]:
    """All 13 organs with their inner texture; returns the organ mean HU used."""
    hu = organ_intensities(rng)
    shapes = organ_shapes(place, rng)
    for organ, parts in shapes:
        for part in parts:
            canvas.paint_organ(part, organ, hu[organ])
    _paint_textures(canvas, dict(shapes), hu, place, rng)
    return hu


def _paint_textures(canvas: Canvas, shapes: dict[int, list[Shape]], hu: dict[int, float],
                    place: Placement, rng: np.random.Generator) -> None:
    for kidney in (L.RIGHT_KIDNEY, L.LEFT_KIDNEY):
        outer = shapes[kidney][0]
        medulla = Ellipsoid(outer.centre, tuple(0.55 * s for s in outer.semi), outer.tilt)
        canvas.paint_hu(medulla, hu[kidney] - rng.uniform(45, 70), within=kidney)
    _paint_lumen(canvas, shapes[L.STOMACH], L.STOMACH, 5.0, rng.uniform(0.2, 0.8), rng)
    _paint_lumen(canvas, shapes[L.DUODENUM], L.DUODENUM, 4.0, rng.uniform(0.0, 0.4), rng)
    if rng.random() < 0.5:
        canvas.paint_hu(_shrunk(shapes[L.ESOPHAGUS][0], 6.0), AIR, within=L.ESOPHAGUS)
    # Portal and hepatic veins: bright branches that a lesion model must not take for lesions.
    vein_hu = rng.uniform(130, 170)
    for points in (((-24, 14, 60), (-50, -10, 50), (-85, -20, 40)), ((-20, 5, 20), (-45, -15, 25), (-75, -30, 15))):
        vein = Tube(tuple(place.point(q, (0, 0, 0)) for q in points), (5.0, 4.0, 3.0))
        canvas.paint_hu(vein, vein_hu, within=L.LIVER)


def _shrunk(shape: Shape, by: float) -> Shape:
    if isinstance(shape, Tube):
        return Tube(shape.points, tuple(max(r - by, 1.0) for r in shape.radii))
    semi = tuple(max(s - by, 1.0) for s in shape.semi)
    return Ellipsoid(shape.centre, semi, shape.tilt, shape.ripple, shape.lobes, shape.phase)


@dataclass(frozen=True)
class Anterior:
    """The part of a shape in front of (v below) a plane: where gas collects in a supine patient."""

    shape: Shape
    v_max: float

    def bounds(self) -> Bounds:
        return self.shape.bounds()

    def mask(self, u, v, w) -> np.ndarray:
        return self.shape.mask(u, v, w) & (v < self.v_max)[None]


def _paint_lumen(canvas: Canvas, parts: list[Shape], organ: int, wall: float, gas: float,
                 rng: np.random.Generator) -> None:
    """Fluid inside the wall, gas in the anterior `gas` fraction of each part."""
    for part in parts:
        lumen = _shrunk(part, wall)
        canvas.paint_hu(lumen, rng.uniform(10, 25), within=organ)
        lo, hi = part.bounds()
        level = lo[1] + gas * (hi[1] - lo[1])
        canvas.paint_hu(Anterior(lumen, level), AIR, within=organ)


def add_lesions(canvas: Canvas, organ_hu: dict[int, float], count: int,
                rng: np.random.Generator) -> list[dict]:
    """Grow `count` hypodense lesions (label 14) inside liver, kidneys or pancreas."""
    found = []
    for _ in range(count):
        hosts = [h for h in LESION_HOSTS if np.any(canvas.labels == h)]
        if not hosts:
            break
        weights = np.array([LESION_HOSTS[h] for h in hosts])
        host = int(rng.choice(hosts, p=weights / weights.sum()))
        found.append(_grow_lesion(canvas, host, organ_hu[host] - rng.uniform(*LESION_DROP_HU[host]), rng))
    return found


def _grow_lesion(canvas: Canvas, host: int, hu: float, rng: np.random.Generator) -> dict:
    centre = _random_voxel(canvas, host, rng)
    radii = rng.uniform(*LESION_RADIUS_MM[host]) * rng.uniform(0.8, 1.2, 3)
    crop, dist2 = [], 0.0
    for axis, (c, r, sp, n) in enumerate(zip(centre, radii, canvas.grid.spacing_zyx, canvas.labels.shape)):
        half = int(np.ceil(r / sp))
        lo, hi = max(c - half, 0), min(c + half + 1, n)
        offsets = ((np.arange(lo, hi) - c) * sp / r) ** 2
        dist2 = dist2 + offsets.reshape([-1 if a == axis else 1 for a in range(3)])
        crop.append(slice(lo, hi))
    crop = tuple(crop)
    mask = (dist2 <= 1.0) & (canvas.labels[crop] == host)
    canvas.labels[crop][mask] = L.TUMOR
    canvas.hu[crop][mask] = hu
    return {"host": host, "voxels": int(mask.sum()), "centre_zyx": [int(c) for c in centre],
            "radii_mm": [round(float(r), 2) for r in radii]}


def _random_voxel(canvas: Canvas, label: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random voxel of `label`, drawn in physical (unflipped) voxel order so a
    flipped grid gets its lesions in the same physical places."""
    flips = [False, canvas.grid.y[-1] < canvas.grid.y[0], canvas.grid.x[-1] < canvas.grid.x[0]]
    canonical = tuple(slice(None, None, -1) if f else slice(None) for f in flips)
    flat = np.flatnonzero(canvas.labels[canonical] == label)
    index = np.unravel_index(int(rng.choice(flat)), canvas.labels.shape)
    return tuple(int(n - 1 - i) if f else int(i) for i, n, f in zip(index, canvas.labels.shape, flips))
