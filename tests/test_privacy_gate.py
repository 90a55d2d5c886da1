"""Release gate: every rule is listed with its value and threshold; missing metrics fail without crashing."""
import copy

from components.evaluator.privacy.attacks import release_gate, select_candidates
from components.evaluator.privacy.spec import PrivacyConfig

import numpy as np
import pytest

CFG = PrivacyConfig(max_attack_auc_upper=0.6, max_closer_to_train_share=0.6, max_copy_fraction=0.01, min_ct=-3.0,
                    max_fid_ratio=5.0, min_tstr_balanced_accuracy=0.5)

GOOD = {
    "fidelity": {"fid_ratio": 2.0},
    "utility": {"tstr_balanced_accuracy": 0.8},
    "privacy": {
        "enabled": True,
        "strongest": {"unit": {"attack": "pixel.fbb_nearest", "auc": 0.52, "auc_ci": [0.48, 0.56]},
                      "patient": {"attack": "logan_realfake", "auc": 0.51, "auc_ci": [0.45, 0.58]}},
        "memorisation": {"pixel": {"closer_to_train_share": 0.52, "copy_fraction": 0.0, "ct": -0.5},
                         "embedding": {"closer_to_train_share": 0.55, "copy_fraction": 0.005, "ct": 0.3}},
    },
}


def test_all_rules_pass_and_are_listed():
    v = release_gate(GOOD, CFG)
    assert v.passed
    assert len(v.reasons) == 7 and all(r.startswith("PASS") for r in v.reasons)
    # The worst space is the one reported, with its value and the threshold.
    assert any("embedding" in r and "0.550 <= 0.600" in r for r in v.reasons)
    assert any("per patient (logan_realfake)" in r and "0.580 <= 0.600" in r for r in v.reasons)
    assert any("C_T" in r and "-0.500 >= -3.000" in r for r in v.reasons)


def test_each_failure_is_reported_alongside_the_passes():
    bad = copy.deepcopy(GOOD)
    bad["privacy"]["strongest"]["unit"]["auc_ci"] = [0.55, 0.65]
    bad["privacy"]["memorisation"]["pixel"]["copy_fraction"] = 0.2
    bad["utility"]["tstr_balanced_accuracy"] = 0.4
    v = release_gate(bad, CFG)
    assert not v.passed
    fails = [r for r in v.reasons if r.startswith("FAIL")]
    assert len(fails) == 3 and len(v.reasons) == 7
    assert any("0.650 <= 0.600" in r for r in fails)
    assert any("copies" in r and "0.200" in r for r in fails)
    assert any("TSTR" in r and "0.400 >= 0.500" in r for r in fails)


def test_missing_metrics_fail_without_crashing():
    v = release_gate({"privacy": GOOD["privacy"]}, CFG)
    assert not v.passed
    assert "FAIL: fidelity metric fidelity.fid_ratio missing" in v.reasons
    assert "FAIL: fidelity metric utility.tstr_balanced_accuracy missing" in v.reasons
    v = release_gate({}, CFG)
    assert not v.passed and any("privacy metrics missing" in r for r in v.reasons)
    # Fidelity rules turned off (threshold 0) are reported as off, not failed.
    off = PrivacyConfig(max_fid_ratio=0.0, min_tstr_balanced_accuracy=0.0)
    v = release_gate({"privacy": GOOD["privacy"]}, off)
    assert v.passed and sum(r.startswith("OFF") for r in v.reasons) == 2


def test_candidates_are_whole_patients_and_balanced():
    members = np.repeat(["m1", "m2", "m3", "m4"], [3, 3, 3, 3])
    nonmembers = np.repeat(["n1", "n2"], [3, 3])
    mi, ni = select_candidates(members, nonmembers, 100, seed=0)
    assert len(ni) == 6 and len(mi) == 6
    for pid in set(members[mi]):  # a drawn patient comes with all its units
        assert (members[mi] == pid).sum() == 3
    with pytest.raises(ValueError, match="both members and non-members"):
        select_candidates(np.array(["a", "b"]), np.array(["b"]), 10, 0)


def test_metrics_are_made_strict_json():
    import json

    from components.evaluator.privacy.attacks import json_safe

    out = json_safe({"a": np.float32(0.5), "b": float("nan"), "c": (np.int64(3), np.inf), "d": np.bool_(True)})
    assert out == {"a": 0.5, "b": None, "c": [3, None], "d": True}
    json.dumps(out, allow_nan=False)


def test_uncomputable_ct_fails_with_its_reason():
    m = copy.deepcopy(GOOD)
    for space in m["privacy"]["memorisation"].values():
        space["ct"] = None  # what json_safe makes of nan
    v = release_gate(m, CFG)
    assert not v.passed
    assert "FAIL: privacy metric ct not computable (too few units; for C_T lower privacy.ct_min_cell)" in v.reasons


def test_plain_language_reading_of_an_auc_interval():
    from components.evaluator.report.privacy_sections import verdict_of

    assert verdict_of([0.45, 0.56]) == "indistinguishable from guessing"
    assert verdict_of([0.1, 0.9]).startswith("inconclusive")
    assert verdict_of([0.52, 0.58]) == "slightly better than guessing"
    assert verdict_of([0.8, 0.95]) == "better than guessing"
