"""Canary patients: public phantom patients trained on beside the private cohort, so that the attacks' own power
can be measured on the model (the canary audit, components/evaluator/privacy/canary.py).

``trainer.canaries = N`` takes N whole patients from ``trainer.canary_examples`` (an Examples artifact made by
`vugan phantom` then `vugan preprocess`: public by construction) and splits them by ``trainer.canary_seed`` into
N/2 INSERTED patients, whose units join the train split exactly like any other patient's (same shuffle, same
Poisson sampling and per-patient clipping under DP, counted in epsilon's patients), and N/2 HELD BACK, which the
model never sees. Both halves are written into the model folder (``canaries/inserted``, ``canaries/held_back``)
so that the audit reads exactly the units that were, and were not, trained on; model_info.json records which
patients (fingerprinted, never named) and from which artifact. Canaries are phantom units and are never written
into a synthetic set or its lineage as real patients: only the model folder holds them.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from vugan.components import schema
from vugan.pipeline.artifacts import ArtifactType, read_artifact

FOLDER = "canaries"
INSERTED, HELD_BACK = "inserted", "held_back"


class CanaryError(ValueError):
    """The canary examples cannot be used; the message names the file, the field and what to do."""


def split_canaries(patients, n: int, seed: int) -> tuple[list[str], list[str]]:
    """(inserted, held back): ``n`` of ``patients`` drawn by ``seed``, the first half inserted; each list sorted.

    The draw depends on the set of patients only (sorted first), never on the order they were read in."""
    ids = sorted(set(str(p) for p in patients))
    if n < 2 or n % 2:
        raise CanaryError(f"trainer.canaries = {n}: use an even number >= 2 (half inserted, half held back), or 0")
    if n > len(ids):
        raise CanaryError(f"trainer.canaries = {n}, but the canary examples hold {len(ids)} patients; lower "
                          f"trainer.canaries or make a larger phantom cohort (`vugan phantom --patients N`)")
    chosen = [ids[i] for i in np.random.default_rng([seed, 23]).permutation(len(ids))[:n]]
    return sorted(chosen[:n // 2]), sorted(chosen[n // 2:])


def patient_fingerprint(patient: str) -> str:
    """What the model artifact records of a canary patient: a digest, so no identifier travels with the model."""
    return hashlib.sha256(f"canary|{patient}".encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Canaries:
    inserted_files: tuple[str, ...]
    held_back_files: tuple[str, ...]
    class_counts: tuple[int, ...]  # inserted units per class (they join the training class counts)
    record: dict  # what model_info.json "canaries" holds


def prepare(source, n: int, seed: int, out_dir: Path, image_shape, class_names, train_patients) -> Canaries:
    """Read every split of the canary Examples artifact, draw the canaries, write both halves under out_dir.

    Raises CanaryError when the artifact's shape or classes differ from the training examples', or when a canary
    patient is also a training patient (the canaries must be outside the private cohort)."""
    source = Path(source)
    try:
        manifest = read_artifact(source, ArtifactType.EXAMPLES)
    except (FileNotFoundError, ValueError) as exc:
        raise CanaryError(f"trainer.canary_examples = {str(source)!r}: {exc}; point it at an Examples artifact "
                          f"made from a phantom cohort (`vugan phantom`, then `vugan preprocess`)") from None
    props = manifest.get("properties") or {}
    for key, want in (("image_shape", list(image_shape)), ("class_names", list(class_names))):
        if list(props.get(key) or []) != want:
            raise CanaryError(f"{source / 'artifact.json'}: property {key} is {props.get(key)}, the training "
                              f"examples have {want}; preprocess the phantom cohort with the same [preprocess] "
                              f"settings")
    by_patient: dict[str, list[bytes]] = {}
    for split in schema.SPLITS:
        for path in schema.shard_files(str(source), split):
            for raw in _raw_records(path):
                by_patient.setdefault(schema.decode(raw).patient, []).append(raw)
    overlap = set(by_patient) & set(train_patients)
    if overlap:
        raise CanaryError(f"trainer.canary_examples = {str(source)!r}: {len(overlap)} of its patients are also "
                          f"training patients; canaries must be public phantom patients outside the cohort")
    inserted, held_back = split_canaries(list(by_patient), n, seed)
    files, counts = {}, np.zeros(len(class_names), np.int64)
    for name, group in ((INSERTED, inserted), (HELD_BACK, held_back)):
        records = [raw for p in group for raw in by_patient[p]]
        if name == INSERTED:
            for raw in records:
                counts[schema.decode(raw).class_id] += 1
        files[name] = tuple(schema.write_shards(records, str(Path(out_dir) / FOLDER / name)))
    record = {"enabled": True, "source": str(source.resolve()), "source_fingerprint": manifest.get("fingerprint"),
              "seed": seed, "patients": n,
              "inserted": [patient_fingerprint(p) for p in inserted],
              "held_back": [patient_fingerprint(p) for p in held_back],
              "inserted_units": int(sum(len(by_patient[p]) for p in inserted)),
              "held_back_units": int(sum(len(by_patient[p]) for p in held_back)),
              "folder": FOLDER,
              "note": "public phantom patients: the inserted half trained like any patient (same sampling; under DP "
                      "counted and clipped per patient), the held-back half never seen"}
    return Canaries(files[INSERTED], files[HELD_BACK], tuple(int(c) for c in counts), record)


def _raw_records(path: str):
    import tensorflow as tf

    try:
        yield from tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator()
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
        raise CanaryError(f"{path}: corrupt TFRecord file in the canary examples ({exc.message.splitlines()[0]}); "
                          f"rerun `vugan preprocess` on the phantom cohort") from None


def with_canaries(info, canaries: Canaries):
    """The training examples with the inserted canaries' shards appended: every later reader (tf.data, the DP
    sampler's patient grouping) sees them as training patients."""
    counts = tuple(a + b for a, b in zip(info.class_counts, canaries.class_counts))
    return dataclasses.replace(info, train_files=tuple(info.train_files) + canaries.inserted_files,
                               class_counts=counts)


def training_patients(info) -> set[str]:
    """The patients of the train split (to check that no canary is one of them)."""
    return {r.patient for r in schema.iter_records(info.train_files)}
