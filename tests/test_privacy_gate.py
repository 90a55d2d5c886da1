"""Release gate (components/evaluator/gate.py): three outcomes with reasons, hand-worked statistics, candidates by
patient, the strongest attack chosen by evidence; missing metrics fail without crashing."""
import dataclasses
import math

import numpy as np
import pytest

from vugan.components.evaluator import gate
from vugan.components.evaluator.gate import LEAK, NO_LEAK, TOO_FEW
from vugan.components.evaluator.privacy import stats
from vugan.components.evaluator.privacy.attacks import add_patient_tests, select_candidates, split_reference, strongest
from vugan.components.evaluator.privacy.spec import PrivacyConfig
from vugan.components.evaluator.results import Evaluation

CFG = PrivacyConfig(max_fid_ratio=5.0, max_frd_ratio=5.0, min_tstr_balanced_accuracy=0.5, max_detectable_auc=0.75)


def _attack(auc, k_above, n, ci=(0.45, 0.55)):
    level = {"auc": auc, "auc_ci": list(ci), "tpr_at_1pct_fpr": 0.0, "tpr_at_0.1pct_fpr": 0.0, "n_members": n,
             "n_nonmembers": n, "members_above_all_nonmembers": k_above}
    return {"family": "x", "unit": dict(level), "patient": dict(level)}


def _metrics(n=150, aucs=(0.52, 0.49), k_above=(1, 0), copied=0, ct=0.2, dp=None):
    attacks = {f"pixel.{name}": _attack(a, k, n) for name, a, k in zip(("fbb_nearest", "domias"), aucs, k_above)}
    n_tests = add_patient_tests(attacks, CFG)
    priv = {"enabled": True, "attacks": attacks, "family": {"tests": n_tests},
            "candidates": {"member_patients": n, "nonmember_patients": n},
            "detectable": {"auc": stats.detectable_auc(n, n, n_tests=n_tests, alpha=CFG.alpha, margin=CFG.auc_margin,
                                                       power=CFG.power), "tail_members": 5},
            "strongest": {"patient": strongest(attacks)},
            "memorisation": {"pixel": {"copied_patients": copied, "n_copies": 2 * copied, "train_patients": 300,
                                       "n_synthetic": 1000, "copy_radius": 3.0, "copy_rule": "rule", "ct": ct}},
            "copies": {"copied_patients": 0, "train_patients": 300, "n_copies": 0, "n_synthetic": 1000,
                       "matches": [], "false_positive_rate_per_patient": {"flagged": 0, "fresh_patients": 150,
                                                                          "ci95": [0.0, 0.024]}},
            "dp": dp or {"enabled": False}}
    two_sample = {"overall": {"auc": 0.55, "auc_ci": [0.45, 0.65]}, "per_class": {}}
    return {"fidelity": {"fid_ratio": 2.0, "frd_ratio": 1.5, "two_sample": two_sample},
            "utility": {"tstr_balanced_accuracy": 0.8, "trtr_balanced_accuracy": 0.85},
            "privacy": priv}


def release_gate(metrics: dict, cfg: PrivacyConfig) -> gate.Verdict:
    """The gate on a metrics.json-shaped dict, read back as the typed evaluation it judges."""
    return gate.release_gate(Evaluation.from_dict(metrics), cfg)


def test_hand_worked_statistics():
    # Null sd of the Mann-Whitney AUC: sqrt((m + n + 1) / (12 m n)); 100 a side: sqrt(201 / 120000).
    assert stats.null_auc_sd(100, 100) == pytest.approx(math.sqrt(201 / 120000))
    # Top k of a random ranking all members: 3 of 5 members vs 5 non-members: (5 4 3) / (10 9 8) = 1/12.
    assert stats.tail_p_value(3, 5, 5) == pytest.approx(1 / 12)
    assert stats.members_above_all([5, 4, 3, 2, 1], [1, 1, 0, 1, 0]) == 2
    assert stats.tail_k_needed(5, 5, 0.1) == 3  # P(K >= 2) = 2/9 > 0.1, P(K >= 3) = 1/12 < 0.1
    # Detectable AUC: 0.5 + margin + (z_{1 - alpha / 2T} + z_power) sd, 2 attacks -> T = 4 tests.
    z = stats.normal_quantile(1 - 0.05 / 4 / 2) + stats.normal_quantile(0.95)
    assert stats.detectable_auc(100, 100, n_tests=4, alpha=0.05, margin=0.02, power=0.95) == pytest.approx(
        0.52 + z * math.sqrt(201 / 120000))


def test_no_leak_at_the_detectable_size_passes_with_its_reason():
    v = release_gate(_metrics(), CFG)
    assert v.passed and v.outcome == NO_LEAK
    assert any(r.startswith("PASS: no leak found") and "would have been found with 95% power" in r for r in v.reasons)
    assert "per-patient AUC >=" in v.headline


def test_a_leak_is_found_by_auc_tail_flip_copies_or_ct():
    for kwargs, needle in [({"aucs": (0.75, 0.5)}, "bound"), ({"k_above": (20, 0)}, "score above every non-member"),
                           ({"aucs": (0.25, 0.5)}, "far below chance"), ({"copied": 1}, "1 of 300 training patients"),
                           ({"ct": -4.0}, "C_T")]:
        v = release_gate(_metrics(**kwargs), CFG)
        assert not v.passed and v.outcome == LEAK, kwargs
        assert any(r.startswith("FAIL") and needle in r for r in v.reasons), (kwargs, v.reasons)


