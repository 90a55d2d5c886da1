"""Fidelity math against independent numpy/scipy computations, closed forms and hand-worked cases."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from vugan.components.evaluator.quality import fidelity


def _numpy_fid(a, b):
    """Independent FID: scipy.linalg.sqrtm of the covariance product (the pytorch-fid formula)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def _numpy_kid(a, b):
    """Independent unbiased MMD^2 with the cubic polynomial kernel, one block (all pairs)."""
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    m, n = len(a), len(b)
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def test_fid_of_a_set_against_itself_is_zero():
    x = np.random.default_rng(0).standard_normal((300, 16))
    assert fidelity.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fid_matches_independent_scipy_computation():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12))
    b = rng.standard_normal((350, 12)) * 1.7 + 0.4
    assert fidelity.frechet_distance(a, b) == pytest.approx(_numpy_fid(a, b), rel=1e-6)


def test_fid_in_more_dimensions_than_units_uses_the_exact_gram_form():
    # 30 and 25 units in 200 dimensions (the per-class Inception case): same value as scipy's D x D sqrtm.
    rng = np.random.default_rng(6)
    a = rng.standard_normal((30, 200))
    b = rng.standard_normal((25, 200)) * 0.8 + 0.3
    assert fidelity.frechet_distance(a, b) == pytest.approx(_numpy_fid(a, b), rel=1e-6)
    # And the Gram form agrees with tensorflow-gan where both apply.
    c, d = rng.standard_normal((80, 10)), rng.standard_normal((70, 10)) + 0.2
    assert fidelity.frechet_distance_gram(c, d) == pytest.approx(fidelity.frechet_distance(c, d), rel=1e-8)


def test_fid_between_gaussian_samples_matches_closed_form():
    # N(0, I) vs N(mu, s^2 I) in d dims: FID = |mu|^2 + d (1 - s)^2. Sampling error of the estimate at n = 20,000
    # and d = 4 is about 0.01, so 0.05 is a generous but meaningful tolerance (the value itself is 1.0 + 0.36).
    rng = np.random.default_rng(2)
    d, n, s = 4, 20000, 1.3
    mu = np.array([1.0, 0.0, 0.0, 0.0])
    a = rng.standard_normal((n, d))
    b = mu + s * rng.standard_normal((n, d))
    expected = 1.0 + d * (1 - s) ** 2
    assert fidelity.frechet_distance(a, b) == pytest.approx(expected, abs=0.05)


def test_kid_matches_independent_numpy_computation_and_separates_distributions():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((800, 8))
    b = rng.standard_normal((720, 8)) + 0.5
    # Seven rows per set: too few for the 4-block rule, so tfgan computes a single block over all pairs.
    kid_one_block, std = fidelity.kernel_distance(a[:7], b[:7], max_block_size=1024)
    assert kid_one_block == pytest.approx(_numpy_kid(*_shuffled(a[:7], b[:7], seed=0)), rel=1e-9)
    assert std is None  # one block: no standard error
    kid, std = fidelity.kernel_distance(a, b)
    # Four blocks of shuffled rows: the mean of the per-block independent estimates.
    sa, sb = _shuffled(a, b, seed=0)
    blocks = [_numpy_kid(x, y) for x, y in zip(np.array_split(sa, 4), np.array_split(sb, 4))]
    assert kid == pytest.approx(np.mean(blocks), rel=1e-9)
    assert std == pytest.approx(np.std(blocks, ddof=1) / 2, rel=1e-6)
    # Unbiased: two halves of one sample sit within 3 standard errors of 0; the shifted set is far above.
    same, same_std = fidelity.kernel_distance(a[:400], a[400:])
    assert abs(same) < 3 * same_std
    assert kid > 3 * std


def _shuffled(a, b, seed):
    rng = np.random.default_rng(seed)
    return a[rng.permutation(len(a))], b[rng.permutation(len(b))]


def test_prdc_small_case_worked_by_hand():
    # Real points on a line: 0, 1, 2, 10 with k = 1: radii (distance to nearest other real) = 1, 1, 1, 8.
    # Fake points: 0.5, 2.5, 20 with k = 1: radii = 2 (0.5->2.5), 2, 17.5 (20->2.5).
    # precision: fakes inside some real ball: 0.5 (|0.5-0|<1) yes, 2.5 (|2.5-2|<1) yes, 20 (|20-10|=10 > 8) no: 2/3
    # recall: reals inside some fake ball: 0 (|0-0.5|<2) yes, 1 yes, 2 yes, 10 (|10-20|=10 < 17.5) yes: 4/4
    # density: real balls containing each fake: 0.5 -> balls of 0 and 1 (0.5 < 1 each) = 2; 2.5 -> ball of 2 = 1
    #          (|2.5-1| = 1.5 > 1; |2.5-10| = 7.5 < 8 -> ball of 10 too) = 2; 20 -> 0.  Sum 4 / (k * 3) = 4/3
    # coverage: real balls containing a fake: 0 yes, 1 yes (0.5), 2 yes (2.5), 10 yes (2.5 at 7.5 < 8): 4/4
    real = np.array([[0.0], [1.0], [2.0], [10.0]])
    fake = np.array([[0.5], [2.5], [20.0]])
    got = fidelity.prdc(real, fake, k=1, block=2)  # block 2: the blocked loops must give the same answer
    assert got == pytest.approx({"precision": 2 / 3, "recall": 1.0, "density": 4 / 3, "coverage": 1.0})
    # Replace the far fake by 3.0: fake radii become 0.5 -> 2.0, 2.5 -> 0.5, 3.0 -> 0.5. The real point 10 is
    # 7 from the nearest fake (3.0, radius 0.5): outside every fake ball, so recall = 3/4. Yet its own ball
    # (radius 8) contains 3.0, so coverage stays 4/4: recall and coverage answer different questions.
    got = fidelity.prdc(real, np.array([[0.5], [2.5], [3.0]]), k=1)
    assert got["recall"] == pytest.approx(3 / 4)
    assert got["coverage"] == pytest.approx(1.0)


def test_prdc_identical_sets_and_disjoint_sets():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((200, 5))
    same = fidelity.prdc(x, x.copy(), k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = fidelity.prdc(x, x + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_sliced_wasserstein_is_zero_for_same_set_and_recovers_a_shift():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 3))
    assert fidelity.sliced_wasserstein(x, x) == pytest.approx(0.0, abs=1e-12)
    # Shifting every point by a vector v moves each 1-D projection by <v, theta>; W1 = |<v, theta>|, whose mean
    # over uniform directions in 3-D is |v| / 2.
    v = np.array([2.0, 0.0, 0.0])
    assert fidelity.sliced_wasserstein(x, x + v, n_projections=4000) == pytest.approx(1.0, rel=0.03)
