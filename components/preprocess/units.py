"""The unit loop of one scan: a :class:`ScanTask` -> unit crops (:class:`ScanResult`) plus dead letters.

:func:`process_scan` reads the image, finds the bodies (``centroids.py``), windows the intensities and cuts every
unit whose bodies are present; the Beam pipeline (``beam_pipeline.py``) runs it once per scan. Every failure of
one scan or one unit becomes a dead letter naming the manifest row and column and what to do, never an exception.
"""
from __future__ import annotations

import dataclasses
import io
import re

import numpy as np

from vugan.components import schema
from vugan.components.preprocess import geometry as geo
from vugan.components.preprocess.centroids import TRANSITIONAL, load_centres
from vugan.components.preprocess.header_checks import image_range_problem
from vugan.components.preprocess.manifest import ScanTask
from vugan.components.preprocess.scan_reading import ScanFailure, read_scan_volume, scrub_paths
from vugan.components.preprocess.spec import PreprocessConfig


@dataclasses.dataclass(frozen=True)
class ScanResult:
    task: ScanTask
    records: list  # [(UnitRecord, CropGeometry)]
    dead_letters: list  # [dict]
    ok: bool  # False when the whole scan failed
    units_found: int
    notes: dict = dataclasses.field(default_factory=dict)  # counts of what was left out or not recognised


