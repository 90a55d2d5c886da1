"""Changes to a unit that keep its patient's identity: what a copy may hide behind.

A vertebral unit is an array [..., H, W, K] (K slices last, values in [-1, 1]). A near-copy of a training patient
stays that patient's anatomy after a shift of a voxel or two, the slice order reversed, a flip in the plane, a
monotone change of intensities, or one slice pasted into another unit. The copy test must see through these
(evaluator, privacy), and the calibration builds its leak scenarios from them (tests/support/privacy_controls.py,
bench/privacy_calibration.py). Pure numpy; every function returns a new float32 array of the input's shape.
"""
from __future__ import annotations

import numpy as np


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate in the plane by whole voxels (dy rows down, dx columns right); the border is repeated, not wrapped
    around (a wrapped edge would be an artefact no scanner makes)."""
    x = np.asarray(images, np.float32)
    h, w = x.shape[-3], x.shape[-2]
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(f"shift ({dy}, {dx}) is not smaller than the plane {h}x{w}")
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return x[..., rows, :, :][..., :, cols, :].copy()


def slices_reversed(images: np.ndarray) -> np.ndarray:
    """The slice order reversed (left-right through the spine for sagittal slices)."""
    return np.ascontiguousarray(np.asarray(images, np.float32)[..., ::-1])


def flipped(images: np.ndarray, axis: str) -> np.ndarray:
    """Mirrored in the plane: axis "rows" turns the unit upside down, "cols" mirrors front and back."""
    x = np.asarray(images, np.float32)
    if axis == "rows":
        return np.ascontiguousarray(x[..., ::-1, :, :])
    if axis == "cols":
        return np.ascontiguousarray(x[..., :, ::-1, :])
    raise ValueError(f"axis {axis!r}: use 'rows' or 'cols'")


def remapped(images: np.ndarray, gain: float = 1.0, offset: float = 0.0, gamma: float = 1.0) -> np.ndarray:
    """A monotone intensity change: gamma on [0, 1] (x -> ((x + 1) / 2) ** gamma), then gain and offset, clipped to
    [-1, 1]. gain > 0 and gamma > 0 keep the order of intensities (a different window or contrast)."""
    if gain <= 0 or gamma <= 0:
        raise ValueError(f"gain {gain} and gamma {gamma} must be > 0 (a monotone increasing remap)")
    x = np.asarray(images, np.float32)
    curved = 2.0 * ((x + 1.0) / 2.0).clip(0.0, 1.0) ** gamma - 1.0
    return np.clip(gain * curved + offset, -1.0, 1.0).astype(np.float32)


def centre_slice_pasted(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``target`` with its centre slice replaced by ``source``'s centre slice: one slice of a patient inside a unit
    that is otherwise somebody else's."""
    src, out = np.asarray(source, np.float32), np.array(target, np.float32)
    if src.shape != out.shape:
        raise ValueError(f"source {src.shape} and target {out.shape} differ in shape")
    k = out.shape[-1] // 2
    out[..., k] = src[..., k]
    return out


# The transforms the copy test is held to (issue "Evidence a reviewer cannot fool"): name -> images -> images.
# Each keeps the patient; the calibration checks that a copy under every one of them is caught.
COPY_DISGUISES = {
    "shift 1 voxel": lambda x: shifted(x, 1, 0),
    "shift 2 voxels": lambda x: shifted(x, 1, -2),
    "slices reversed": slices_reversed,
    "flipped in the plane": lambda x: flipped(x, "cols"),
    "intensity 0.7x + 0.15": lambda x: remapped(x, gain=0.7, offset=0.15),
    "gamma 1.5": lambda x: remapped(x, gamma=1.5),
}
