"""Typed artifact manifests: every component output folder holds an ``artifact.json``.

The manifest records what the folder is (type, schema version), who made it (producer), from what (config
fingerprint, input artifacts and their fingerprints: the lineage), and how much (counts). Its own
``fingerprint`` covers the payload files, so downstream components and the pipeline cache can tell whether an
input changed; ``files`` records each payload file's size and sha256, so a consumer can check, before it reads a
folder, that it is still what its producer wrote, and name the file that is not (:func:`verify_artifact`).

The manifest is the folder's "finished" marker: the component contract (``pipeline.component``) removes it
(:func:`unmark_artifact`) before the first byte of the folder changes, and :func:`write_artifact` writes it last,
so a folder whose writer died half-way never reads as finished.
"""
from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

MANIFEST = "artifact.json"
SCHEMA_VERSION = 1
# Files a component writes about itself rather than as payload; they never change an artifact's fingerprint.
_NOT_PAYLOAD = {MANIFEST, MANIFEST + ".tmp", "log.txt", ".vugan.lock"}  # .vugan.lock: pipeline.locks
_BLOCK = 1 << 20  # files are hashed streaming, 1 MiB at a time: memory stays flat whatever the payload size


class ArtifactType(str, enum.Enum):
    PHANTOM_COHORT = "PhantomCohort"
    EXAMPLES = "Examples"
    MODEL = "Model"
    EVALUATION = "Evaluation"
    SYNTHETIC_DATASET = "SyntheticDataset"
    PUSHED_MODEL = "PushedModel"


class ArtifactError(RuntimeError):
    """An artifact folder is missing, incomplete or of the wrong type."""


