"""Copies found whatever small transform hides them (issue 23, items 1 and 6, copy side).

One training patient's units, changed in a way that keeps the patient (identity_transforms.COPY_DISGUISES, a centre
slice pasted into fresh units, and the old noise / blur / offset / gain cases), are put among fresh patients' real
units; the shipped `evaluate_privacy` and gate must call it a leak and name the transform. Fresh patients alone are
never flagged. Reduced versions of the calibration in bench/privacy_calibration.py, on the blob cohort.
"""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from support.privacy_controls import blob_cohort, take
from vugan.components.evaluator.gate import LEAK, privacy_findings, privacy_outcome
from vugan.components.evaluator.privacy.attacks import evaluate_privacy
from vugan.components.evaluator.privacy.identity_transforms import COPY_DISGUISES, centre_slice_pasted
from vugan.components.evaluator.privacy.spec import PrivacyConfig
from vugan.components.schema import UnitArrays

CFG = PrivacyConfig(bootstrap=20, pbb_enabled=False, whitebox_enabled=False)
N = 24  # patients per group: train, held-out, fresh


def _cohort(seed: int, noise: float = 0.1):
    pool = blob_cohort(3 * N, 4, size=16, slices=5, seed=seed, noise=noise)
    p = np.asarray(pool.patients).astype(str)
    ids = np.unique(p)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(ids)
    parts = [take(pool, np.nonzero(np.isin(p, ids[i * N:(i + 1) * N]))[0]) for i in range(3)]
    return parts  # train, holdout, fresh


def _with(fresh: UnitArrays, images: np.ndarray, source: UnitArrays) -> UnitArrays:
    n = len(fresh) + len(images)
    return UnitArrays(np.concatenate([fresh.images, images]).astype(np.float32),
                      np.r_[fresh.class_ids, source.class_ids].astype(np.int32), np.r_[fresh.regions, source.regions],
                      np.r_[fresh.level_names, source.level_names], np.array([f"syn{i}" for i in range(n)], object))


def _one_patient(train: UnitArrays, seed: int) -> UnitArrays:
    p = np.asarray(train.patients).astype(str)
    chosen = np.random.default_rng([seed, 3]).choice(np.unique(p))
    return take(train, np.nonzero(p == chosen)[0])


OLD_CASES = {
    "noise s.d. 0.05": lambda x, rng: np.clip(x + rng.normal(0, 0.05, x.shape), -1, 1),
    # On these 16 x 16 blobs a patient is told apart by voxel-sized white-noise texture, which a blur of 0.7 erases:
    # the copy test's "smoothed" level (privacy.copy_smooth_sigma) matches after blurring both sides
    "blur sigma 0.7": lambda x, rng: gaussian_filter(x, (0, 0.7, 0.7, 0)),
    "offset +0.05": lambda x, rng: np.clip(x + 0.05, -1, 1),
    "gain x0.9": lambda x, rng: 0.9 * x,
    "exact copy": lambda x, rng: x,
}


def _judge(train, holdout, syn, seed=0):
    result = evaluate_privacy(train, holdout, syn, None, None, CFG, seed)
    outcome, reasons, headline = privacy_outcome(result, CFG)
    return result, outcome, reasons


@pytest.mark.parametrize("name", sorted(COPY_DISGUISES))
def test_a_training_patient_copied_under_each_disguise_is_a_leak_named_by_its_transform(name):
    train, holdout, fresh = _cohort(1)
    src = _one_patient(train, 1)
    syn = _with(fresh, COPY_DISGUISES[name](src.images), src)
    result, outcome, reasons = _judge(train, holdout, syn)
    assert outcome == LEAK
    c = result.copies
    assert c["copied_patients"] == 1, c
    assert c["matches"][0]["units"] >= len(src) - 1
    text = " ".join(reasons)
    assert "copy under a small transform" in text
    # the finding names the transform family matched
    expect = {"shift 1 voxel": "shift (1, 0)", "shift 2 voxels": "shift (1, -2)", "slices reversed": "slices reversed",
              "flipped in the plane": "flipped columns"}.get(name, "intensities remapped")
    assert expect in text, text


def test_a_centre_slice_pasted_into_fresh_units_is_a_leak_of_one_slice():
    train, holdout, fresh = _cohort(2)
    src = _one_patient(train, 2)
    targets = take(fresh, np.arange(len(src)))
    pasted = centre_slice_pasted(src.images, targets.images)
    syn = _with(fresh, pasted, src)
    result, outcome, reasons = _judge(train, holdout, syn)
    assert outcome == LEAK
    assert result.copies["copied_patients"] >= 1
    assert "(one slice)" in " ".join(reasons)


