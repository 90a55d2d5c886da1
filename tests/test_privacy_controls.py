"""The two controls the privacy evaluator must pass, on phantom-like blob units (16x16x3, 4 units per patient).

* Leaky: synthetic = training units + a little noise, and a model bundle that memorised the training units. Every
  family of attack must catch it (AUC >= 0.9) and memorisation must report copies; the gate must refuse.
* Null: members and non-members are a random patient split of real units that never touched a GAN; synthetic is a
  third disjoint real sample and the bundle memorised that third sample. Every attack's AUC CI must contain 0.5,
  no corrected test may fire, and at this size the gate must say "not enough patients to tell".
"""
import json

import numpy as np
import pytest

from vugan.components.evaluator.gate import LEAK, TOO_FEW, release_gate
from vugan.components.evaluator.results import Evaluation
from vugan.components.evaluator.privacy.attacks import evaluate_privacy
from vugan.components.evaluator.privacy.spec import PrivacyConfig
from support.privacy_controls import blob_cohort, leaky_synthetic, memorising_bundle, take

CFG = PrivacyConfig(bootstrap=300, pbb_steps=100, pbb_restarts=1, pbb_lr=0.1, pbb_max_patients=15, ct_cells=3,
                    ct_min_cell=10, max_fid_ratio=0.0, max_frd_ratio=0.0,
                    min_tstr_balanced_accuracy=0.0, max_c2st_auc=0.0, min_tstr_to_trtr=0.0)


@pytest.fixture(scope="module")
def splits():
    cohort = blob_cohort(150, 4, seed=0)
    pid = np.array([int(p[1:]) for p in cohort.patients])
    return tuple(take(cohort, np.nonzero((pid >= lo) & (pid < lo + 50))[0]) for lo in (0, 50, 100))


def embed(images):
    # A fixed random projection stands in for the evaluator's domain encoder.
    proj = np.random.default_rng(42).normal(size=(int(np.prod(images.shape[1:])), 32)).astype(np.float32)
    return images.reshape(len(images), -1) @ proj


def _check_report(result, synthetic, members):
    from vugan.components.evaluator.report.privacy_sections import privacy_sections

    json.dumps(result.metrics, allow_nan=False)  # metrics.json must be strict JSON
    sections = privacy_sections(result, synthetic.images, members.images, CFG)  # drawn from the attacks' numbers
    figures = [f for s in sections for f in s.figures]
    assert {s.key for s in sections} == {"privacy", "privacy_memorisation"}
    assert {"privacy_roc_unit", "privacy_roc_patient", "privacy_closest_pairs"} <= {f.name for f in figures}
    assert all(f.png.startswith(b"\x89PNG") for f in figures)


def test_leaky_generator_is_caught(splits):
    train, holdout, _ = splits
    synthetic = leaky_synthetic(train, 600, noise=0.02, seed=1)
    result = evaluate_privacy(train, holdout, synthetic, memorising_bundle(train, 3), embed, CFG, seed=0)
    m = result.metrics
    assert set(m["attacks"]) == {f"{s}.{a}" for s in ("pixel", "embedding")
                                 for a in ("fbb_nearest", "ref_pairwise", "ref_density", "domias")} | {
        "invariant.fbb_nearest", "pbb_reconstruction", "logan_realfake", "logan_aux_confidence"}
    for level in ("unit", "patient"):
        assert m["strongest"][level]["auc"] >= 0.9
    for name in ("pixel.fbb_nearest", "embedding.fbb_nearest", "pbb_reconstruction", "logan_realfake"):
        assert m["attacks"][name]["unit"]["auc"] >= 0.9, name
        assert m["attacks"][name]["patient"]["auc"] >= 0.9, name
    assert m["attacks"]["pbb_reconstruction"]["seconds_per_1000_queries"] > 0
    for space, memo in m["memorisation"].items():
        assert memo["copy_fraction"] >= 0.9, space
        assert memo["copied_patients"] >= 45, space  # of 50 training patients
        assert memo["closer_to_train_share"] >= 0.9, space
        assert memo["ct"] < -3, space
    verdict = release_gate(Evaluation.from_dict({"privacy": m}), CFG)
    assert not verdict.passed and verdict.outcome == LEAK
    fails = [r for r in verdict.reasons if r.startswith("FAIL")]
    assert any("near-copy" in r for r in fails) and any("per-patient AUC" in r for r in fails)
    _check_report(result, synthetic, train)


def test_random_split_is_chance(splits):
    members, nonmembers, third = splits
    result = evaluate_privacy(members, nonmembers, third, memorising_bundle(third, 3), embed, CFG, seed=0)
    m = result.metrics
    assert len(m["attacks"]) == 12  # 4 attacks in 2 spaces, 1 in the transform-blind features, 3 on the model
    for name, a in m["attacks"].items():
        for level in ("unit", "patient"):
            lo, hi = a[level]["auc_ci"]
            assert lo <= 0.5 <= hi, (name, level, a[level]["auc"], lo, hi)
        assert not a["patient"]["tests"]["finding"], name  # no corrected test fires on the null
    for space, memo in m["memorisation"].items():
        assert memo["copied_patients"] == 0, space
        assert 0.35 <= memo["closer_to_train_share"] <= 0.65, space
        assert abs(memo["ct"]) < 3, space
    verdict = release_gate(Evaluation.from_dict({"privacy": m}), CFG)
    # 50 training vs 33 candidate patients (17 are DOMIAS's reference): too few to tell, and the gate says so.
    assert verdict.outcome == TOO_FEW and not verdict.passed
    assert not [r for r in verdict.reasons if r.startswith("FAIL") and "not enough patients" not in r
                and "differential privacy" not in r]
    _check_report(result, third, members)