def intensity_window(image: np.ndarray, body: np.ndarray | None, percentiles: tuple[float, float]) -> tuple[float, float]:
    values = image[body] if body is not None and body.any() else image.ravel()
    # A fixed stride keeps the percentiles of big volumes cheap and deterministic (~2 M samples suffice).
    values = values[:: max(1, values.size // 2_000_000)]
    lo, hi = np.percentile(values, percentiles)
    if not hi > lo:  # a flat body region: fall back to the whole volume
        lo, hi = np.percentile(image.ravel()[:: max(1, image.size // 2_000_000)], percentiles)
    return float(lo), float(hi)


def find_units(levels: set[str], unit: str) -> list[tuple[str, str, str]]:
    """(unit name, upper level, lower level) for every unit whose bodies are named; cranial to caudal."""
    if unit == "disc":
        return [(f"{l}/{schema.next_level(l)}", l, schema.next_level(l)) for l in schema.LEVEL_ORDER
                if l in levels and schema.next_level(l) in levels and f"{l}/{schema.next_level(l)}" in schema.DISC_UNITS]
    return [(l, l, l) for l in schema.VERTEBRA_UNITS if l in levels]


def process_scan(task: ScanTask, cfg: PreprocessConfig) -> ScanResult:
    """Load one scan and cut every unit it contains; failures become dead letters, never exceptions."""
    notes: dict = {}
    try:
        return _process(task, cfg, notes)
    except ScanFailure as exc:
        stage, reason = exc.stage, exc.reason
    except MemoryError:
        stage = "memory"
        reason = (f"manifest row {task.row}: the scan does not fit in memory; lower preprocess.max_voxels so such "
                  f"scans are refused before loading, or use a machine with more memory")
    except Exception as exc:  # anything unforeseen still fails only this scan, never the whole job
        stage = "unexpected"
        reason = (f"manifest row {task.row}: {type(exc).__name__}: "
                  f"{scrub_paths(str(exc), task.image, task.mask, task.centroids)}; please report this with the row")
    if not reason.startswith("manifest row"):
        reason = f"manifest row {task.row}: {reason}"
    dead = {"scan": task.scan, "row": task.row, "unit": "", "stage": stage, "reason": reason}
    return ScanResult(task, [], [dead], ok=False, units_found=0, notes=notes)


def _process(task: ScanTask, cfg: PreprocessConfig, notes: dict) -> ScanResult:
    for name in task.unknown_levels:  # only a level-like name is echoed: the column is free text
        key = f"unknown_level_name_{name}" if re.fullmatch(r"[A-Za-z]{1,2}[0-9]{1,2}", name) else "unknown_level_text"
        notes[key] = notes.get(key, 0) + 1
    image = read_scan_volume(task, "image", task.image, cfg, notes)
    problem = image_range_problem(np.asarray(image.array))  # before the cast, which would turn them into inf
    if problem:
        raise ScanFailure("image_values", f"manifest row {task.row}, column 'image': {problem}")
    array = np.asarray(image.array, dtype=np.float32)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ScanFailure("image_values", f"manifest row {task.row}, column 'image': the volume is empty or "
                                          f"holds NaN/inf values; re-export it")
    if float(array.max()) == float(array.min()):
        raise ScanFailure("image_values", f"manifest row {task.row}, column 'image': the volume is constant "
                                          f"(no signal); check the export")
    found_centres, named, body = load_centres(task, cfg, image, notes)
    centres, rejected = found_centres.centres, found_centres.rejected
    present = set(centres) | set(rejected)
    if present:  # every level between the highest and lowest labelled body is expected: a gap is a dead letter
        ranks = [schema.LEVEL_ORDER.index(l) for l in present]
        named |= set(schema.LEVEL_ORDER[min(ranks):max(ranks) + 1])
    spanning = {TRANSITIONAL[c][1] for c in found_centres.unknown_codes if c in TRANSITIONAL}
    body_for_window = body if cfg.normalise_on == "bodies" else None
    lo, hi = intensity_window(array, body_for_window, cfg.intensity_percentiles)

    records, dead, found = [], [], 0
    size = tuple(cfg.image_size)
    for name, upper, lower in find_units(present | named, cfg.unit):
        found += 1
        bodies = list(dict.fromkeys((upper, lower)))
        bad = [l for l in bodies if l in rejected]
        if bad:
            where = "vertebra_mask" if body is not None else "centroids"
            dead.append(_dead(task, name, "bad_label", f"manifest row {task.row}, column '{where}': "
                              + "; ".join(rejected[l] for l in bad) + "; fix the labels"))
            continue
        missing = [l for l in bodies if l not in centres]
        if missing:
            where = "vertebra_mask" if body is not None else "centroids"
            dead.append(_dead(task, name, "missing_level", f"manifest row {task.row}: {where} has no body "
                              f"{', '.join(missing)} (code {', '.join(str(schema.LEVEL_CODES[m]) for m in missing)}) "
                              f"although the manifest levels, the centroid json or the bodies around it name it; "
                              f"fix the labels"))
            continue
        if cfg.unit == "disc" and upper in spanning:
            extra = next(TRANSITIONAL[c][0] for c in found_centres.unknown_codes
                         if c in TRANSITIONAL and TRANSITIONAL[c][1] == upper)
            dead.append(_dead(task, name, "transitional_vertebra", f"manifest row {task.row}: a transitional "
                              f"vertebra {extra} lies between {upper} and {lower}, so {name} would join two bodies "
                              f"that are not neighbours; the other units of the scan are kept"))
            continue
        try:
            g = _unit_geometry(name, upper, centres, cfg, size)
        except ValueError as exc:
            dead.append(_dead(task, name, "geometry", f"manifest row {task.row}: {exc}"))
            continue
        crop, outside = geo.sample_crop(array, image.affine, g, size)
        if outside > cfg.max_outside_fraction:
            dead.append(_dead(task, name, "crop_outside", f"manifest row {task.row}: the {name} crop leaves the "
                              f"volume ({outside:.0%} of samples outside); the scan's field of view does not cover "
                              f"this unit with the configured margin/slices"))
            continue
        scaled = np.clip((crop - lo) / (hi - lo) * 2.0 - 1.0, -1.0, 1.0)
        scaled = np.nan_to_num(scaled, nan=-1.0).astype(np.float32)  # tolerated outside samples read as background
        upper_code = schema.LEVEL_CODES[upper]
        lower_code = schema.LEVEL_CODES[lower]
        region = schema.unit_region(name)
        records.append((schema.UnitRecord(
            image=scaled, level_name=name, upper_code=upper_code, lower_code=lower_code, region=region,
            class_id=schema.class_id(cfg.conditioning, cfg.unit, name), patient=task.patient, scan=task.scan,
            sequence=task.sequence, source_spacing=image.spacing, slice_spacing=cfg.slice_spacing_mm), g))
    return ScanResult(task, records, dead, ok=True, units_found=found, notes=notes)


def _unit_geometry(name: str, upper: str, centres: dict, cfg: PreprocessConfig, size) -> geo.CropGeometry:
    kw = dict(slices=cfg.slices, slice_spacing=cfg.slice_spacing_mm, image_size=size, margin=cfg.margin,
              width_scale=cfg.width_scale)
    if cfg.unit == "disc":
        return geo.disc_unit_geometry(name, centres[upper], centres[schema.next_level(upper)], **kw)
    i = schema.LEVEL_ORDER.index(upper)
    above = centres.get(schema.LEVEL_ORDER[i - 1]) if i > 0 else None
    below = centres.get(schema.LEVEL_ORDER[i + 1]) if i + 1 < len(schema.LEVEL_ORDER) else None
    return geo.vertebra_unit_geometry(name, centres[upper], above, below, **kw)


def _dead(task: ScanTask, unit: str, stage: str, reason: str) -> dict:
    return {"scan": task.scan, "row": task.row, "unit": unit, "stage": stage, "reason": reason}


# --------------------------------------------------------------------------------------------- previews

def preview_png(images: list[np.ndarray], scale: int = 2) -> bytes:
    """A grid PNG: one row per unit, its K slices left to right (values [-1, 1] -> grey). No text, no ids."""
    from PIL import Image

    if not images:
        raise ValueError("no images to preview")
    h, w, k = images[0].shape
    pad = 2
    grid = np.zeros((len(images) * (h + pad) + pad, k * (w + pad) + pad), np.uint8)
    for r, img in enumerate(images):
        for c in range(k):
            tile = ((np.clip(img[:, :, c], -1, 1) + 1) * 127.5).astype(np.uint8)
            grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = tile
    out = io.BytesIO()
    Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST).save(out, "PNG")
    return out.getvalue()
