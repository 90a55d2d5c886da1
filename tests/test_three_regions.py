"""The three-region real cohort (issue 22): ../shared/data/spine-mri-three-regions (spine-mri-cohort +
spine-mri-cervical, 64 patients, 65 scans; cervical rows carry body centres instead of vertebra masks) and its
preset configs/three-regions.toml, preprocessed by the real command as a run would."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from support.paths import ROOT, THREE_REGIONS_MANIFEST, three_regions_manifest
from vugan.pipeline.config import load_config

CONFIG = ROOT / "configs" / "three-regions.toml"


def test_three_regions_config_is_the_cohort_recipe_pointed_at_the_three_region_manifest():
    three, cohort = load_config(CONFIG), load_config(ROOT / "configs" / "cohort.toml")
    # Relative to the repository root, as `vugan run` from the root reads it.
    assert (ROOT / three.run.manifest).resolve() == THREE_REGIONS_MANIFEST.resolve()
    assert dataclasses.replace(three.run, name="cohort", manifest="") == cohort.run
    assert set(three.sections) == set(cohort.sections) >= {"preprocess", "trainer", "evaluator", "privacy"}
    for section in set(three.sections) - {"run"}:
        assert three.sections[section] == cohort.sections[section], section


@pytest.fixture(scope="module")
def three_regions(tmp_path_factory):
    """`vugan preprocess --config configs/three-regions.toml` from the repository root, the manifest taken from
    the config (about 25 s on 2 cores)."""
    import os
    import subprocess
    import sys

    three_regions_manifest()  # skips, or fails under VUGAN_REQUIRE_REAL_DATA=1, when ../shared is absent
    out = tmp_path_factory.mktemp("three-regions") / "examples"
    subprocess.run([sys.executable, "-m", "vugan.pipeline.cli", "preprocess", "--config", str(CONFIG),
                    "--out", str(out)], check=True, capture_output=True, cwd=ROOT,
                   env={**os.environ, "VUGAN_SALT": "three-regions-test"})
    return out


@pytest.mark.slow
@pytest.mark.real_data
def test_three_region_cohort_preprocesses_every_scan_into_three_classes_and_disjoint_patients(three_regions):
    from vugan.components import schema

    stats = json.loads((three_regions / "stats.json").read_text())
    # Every scan read, the cervical ones through their centroids: 65 of 65, none failed.
    assert (stats["scans_in"], stats["scans_ok"], stats["scans_failed"], stats["rows_rejected"]) == (65, 65, 0, 0)
    splits = {s: schema.load_split(str(three_regions), s) for s in schema.SPLITS}
    # Units of all three classes in train (the cohort alone has no cervical units).
    train_counts = np.bincount(splits["train"].class_ids, minlength=3)
    assert (train_counts > 0).all(), dict(zip(schema.REGIONS, train_counts.tolist()))
    assert stats["by_split_region"]["train"] == dict(zip(schema.REGIONS, train_counts.tolist()))
    # Every patient in exactly one split, 64 in all.
    patients = {s: set(u.patients.astype(str)) for s, u in splits.items()}
    assert sum(len(p) for p in patients.values()) == len(set.union(*patients.values())) == 64
    assert {s: len(p) for s, p in patients.items()} == stats["patients_by_split"]
    # The rejected units are counted: found = written + rejected, one dead letter per rejected unit, and the
    # written ones are all in the splits (332 = 330 + 2: one lumbar label painted in two parts).
    dead = [json.loads(line) for line in (three_regions / "dead_letters.jsonl").read_text().splitlines()]
    assert stats["vus_found"] == stats["vus_written"] + stats["vus_rejected"]
    assert len(dead) == stats["vus_rejected"] and all(d["unit"] for d in dead)
    assert sum(len(u) for u in splits.values()) == stats["vus_written"]
    assert (stats["vus_found"], stats["vus_written"], stats["vus_rejected"]) == (332, 330, 2)