@pytest.mark.parametrize("name", sorted(OLD_CASES))
def test_the_old_near_copies_are_still_caught_by_the_new_test(name):
    train, holdout, fresh = _cohort(3)
    src = _one_patient(train, 3)
    syn = _with(fresh, OLD_CASES[name](src.images, np.random.default_rng(0)).astype(np.float32), src)
    result, outcome, reasons = _judge(train, holdout, syn)
    assert outcome == LEAK
    assert result.copies["copied_patients"] == 1, result.copies
    assert "copy under a small transform" in " ".join(reasons)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_fresh_patients_are_never_called_copies_and_the_false_positive_rate_is_reported(seed):
    train, holdout, fresh = _cohort(seed)
    result, outcome, reasons = _judge(train, holdout, fresh, seed)
    c = result.copies
    assert c["copied_patients"] == 0 and c["n_copies"] == 0, c
    fp = c["false_positive_rate_per_patient"]
    assert fp["fresh_patients"] == N and fp["flagged"] == 0
    lo, hi = fp["ci95"]
    assert lo == 0.0 and 0.1 < hi < 0.2  # Clopper-Pearson upper bound for 0 of 24
    findings, notes = privacy_findings(result, CFG)
    assert not any("copy" in f for f in findings)
    assert any("no training patient has a copy under shifts" in n for n in notes)


def test_a_result_without_the_transformed_copy_check_is_not_a_pass():
    import dataclasses

    train, holdout, fresh = _cohort(7)
    result = evaluate_privacy(train, holdout, fresh, None, None, CFG, 0)
    findings, _ = privacy_findings(dataclasses.replace(result, copies=None), CFG)
    assert any("transformed-copy check missing" in f for f in findings)


@pytest.fixture(scope="module")
def real_cohort(tmp_path_factory):
    """The 58-patient real cohort preprocessed as configs/cohort.toml does, by the real command (about 30 s)."""
    import os
    import subprocess
    import sys

    from support.paths import ROOT, real_cohort_manifest

    manifest = real_cohort_manifest()
    out = tmp_path_factory.mktemp("cohort") / "examples"
    subprocess.run([sys.executable, "-m", "vugan.pipeline.cli", "preprocess", "--config",
                    str(ROOT / "configs" / "cohort.toml"), "--manifest", str(manifest), "--out", str(out)],
                   check=True, capture_output=True, env={**os.environ, "VUGAN_SALT": "copies-test"})
    return str(out)


@pytest.mark.slow
@pytest.mark.real_data
def test_real_cohort_a_training_patient_shifted_by_one_voxel_is_a_leak_and_fresh_patients_are_not(real_cohort):
    """The 58-patient real cohort (configs/cohort.toml): the test split's fresh patients alone are not flagged; one
    training patient's units shifted by one voxel among them are a leak, every unit matched."""
    from vugan.components.schema import load_split

    ex = real_cohort
    train, holdout, fresh = (load_split(ex, s) for s in ("train", "holdout", "test"))
    result, outcome, reasons = _judge(train, holdout, fresh)
    assert result.copies["copied_patients"] == 0
    src = _one_patient(train, 0)
    result, outcome, reasons = _judge(train, holdout, _with(fresh, COPY_DISGUISES["shift 1 voxel"](src.images), src))
    assert outcome == LEAK and result.copies["copied_patients"] == 1
    assert result.copies["matches"][0]["units"] == len(src)
    assert "shift (1, 0)" in " ".join(reasons)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_reduced_calibration_grid_catches_every_copy_and_memorised_share_and_no_fresh_patient(seed):
    """bench/privacy_calibration.py --grid in small: every transformed-copy case, the compound changes and every
    memorised share x disguise of support.privacy_controls.copy_grid_draw, pooled into one query set (the copy test
    judges each unit on its own), on 25 blob patients a side. Each scenario must have a unit flagged; no fresh
    patient may be."""
    from support.privacy_controls import copy_grid_draw
    from vugan.components.evaluator.privacy.copies import transformed_copy_report

    pool = blob_cohort(100, 4, size=16, slices=5, seed=3)
    train, holdout, queries, groups = copy_grid_draw(pool, 25, seed)
    _, mask = transformed_copy_report(train.images, train.patients, holdout.images, holdout.patients, queries,
                                      cfg=CFG, seed=seed, max_named=0)
    assert len(groups) == 1 + 11 + 3 + 18  # null, the copy cases, the compound changes, 3 shares x 6 disguises
    missed = [k for k, (rows, _) in groups.items() if k != "null" and not mask[rows].any()]
    assert missed == []
    assert not mask[groups["null"][0]].any()
