"""Reading one scan's files inside the unit loop; every failure is a :class:`ScanFailure` naming the stage.

Shared by ``centroids.py`` (the vertebra mask and centroid json) and ``units.py`` (the image): a file that is
missing, unreadable or above the voxel limit fails only its scan, and the message names the manifest row and
column with the file's path scrubbed out (paths may embed identifiers).
"""
from __future__ import annotations

import os

from vugan.components.preprocess import header_checks, readers
from vugan.components.preprocess.spec import PreprocessConfig


class ScanFailure(Exception):
    """One scan (or, from mask_centroids, one mask) cannot be used: ``stage`` names the step, ``reason`` says why."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage, self.reason = stage, reason


def scrub_paths(message: str, *paths: str) -> str:
    """Exception text without the file paths (they may embed identifiers); the row/column names the file."""
    for p in paths:
        if p:
            message = message.replace(p, "<file>").replace(os.path.basename(p.rstrip("/")), "<file>")
    return message[:300]


def max_voxels(cfg: PreprocessConfig) -> int:
    """The voxel limit: the configured one, or physical memory / 64 bytes (reading, float copies, the mask)."""
    if cfg.max_voxels:
        return cfg.max_voxels
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 64)
    except (ValueError, OSError, AttributeError):
        return 250_000_000


def read_scan_volume(task, column: str, path: str, cfg: PreprocessConfig, notes: dict) -> readers.Volume:
    if not readers.exists(path):
        raise ScanFailure(f"read_{column}", f"manifest row {task.row}, column '{column}': file not found; "
                                            f"fix the path (relative paths start at the manifest's folder)")
    policy = header_checks.ReadPolicy(grid_tolerance_mm=cfg.grid_tolerance_mm, accept_burned_in=cfg.accept_burned_in)
    try:
        return readers.read_volume(path, series_uid=task.series_uid if column == "image" else "",
                                   max_voxels=max_voxels(cfg), notes=notes, policy=policy)
    except readers.HeaderRefusal as exc:  # a header the reader will not guess around: its own stage
        raise ScanFailure(exc.stage, f"manifest row {task.row}, column '{column}': {exc}") from None
    except Exception as exc:  # nibabel/gzip/pydicom/ITK raise many types; all mean "this file is unusable"
        raise ScanFailure(f"read_{column}", f"manifest row {task.row}, column '{column}': cannot read the volume "
                                            f"({type(exc).__name__}: {scrub_paths(str(exc), path)}); "
                                            f"re-export the file or remove the row") from None
