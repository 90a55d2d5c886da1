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
import re
import secrets

import numpy as np

from vugan.components import schema
from vugan.components.preprocess import geometry as geo
from vugan.components.preprocess import readers
from vugan.components.preprocess.spec import PreprocessConfig

REQUIRED_COLUMNS = ("scan_id", "patient_id", "image")
CENTROID_COLUMNS = ("vertebra_mask", "centroids")  # at least one of these


class ManifestError(ValueError):
    """The manifest cannot be used at all (raised before any work starts)."""


# --------------------------------------------------------------------------------------------- manifest

def read_manifest(path: str) -> list[dict[str, str]]:
    """Read ``scans.csv`` (local or gs://) and check its columns; rows keep their 1-based data row number."""
    if not readers.exists(path):
        raise ManifestError(f"manifest {path} does not exist; pass --manifest with a scans.csv")
    if readers._is_dir(path):
        raise ManifestError(f"manifest {path} is a folder; pass the scans.csv file inside it")
    try:
        text = read_text(path)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"manifest {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from None
    reader = csv.DictReader(io.StringIO(text))
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = []
        for row in reader:
            if None in row:
                raise ManifestError(f"manifest {path}, line {reader.line_num}: more fields than the header has "
                                    f"columns; quote fields that contain commas")
            rows.append({k.strip(): (v or "").strip() for k, v in row.items()})
    except csv.Error as exc:
        raise ManifestError(f"manifest {path}, line {reader.line_num}: not valid CSV ({exc}); fix that line") from None
    for col in REQUIRED_COLUMNS:
        if col not in columns:
            raise ManifestError(f"manifest {path}: missing column {col!r}; required columns are "
                                f"{', '.join(REQUIRED_COLUMNS)} plus vertebra_mask and/or centroids")
    if not any(c in columns for c in CENTROID_COLUMNS):
        raise ManifestError(f"manifest {path}: missing column 'vertebra_mask' (or 'centroids'); one of them "
                            f"must give the vertebral bodies of each scan")
    if not rows:
        raise ManifestError(f"manifest {path}: a header but no rows; list at least one scan")
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
    """(salt, source): the file ``preprocess.salt_file``, else $VUGAN_SALT, else a random salt for this output.

    The salt never comes from config values or the command line: those end up in shell history, process lists,
    ``config.toml`` and ``run.json``. Anyone holding the salt could recompute pseudonyms from guessed identifiers.
    """
    if cfg.salt_file:
        try:
            with open(cfg.salt_file, encoding="utf-8") as fh:
                salt = fh.readline().strip()
        except OSError as exc:
            raise ManifestError(f"preprocess.salt_file {cfg.salt_file}: cannot read it ({exc.strerror}); "
                                f"give a readable file whose first line is the salt") from None
        if not salt:
            raise ManifestError(f"preprocess.salt_file {cfg.salt_file}: the first line is empty; write the salt there")
        return salt, "file"
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
    series_uid: str = ""  # picks one series of a DICOM folder (never written to any output)
    unknown_levels: tuple[str, ...] = ()  # names in the levels column that are no VerSe level


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the driver found before any work: the tasks, the rows rejected (dead letters) and the counts."""

    tasks: list
    dead_letters: list
    counts: dict


def plan_tasks(manifest_path: str, cfg: PreprocessConfig, salt: str) -> list[ScanTask]:
    return plan(manifest_path, cfg, salt).tasks


def plan(manifest_path: str, cfg: PreprocessConfig, salt: str) -> Plan:
    """Manifest -> tasks, after the integrity checks that must run before any scan is read.

    Rows with an empty scan_id, patient_id or image are rejected. Rows that share a scan_id, an image path or
    the image's bytes (sha256) are the same scan: within one patient the later copies are dropped (counted);
    across patients every copy is rejected, since one scan in two patients' splits would put the same crops in
    train and in test, and the membership attacks would then measure a leak the manifest made.
    """
    rows = read_manifest(manifest_path)
    dead, keep = [], []
    for r in rows:
        empty = [c for c in REQUIRED_COLUMNS if not r.get(c)]
        if empty:
            dead.append(_row_dead(r, "manifest", f"manifest row {r['_row']}: column {', '.join(repr(c) for c in empty)} "
                                                 f"is empty; fill it in or remove the row"))
        else:
            keep.append(r)
    for r in keep:
        r["_image"] = resolve_path(manifest_path, r["image"])
    keep, dropped, dup_dead = _deduplicate(keep)
    dead += dup_dead
    splits = assign_splits([r["patient_id"] for r in keep], cfg.split_fractions, cfg.split_seed)
    tasks = []
    known = set(schema.LEVEL_CODES)
    for r in keep:
        levels = tuple(l for l in r.get("levels", "").replace(",", " ").split() if l)
        tasks.append(ScanTask(
            row=int(r["_row"]), scan=pseudonym(salt, "scan", r["scan_id"]),
            patient=pseudonym(salt, "patient", r["patient_id"]), split=splits[r["patient_id"]],
            image=r["_image"], mask=resolve_path(manifest_path, r.get("vertebra_mask", "")),
            centroids=resolve_path(manifest_path, r.get("centroids", "")), sequence=r.get("sequence", ""),
            levels=tuple(l for l in levels if l in known), series_uid=r.get("series_uid", ""),
            unknown_levels=tuple(l for l in levels if l not in known)))
    for d in dead:
        d["scan"] = pseudonym(salt, "scan", d.pop("_scan_id"))
    counts = {"manifest_rows": len(rows), "rows_rejected": len(dead), "rows_duplicate_dropped": dropped}
    if not tasks:
        raise ManifestError(f"manifest {manifest_path}: none of its {len(rows)} rows is usable "
                            f"({'; '.join(d['reason'] for d in dead[:3])})")
    return Plan(tasks, sorted(dead, key=lambda d: d["row"]), counts)


def _row_dead(r: dict, stage: str, reason: str) -> dict:
    return {"_scan_id": r.get("scan_id", ""), "row": int(r["_row"]), "unit": "", "stage": stage, "reason": reason}


def _deduplicate(rows: list[dict]) -> tuple[list[dict], int, list[dict]]:
    """(rows kept, copies dropped within a patient, dead letters for copies across patients)."""
    parent = list(range(len(rows)))  # union-find over "is the same scan as"

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    why: dict[int, set] = {}
    # A scan is an image path (or its bytes) AND the series picked from it: two rows naming one DICOM folder with
    # different series_uid values are two scans (the reader asks for exactly that when a folder holds several).
    digests = content_digests([r["_image"] for r in rows])

    def content(r):
        digest = digests.get(os.path.normpath(r["_image"]), "")
        return (digest, r.get("series_uid", "")) if digest else None

    keys = (("scan_id", lambda r: r["scan_id"]),
            ("image path", lambda r: (os.path.normpath(r["_image"]), r.get("series_uid", ""))),
            ("image content", content))
    for label, key in keys:
        seen: dict = {}
        for i, r in enumerate(rows):
            k = key(r)
            if not k:
                continue
            if k in seen:
                a, b = find(seen[k]), find(i)
                parent[max(a, b)] = min(a, b)
                why.setdefault(i, set()).add(label)
                why.setdefault(seen[k], set()).add(label)
            else:
                seen[k] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(rows)):
        groups.setdefault(find(i), []).append(i)
    kept, dropped, dead = [], 0, []
    for members in groups.values():
        patients = {rows[i]["patient_id"] for i in members}
        if len(members) == 1:
            kept.append(members[0])
        elif len(patients) == 1:
            kept.append(members[0])
            dropped += len(members) - 1
        else:
            listed = ", ".join(rows[i]["_row"] for i in members)
            reasons = sorted(set().union(*(why.get(i, set()) for i in members)))
            for i in members:
                dead.append(_row_dead(rows[i], "duplicate", (
                    f"manifest row {rows[i]['_row']}: the same scan (same {' and '.join(reasons)}) is listed under "
                    f"{len(patients)} different patient_ids (rows {listed}); one scan in two patients would put the "
                    f"same crops in train and test. Keep it under its true patient and remove the other rows")))
    return [rows[i] for i in sorted(kept)], dropped, dead


def content_digests(paths: list[str], workers: int = 8) -> dict[str, str]:
    """normpath -> sha256 for the images that COULD be byte-identical to another one; the rest are left out.

    Two files of different sizes cannot hold the same bytes, so the size (a folder: its file count and total
    size) is read first, from metadata only, and only images sharing a size with another are read and hashed, in
    ``workers`` threads (hashlib and file reads release the GIL). A cohort whose files differ in size is never
    read on the driver, which matters on Dataflow, where the driver would otherwise stream every scan from GCS
    before the first worker starts.
    """
    unique = sorted({os.path.normpath(p): p for p in paths}.items())
    by_size: dict = {}
    for norm, original in unique:
        size = _content_size(original)
        if size is not None:
            by_size.setdefault(size, []).append((norm, original))
    to_hash = [pair for group in by_size.values() if len(group) > 1 for pair in group]
    if not to_hash:
        return {}
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(to_hash)))) as pool:
        hashed = list(pool.map(lambda pair: file_digest(pair[1]), to_hash))
    return {norm: digest for (norm, _), digest in zip(to_hash, hashed) if digest}


def _image_files(path: str) -> list[str] | None:
    """The files whose bytes make up an image: the file itself, or a local DICOM folder's files in name order;
    None for a remote folder (checked by path and scan_id only: listing every object costs too much)."""
    if readers._is_dir(path):
        if "://" in path:
            return None
        return [os.path.join(path, n) for n in sorted(os.listdir(path)) if os.path.isfile(os.path.join(path, n))]
    return [path]


def _content_size(path: str):
    """(file count, total bytes) of an image, from metadata; None when unknown (missing, unreadable, a remote
    folder). The reader reports a missing or unreadable image on its own."""
    try:
        files = _image_files(path)
        if files is None:
            return None
        if "://" in path:
            import tensorflow as tf
            return (1, int(tf.io.gfile.stat(path).length))
        return (len(files), sum(os.path.getsize(f) for f in files))
    except Exception:  # OSError, tf NotFoundError
        return None


def file_digest(path: str) -> str:
    """sha256 of an image's bytes (a DICOM folder: of its files' bytes in name order), streamed; '' if unreadable
    or a remote folder."""
    digest = hashlib.sha256()
    try:
        files = _image_files(path)
        if files is None:
            return ""
        for f in files:
            if "://" in f:
                import tensorflow as tf
                fh = tf.io.gfile.GFile(f, "rb")
            else:
                fh = open(f, "rb")
            with fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    except Exception:  # a missing or unreadable file (OSError, tf NotFoundError): reported when the scan is read
        return ""
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- one scan

@dataclasses.dataclass(frozen=True)
class ScanResult:
    task: ScanTask
    records: list  # [(UnitRecord, CropGeometry)]
    dead_letters: list  # [dict]
    ok: bool  # False when the whole scan failed
    units_found: int
    notes: dict = dataclasses.field(default_factory=dict)  # counts of what was left out or not recognised


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


def max_voxels(cfg: PreprocessConfig) -> int:
    """The voxel limit: the configured one, or physical memory / 64 bytes (reading, float copies, the mask)."""
    if cfg.max_voxels:
        return cfg.max_voxels
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 64)
    except (ValueError, OSError, AttributeError):
        return 250_000_000


def _read(task: ScanTask, column: str, path: str, cfg: PreprocessConfig, notes: dict) -> readers.Volume:
    if not readers.exists(path):
        raise _ScanFailure(f"read_{column}", f"manifest row {task.row}, column '{column}': file not found; "
                                             f"fix the path (relative paths start at the manifest's folder)")
    try:
        return readers.read_volume(path, series_uid=task.series_uid if column == "image" else "",
                                   max_voxels=max_voxels(cfg), notes=notes)
    except Exception as exc:  # nibabel/gzip/pydicom/ITK raise many types; all mean "this file is unusable"
        raise _ScanFailure(f"read_{column}", f"manifest row {task.row}, column '{column}': cannot read the volume "
                                             f"({type(exc).__name__}: {_scrub(str(exc), path)}); "
                                             f"re-export the file or remove the row") from None


# VerSe codes of transitional vertebrae: L6 (25) sits between L5 and S1, T13 (28) between T12 and L1. A unit
# that would span one (L5/S1 past an L6) joins two bodies that are not neighbours: those units are dead letters.
TRANSITIONAL = {25: ("L6", "L5"), 28: ("T13", "T12")}  # code -> (name, the level whose unit below spans it)


@dataclasses.dataclass(frozen=True)
class Centres:
    """Body centres by level, the levels rejected (level -> reason) and codes that are no known level."""

    centres: dict
    rejected: dict
    unknown_codes: tuple = ()


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
        raise _ScanFailure("mask_values", "the vertebra_mask holds NaN/inf values; re-export it")
    labels = np.rint(labels).astype(np.int64) if labels.dtype.kind == "f" else labels.astype(np.int64)
    if labels.min() < 0:
        raise _ScanFailure("mask_values", "the vertebra_mask holds negative labels; VerSe codes are 1 to 28")
    voxel_ml = abs(float(np.linalg.det(mask.affine[:3, :3]))) / 1000.0
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
    return Centres(centres, rejected, tuple(unknown))


def json_centroids(text: str, source_affine: np.ndarray) -> Centres:
    """VerSe-style centroids: ``[{"direction": [...]}, {"label": code, "X": i, "Y": j, "Z": k}, ...]``.

    X, Y, Z are voxel indices along array axes 0, 1, 2 of the image file as stored, so the file's own affine
    maps them to world mm. An entry with a non-number or non-finite coordinate rejects its level.
    """
    entries = json.loads(text)
    if isinstance(entries, dict):  # some exports wrap the list
        entries = entries.get("centroids", [])
    if not isinstance(entries, list):
        raise ValueError("expected a list of {label, X, Y, Z} entries")
    centres, rejected, unknown = {}, {}, []
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
        try:
            ijk = np.array([float(e["X"]), float(e["Y"]), float(e["Z"])])
        except (KeyError, TypeError, ValueError):
            rejected[level] = f"the entry of label {code} lacks a numeric X, Y or Z"
            continue
        if not np.all(np.isfinite(ijk)):
            rejected[level] = f"the entry of label {code} has a non-finite X, Y or Z (NaN or infinity)"
            continue
        centres[level] = source_affine[:3, :3] @ ijk + source_affine[:3, 3]
    return Centres(centres, rejected, tuple(unknown))


def grid_mismatch_mm(image: readers.Volume, mask: readers.Volume) -> float:
    """Largest world distance (mm) between the same corner voxel of the two grids (same shape assumed)."""
    corners = np.array([[i, j, k] for i in (0, image.array.shape[0] - 1) for j in (0, image.array.shape[1] - 1)
                        for k in (0, image.array.shape[2] - 1)], dtype=np.float64)
    a = corners @ image.affine[:3, :3].T + image.affine[:3, 3]
    b = corners @ mask.affine[:3, :3].T + mask.affine[:3, 3]
    return float(np.linalg.norm(a - b, axis=1).max())


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
    except _ScanFailure as exc:
        stage, reason = exc.stage, exc.reason
    except MemoryError:
        stage = "memory"
        reason = (f"manifest row {task.row}: the scan does not fit in memory; lower preprocess.max_voxels so such "
                  f"scans are refused before loading, or use a machine with more memory")
    except Exception as exc:  # anything unforeseen still fails only this scan, never the whole job
        stage = "unexpected"
        reason = (f"manifest row {task.row}: {type(exc).__name__}: "
                  f"{_scrub(str(exc), task.image, task.mask, task.centroids)}; please report this with the row")
    if not reason.startswith("manifest row"):
        reason = f"manifest row {task.row}: {reason}"
    dead = {"scan": task.scan, "row": task.row, "unit": "", "stage": stage, "reason": reason}
    return ScanResult(task, [], [dead], ok=False, units_found=0, notes=notes)


def _load_centres(task: ScanTask, cfg: PreprocessConfig, image: readers.Volume, notes: dict):
    """(Centres, levels named by the manifest/json, body mask or None)."""
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
    from_json = Centres({}, {})
    if task.centroids:
        if not readers.exists(task.centroids):
            raise _ScanFailure("read_centroids", f"manifest row {task.row}, column 'centroids': file not found")
        try:
            from_json = json_centroids(read_text(task.centroids), image.source_affine)
        except Exception as exc:
            raise _ScanFailure("read_centroids", f"manifest row {task.row}, column 'centroids': not a VerSe "
                                                 f"centroid list ({type(exc).__name__}: "
                                                 f"{_scrub(str(exc), task.centroids)})") from None
        named |= set(from_json.centres) | set(from_json.rejected)
    if source == "json":
        _note_codes(notes, from_json.unknown_codes)
        return from_json, named, None
    mask = _read(task, "vertebra_mask", task.mask, cfg, notes)
    if mask.array.shape != image.array.shape:
        raise _ScanFailure("mask_shape", f"manifest row {task.row}: the vertebra_mask grid {mask.array.shape} "
                                         f"differs from the image grid {image.array.shape}; resample the mask "
                                         f"onto the image")
    off = grid_mismatch_mm(image, mask)
    if not off <= cfg.grid_tolerance_mm:
        raise _ScanFailure("mask_grid", f"manifest row {task.row}: the vertebra_mask lies {off:.1f} mm away from "
                                        f"the image in world space (same grid shape, different affine; tolerance "
                                        f"preprocess.grid_tolerance_mm = {cfg.grid_tolerance_mm:g}); the mask "
                                        f"belongs to another scan or was saved without the image's geometry")
    try:
        from_mask = mask_centroids(mask, cfg)
    except _ScanFailure as exc:
        raise _ScanFailure(exc.stage, f"manifest row {task.row}: {exc.reason}") from None
    _note_codes(notes, from_mask.unknown_codes + from_json.unknown_codes)
    body = np.asarray(mask.array) > 0
    return from_mask, named, body


def _note_codes(notes: dict, codes) -> None:
    for code in sorted(set(codes)):
        key = f"unknown_label_{code}" if code not in TRANSITIONAL else f"transitional_{TRANSITIONAL[code][0]}"
        notes[key] = notes.get(key, 0) + 1


def _process(task: ScanTask, cfg: PreprocessConfig, notes: dict) -> ScanResult:
    for name in task.unknown_levels:  # only a level-like name is echoed: the column is free text
        key = f"unknown_level_name_{name}" if re.fullmatch(r"[A-Za-z]{1,2}[0-9]{1,2}", name) else "unknown_level_text"
        notes[key] = notes.get(key, 0) + 1
    image = _read(task, "image", task.image, cfg, notes)
    array = np.asarray(image.array, dtype=np.float32)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise _ScanFailure("image_values", f"manifest row {task.row}, column 'image': the volume is empty or "
                                           f"holds NaN/inf values; re-export it")
    if float(array.max()) == float(array.min()):
        raise _ScanFailure("image_values", f"manifest row {task.row}, column 'image': the volume is constant "
                                           f"(no signal); check the export")
    found_centres, named, body = _load_centres(task, cfg, image, notes)
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
