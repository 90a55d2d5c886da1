"""Pure preprocessing logic: manifest -> scan tasks (with patient splits and pseudonyms), scan -> unit records.

Nothing here knows about Beam: :func:`plan_tasks` runs in the driver before any work (so a bad manifest fails
fast), and :func:`process_scan` turns one task into :class:`UnitRecord` objects plus dead letters, which the
Beam pipeline (``beam_pipeline.py``) runs once per scan. Every failure of one scan or one unit becomes a dead
letter naming the manifest row and column and what to do, never a raw identifier or a header value.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import posixpath
import secrets

import numpy as np

from components import schema
from components.preprocess import geometry as geo
from components.preprocess import readers
from components.preprocess.spec import PreprocessConfig

REQUIRED_COLUMNS = ("scan_id", "patient_id", "image")
CENTROID_COLUMNS = ("vertebra_mask", "centroids")  # at least one of these


class ManifestError(ValueError):
    """The manifest cannot be used at all (raised before any work starts)."""


# --------------------------------------------------------------------------------------------- manifest

def read_manifest(path: str) -> list[dict[str, str]]:
    """Read ``scans.csv`` (local or gs://) and check its columns; rows keep their 1-based data row number."""
    if not readers.exists(path):
        raise ManifestError(f"manifest {path} does not exist; pass --manifest with a scans.csv")
    reader = csv.DictReader(io.StringIO(read_text(path)))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    for col in REQUIRED_COLUMNS:
        if col not in columns:
            raise ManifestError(f"manifest {path}: missing column {col!r}; required columns are "
                                f"{', '.join(REQUIRED_COLUMNS)} plus vertebra_mask and/or centroids")
    if not any(c in columns for c in CENTROID_COLUMNS):
        raise ManifestError(f"manifest {path}: missing column 'vertebra_mask' (or 'centroids'); one of them "
                            f"must give the vertebral bodies of each scan")
    for i, row in enumerate(rows, start=1):
        row["_row"] = str(i)
    return rows


def read_text(path: str) -> str:
    if "://" in path:  # gs:// and friends: TensorFlow's file systems (imported only when needed)
        import tensorflow as tf
        with tf.io.gfile.GFile(path, "r") as fh:
            return fh.read()
    with open(path, encoding="utf-8-sig") as fh:  # -sig: spreadsheets often add a BOM
        return fh.read()


def resolve_path(manifest_path: str, value: str) -> str:
    """Manifest paths are absolute, remote (scheme://) or relative to the manifest's folder."""
    if not value or "://" in value or os.path.isabs(value):
        return value
    folder = manifest_path.rsplit("/", 1)[0] if "://" in manifest_path else os.path.dirname(manifest_path)
    return posixpath.join(folder, value) if "://" in manifest_path else os.path.join(folder, value)


# --------------------------------------------------------------------------------------------- identities

def resolve_salt(cfg: PreprocessConfig) -> tuple[str, str]:
    """(salt, source): config, else $VUGAN_SALT, else a random salt that lives only in this process."""
    if cfg.salt:
        return cfg.salt, "config"
    if os.environ.get("VUGAN_SALT"):
        return os.environ["VUGAN_SALT"], "env"
    return secrets.token_hex(32), "random"


def pseudonym(salt: str, kind: str, value: str) -> str:
    return hashlib.sha256(f"{salt}\x00{kind}\x00{value}".encode()).hexdigest()[:20]


# --------------------------------------------------------------------------------------------- splits

def split_counts(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Exact patient counts per split: largest remainder, then at least one per nonzero split when n allows."""
    raw = [n * f for f in fractions]
    counts = [int(np.floor(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    nonzero = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(nonzero):
        for i in nonzero:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def assign_splits(patient_ids, fractions: tuple[float, ...], seed: int) -> dict[str, str]:
    """patient id -> split; patients ordered by a seeded hash, then cut into exact counts (train, holdout, test)."""
    patients = sorted(set(patient_ids), key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    out, start = {}, 0
    for split, count in zip(schema.SPLITS, split_counts(len(patients), fractions)):
        for p in patients[start:start + count]:
            out[p] = split
        start += count
    return out


# --------------------------------------------------------------------------------------------- tasks

@dataclasses.dataclass(frozen=True)
class ScanTask:
    """One manifest row, resolved: paths, pseudonyms and split. Carries no raw identifier."""

    row: int
    scan: str
    patient: str
    split: str
    image: str
    mask: str = ""
    centroids: str = ""
    sequence: str = ""
    levels: tuple[str, ...] = ()


def plan_tasks(manifest_path: str, cfg: PreprocessConfig, salt: str) -> list[ScanTask]:
    rows = read_manifest(manifest_path)
    splits = assign_splits([r["patient_id"] for r in rows], cfg.split_fractions, cfg.split_seed)
    tasks = []
    for r in rows:
        levels = tuple(l for l in r.get("levels", "").replace(",", " ").split() if l)
        tasks.append(ScanTask(
            row=int(r["_row"]), scan=pseudonym(salt, "scan", r["scan_id"]),
            patient=pseudonym(salt, "patient", r["patient_id"]), split=splits[r["patient_id"]],
            image=resolve_path(manifest_path, r["image"]), mask=resolve_path(manifest_path, r.get("vertebra_mask", "")),
            centroids=resolve_path(manifest_path, r.get("centroids", "")), sequence=r.get("sequence", ""),
            levels=levels))
    return tasks


# --------------------------------------------------------------------------------------------- one scan

@dataclasses.dataclass(frozen=True)
class ScanResult:
    task: ScanTask
    records: list  # [(UnitRecord, CropGeometry)]
    dead_letters: list  # [dict]
    ok: bool  # False when the whole scan failed
    units_found: int


class _ScanFailure(Exception):
    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage, self.reason = stage, reason


def _scrub(message: str, *paths: str) -> str:
    """Exception text without the file paths (they may embed identifiers); the row/column names the file."""
    for p in paths:
        if p:
            message = message.replace(p, "<file>").replace(os.path.basename(p.rstrip("/")), "<file>")
    return message[:300]


def _read(task: ScanTask, column: str, path: str) -> readers.Volume:
    if not readers.exists(path):
        raise _ScanFailure(f"read_{column}", f"manifest row {task.row}, column '{column}': file not found; "
                                             f"fix the path (relative paths start at the manifest's folder)")
    try:
        return readers.read_volume(path)
    except Exception as exc:  # nibabel/gzip/pydicom/ITK raise many types; all mean "this file is unusable"
        raise _ScanFailure(f"read_{column}", f"manifest row {task.row}, column '{column}': cannot read the volume "
                                             f"({type(exc).__name__}: {_scrub(str(exc), path)}); "
                                             f"re-export the file or remove the row") from None


def mask_centroids(mask: readers.Volume) -> dict[str, np.ndarray]:
    """Level name -> world (RAS mm) centre of mass of that label, for every known VerSe code in the mask."""
    labels = np.asarray(mask.array)
    # Only labelled voxels matter (a few % of the volume): bincount over them beats per-label passes.
    flat = np.flatnonzero(labels > 0)
    values = np.rint(labels.ravel()[flat]).astype(np.int64)  # float masks: nearest integer label
    ijk = np.unravel_index(flat, labels.shape)
    counts = np.bincount(values)
    out = {}
    sums = [np.bincount(values, weights=axis.astype(np.float64), minlength=len(counts)) for axis in ijk]
    for code in np.nonzero(counts)[0]:
        if int(code) in schema.CODE_LEVELS:
            com = np.array([s[code] for s in sums]) / counts[code]
            out[schema.CODE_LEVELS[int(code)]] = mask.affine[:3, :3] @ com + mask.affine[:3, 3]
    return out


def json_centroids(text: str, source_affine: np.ndarray) -> dict[str, np.ndarray]:
    """VerSe-style centroids: ``[{"direction": [...]}, {"label": code, "X": i, "Y": j, "Z": k}, ...]``.

    X, Y, Z are voxel indices along array axes 0, 1, 2 of the image file as stored, so the file's own affine
    maps them to world mm.
    """
    entries = json.loads(text)
    if isinstance(entries, dict):  # some exports wrap the list
        entries = entries.get("centroids", [])
    out = {}
    for e in entries:
        if "label" not in e:
            continue
        code = int(e["label"])
        if code in schema.CODE_LEVELS:
            ijk = np.array([float(e["X"]), float(e["Y"]), float(e["Z"])])
            out[schema.CODE_LEVELS[code]] = source_affine[:3, :3] @ ijk + source_affine[:3, 3]
    return out


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
    try:
        return _process(task, cfg)
    except _ScanFailure as exc:
        stage, reason = exc.stage, exc.reason
    except Exception as exc:  # anything unforeseen still fails only this scan, never the whole job
        stage = "unexpected"
        reason = (f"manifest row {task.row}: {type(exc).__name__}: "
                  f"{_scrub(str(exc), task.image, task.mask, task.centroids)}; please report this with the row")
    dead = {"scan": task.scan, "row": task.row, "unit": "", "stage": stage, "reason": reason}
    return ScanResult(task, [], [dead], ok=False, units_found=0)


def _load_centres(task: ScanTask, cfg: PreprocessConfig, image: readers.Volume):
    """(centres by level, levels named by the manifest/json, body mask or None)."""
    source = cfg.centroid_source
    if source == "auto":
        source = "mask" if task.mask else "json"
    if source == "mask" and not task.mask:
        raise _ScanFailure("centroids", f"manifest row {task.row}: column 'vertebra_mask' is empty but "
                                        f"preprocess.centroid_source = 'mask'; give a mask or use 'auto'")
    if source == "json" and not task.centroids:
        raise _ScanFailure("centroids", f"manifest row {task.row}: needs column 'vertebra_mask' or 'centroids' "
                                        f"filled in; add the vertebra mask or a centroid json")
    named = set(task.levels)
    json_centres = {}
    if task.centroids:
        if not readers.exists(task.centroids):
            raise _ScanFailure("read_centroids", f"manifest row {task.row}, column 'centroids': file not found")
        try:
            json_centres = json_centroids(read_text(task.centroids), image.source_affine)
        except Exception as exc:
            raise _ScanFailure("read_centroids", f"manifest row {task.row}, column 'centroids': not a VerSe "
                                                 f"centroid list ({type(exc).__name__}: "
                                                 f"{_scrub(str(exc), task.centroids)})") from None
        named |= set(json_centres)
    if source == "json":
        return json_centres, named, None
    mask = _read(task, "vertebra_mask", task.mask)
    if mask.array.shape != image.array.shape:
        raise _ScanFailure("mask_shape", f"manifest row {task.row}: the vertebra_mask grid {mask.array.shape} "
                                         f"differs from the image grid {image.array.shape}; resample the mask "
                                         f"onto the image")
    body = np.asarray(mask.array) > 0
    return mask_centroids(mask), named, body


def _process(task: ScanTask, cfg: PreprocessConfig) -> ScanResult:
    image = _read(task, "image", task.image)
    array = np.asarray(image.array, dtype=np.float32)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise _ScanFailure("image_values", f"manifest row {task.row}, column 'image': the volume is empty or "
                                           f"holds NaN/inf values; re-export it")
    if float(array.max()) == float(array.min()):
        raise _ScanFailure("image_values", f"manifest row {task.row}, column 'image': the volume is constant "
                                           f"(no signal); check the export")
    centres, named, body = _load_centres(task, cfg, image)
    body_for_window = body if cfg.normalise_on == "bodies" else None
    lo, hi = intensity_window(array, body_for_window, cfg.intensity_percentiles)

    records, dead, found = [], [], 0
    size = tuple(cfg.image_size)
    for name, upper, lower in find_units(set(centres) | named, cfg.unit):
        found += 1
        missing = [l for l in dict.fromkeys((upper, lower)) if l not in centres]
        if missing:
            where = "vertebra_mask" if body is not None else "centroids"
            dead.append(_dead(task, name, "missing_level", f"manifest row {task.row}: {where} has no body "
                              f"{', '.join(missing)} (code {', '.join(str(schema.LEVEL_CODES[m]) for m in missing)}) "
                              f"although the manifest levels or the centroid json name it; fix the labels"))
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
    return ScanResult(task, records, dead, ok=True, units_found=found)


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
