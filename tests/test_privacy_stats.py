"""Attack statistics, distances and memorisation numbers on cases worked out by hand (or against brute force)."""
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.stats import mannwhitneyu

from vugan.components.evaluator.privacy import stats as ms
from vugan.components.evaluator import knn
from vugan.components.evaluator.privacy.memorisation import closer_share, copy_radius, data_copying_ct, mann_whitney_z

S = [0.9, 0.8, 0.8, 0.7]
Y = [1, 1, 0, 0]


def test_auc_counts_ties_as_half():
    # Pairs (member, non-member): 0.9>0.8, 0.9>0.7, 0.8=0.8 (1/2), 0.8>0.7 -> 3.5 / 4.
    assert ms.roc_auc(S, Y) == pytest.approx(0.875)
    # Weight 2 on the 0.9 member: (2 + 2 + 0.5 + 1) / (3 * 2).
    assert ms.roc_auc(S, Y, weights=[2, 1, 1, 1]) == pytest.approx(5.5 / 6)
    assert ms.roc_auc([1, 2], [0, 1]) == 1.0 and ms.roc_auc([2, 1], [0, 1]) == 0.0
    assert np.isnan(ms.roc_auc([1, 2], [1, 1]))


def test_roc_curve_and_tpr_at_low_fpr():
    fpr, tpr = ms.roc_curve(S, Y)
    # Thresholds 0.9, 0.8 (a tie: one member and one non-member move together), 0.7.
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    assert ms.tpr_at_fpr(S, Y, 0.01) == 0.5
    assert ms.tpr_at_fpr(S, Y, 0.5) == 1.0


def test_aggregate_by_patient_mean_and_max():
    scores, labels, groups = [1, 3, 2, 6], [1, 1, 0, 0], ["a", "a", "b", "b"]
    s, y, ids = ms.aggregate_by_group(scores, labels, groups, "mean")
    np.testing.assert_allclose(s, [2, 4])
    assert list(y) == [1, 0] and list(ids) == ["a", "b"]
    s, _, _ = ms.aggregate_by_group(scores, labels, groups, "max")
    np.testing.assert_allclose(s, [3, 6])


def test_top_n_share():
    assert ms.top_n_member_share([5, 4, 3, 2], [1, 0, 1, 0], 2) == 0.5
    assert ms.top_n_member_share([5, 4, 3, 2], [1, 1, 0, 0], 2) == 1.0


def test_cluster_bootstrap_ci():
    # Perfect separation stays perfect in every resample.
    lo, hi = ms.bootstrap_auc_ci([3, 4, 1, 2], [1, 1, 0, 0], ["a", "a", "b", "c"], 50, 0)
    assert (lo, hi) == (1.0, 1.0)
    # Random scores: the CI holds the point estimate and widens when units of a patient are copies of each other.
    rng = np.random.default_rng(0)
    s = rng.normal(size=400)
    y = np.repeat([1, 0], 200)
    g_units = np.arange(400).astype(str)
    g_clustered = np.repeat(np.arange(40), 10).astype(str)
    s_clustered = np.repeat(rng.normal(size=40), 10)
    lo, hi = ms.bootstrap_auc_ci(s, y, g_units, 300, 1)
    assert lo < ms.roc_auc(s, y) < hi
    lo_c, hi_c = ms.bootstrap_auc_ci(s_clustered, y, g_clustered, 300, 1)
    assert hi_c - lo_c > 2 * (hi - lo)
    with pytest.raises(ValueError, match="both members and non-members"):
        ms.bootstrap_auc_ci([1, 2], [1, 0], ["a", "a"], 10, 0)


def test_attack_summary_levels():
    out = ms.attack_summary([3, 4, 1, 2], [1, 1, 0, 0], ["a", "a", "b", "c"], aggregate="mean", n_boot=50, seed=0)
    assert out["unit"]["auc"] == 1.0 and out["patient"]["auc"] == 1.0
    assert out["unit"]["n_members"] == 2 and out["patient"]["n_members"] == 1 and out["patient"]["n_nonmembers"] == 2
    assert out["unit"]["top_n"] == 1 and out["unit"]["top_n_member_share"] == 1.0


