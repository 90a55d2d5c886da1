"""Where the vertebral bodies of one scan are: centres from the vertebra mask or the VerSe centroid json.

The mask is checked against the image (same grid, same place in world space) and each label against one plausible
body; a level that fails is rejected with a reason (its units become dead letters in ``units.py``), a whole-scan
problem raises :class:`~vugan.components.preprocess.scan_reading.ScanFailure`.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from vugan.components import schema
from vugan.components.preprocess import limits, readers
from vugan.components.preprocess.header_checks import label_map_problem
from vugan.components.preprocess.manifest import ScanTask
from vugan.components.preprocess.scan_reading import ScanFailure, read_scan_volume, scrub_paths
from vugan.components.preprocess.spec import PreprocessConfig


# VerSe codes of transitional vertebrae: L6 (25) sits between L5 and S1, T13 (28) between T12 and L1. A unit
# that would span one (L5/S1 past an L6) joins two bodies that are not neighbours: those units are dead letters.
TRANSITIONAL = {25: ("L6", "L5"), 28: ("T13", "T12")}  # code -> (name, the level whose unit below spans it)


@dataclasses.dataclass(frozen=True)
class Centres:
    """Body centres by level, the levels rejected (level -> reason) and codes that are no known level."""

    centres: dict
    rejected: dict
    unknown_codes: tuple = ()


def load_centres(task: ScanTask, cfg: PreprocessConfig, image: readers.Volume, notes: dict):
    """(Centres, levels named by the manifest/json, body mask or None)."""
    source = cfg.centroid_source
    if source == "auto":
        source = "mask" if task.mask else "json"
    if source == "mask" and not task.mask:
        raise ScanFailure("centroids", f"manifest row {task.row}: column 'vertebra_mask' is empty but "
                                       f"preprocess.centroid_source = 'mask'; give a mask or use 'auto'")
    if source == "json" and not task.centroids:
        raise ScanFailure("centroids", f"manifest row {task.row}: needs column 'vertebra_mask' or 'centroids' "
                                       f"filled in; add the vertebra mask or a centroid json")
    named = set(task.levels)
    from_json = Centres({}, {})
    if task.centroids:
        if not readers.exists(task.centroids):
            raise ScanFailure("read_centroids", f"manifest row {task.row}, column 'centroids': file not found")
        try:
            from_json = json_centroids(readers.read_text(task.centroids), image.source_affine)
        except readers.VolumeError as exc:  # not a regular file: say that, not "not a centroid list"
            raise ScanFailure("read_centroids", f"manifest row {task.row}, column 'centroids': {exc}") from None
        except Exception as exc:
            raise ScanFailure("read_centroids", f"manifest row {task.row}, column 'centroids': not a VerSe "
                                                f"centroid list ({type(exc).__name__}: "
                                                f"{scrub_paths(str(exc), task.centroids)})") from None
        named |= set(from_json.centres) | set(from_json.rejected)
    if source == "json":
        _note_codes(notes, from_json.unknown_codes)
        return from_json, named, None
    mask = read_scan_volume(task, "vertebra_mask", task.mask, cfg, notes)
    if mask.array.shape != image.array.shape:
        raise ScanFailure("mask_shape", f"manifest row {task.row}: the vertebra_mask grid {mask.array.shape} "
                                        f"differs from the image grid {image.array.shape}; resample the mask "
                                        f"onto the image")
    off = grid_mismatch_mm(image, mask)
    if not off <= cfg.grid_tolerance_mm:
        raise ScanFailure("mask_grid", f"manifest row {task.row}: the vertebra_mask lies {off:.1f} mm away from "
                                       f"the image in world space (same grid shape, different affine; tolerance "
                                       f"preprocess.grid_tolerance_mm = {cfg.grid_tolerance_mm:g}); the mask "
                                       f"belongs to another scan or was saved without the image's geometry")
    try:
        from_mask = mask_centroids(mask, cfg)
    except ScanFailure as exc:
        raise ScanFailure(exc.stage, f"manifest row {task.row}: {exc.reason}") from None
    _note_codes(notes, from_mask.unknown_codes + from_json.unknown_codes)
    body = np.asarray(mask.array) > 0
    return from_mask, named, body


def _note_codes(notes: dict, codes) -> None:
    for code in sorted(set(codes)):
        key = f"unknown_label_{code}" if code not in TRANSITIONAL else f"transitional_{TRANSITIONAL[code][0]}"
        notes[key] = notes.get(key, 0) + 1


def mask_centroids(mask: readers.Volume, cfg: PreprocessConfig | None = None) -> Centres:
    """World (RAS mm) centre of each VerSe label, after checking that the label is one body of plausible size.

    A label in several parts (the largest holding less than 1 - ``max_stray_fraction`` of its voxels) or of an
    implausible volume is rejected for that level: its centre of mass would lie between the parts. Specks
    below the stray fraction are left out of the centre.
    """
    from scipy import ndimage

    cfg = cfg or PreprocessConfig()
    labels = np.asarray(mask.array)
    if not np.all(np.isfinite(labels)):
        raise ScanFailure("mask_values", "the vertebra_mask holds NaN/inf values; re-export it")
    problem = label_map_problem(labels)  # fractional or huge values would round or wrap to other labels
    if problem:
        raise ScanFailure("mask_values", problem)
    labels = np.rint(labels).astype(np.int64) if labels.dtype.kind == "f" else labels.astype(np.int64)
    if labels.min() < 0:
        raise ScanFailure("mask_values", "the vertebra_mask holds negative labels; VerSe codes are 1 to 28")
    voxel_ml = abs(float(np.linalg.det(mask.affine[:3, :3]))) / 1000.0
    # find_objects allocates per label value up to the largest: codes above the VerSe range are taken out first.
    labels, unknown_above = limits.split_label_codes(labels)
    boxes = ndimage.find_objects(labels)
    centres, rejected, unknown = {}, {}, []
    for index, box in enumerate(boxes):
        code = index + 1
        if box is None:
            continue
        if code not in schema.CODE_LEVELS:
            unknown.append(code)
            continue
        level = schema.CODE_LEVELS[code]
        parts, n = ndimage.label(labels[box] == code)
        sizes = np.bincount(parts.ravel())[1:]
        largest = int(np.argmax(sizes)) + 1
        total = float(sizes.sum())
        if n > 1 and 1.0 - sizes[largest - 1] / total > cfg.max_stray_fraction:
            rejected[level] = (f"label {level} (code {code}) is in {n} separate parts (the largest holds "
                               f"{sizes[largest - 1] / total:.0%} of its voxels); one label must paint one body")
            continue
        volume = sizes[largest - 1] * voxel_ml
        lo, hi = cfg.body_volume_ml
        if not lo <= volume <= hi:
            rejected[level] = (f"label {level} (code {code}) covers {volume:.2f} ml, outside the plausible "
                               f"{lo:g} to {hi:g} ml of one vertebra (preprocess.body_volume_ml)")
            continue
        ijk = np.argwhere(parts == largest).mean(axis=0) + [s.start for s in box]
        centres[level] = mask.affine[:3, :3] @ ijk + mask.affine[:3, 3]
    return Centres(centres, rejected, tuple(unknown) + unknown_above)


def json_centroids(text: str, source_affine: np.ndarray) -> Centres:
    """VerSe-style centroids: ``[{"direction": [...]}, {"label": code, "X": i, "Y": j, "Z": k}, ...]``.

    X, Y, Z are voxel indices along array axes 0, 1, 2 of the image file as stored, so the file's own affine
    maps them to world mm. An entry with a non-number or non-finite coordinate rejects its level, and so does a
    level listed more than once.
    """
    entries = json.loads(text)
    if isinstance(entries, dict):  # some exports wrap the list
        entries = entries.get("centroids", [])
    if not isinstance(entries, list):
        raise ValueError("expected a list of {label, X, Y, Z} entries")
    centres, rejected, unknown, listed = {}, {}, [], {}
    for e in entries:
        if not isinstance(e, dict) or "label" not in e:
            continue
        try:
            code = int(e["label"])
        except (TypeError, ValueError):
            raise ValueError(f"label {e['label']!r} is not an integer VerSe code") from None
        if code not in schema.CODE_LEVELS:
            unknown.append(code)
            continue
        level = schema.CODE_LEVELS[code]
        listed[level] = listed.get(level, 0) + 1
        try:
            ijk = np.array([float(e["X"]), float(e["Y"]), float(e["Z"])])
        except (KeyError, TypeError, ValueError):
            rejected[level] = f"the entry of label {code} lacks a numeric X, Y or Z"
            continue
        if not np.all(np.isfinite(ijk)):
            rejected[level] = f"the entry of label {code} has a non-finite X, Y or Z (NaN or infinity)"
            continue
        centres[level] = source_affine[:3, :3] @ ijk + source_affine[:3, 3]
    # A level listed twice has two centres and no way to tell the true one: its units are rejected (the level,
    # not the scan: the other entries are unambiguous, as with a NaN entry).
    for level, n in listed.items():
        if n > 1:
            centres.pop(level, None)
            rejected[level] = (f"the centroid json lists label {level} (code {schema.LEVEL_CODES[level]}) {n} times; "
                               f"keep one entry per level")
    return Centres(centres, rejected, tuple(unknown))


def grid_mismatch_mm(image: readers.Volume, mask: readers.Volume) -> float:
    """Largest world distance (mm) between the same corner voxel of the two grids (same shape assumed)."""
    corners = np.array([[i, j, k] for i in (0, image.array.shape[0] - 1) for j in (0, image.array.shape[1] - 1)
                        for k in (0, image.array.shape[2] - 1)], dtype=np.float64)
    a = corners @ image.affine[:3, :3].T + image.affine[:3, 3]
    b = corners @ mask.affine[:3, :3].T + mask.affine[:3, 3]
    return float(np.linalg.norm(a - b, axis=1).max())
