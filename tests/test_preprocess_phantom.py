"""Preprocess on a 20-patient phantom cohort (components.phantom): every region, patient-disjoint splits, counts
that add up against the cohort's own truth (its ``levels`` column), and centroid json == mask centres."""
from __future__ import annotations

import csv
import json
from collections import Counter

import nibabel as nib
import numpy as np
import pytest

from vugan.components import schema
from vugan.components.preprocess import component
from vugan.components.preprocess.manifest import plan_tasks
from vugan.components.preprocess.units import process_scan
from vugan.pipeline.config import load_config

# slow tier: the Beam pipeline over a 20-patient phantom cohort
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def phantom_run(tmp_path_factory):
    from vugan.components.phantom.core import generate_cohort
    from vugan.components.phantom.spec import PhantomConfig

    cohort = tmp_path_factory.mktemp("phantom")
    generate_cohort(cohort, PhantomConfig(patients=20, seed=0))
    out = tmp_path_factory.mktemp("phantom_examples")
    manifest = component.SPEC.run(load_config(None), {}, out, options={"manifest": str(cohort / "scans.csv")})
    records = {s: list(schema.iter_records(schema.shard_files(str(out), s))) for s in schema.SPLITS}
    return cohort, out, manifest, records


def test_phantom_cohort_regions_splits_and_counts(phantom_run):
    cohort, out, manifest, records = phantom_run
    rows = list(csv.DictReader(open(cohort / "scans.csv")))
    stats = json.loads((out / "stats.json").read_text())
    # Truth from the cohort: every adjacent pair of labelled bodies forms one disc unit.
    expected = Counter()
    for r in rows:
        levels = r["levels"].split()
        expected.update(schema.unit_region(f"{a}/{b}") for a, b in zip(levels, levels[1:])
                        if schema.next_level(a) == b and f"{a}/{b}" in schema.DISC_UNITS)
    assert stats["scans_in"] == 20 == stats["scans_ok"] + stats["scans_failed"]
    assert stats["vus_found"] == sum(expected.values()) == stats["vus_written"] + stats["vus_rejected"]
    written = Counter(r.region for rs in records.values() for r in rs)
    assert set(written) == set(schema.REGIONS)  # cervical, thoracic and lumbar all present
    dead = (out / "dead_letters.jsonl").read_text().splitlines()
    assert len(dead) == stats["vus_rejected"] + stats["scans_failed"]
    rejected = Counter(schema.unit_region(json.loads(d)["unit"]) for d in dead if json.loads(d)["unit"])
    assert written + rejected == expected
    assert sum(written.values()) == stats["vus_written"] == sum(manifest["properties"]["splits"].values())
    assert {s: dict(Counter(r.region for r in rs)) for s, rs in records.items() if rs} == stats["by_split_region"]
    patients = {s: {r.patient for r in rs} for s, rs in records.items()}
    assert all(not (patients[a] & patients[b]) for a in schema.SPLITS for b in schema.SPLITS if a < b)
    assert manifest["properties"]["patients_by_split"] == {"train": 12, "holdout": 4, "test": 4}
    assert all(len(p) >= 1 for p in patients.values())
    for r in (r for rs in records.values() for r in rs):
        assert r.class_id == schema.REGION_IDS[r.region] and r.image.shape == (64, 64, 9)
        assert not r.patient.startswith("PH-") and r.sequence in ("T1", "T2")
    assert {p.name for p in (out / "previews").iterdir()} == {"cervical.png", "thoracic.png", "lumbar.png"}


def test_phantom_centroid_json_agrees_with_mask_on_non_ras_scans(phantom_run):
    cohort, _, _, _ = phantom_run
    cfg = load_config(None).preprocess
    tasks = plan_tasks(str(cohort / "scans.csv"), cfg, salt="t")
    odd = [t for t in tasks if nib.aff2axcodes(nib.load(t.image).affine) != ("R", "A", "S")][:2]
    assert odd, "the phantom cohort should hold non-RAS scans"
    for t in odd:
        from_mask = process_scan(t, cfg)
        from_json = process_scan(t, load_config(None, ["preprocess.centroid_source='json'"]).preprocess)
        a = {rec.level_name: (rec.image, g.centre) for rec, g in from_mask.records}
        b = {rec.level_name: (rec.image, g.centre) for rec, g in from_json.records}
        assert sorted(a) == sorted(b) and len(a) >= 3
        for name in a:
            np.testing.assert_allclose(a[name][1], b[name][1], atol=0.05)  # mm
            np.testing.assert_allclose(a[name][0], b[name][0], atol=0.02)