def test_knn_engine_matches_brute_force():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(23, 5, 4, 2)), rng.normal(size=(31, 5, 4, 2))
    full = cdist(q.reshape(23, -1), r.reshape(31, -1))
    index = knn.Index(knn.flatten(r), block_rows=7)  # several query blocks
    d, idx = index.search(q, 3)
    np.testing.assert_allclose(d, np.sort(full, 1)[:, :3], rtol=1e-4)
    np.testing.assert_array_equal(idx[:, 0], full.argmin(1))
    radius = float(np.quantile(full, 0.1))
    np.testing.assert_array_equal(index.count_within(q, radius), (full <= radius).sum(1))
    np.testing.assert_allclose(knn.pairwise(q, r), full, rtol=1e-4, atol=1e-5)


def test_fixed_projection_is_fixed_and_keeps_distances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 9, 32, 32)).astype(np.float32)
    a, b = knn.project(x, 256), knn.project(x[::-1].copy(), 256)[::-1]
    np.testing.assert_allclose(a, b, atol=1e-4)  # the same rows, the same coordinates, in any run and order
    ratio = cdist(a, a)[np.triu_indices(40, 1)] / cdist(x.reshape(40, -1), x.reshape(40, -1))[np.triu_indices(40, 1)]
    assert abs(np.median(ratio) - 1) < 0.03 and np.all(np.abs(ratio - 1) < 0.25)  # Johnson-Lindenstrauss
    small = rng.normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_array_equal(knn.project(small, 256), small)  # narrow rows are left as they are


def test_mann_whitney_z_by_hand():
    # Every generated distance exceeds every test distance: U = 4, mean 2, sd sqrt(2*2*5/12).
    assert mann_whitney_z([1, 2], [3, 4]) == pytest.approx(2 / np.sqrt(5 / 3))
    assert mann_whitney_z([3, 4], [1, 2]) == pytest.approx(-2 / np.sqrt(5 / 3))
    assert mann_whitney_z([1, 2, 3], [2]) == pytest.approx(0.0)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30), rng.normal(0.3, 1, 20)
    u = mannwhitneyu(b, a).statistic  # scipy's U of the first sample: pairs where b > a
    assert mann_whitney_z(a, b) == pytest.approx((u - 300) / np.sqrt(600 * 51 / 12))


def test_ct_weights_cells_by_test_share():
    # Cell 0: 3 test units (weight 3/4), generated all farther -> z = +z0; cell 1: 1 test unit -> dropped (min 2).
    test_d, test_cell = [1, 2, 3, 9], [0, 0, 0, 1]
    gen_d, gen_cell = [4, 5, 0, 0], [0, 0, 1, 1]
    ct, rows = data_copying_ct(test_d, gen_d, test_cell, gen_cell, 2, min_cell=2)
    assert ct == pytest.approx(mann_whitney_z([1, 2, 3], [4, 5]))
    assert [r["kept"] for r in rows] == [True, False] and rows[0]["weight"] == 0.75
    # Two kept cells: weighted mean of their z by test share.
    ct2, _ = data_copying_ct([1, 2, 3, 9, 8], [4, 5, 0, 1], [0, 0, 0, 1, 1], [0, 0, 1, 1], 2, min_cell=2)
    z0, z1 = mann_whitney_z([1, 2, 3], [4, 5]), mann_whitney_z([9, 8], [0, 1])
    assert ct2 == pytest.approx((0.6 * z0 + 0.4 * z1) / 1.0)


def test_closer_share_and_copy_radius():
    assert closer_share([1, 3, 2], [2, 2, 2]) == pytest.approx(0.5)  # 1 + 0 + 1/2 of 3
    assert closer_share([[1, 1], [3, 3]], [[2, 2]]) == pytest.approx(0.5)  # repeats broadcast and average
    assert copy_radius([1, 2, 3, 4, 5], 0.5, 0.5) == pytest.approx(1.5)
