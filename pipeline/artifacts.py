"""Typed artifact manifests: every component output folder holds an ``artifact.json``.

The manifest records what the folder is (type, schema version), who made it (producer), from what (config
fingerprint, input artifacts and their fingerprints: the lineage), and how much (counts). Its own
``fingerprint`` covers the payload files, so downstream components and the pipeline cache can tell whether an
input changed.
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
_NOT_PAYLOAD = {MANIFEST, "log.txt", ".vugan.lock"}  # .vugan.lock: pipeline.locks


class ArtifactType(str, enum.Enum):
    PHANTOM_COHORT = "PhantomCohort"
    EXAMPLES = "Examples"
    MODEL = "Model"
    EVALUATION = "Evaluation"
    SYNTHETIC_DATASET = "SyntheticDataset"
    PUSHED_MODEL = "PushedModel"


class ArtifactError(RuntimeError):
    """An artifact folder is missing, incomplete or of the wrong type."""


def payload_fingerprint(folder: str | Path, skip_dirs: tuple[str, ...] = ()) -> str:
    """sha256 over the relative paths and bytes of every payload file (sorted), in 1 MiB blocks."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if rel.name in _NOT_PAYLOAD or (rel.parts and rel.parts[0] in skip_dirs):
            continue
        digest.update(str(rel).encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


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
    payload = payload_fingerprint(out_dir, skip_dirs)
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
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "vugan_version": _version(),
    }
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, out_dir / MANIFEST)  # atomic: a half-written manifest never marks a folder complete
    return manifest


def read_artifact(folder: str | Path, expected_type: ArtifactType | None = None) -> dict[str, Any]:
    """Load and check a manifest; the error names the folder and what to do."""
    path = Path(folder) / MANIFEST
    if not path.exists():
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
