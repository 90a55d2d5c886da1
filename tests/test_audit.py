"""`vugan audit` end to end on blob units (support/privacy_controls.py) written as a real Examples artifact: a set of
fresh real patients PASSES (no leak found at the detectable size, quality rules met); the same set plus copies of
one training patient FAILS naming the copied patient. Both input forms are read: NIfTI units with a manifest, and
Split-synthetic/ TFRecords (through the installed command)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from vugan.components import schema
from vugan.pipeline.artifacts import ArtifactType, write_artifact
from support.paths import ROOT
from support.pipeline_runs import vugan
from support.privacy_controls import blob_cohort, take

# slow tier: whole audits (the evaluator end to end on a 450-patient cohort), one through the vugan command
pytestmark = pytest.mark.slow

FAST = ["evaluator.min_synthetic=45", "evaluator.classifier_epochs=4", "evaluator.msssim_pairs=20",
        "evaluator.swd_projections=32", "evaluator.prdc_k=3", "privacy.bootstrap=50",
        "privacy.max_query_patients=1000"]  # configs/tiny.toml caps the queries at 50 patients
SPLITS = {"train": (0, 130), "holdout": (130, 280), "test": (280, 320)}  # patients; fresh: 320-450


def _record(units, i, split):
    c = int(units.class_ids[i])
    return schema.encode(schema.UnitRecord(
        image=units.images[i], level_name="", upper_code=0, lower_code=0, region=schema.REGIONS[c], class_id=c,
        patient=str(units.patients[i]), scan=f"{split}-{i}"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    units = blob_cohort(450, 4, seed=7)
    pid = np.array([int(p[1:]) for p in units.patients])
    examples = root / "examples"
    counts = {}
    for split, (lo, hi) in SPLITS.items():
        rows = np.nonzero((pid >= lo) & (pid < hi))[0]
        schema.write_shards([_record(units, i, split) for i in rows], schema.split_dir(str(examples), split), 1)
        counts[split] = len(rows)
    write_artifact(examples, artifact_type=ArtifactType.EXAMPLES, producer="preprocess", config_fingerprint="t",
                   counts=counts, properties={"image_shape": [16, 16, 3], "class_names": list(schema.REGIONS),
                                              "conditioning": "region", "splits": counts})
    fresh = take(units, np.nonzero(pid >= 320)[0])
    train = take(units, np.nonzero(pid < 130)[0])
    return root, examples, fresh, train


def _audit(examples, synthetic, out):
    from vugan.components.evaluator.audit_component import SPEC
    from vugan.pipeline.config import load_config

    config = load_config(ROOT / "configs" / "tiny.toml", FAST)
    SPEC.run(config, {"examples": examples}, out, options={"synthetic": str(synthetic)}, log=lambda m: None)
    return json.loads((out / "verdict.json").read_text()), json.loads((out / "metrics.json").read_text())


def test_fresh_patients_as_nifti_pass(cohort):
    import nibabel as nib

    root, examples, fresh, _ = cohort
    folder = root / "fresh-nifti"
    folder.mkdir()
    with open(folder / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["nifti", "class_name"])
        for i, (img, c) in enumerate(zip(fresh.images, fresh.class_ids)):
            nib.save(nib.Nifti1Image(img, np.eye(4)), str(folder / f"u{i}.nii.gz"))
            w.writerow([f"u{i}.nii.gz", schema.REGIONS[c]])
    verdict, metrics = _audit(examples, folder, root / "audit-fresh")
    assert verdict["privacy_outcome"] == "no leak found at the detectable size", verdict["reasons"]
    assert verdict["passed"], verdict["reasons"]
    assert verdict["audited"]["format"] == "NIfTI units" and verdict["audited"]["units"] == len(fresh)
    # every one of the 130 training patients is attacked; 150 held out: 100 candidates + 50 reference
    assert metrics["privacy"]["candidates"]["member_patients"] == 130
    assert metrics["privacy"]["candidates"]["nonmember_patients"] == 100
    assert metrics["privacy"]["detectable"]["auc"] < 0.75
    assert set(metrics["privacy"]["skipped"]) >= {"pbb_reconstruction", "logan_realfake"}  # no model
    assert "domain" in metrics["fidelity"]["embeddings"] and metrics["utility"]["tstr_balanced_accuracy"] > 0.5
    assert (root / "audit-fresh" / "report.html").stat().st_size > 10000


def test_fresh_plus_a_copied_training_patient_as_tfrecords_fail(cohort):
    root, examples, fresh, train = cohort
    victim = np.nonzero(train.patients == "p17")[0]
    images = np.concatenate([fresh.images, train.images[victim] + 0.002])
    classes = np.r_[fresh.class_ids, train.class_ids[victim]]
    folder = root / "leaky"
    records = [schema.encode(schema.UnitRecord(image=img.astype(np.float32), level_name="", upper_code=0,
                                               lower_code=0, region=schema.REGIONS[c], class_id=int(c),
                                               patient=f"syn-{i}", scan=f"syn-{i}", synthetic=True))
               for i, (img, c) in enumerate(zip(images, classes))]
    schema.write_shards(records, schema.split_dir(str(folder), "synthetic"), 1)
    out = root / "audit-leaky"
    proc = vugan("audit", "--config", str(ROOT / "configs" / "tiny.toml"), *sum((["--set", s] for s in FAST), []),
                 "--examples", str(examples), "--synthetic", str(folder), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = json.loads((out / "verdict.json").read_text())
    assert not verdict["passed"] and verdict["privacy_outcome"] == "leak found"
    assert verdict["audited"]["format"] == "Split-synthetic/ TFRecords"
    assert any(r.startswith("FAIL: 1 of 130 training patients have a near-copy") for r in verdict["reasons"]), \
        verdict["reasons"]


def test_unreadable_synthetic_folder_is_a_clear_error(cohort, tmp_path):
    root, examples, _, _ = cohort
    (tmp_path / "empty").mkdir()
    proc = vugan("audit", "--examples", str(examples), "--synthetic", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "out"))
    assert proc.returncode == 2 and "no Split-synthetic/ TFRecords, no manifest.csv" in proc.stderr
