"""Visibly wrong "synthetic" sets made from real units, whose verdict is known: the quality gate must fail each.

Built from FRESH real patients (never the reference): the units as they are ("fresh", must pass), and the same
units relabelled or altered the way a broken generator or a broken export would: two classes' labels swapped, one
class missing, the slices of each unit shuffled, an in-plane blur of sigma 1 voxel, every intensity raised by 0.3,
the contrast scaled by 0.7 (values clipped to [-1, 1], the units' range). Issue 23 measured every one of these
PASSING the old rules (FD-VU ratio <= 5, FRD ratio <= 5, TSTR >= 0.5) on the 58-patient cohort.

Pure numpy on UnitArrays; the shuffle is seeded.
"""
from __future__ import annotations

import numpy as np

from vugan.components.schema import UnitArrays

CASES = ("fresh", "labels swapped", "class missing", "slices shuffled", "blur sigma=1", "intensity +0.3",
         "contrast x0.7")


def _replace(units: UnitArrays, images=None, class_ids=None, keep=None) -> UnitArrays:
    keep = np.ones(len(units), bool) if keep is None else keep
    images = units.images if images is None else images
    class_ids = units.class_ids if class_ids is None else class_ids
    return UnitArrays(np.clip(images, -1, 1).astype(np.float32)[keep], np.asarray(class_ids, np.int32)[keep],
                      units.regions[keep], units.level_names[keep], units.patients[keep])


def swap_classes(units: UnitArrays, a: int, b: int) -> UnitArrays:
    """Units of class a labelled b and vice versa (an export that mixed up two class names)."""
    ids = units.class_ids.copy()
    ids[units.class_ids == a], ids[units.class_ids == b] = b, a
    return _replace(units, class_ids=ids)


def drop_class(units: UnitArrays, c: int) -> UnitArrays:
    return _replace(units, keep=units.class_ids != c)


def shuffle_slices(units: UnitArrays, seed: int) -> UnitArrays:
    rng = np.random.default_rng(seed)
    k = units.images.shape[-1]
    return _replace(units, images=np.stack([u[..., rng.permutation(k)] for u in units.images]))


def blur(units: UnitArrays, sigma: float = 1.0) -> UnitArrays:
    from scipy.ndimage import gaussian_filter

    return _replace(units, images=gaussian_filter(units.images, (0, sigma, sigma, 0), mode="nearest"))


def degraded(fresh: UnitArrays, swap: tuple[int, int], missing: int, seed: int = 0) -> dict[str, UnitArrays]:
    """Every case of CASES built from ``fresh`` (``swap``: the two class ids exchanged; ``missing``: the class
    dropped; on the spine cohort thoracic and lumbar, and thoracic)."""
    return {"fresh": fresh, "labels swapped": swap_classes(fresh, *swap), "class missing": drop_class(fresh, missing),
            "slices shuffled": shuffle_slices(fresh, seed), "blur sigma=1": blur(fresh, 1.0),
            "intensity +0.3": _replace(fresh, images=fresh.images + 0.3),
            "contrast x0.7": _replace(fresh, images=fresh.images * 0.7)}