def test_too_few_patients_says_so_and_releases_only_under_patient_dp():
    v = release_gate(_metrics(n=25), CFG)
    assert not v.passed and v.outcome == TOO_FEW
    assert any("not enough patients to tell" in r and "25 member vs 25 non-member" in r for r in v.reasons)
    dp = {"enabled": True, "epsilon": 2.0, "delta": 1e-5, "unit": "patient"}
    assert release_gate(_metrics(n=25, dp=dp), PrivacyConfig(max_dp_epsilon=4.0)).passed
    v = release_gate(_metrics(n=25, dp=dp), PrivacyConfig(max_dp_epsilon=1.0))
    assert not v.passed and any("not within privacy.max_dp_epsilon" in r for r in v.reasons)
    v = release_gate(_metrics(n=25, dp={**dp, "unit": "unit"}), PrivacyConfig(max_dp_epsilon=4.0))
    assert not v.passed and any("not per patient" in r for r in v.reasons)
    # DP never excuses a found leak.
    assert not release_gate(_metrics(n=25, copied=2, dp=dp), PrivacyConfig(max_dp_epsilon=4.0)).passed


def test_strongest_attack_is_chosen_by_evidence_not_by_width():
    attacks = {"pixel.fbb_nearest": _attack(0.70, 0, 150, ci=(0.62, 0.78)),
               "pixel.domias": _attack(0.55, 0, 150, ci=(0.30, 0.80))}  # wider interval, weaker evidence
    add_patient_tests(attacks, CFG)
    assert strongest(attacks)["attack"] == "pixel.fbb_nearest"


def test_quality_rules_and_missing_metrics_fail_without_crashing():
    bad = _metrics()
    bad["utility"]["tstr_balanced_accuracy"] = 0.4
    v = release_gate(bad, CFG)
    assert not v.passed and v.outcome == NO_LEAK
    assert any(r.startswith("FAIL") and "0.400 is below the limit 0.500 (rule: >= 0.500)" in r for r in v.reasons)
    v = release_gate({"privacy": _metrics()["privacy"]}, CFG)
    assert not v.passed and "FAIL: quality metric fidelity.fid_ratio missing" in v.reasons
    v = release_gate({}, CFG)
    assert not v.passed and any("privacy metrics missing" in r for r in v.reasons)
    off = PrivacyConfig(max_fid_ratio=0.0, max_frd_ratio=0.0, min_tstr_balanced_accuracy=0.0, max_c2st_auc=0.0,
                        min_tstr_to_trtr=0.0)
    v = release_gate({"privacy": _metrics()["privacy"]}, off)
    assert v.passed and sum(r.startswith("OFF") for r in v.reasons) == 5
    # The network-free second opinion counts on its own: FD-VU within the rule, FRD above it, the gate fails.
    rough = _metrics()
    rough["fidelity"]["frd_ratio"] = 6.0
    v = release_gate(rough, CFG)
    assert not v.passed and ("FAIL: FRD ratio against holdout patients (fidelity.frd_ratio) 6.000 is above the limit 5.000 "
                              "(rule: <= 5.000)") in v.reasons
    assert "PASS: FD-VU ratio against holdout patients (fidelity.fid_ratio) 2.000 <= 5.000" in v.reasons
    assert release_gate(rough, dataclasses.replace(CFG, max_frd_ratio=0.0)).passed
    m = _metrics()
    del m["privacy"]["memorisation"]["pixel"]["copied_patients"]
    assert any("copy check missing" in r for r in release_gate(m, CFG).reasons)
    m = _metrics(ct=None)
    v = release_gate(m, CFG)
    assert v.passed and any("C_T (pixel) not computable" in r for r in v.reasons)


def test_candidates_are_whole_patients_every_one_attacked_and_disjoint_from_the_reference():
    members = np.repeat(["m1", "m2", "m3", "m4"], [5, 1, 1, 1])
    nonmembers = np.repeat(["n1", "n2", "n3"], [1, 1, 6])
    mi, ni = select_candidates(members, nonmembers, 100, seed=0)
    # Every patient of each side is attacked (issue 23: a balanced draw left most training patients unjudged).
    assert len(set(members[mi])) == 4 and len(set(nonmembers[ni])) == 3
    for pid in set(members[mi]):  # a drawn patient comes with all its units
        assert (members[mi] == pid).sum() == (members == pid).sum()
    mi, ni = select_candidates(members, nonmembers, 2, seed=0)
    assert len(set(members[mi])) == 2  # the cap counts patients
    pool, ref = split_reference(np.repeat([f"h{i}" for i in range(9)], 2), 1 / 3, seed=0)
    held = np.repeat([f"h{i}" for i in range(9)], 2)
    assert len(set(held[ref])) == 3 and not set(held[ref]) & set(held[pool])
    with pytest.raises(ValueError, match="both members and non-members"):
        select_candidates(np.array(["a", "b"]), np.array(["b"]), 10, 0)


def test_metrics_are_made_strict_json():
    import json

    from vugan.components.evaluator.results import jsonable

    out = jsonable({"a": np.float32(0.5), "b": float("nan"), "c": (np.int64(3), np.inf), "d": np.bool_(True)})
    assert out == {"a": 0.5, "b": None, "c": [3, None], "d": True}
    json.dumps(out, allow_nan=False)
