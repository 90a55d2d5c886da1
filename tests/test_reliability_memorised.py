"""Issue 23, items 2, 5 (privacy) and 6: a generator that memorised a share of its patients is found with a stated
power, and the verdict says how many training patients were judged.

Leak scenarios are built independently of how the detectors measure: every unit of a share of the training patients
is given back under an identity-keeping change (privacy/identity_transforms.py: shift, slice reversal, flip,
intensity remap), not moved by a chosen distance in pixel space (support/privacy_controls.py, memorised_sets).
Pool: blob units built here (16x16x3, 3 units a patient). Each test fails if the memorised-share test loses its
power (the tail / quantile tests or the transform-blind attack space removed), if a fresh set is flagged, or if the
power statement or the coverage line goes missing or wrong.
"""
import numpy as np
import pytest

from vugan.components.evaluator import gate
from vugan.components.evaluator.privacy.attacks import evaluate_privacy
from vugan.components.evaluator.privacy.spec import PrivacyConfig
from support.privacy_controls import blob_cohort, take

CFG = PrivacyConfig(bootstrap=20, ct_min_cell=10)


@pytest.fixture(scope="module")
def pool():
    return blob_cohort(720, 3, seed=1)


def _judge(pool, n, share, disguise, seed):
    from support.privacy_controls import memorised_sets

    train, holdout, syn = memorised_sets(pool, n, share, disguise, seed)
    result = evaluate_privacy(train, holdout, syn, None, None, CFG, seed)
    return result, gate.privacy_outcome(result, CFG)


def _membership_fired(result) -> bool:
    """A membership test on a gated attack fired (the copy check is left out: what the tests catch on their own)."""
    return any(a["patient"]["tests"]["finding"] for a in result.attacks.values() if a.get("gated"))


def test_power_statement_matches_a_simulation():
    """The stated detectable share is exact: random rankings with e memorised members on top are found as often as
    memorised_power says, and one patient fewer is not enough for 95%."""
    from vugan.components.evaluator.privacy import stats

    m = n = 100
    level = 0.05 / 15  # 5 gated attacks x 3 tests (pixel space and the transform-blind space, no encoder)
    ranks = (1, stats.quantile_rank(n, 0.95))
    det = stats.detectable_memorised(m, n, ranks, level, 0.95)
    assert det["patients"] is not None and det["share"] == det["patients"] / m
    rng = np.random.default_rng(0)

    def simulated(e: int, draws: int = 3000) -> float:
        found = 0
        for _ in range(draws):
            rest = rng.permutation(np.r_[np.ones(m - e, int), np.zeros(n, int)])
            labels = np.r_[np.ones(e, int), rest]
            scores = -np.arange(len(labels), dtype=float)  # e memorised members on top, the rest in random order
            found += any(stats.rank_tail_p_value(stats.members_above_rank(scores, labels, r), m, n, r) < level
                         for r in ranks)
        return found / draws

    for e in (det["patients"] - 1, det["patients"]):
        exact = max(stats.memorised_power(e, m, n, r, level) for r in ranks)
        assert simulated(e) == pytest.approx(exact, abs=0.03), e
    assert max(stats.memorised_power(det["patients"] - 1, m, n, r, level) for r in ranks) < 0.95
    # The null: nothing memorised, the union of the two tests fires at most at the corrected level (a little slack).
    assert simulated(0) <= 2 * level + 0.005
    # No rank test can beat the floor (m / (m + n))^e: at 100 a side 5% (5 patients) is below it, 10% is not.
    assert 0.05 < det["share"] <= 0.10
    assert stats.detectable_memorised(200, 200, (1, stats.quantile_rank(200, 0.95)), level, 0.95)["share"] <= 0.05


@pytest.mark.parametrize("disguise", ["shift 1 voxel", "flipped in the plane", "intensity 0.7x + 0.15"])
def test_a_tenth_memorised_under_a_disguise_is_found_by_the_membership_tests(pool, disguise):
    for seed in (0, 1):
        result, (outcome, reasons, _) = _judge(pool, 100, 0.10, disguise, seed)
        assert outcome == gate.LEAK, reasons
        assert _membership_fired(result), (disguise, seed, reasons)


def test_five_percent_memorised_at_200_a_side_is_found(pool):
    result, (outcome, reasons, _) = _judge(pool, 200, 0.05, "flipped in the plane", 0)
    assert _membership_fired(result), reasons
    assert result.detectable["memorised"]["share"] <= 0.05
    assert any("memorised" in r or "score above every non-member" in r for r in reasons if r.startswith("FAIL"))


def test_fresh_patients_are_not_called_memorised_and_the_pass_line_states_the_share(pool):
    from support.privacy_controls import calibration_sets

    for seed in (0, 1):
        train, holdout, syn = calibration_sets(pool, 100, "a", seed)
        result = evaluate_privacy(train, holdout, syn, None, None, CFG, seed)
        outcome, reasons, _ = gate.privacy_outcome(result, CFG)
        assert outcome == gate.NO_LEAK, reasons
        assert not _membership_fired(result)
        det = result.detectable["memorised"]
        # 100 a side, 15 tests: 9 patients = 9% would have been found with 95% power (exact, see the test above).
        assert det["patients"] == 9 and det["share"] == pytest.approx(0.09)
        passed = [r for r in reasons if r.startswith("PASS")]
        assert "memorised 9% of the member patients" in passed[0], passed
        assert result.family["tests"] == 15  # 4 pixel attacks + 1 transform-blind, 3 tests each


def test_every_training_patient_is_attacked_and_the_verdict_says_how_many(pool):
    """The default 60/20/20 split: 60 training patients, 20 held out (7 of them the DOMIAS reference). A balanced
    draw attacked 13 of the 60 (22%); now all 60 are, and the verdict, metrics and report say so."""
    from vugan.components.evaluator.report.privacy_sections import summary_html

    pid = np.array([int(p[1:]) for p in pool.patients])
    train, holdout = take(pool, np.nonzero(pid < 60)[0]), take(pool, np.nonzero((pid >= 60) & (pid < 80))[0])
    fresh = take(pool, np.nonzero((pid >= 80) & (pid < 140))[0])
    result = evaluate_privacy(train, holdout, fresh, None, None, CFG, 0)
    cov = result.coverage
    assert cov == {"train_patients": 60, "attacked_patients": 60, "attacked_share": 1.0,
                   "copy_checked_patients": 60}
    assert result.candidates["member_patients"] == 60 and result.candidates["nonmember_patients"] == 13
    _, reasons, _ = gate.privacy_outcome(result, CFG)
    assert "NOTE: the attacks judged 60 of 60 training patients (100%); the copy check judged all 60" in reasons
    assert "judged 60 of 60 training patients" in summary_html(result)
    # A cap on the attacked patients is said, not hidden.
    capped = evaluate_privacy(train, holdout, fresh, None, None, PrivacyConfig(bootstrap=20, ct_min_cell=10,
                                                                               max_query_patients=15), 0)
    assert capped.coverage["attacked_patients"] == 15 and capped.coverage["attacked_share"] == 0.25
    assert any("judged 15 of 60 training patients (25%)" in r for r in gate.privacy_outcome(capped, CFG)[1])
