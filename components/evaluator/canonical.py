"""Evidence that depends on content only: the units the evaluator reads, put in an order and under patient names
that follow from their pixels, never from pseudonyms, file order or the number of shards.

Every random choice of the evaluation (fair selection, bootstrap groups, attack members and non-members, DOMIAS
reference patients, copy-check subsets, MS-SSIM pairs, the classifiers' data order) is seeded from the configured
seed and then applied to arrays in their given order, and several of them visit patients in sorted-name order
(``np.unique``). Pseudonyms are salted hashes: a second preprocess of the same scans (a new salt), a shuffled
manifest or another shard count gave the same units in another order and under other names, and with them other
draws (a 43% swing of the FD-VU ratio on the 58-patient cohort). Reading each split through
:func:`canonical_real` (and an audited set through :func:`canonical_synthetic`) makes both the order and the names
functions of content, so the same scans and the same synthetic set give the same evidence.

The content names never reach an output: no pseudonym is written to metrics.json or the report either.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from vugan.components.schema import UnitArrays

FIELDS = ("images", "class_ids", "regions", "level_names", "patients")


def unit_digests(units: UnitArrays) -> list[str]:
    """sha256 of each unit's content: its pixels (float32, C order, with the shape) and its class."""
    images = np.ascontiguousarray(units.images, np.float32)
    out = []
    for image, class_id in zip(images, np.asarray(units.class_ids)):
        h = hashlib.sha256(f"{image.shape}|{int(class_id)}|".encode())
        h.update(image.tobytes())
        out.append(h.hexdigest())
    return out


def _take(units: UnitArrays, order: np.ndarray, patients: np.ndarray | None = None) -> UnitArrays:
    arrays = {f: np.asarray(getattr(units, f))[order] for f in FIELDS}
    if patients is not None:
        arrays["patients"] = patients
    return UnitArrays(**arrays)


def canonical_real(units: UnitArrays) -> UnitArrays:
    """A real split in content order, each patient renamed after the digests of its units.

    A patient's name is ``patient-`` plus the first 16 hex digits of the sha256 of its sorted unit digests; units are
    ordered by (patient name, unit digest). Two patients with identical units (which preprocess refuses to keep
    apart) would be interchangeable, so they are told apart by a counter in content order, which cannot change the
    evidence.
    """
    if len(units) == 0:
        return units
    digests = unit_digests(units)
    by_patient: dict[str, list[int]] = defaultdict(list)
    for i, patient in enumerate(np.asarray(units.patients).astype(str)):
        by_patient[patient].append(i)
    unit_list = {p: sorted(digests[i] for i in rows) for p, rows in by_patient.items()}
    content_key = {p: hashlib.sha256("|".join(units_of).encode()).hexdigest()[:16] for p, units_of in unit_list.items()}
    seen: dict[str, int] = defaultdict(int)
    name = {}
    for p in sorted(by_patient, key=lambda p: (content_key[p], unit_list[p])):
        k = content_key[p]
        name[p] = f"patient-{k}" if seen[k] == 0 else f"patient-{k}-{seen[k]}"
        seen[k] += 1
    renamed = np.array([name[p] for p in np.asarray(units.patients).astype(str)], object)
    order = np.array(sorted(range(len(units)), key=lambda i: (renamed[i], digests[i])), int)
    return _take(units, order, renamed[order])


def canonical_synthetic(units: UnitArrays) -> UnitArrays:
    """An audited synthetic set in content order (independent units; their ``synthetic-<i>`` names follow the new
    order, so the i-th name is the i-th unit by content, whatever file or record order the set came in)."""
    if len(units) == 0:
        return units
    digests = unit_digests(units)
    order = np.array(sorted(range(len(units)), key=lambda i: digests[i]), int)
    return _take(units, order, np.array([f"synthetic-{i}" for i in range(len(order))], object))
