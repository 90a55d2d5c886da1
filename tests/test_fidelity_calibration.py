"""Fidelity calibration, reduced (the full table on the demo and spine-mri-cohort splits is in docs/evaluation.md).

Pool: blob units (support/privacy_controls.py: per-patient shape, intensity and texture, 4 units a patient), split by
patient into train (the reference the generator would learn from), holdout and fresh patients. The controls of
components/evaluator/calibration.py are scored like a generator: fresh real patients must give a ratio whose
interval holds 1, blurred, checkerboard and shifted sets must exceed the gate's rule in the network-free FRD space,
shifted and one-mode sets in the domain space, and the MS-SSIM mode-collapse rule must fire on one-mode and stay
quiet on real units.
The test fails when the baseline is unfair again (e.g. units matched but not patients), when the intervals are
too narrow to hold 1 for real data, or when the radiomics features stop seeing blur or texture.
"""
from __future__ import annotations

import numpy as np
import pytest

from vugan.components.evaluator import calibration
from vugan.components.evaluator.features import embeddings
from vugan.components.evaluator.quality import utility
from vugan.components.evaluator.spec import EvaluatorConfig
from support.privacy_controls import blob_cohort, take

CFG = EvaluatorConfig(fidelity_bootstrap=40, msssim_pairs=400, prdc_k=3, classifier_epochs=8)
RULE = 5.0  # the FD ratio level the team selects on; since issue 23 reported, not a gate rule by default
NAMES = ("cervical", "thoracic", "lumbar")


@pytest.fixture(scope="module")
def results():
    pool = blob_cohort(90, 4, size=16, slices=3, seed=0)
    pid = np.array([int(p[1:]) for p in pool.patients])
    train = take(pool, np.flatnonzero(pid < 40))
    holdout = take(pool, np.flatnonzero((pid >= 40) & (pid < 65)))
    fresh = take(pool, np.flatnonzero(pid >= 65))
    clf = utility.train_classifier(train.images, train.class_ids, 3, utility.ClassifierSettings(epochs=8), 0,
                                   groups=train.patients.astype(str))
    spaces = {"domain": embeddings.domain_embedder(clf), "radiomics": embeddings.radiomics_embedder()}
    return calibration.calibrate(train, holdout, fresh, spaces, NAMES, CFG, seed=0, log=lambda s: None)


def test_fresh_real_patients_score_about_one_with_an_interval_that_holds_one(results):
    for space, r in results["real"]["spaces"].items():
        ho = r["against_holdout"]
        lo, hi = ho["fd_ratio_ci"]
        assert lo < 1.0 < hi, (space, ho)
        assert ho["fd_ratio"] < RULE and r["against_train"]["fd_ratio"] < RULE, (space, r)
        # Equal patients and units on both comparators.
        n = ho["n"]
        assert n["synthetic"] == n["real"] and n["synthetic_patients"] == n["real_patients"] == 25


def test_blurred_checkerboard_and_shifted_exceed_the_rule_in_frd(results):
    # One-mode is not here: at 25 patients a side its FRD ratio ranges 3.7-10.6 over seeds (docs/evaluation.md);
    # the domain space and the MS-SSIM rule catch it (below).
    for control in ("blurred", "checkerboard", "shifted"):
        frd = results[control]["spaces"]["radiomics"]
        for ref in ("against_holdout", "against_train"):
            assert frd[ref]["fd_ratio"] > RULE, (control, ref, frd[ref])
        assert frd["against_holdout"]["fd_ratio_ci"][0] > results["real"]["spaces"]["radiomics"][
            "against_holdout"]["fd_ratio"], control


def test_domain_space_sees_shift_and_the_one_mode_generator(results):
    for control in ("shifted", "one-mode"):
        assert results[control]["spaces"]["domain"]["against_holdout"]["fd_ratio"] > RULE, control


def test_mode_collapse_rule_fires_on_one_mode_and_not_on_real(results):
    assert results["one-mode"]["mode_collapse_warning"]
    assert not results["real"]["mode_collapse_warning"]


def test_one_mode_generator_gets_pseudo_patients_mirroring_the_real_side(results):
    n = results["one-mode"]["spaces"]["radiomics"]["against_train"]["n"]
    assert n["synthetic"] == n["real"] and n["synthetic_patients"] == n["real_patients"]