def _payload_files(folder: Path, skip_dirs: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(relative path, path) of every payload file, sorted: all files but the manifest, the log, the lock and the
    top-level ``skip_dirs`` (checkpoints, TensorBoard logs: what a producer rewrites, and no consumer reads as data)."""
    files = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if rel.name in _NOT_PAYLOAD or (rel.parts and rel.parts[0] in skip_dirs) or not path.is_file():
            continue
        files.append((rel, path))
    # Sorted as paths (by their parts), as fingerprints have always been: "a/b" before "a.txt".
    return [(str(rel), path) for rel, path in sorted(files)]


def _hash_file(path: Path, *digests) -> int:
    """Feed the file's bytes to every digest; returns its size."""
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            size += len(block)
            for digest in digests:
                digest.update(block)
    return size


def payload_digests(folder: str | Path, skip_dirs: tuple[str, ...] = ()) -> tuple[str, dict[str, dict]]:
    """(fingerprint, files) in one pass: the payload fingerprint (:func:`payload_fingerprint`) and, per relative
    path, ``{"size": bytes, "sha256": hex}``."""
    folder = Path(folder)
    whole = hashlib.sha256()
    files = {}
    for rel, path in _payload_files(folder, skip_dirs):
        whole.update(rel.encode())
        one = hashlib.sha256()
        size = _hash_file(path, whole, one)
        files[rel] = {"size": size, "sha256": one.hexdigest()}
    return whole.hexdigest()[:16], files


def payload_fingerprint(folder: str | Path, skip_dirs: tuple[str, ...] = ()) -> str:
    """sha256 over the relative paths and bytes of every payload file (sorted), in 1 MiB blocks."""
    return payload_digests(folder, skip_dirs)[0]


def unmark_artifact(folder: str | Path) -> None:
    """Remove the folder's finished marker before anything in it changes (an unlink is atomic), and make the
    removal durable before the caller writes: a writer killed from here on leaves a folder no reader takes as
    finished (:func:`read_artifact` then says to rerun its producer)."""
    folder = Path(folder)
    try:
        os.unlink(folder / MANIFEST)
    except FileNotFoundError:
        return
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the unlink itself is still atomic
    finally:
        os.close(fd)


def write_artifact(
    out_dir: str | Path,
    *,
    artifact_type: ArtifactType,
    producer: str,
    config_fingerprint: str,
    inputs: Mapping[str, str | Path] | None = None,
    counts: Mapping[str, Any] | None = None,
    properties: Mapping[str, Any] | None = None,
    skip_dirs: tuple[str, ...] = (),
    summary: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``artifact.json`` into ``out_dir`` after the payload is complete; returns the manifest.

    Args:
      inputs: name -> folder of each input artifact; their type and fingerprint are recorded (lineage).
      skip_dirs: top-level folders left out of the payload fingerprint (e.g. TensorBoard logs, checkpoints).
      summary: the part of the payload that downstream components consume as a decision (e.g. the evaluator's
        verdict and headline metrics); its fingerprint lets a consumer that reads only that stay cached when the
        rest of the payload (report layout, figures) changes. Without it, the summary is the whole payload.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ArtifactError(f"{out_dir}: the component wrote no output folder")
    lineage = {}
    for name, folder in (inputs or {}).items():
        upstream = read_artifact(folder)
        lineage[name] = {
            "uri": str(Path(folder).resolve()),
            "type": upstream["type"],
            "fingerprint": upstream["fingerprint"],
            "summary_fingerprint": upstream.get("summary_fingerprint", upstream["fingerprint"]),
            "producer": upstream["producer"],
        }
    payload, files = payload_digests(out_dir, skip_dirs)
    manifest = {
        "type": ArtifactType(artifact_type).value,
        "schema_version": SCHEMA_VERSION,
        "producer": producer,
        "config_fingerprint": config_fingerprint,
        "inputs": lineage,
        "counts": dict(counts or {}),
        "properties": dict(properties or {}),
        "fingerprint": payload,
        "summary_fingerprint": _summary_fingerprint(summary) if summary is not None else payload,
        "skip_dirs": list(skip_dirs),  # what verify_artifact leaves out, as the fingerprint did
        "files": files,  # relative path -> size and sha256 (verify_artifact)
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "vugan_version": _version(),
    }
    tmp = out_dir / (MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())  # the marker must not reach the disk before its own bytes do
    os.replace(tmp, out_dir / MANIFEST)  # atomic: a half-written manifest never marks a folder complete
    _fsync_dir(out_dir)
    return manifest


def read_artifact(folder: str | Path, expected_type: ArtifactType | None = None) -> dict[str, Any]:
    """Load and check a manifest; the error names the folder and what to do."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        if Path(folder).is_dir() and any(Path(folder).iterdir()):
            raise ArtifactError(
                f"{folder}: incomplete, no {MANIFEST}: its writer stopped before finishing (killed, failed or still "
                f"running); rerun the component that produces it")
        raise ArtifactError(
            f"{folder}: no {MANIFEST}; this folder is not a finished vugan artifact "
            f"(run the component that produces it first)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}); rerun the producing component") from None
    if expected_type is not None and manifest.get("type") != ArtifactType(expected_type).value:
        raise ArtifactError(
            f"{path}: field 'type' is {manifest.get('type')!r}, expected {ArtifactType(expected_type).value!r}; "
            f"point this input at the right component's output")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"{path}: field 'schema_version' is {manifest.get('schema_version')!r}, "
                            f"this vugan reads {SCHEMA_VERSION}; rerun the producing component")
    return manifest


def verify_artifact(folder: str | Path, expected_type: ArtifactType | None = None,
                    skip_dirs: tuple[str, ...] | None = None) -> dict[str, Any]:
    """:func:`read_artifact`, then check that the payload is still what the producer wrote; returns the manifest.

    Against the recorded ``files``: every file present with its size and sha256, and no other payload file (an
    extra file would change the fingerprint the lineage and the cache rely on). A manifest written before per-file
    digests existed is checked against its whole-payload ``fingerprint`` (which names no file); ``skip_dirs`` is
    then the producer's (recorded in newer manifests).

    Cost: every byte of the payload is read once, streaming (1 MiB blocks, flat memory). That is what the producer
    already paid to fingerprint it, and payloads are small next to the work consuming them: TFRecord shards of
    crops (tens of MB), a generator and discriminator (a few MB to some hundred MB), reports and synthetic units;
    checkpoints and TensorBoard logs, the large and ever-changing part, are skip_dirs and never hashed.
    """
    folder = Path(folder)
    manifest = read_artifact(folder, expected_type)
    producer = manifest.get("producer", "the producing component")
    rerun = f"rerun {producer} to rebuild this folder"
    recorded = manifest.get("files")
    skip = tuple(manifest.get("skip_dirs", skip_dirs or ()))
    if not isinstance(recorded, dict):
        if payload_fingerprint(folder, skip) != manifest.get("fingerprint"):
            raise ArtifactError(f"{folder}: the files no longer match the fingerprint recorded in {MANIFEST} "
                                f"(an older artifact without per-file digests, so the changed file cannot be "
                                f"named); it was changed after it was made: {rerun}")
        return manifest
    present = dict(_payload_files(folder, skip))
    for rel in sorted(recorded):
        if rel not in present:
            raise ArtifactError(f"{folder / rel}: missing, but listed in {folder / MANIFEST}; {rerun}")
    for rel in sorted(present):
        if rel not in recorded:
            raise ArtifactError(f"{folder / rel}: not part of the artifact recorded in {folder / MANIFEST} (a "
                                f"file added after it was made); remove it, or {rerun}")
    for rel in sorted(recorded):  # sizes first: a truncated or grown file is found without reading anything
        size = present[rel].stat().st_size
        if size != recorded[rel].get("size"):
            raise ArtifactError(f"{folder / rel}: {size} bytes, but {recorded[rel].get('size')} recorded in "
                                f"{folder / MANIFEST}; the file changed after it was made: {rerun}")
    for rel in sorted(recorded):
        digest = hashlib.sha256()
        _hash_file(present[rel], digest)
        if digest.hexdigest() != recorded[rel].get("sha256"):
            raise ArtifactError(f"{folder / rel}: content differs from the sha256 recorded in {folder / MANIFEST}; "
                                f"the file changed after it was made: {rerun}")
    return manifest


def _summary_fingerprint(summary: Mapping[str, Any]) -> str:
    text = json.dumps(summary, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def input_fingerprint(manifest: Mapping[str, Any], summary_only: bool) -> str:
    """The fingerprint a consumer depends on: the summary's when it reads only the summary, else the payload's."""
    return manifest.get("summary_fingerprint", manifest["fingerprint"]) if summary_only else manifest["fingerprint"]


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("vugan")
    except Exception:  # running from a source tree that is not installed
        return "0+unknown"
