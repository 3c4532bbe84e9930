"""Centre more of nnU-Net's foreground patches on one rare class.

nnU-Net centres a share of its training patches on foreground: it picks one of
the classes present in the case uniformly, then one of that class's sampled
voxels. With 14 foreground classes a tumor is the centre of about 1 in 14 of
those patches, and within the tumor class a voxel is drawn uniformly, so the
few voxels of a kidney or pancreas lesion are almost never a patch centre.

`focused_dataset_class(base, focus_class, share)` returns a subclass of
nnU-Net's dataset class whose `load_case` hides every other class's locations
with probability `share` when the case holds `focus_class`; nnU-Net's own
`get_bbox` then centres a foreground patch on it - with `per_lesion`, on one
lesion (face-connected region) drawn uniformly rather than on a uniform voxel.
Random (not foreground) patches ignore class locations, so they are
unchanged. The trainer hands the subclass to nnU-Net through its
`dataset_class` attribute, nnU-Net's own extension point; nothing of nnU-Net
is patched.
"""
from __future__ import annotations

import functools

import numpy as np
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset
from scipy import ndimage

CLASS_LOCATIONS = "class_locations"


class FocusedDataset:
    """Mixin over an nnU-Net dataset class; the focus settings are class attributes."""

    focus_base: type[nnUNetBaseDataset]  # the nnU-Net dataset class this one extends
    focus_class: int = -1
    focus_share: float = 0.0
    focus_per_lesion: bool = False

    def __reduce__(self):
        # The class is made at run time, so pickle (augmentation workers that
        # are spawned, not forked) rebuilds it from its base and settings.
        settings = (self.focus_class, self.focus_share, self.focus_per_lesion)
        return _rebuild, (self.focus_base, settings, self.__dict__)

    def load_case(self, identifier):
        data, seg, seg_prev, properties = super().load_case(identifier)
        segmentation = seg if self.focus_per_lesion else None
        return data, seg, seg_prev, focus_properties(properties, self.focus_class, self.focus_share,
                                                     segmentation=segmentation)


def focus_properties(properties: dict, focus_class: int, share: float, *, segmentation=None,
                     rng: np.random.Generator | None = None) -> dict:
    """`properties` whose class locations hold only `focus_class`, with probability `share`
    when the case has locations of that class; otherwise `properties` unchanged.

    With `segmentation` (the case's (1, z, y, x) labels) the locations are
    narrowed to one connected region of `focus_class` drawn uniformly, so a
    small lesion is a patch centre as often as a large one in the same case."""
    locations = properties.get(CLASS_LOCATIONS) or {}
    focus = locations.get(focus_class)
    if focus is None or len(focus) == 0:
        return properties
    # nnU-Net's loaders draw from np.random (seeded per worker); both it and a Generator have random().
    random = rng if rng is not None else np.random
    if random.random() >= share:
        return properties
    if segmentation is not None:
        focus = one_region(focus, np.asarray(segmentation[0]) == focus_class, random)
    return {**properties, CLASS_LOCATIONS: {focus_class: focus}}


def one_region(locations: np.ndarray, mask: np.ndarray, random) -> np.ndarray:
    """The rows of `locations` ((channel, z, y, x) voxels of `mask`) in one face-connected
    region of `mask`, drawn uniformly among the regions that hold a location."""
    regions, _ = ndimage.label(mask)
    region_of = regions[tuple(np.asarray(locations[:, 1:], dtype=np.intp).T)]
    present = np.unique(region_of[region_of > 0])
    if len(present) == 0:
        return locations
    chosen = present[min(int(random.random() * len(present)), len(present) - 1)]
    return locations[region_of == chosen]


def focused_dataset_class(base: type[nnUNetBaseDataset], focus_class: int, share: float,
                          per_lesion: bool = False) -> type:
    """A subclass of `base` (nnU-Net's inferred dataset class) that focuses on `focus_class`."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"focus share must be in [0, 1], got {share}")
    return _focused_class(base, int(focus_class), float(share), bool(per_lesion))


@functools.lru_cache(maxsize=None)
def _focused_class(base: type, focus_class: int, share: float, per_lesion: bool) -> type:
    # One class per base and settings, so two trainers in one process never share settings.
    return type(f"Focused{base.__name__}", (FocusedDataset, base),
                {"focus_base": base, "focus_class": focus_class, "focus_share": share,
                 "focus_per_lesion": per_lesion, "__module__": __name__})


def _rebuild(base: type, settings: tuple, state: dict) -> FocusedDataset:
    cls = focused_dataset_class(base, *settings)
    dataset = cls.__new__(cls)
    dataset.__dict__.update(state)
    return dataset
