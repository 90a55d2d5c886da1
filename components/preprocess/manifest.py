"""scans.csv -> a :class:`Plan`: the scan tasks (paths, pseudonyms, patient splits) and the rows rejected.

This runs in the driver before any scan is read, so a bad manifest fails fast (:class:`ManifestError`) and a bad
row becomes a dead letter naming the row and column, never a raw identifier. The per-scan work on a task is
``units.py``; nothing here knows about Beam.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import posixpath
import secrets

import numpy as np

from vugan.components import schema
from vugan.components.preprocess import limits, readers
from vugan.components.preprocess.spec import PreprocessConfig

REQUIRED_COLUMNS = ("scan_id", "patient_id", "image")
CENTROID_COLUMNS = ("vertebra_mask", "centroids")  # at least one of these
# Paths are used exactly as written (a file name may end in a space); every other value is stripped.
PATH_COLUMNS = ("image", "vertebra_mask", "centroids")


class ManifestError(ValueError):
    """The manifest cannot be used at all (raised before any work starts)."""


# --------------------------------------------------------------------------------------------- manifest

def read_manifest(path: str) -> list[dict[str, str]]:
    """Read ``scans.csv`` (local or gs://) and check its columns; rows keep their 1-based data row number."""
    if not readers.exists(path):
        raise ManifestError(f"manifest {path} does not exist; pass --manifest with a scans.csv")
    if readers.is_dir(path):
        raise ManifestError(f"manifest {path} is a folder; pass the scans.csv file inside it")
    if limits.irregular_reason(path):  # a FIFO would block the read forever
        raise ManifestError(f"manifest {path}: not a regular file (a pipe, device or socket, or a link to one); "
                            f"pass the scans.csv file itself")
    reader = csv.DictReader(io.StringIO(_manifest_text(path)))
    try:
        columns = [c.strip() for c in (reader.fieldnames or [])]
        _check_unique_columns(path, columns)
        rows = []
        for row in reader:
            if None in row:
                raise ManifestError(f"manifest {path}, line {reader.line_num}: more fields than the header has "
                                    f"columns; quote fields that contain commas")
            rows.append({k.strip(): _cell(k.strip(), v) for k, v in row.items()})
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


def _manifest_text(path: str) -> str:
    """The manifest as text; UTF-16 (with or without its BOM) and a doubled BOM are named, not read as columns."""
    try:
        text = readers.read_text(path)  # UTF-8, one BOM dropped
    except UnicodeDecodeError as exc:
        guess = " (UTF-16?)" if bytes(exc.object[:2]) in (b"\xff\xfe", b"\xfe\xff") else f" (byte {exc.start})"
        raise ManifestError(f"manifest {path}: not UTF-8 text{guess}; save it as UTF-8 CSV") from None
    if "\x00" in text:  # UTF-16 without a BOM decodes as UTF-8 with a NUL after every ASCII character
        raise ManifestError(f"manifest {path}: not UTF-8 text (UTF-16?): it holds NUL bytes; save it as UTF-8 CSV")
    if text.startswith("\ufeff"):
        raise ManifestError(f"manifest {path}: not UTF-8 text as expected: it starts with two byte-order marks "
                            f"(BOM), so its first column name would be wrong; save it as UTF-8 CSV")
    return text


def _check_unique_columns(path: str, columns: list[str]) -> None:
    """Two columns of one name: csv.DictReader keeps the last silently (two patient_id columns put one patient's
    scans into train and into holdout)."""
    for name in dict.fromkeys(c for c in columns if c):  # unnamed trailing columns (",,") hold nothing read
        where = [i + 1 for i, c in enumerate(columns) if c == name]
        if len(where) > 1:
            raise ManifestError(f"manifest {path}, line 1: column {name!r} appears {len(where)} times (columns "
                                f"{', '.join(map(str, where))}); keep one column of each name")


def _cell(column: str, value: str | None) -> str:
    value = value or ""
    if column in PATH_COLUMNS:
        return value if value.strip() else ""
    return value.strip()


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
        spaced = _spaced_path(manifest_path, r)
        if empty:
            dead.append(_row_dead(r, "manifest", f"manifest row {r['_row']}: column {', '.join(repr(c) for c in empty)} "
                                                 f"is empty; fill it in or remove the row"))
        elif spaced:
            dead.append(_row_dead(r, "manifest", f"manifest row {r['_row']}, column {spaced!r}: no file at the path "
                                                 f"as written, which begins or ends with spaces; without them it "
                                                 f"names a file: remove the spaces in the manifest"))
        else:
            keep.append(r)
    for r in keep:
        r["_image"] = resolve_path(manifest_path, r["image"])
    keep, irregular = _regular_images(keep)
    dead += irregular
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


def _spaced_path(manifest_path: str, r: dict) -> str:
    """The first path column whose value, missing as written, names a file once its surrounding spaces are removed
    ('' if none). Paths are never stripped silently: a file name may end in a space. Only such values are looked up."""
    for column in PATH_COLUMNS:
        value = r.get(column, "")
        if value and value != value.strip() and not readers.exists(resolve_path(manifest_path, value)) \
                and readers.exists(resolve_path(manifest_path, value.strip())):
            return column
    return ""


def _row_dead(r: dict, stage: str, reason: str) -> dict:
    return {"_scan_id": r.get("scan_id", ""), "row": int(r["_row"]), "unit": "", "stage": stage, "reason": reason}


def _regular_images(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(rows kept, dead letters for rows whose image is not a regular file or folder of them).

    Checked from metadata before the duplicate check reads any bytes: two FIFOs (or two links to /dev/zero)
    have the same size, 0, so their contents would be hashed, and that read never ends.
    """
    kept, dead = [], []
    for r in rows:
        reason = limits.irregular_reason(r["_image"])
        if reason:
            dead.append(_row_dead(r, "not_regular_file", f"manifest row {r['_row']}, column 'image': {reason}"))
        else:
            kept.append(r)
    return kept, dead


# --------------------------------------------------------------------------------------------- duplicates

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
            group = _group_text(rows, members)
            reasons = sorted(set().union(*(why.get(i, set()) for i in members)))
            for i in members:
                dead.append(_row_dead(rows[i], "duplicate", (
                    f"manifest row {rows[i]['_row']}: the same scan (same {' and '.join(reasons)}) is listed under "
                    f"{len(patients):,} different patient_ids ({group}); one scan in two patients would put the "
                    f"same crops in train and test. Keep it under its true patient and remove the other rows")))
    return [rows[i] for i in sorted(kept)], dropped, dead


def _group_text(rows: list[dict], members: list[int], shown: int = 5) -> str:
    """The duplicate group named once, in a bounded text: its first row, size and first few rows.

    Every member's dead letter carries this text, so it must not grow with the group: listing all rows made
    10,000 copies of one file 10,000 letters of 60 KB each (quadratic).
    """
    numbers = sorted(int(rows[i]["_row"]) for i in members)
    listed = ", ".join(str(n) for n in numbers[:shown])
    more = f" and {len(numbers) - shown:,} more" if len(numbers) > shown else ""
    return f"duplicate group of row {numbers[0]}: {len(numbers):,} rows, rows {listed}{more}"


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
    if readers.is_dir(path):
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
