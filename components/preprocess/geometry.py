"""Crop geometry of a vertebral unit in world millimetres, and sampling a volume through its affine.

A unit's frame is built from body centres only, so it is independent of how the scan was acquired:
  * ``axis``      the local spine axis, cranial -> caudal (image rows run along it);
  * ``lateral``   the patient's left-right direction made orthogonal to the axis (slices step along it);
  * ``posterior`` axis x lateral, pointing anterior -> posterior (image columns run along it).
Sampling maps every output pixel to world mm, then to voxel indices through the inverse affine, and
interpolates linearly (``map_coordinates`` order 1): oblique and non-RAS volumes need no special case.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

_RIGHT = np.array([1.0, 0.0, 0.0])
_ANTERIOR = np.array([0.0, 1.0, 0.0])


@dataclasses.dataclass(frozen=True)
class CropGeometry:
    """Where one unit's K x H x W samples lie in world (RAS mm) coordinates."""

    name: str  # "L4/L5" or "L4"
    upper_centre: np.ndarray  # body centre of the upper vertebra (mm)
    lower_centre: np.ndarray  # body centre of the lower vertebra (== upper for a vertebra unit's own body)
    centre: np.ndarray  # crop centre (mm)
    axis: np.ndarray  # unit vector, cranial -> caudal (rows)
    lateral: np.ndarray  # unit vector, slice direction (towards the patient's right)
    posterior: np.ndarray  # unit vector, anterior -> posterior (columns)
    height_mm: float
    width_mm: float
    slice_offsets_mm: tuple[float, ...]

    def world_points(self, height: int, width: int) -> np.ndarray:
        """World coordinates of every output sample, shape [K, H, W, 3] (pixel centres)."""
        rows = ((np.arange(height) + 0.5) / height - 0.5) * self.height_mm
        cols = ((np.arange(width) + 0.5) / width - 0.5) * self.width_mm
        offs = np.asarray(self.slice_offsets_mm, dtype=np.float64)
        return (self.centre[None, None, None, :]
                + offs[:, None, None, None] * self.lateral
                + rows[None, :, None, None] * self.axis
                + cols[None, None, :, None] * self.posterior)


def unit_frame(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(axis, lateral, posterior) unit vectors for a cranial->caudal spine axis given in RAS mm."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    lateral = _RIGHT - (_RIGHT @ axis) * axis
    if np.linalg.norm(lateral) < 1e-6:  # a spine running left-right: fall back to the anterior direction
        lateral = _ANTERIOR - (_ANTERIOR @ axis) * axis
    lateral = lateral / np.linalg.norm(lateral)
    posterior = np.cross(axis, lateral)  # caudal x right = posterior in a right-handed RAS frame
    return axis, lateral, posterior


def disc_unit_geometry(name: str, upper: np.ndarray, lower: np.ndarray, *, slices: int, slice_spacing: float,
                       image_size: tuple[int, int], margin: float, width_scale: float = 1.0) -> CropGeometry:
    """A disc-centred unit: from the middle of the upper body to the middle of the lower one, plus margin."""
    upper, lower = np.asarray(upper, float), np.asarray(lower, float)
    length = float(np.linalg.norm(lower - upper))
    if length < 1e-3:
        raise ValueError(f"unit {name}: the two body centres coincide")
    axis, lateral, posterior = unit_frame(lower - upper)
    return _geometry(name, upper, lower, (upper + lower) / 2, axis, lateral, posterior, length,
                     slices, slice_spacing, image_size, margin, width_scale)


def vertebra_unit_geometry(name: str, centre: np.ndarray, above: np.ndarray | None, below: np.ndarray | None, *,
                           slices: int, slice_spacing: float, image_size: tuple[int, int], margin: float,
                           width_scale: float = 1.0) -> CropGeometry:
    """A body-centred unit: centred on the body, axis through its neighbours, length = mean neighbour distance."""
    centre = np.asarray(centre, float)
    neighbours = [np.asarray(n, float) for n in (above, below) if n is not None]
    if not neighbours:
        raise ValueError(f"unit {name}: no neighbouring body to define the spine axis")
    first = neighbours[0] if above is not None else centre
    last = neighbours[-1] if below is not None else centre
    length = float(np.mean([np.linalg.norm(n - centre) for n in neighbours]))
    axis, lateral, posterior = unit_frame(last - first)
    return _geometry(name, centre, centre, centre, axis, lateral, posterior, length,
                     slices, slice_spacing, image_size, margin, width_scale)


def _geometry(name, upper, lower, centre, axis, lateral, posterior, length, slices, slice_spacing, image_size,
              margin, width_scale) -> CropGeometry:
    if not (np.all(np.isfinite(upper)) and np.all(np.isfinite(lower)) and np.isfinite(length)):
        raise ValueError(f"unit {name}: a body centre is not finite (NaN or infinity)")
    h, w = image_size
    height_mm = length * (1.0 + 2.0 * margin)
    width_mm = height_mm * width_scale * (w / h)
    offsets = tuple(float((k - (slices - 1) / 2.0) * slice_spacing) for k in range(slices))
    return CropGeometry(name=name, upper_centre=upper, lower_centre=lower, centre=centre, axis=axis,
                        lateral=lateral, posterior=posterior, height_mm=height_mm, width_mm=width_mm,
                        slice_offsets_mm=offsets)


def sample_crop(array: np.ndarray, affine: np.ndarray, geometry: CropGeometry,
                image_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resample ``array`` on the crop grid (linear). Returns (crop [H, W, K] float32, fraction outside volume).

    Samples outside the volume are NaN so the caller can decide what to do with them.
    """
    h, w = image_size
    points = geometry.world_points(h, w).reshape(-1, 3)
    inv = np.linalg.inv(affine)
    vox = points @ inv[:3, :3].T + inv[:3, 3]
    shape = np.array(array.shape, dtype=np.float64)
    outside = np.any((vox < -0.5) | (vox > shape - 0.5), axis=1)
    values = ndimage.map_coordinates(np.asarray(array, dtype=np.float32), vox.T, order=1, mode="nearest")
    values = np.where(outside, np.nan, values).astype(np.float32)
    crop = values.reshape(len(geometry.slice_offsets_mm), h, w).transpose(1, 2, 0)
    return crop, float(outside.mean())
