"""canonical.py: order and patient names follow content, so renamed patients or reordered records give the same
arrays, and different content gives different names."""
from __future__ import annotations

import hashlib

import numpy as np

from vugan.components.evaluator.canonical import canonical_real, canonical_synthetic, unit_digests
from vugan.components.schema import UnitArrays


def units(patients, seed=0, n_per=3):
    rng = np.random.default_rng(seed)
    n = len(patients) * n_per
    return UnitArrays(images=rng.normal(size=(n, 4, 4, 2)).astype(np.float32),
                      class_ids=np.arange(n, dtype=np.int32) % 3,
                      regions=np.array(["cervical", "thoracic", "lumbar"] * (n // 3) + ["cervical"] * (n % 3), object),
                      level_names=np.array([f"L{i}" for i in range(n)], object),
                      patients=np.repeat(np.array(patients, object), n_per))


def same(a: UnitArrays, b: UnitArrays) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in
               ("images", "class_ids", "regions", "level_names", "patients"))


def test_unit_digest_is_sha256_of_shape_class_and_pixels():
    u = units(["a"], n_per=1)
    image = np.ascontiguousarray(u.images[0], np.float32)
    expected = hashlib.sha256(f"{image.shape}|{int(u.class_ids[0])}|".encode() + image.tobytes()).hexdigest()
    assert unit_digests(u) == [expected]
    relabelled = UnitArrays(u.images, u.class_ids + 1, u.regions, u.level_names, u.patients)
    assert unit_digests(relabelled) != [expected]  # the class is part of the content


def test_renamed_and_reordered_patients_give_identical_arrays():
    u = units(["p1", "p2", "p3", "p4"])
    renamed = UnitArrays(u.images, u.class_ids, u.regions, u.level_names,
                         np.array([{"p1": "zz", "p2": "aa", "p3": "mm", "p4": "bb"}[p] for p in u.patients], object))
    order = np.random.default_rng(3).permutation(len(u))
    shuffled = UnitArrays(*(getattr(renamed, f)[order] for f in ("images", "class_ids", "regions", "level_names",
                                                                 "patients")))
    a, b = canonical_real(u), canonical_real(shuffled)
    assert same(a, b)
    # Names come from content, each patient keeps all its units, and the original names are gone.
    assert len(set(a.patients)) == 4 and all(p.startswith("patient-") for p in a.patients)
    for p in set(a.patients):
        rows = np.flatnonzero(a.patients == p)
        original = set(u.patients[[int(np.flatnonzero((u.images == a.images[r]).all(axis=(1, 2, 3)))[0])
                                   for r in rows]])
        assert len(rows) == 3 and len(original) == 1
    # Units are sorted by (patient name, unit digest): name order is the order of the array.
    assert list(a.patients) == sorted(a.patients)


def test_different_content_gives_different_names_and_identical_patients_stay_apart():
    u = units(["p1", "p2"])
    twin = UnitArrays(np.concatenate([u.images, u.images[:3]]), np.concatenate([u.class_ids, u.class_ids[:3]]),
                      np.concatenate([u.regions, u.regions[:3]]), np.concatenate([u.level_names, u.level_names[:3]]),
                      np.concatenate([u.patients, np.array(["p1-copy"] * 3, object)]))
    a = canonical_real(twin)
    assert len(set(a.patients)) == 3  # the twin of p1 is not merged into it
    other = canonical_real(units(["p1", "p2"], seed=1))
    assert set(other.patients).isdisjoint(set(canonical_real(u).patients))


def test_synthetic_set_in_any_order_gives_the_same_arrays():
    u = units(["s"] * 1, n_per=12)
    order = np.random.default_rng(1).permutation(len(u))
    shuffled = UnitArrays(*(getattr(u, f)[order] for f in ("images", "class_ids", "regions", "level_names",
                                                           "patients")))
    a, b = canonical_synthetic(u), canonical_synthetic(shuffled)
    assert same(a, b)
    assert list(a.patients) == [f"synthetic-{i}" for i in range(12)]
    assert unit_digests(a) == sorted(unit_digests(u))
