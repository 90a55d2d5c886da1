"""Fair baselines and radiomics features as small pure functions, against hand-worked values.

quality/baselines.py: pseudo-patients mirror the real patients' class lists; clustered "synthetic" sets are cut to
equal patients and units; the cluster bootstrap keeps patients whole; KID is a ratio only over a baseline clearly
above zero. quality/radiomics.py: quantisation, first-order, sharpness, GLCM and GLRLM on tiny images worked by
hand. fidelity.frechet_distance_np equals an independent scipy computation.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg

from vugan.components.evaluator.quality import baselines, fidelity, radiomics


# ----------------------------------------------------------------------------------------------- baselines

def test_pseudo_patients_mirror_each_real_patients_classes_and_drop_the_unservable():
    real_labels = np.array([0, 0, 1, 1, 2, 2])
    real_groups = np.array(["A", "A", "A", "B", "B", "C"])
    syn_labels = np.array([0, 0, 0, 1, 1, 1, 2])  # one unit of class 2: B or C can be served, not both
    rng = np.random.default_rng(0)
    r_idx, s_idx, s_groups = baselines.pseudo_patients(real_labels, real_groups, syn_labels, rng)
    kept = set(real_groups[r_idx])
    assert "A" in kept and len(kept) == 2  # A always fits; only one of B, C gets the single class-2 unit
    assert len(set(s_idx)) == len(s_idx)  # drawn without replacement
    for patient in kept:
        real_counts = np.bincount(real_labels[real_groups == patient], minlength=3)
        syn_counts = np.bincount(syn_labels[s_idx[s_groups == f"pseudo-{patient}"]], minlength=3)
        assert (real_counts == syn_counts).all()


def test_equal_sides_cuts_a_clustered_synthetic_set_to_equal_patients_and_units():
    real = baselines.Side(np.zeros((12, 1)), np.array([0, 1] * 6), np.repeat(["a", "b", "c", "d"], 3))
    syn = baselines.Side(np.ones((7, 1)), np.array([0, 0, 0, 1, 1, 1, 1]), np.array(["x"] * 4 + ["y"] * 3))
    r, s = baselines.equal_sides(real, syn, np.random.default_rng(1))
    assert r.n_groups == s.n_groups == 2
    assert (np.bincount(r.labels, minlength=2) == np.bincount(s.labels, minlength=2)).all()


def test_group_resample_keeps_patients_whole():
    groups = np.array(["a", "a", "a", "b", "c", "c"])
    idx = baselines.group_resample(groups, np.random.default_rng(3))
    drawn = groups[idx]
    copies = {g: (drawn == g).sum() / (groups == g).sum() for g in set(drawn)}
    assert all(c == int(c) for c in copies.values())  # whole copies of a patient only
    assert sum(copies.values()) == 3  # as many patients drawn as there are


def test_kid_is_a_ratio_only_over_a_baseline_clearly_above_zero():
    weak = baselines.kid_reading(0.033, 0.004, 0.002, 0.002)
    assert weak["kid_ratio"] is None and weak["kid_difference"] == pytest.approx(0.031)
    assert weak["kid_difference_se"] == pytest.approx(math.hypot(0.004, 0.002))
    clear = baselines.kid_reading(0.3, 0.01, 0.1, 0.01)
    assert clear["kid_ratio"] == pytest.approx(3.0) and clear["kid_reading"] == "ratio"


def test_bootstrap_ratio_interval_holds_one_for_two_samples_of_one_distribution():
    rng = np.random.default_rng(0)

    def side(n_pat, prefix):
        centres = rng.normal(0, 1, (n_pat, 4))
        feats = np.repeat(centres, 3, 0) + rng.normal(0, 0.5, (3 * n_pat, 4))
        return baselines.Side(feats, np.zeros(3 * n_pat, int), np.repeat([f"{prefix}{i}" for i in range(n_pat)], 3))

    held = 0
    for trial in range(10):
        ref, real, syn = side(30, "r"), side(20, "h"), side(20, "s")
        boot = baselines.bootstrap_ratios(ref, real, syn, fidelity.frechet_distance_np, [0], 40,
                                          np.random.default_rng(trial))
        estimate = (fidelity.frechet_distance_np(ref.feats, syn.feats)
                    / fidelity.frechet_distance_np(ref.feats, real.feats))
        lo, hi = baselines.ratio_interval(boot[None], estimate)
        assert lo < estimate < hi and boot[0].shape == (40, 2)
        held += lo < 1 < hi
    assert held >= 8  # nominal 95%: 8 of 10 allows for chance


def test_ratio_interval_is_the_log_normal_combination_of_both_spreads():
    pairs = np.exp(np.column_stack([np.tile([-0.1, 0.1], 20), np.tile([-0.2, 0.2], 20)]))
    sd = math.sqrt(np.var(np.tile([-0.1, 0.1], 20), ddof=1) + np.var(np.tile([-0.2, 0.2], 20), ddof=1))
    lo, hi = baselines.ratio_interval(pairs, 2.0)
    assert (lo, hi) == pytest.approx((2.0 * math.exp(-1.959964 * sd), 2.0 * math.exp(1.959964 * sd)), rel=1e-5)
    assert baselines.ratio_interval(pairs[:10], 2.0) is None


def test_numpy_frechet_distance_equals_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(80, 6)), rng.normal(size=(60, 6)) * 1.5 + 0.3
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * linalg.sqrtm(sa @ sb).real)
    assert fidelity.frechet_distance_np(a, b) == pytest.approx(expected, rel=1e-9)
    assert fidelity.frechet_distance_np(a, a) == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------------------------- radiomics

def test_quantise_on_the_fixed_grid():
    assert radiomics.quantise(np.array([-1.0, -0.9, 0.0, 0.99, 1.0, 2.0])).tolist() == [0, 0, 8, 15, 15, 15]


def test_first_order_of_a_two_valued_unit():
    unit = np.array([-1.0, -1.0, 1.0, 1.0]).reshape(1, 2, 2, 1)
    mean, std, skew, kurt, p10, p50, p90, iqr, mad, entropy, uniformity = radiomics.first_order(unit)[0]
    assert (mean, std, skew, kurt) == pytest.approx((0.0, 1.0, 0.0, -2.0))
    assert (p10, p50, p90, iqr, mad) == pytest.approx((-1.0, 0.0, 1.0, 2.0, 1.0))
    assert (entropy, uniformity) == pytest.approx((1.0, 0.5))  # two equally full bins


def test_sharpness_of_a_ramp():
    ramp = np.broadcast_to(0.1 * np.arange(5, dtype=np.float32)[None, :, None], (5, 5, 2)).copy()
    ramp[..., 1] += 0.2
    grad_mean, grad_std, lap_var, slice_diff, edge_grad, edge_lap = radiomics.sharpness(ramp[None])[0]
    assert (grad_mean, grad_std, lap_var) == pytest.approx((0.1, 0.0, 0.0), abs=1e-6)
    assert (slice_diff, edge_grad, edge_lap) == pytest.approx((0.2, 0.1, 0.0), abs=1e-6)


def test_glcm_of_two_columns_worked_by_hand():
    # [[0, 1], [0, 1]]: right pairs (0,1) x2, down (0,0) and (1,1), diagonals (0,1) and (1,0); symmetric:
    # P(0,1) = P(1,0) = 4/12, P(0,0) = P(1,1) = 2/12.
    q = np.array([[0, 1], [0, 1]]).reshape(1, 2, 2, 1)
    p = radiomics.glcm(q, levels=2)[0]
    assert p == pytest.approx(np.array([[1 / 6, 1 / 3], [1 / 3, 1 / 6]]))
    contrast, dissimilarity, homogeneity, asm, entropy, correlation = radiomics.glcm_features(p[None])[0]
    assert (contrast, dissimilarity, homogeneity) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert asm == pytest.approx(5 / 18)
    assert entropy == pytest.approx(math.log2(6) / 3 + 2 * math.log2(3) / 3)
    assert correlation == pytest.approx(-1 / 3)


def test_glrlm_of_two_columns_worked_by_hand():
    # Rows [0, 1] twice: four runs of 1; columns [0, 0] and [1, 1]: two runs of 2; six runs, three per level.
    q = np.array([[0, 1], [0, 1]]).reshape(1, 2, 2, 1)
    sre, lre, gln, rln, rp = radiomics.glrlm_features(q, levels=2)[0]
    assert (sre, lre) == pytest.approx((0.75, 2.0))
    assert (gln, rln, rp) == pytest.approx((0.5, 5 / 9, 0.75))


def test_radiomics_features_are_deterministic_and_named():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    f = radiomics.radiomics_features(x)
    assert f.shape == (3, len(radiomics.FEATURE_NAMES)) and np.isfinite(f).all()
    assert np.array_equal(f, radiomics.radiomics_features(x.copy()))


def test_spectrum_shares_of_a_checkerboard_and_a_flat_unit():
    yy, xx = np.mgrid[0:16, 0:16]
    board = np.where((yy + xx) % 2 == 0, 1.0, -1.0)[None, :, :, None].repeat(2, -1)  # all power at Nyquist
    high, mid, high_edge, grad_over_std = radiomics.spectrum(board)[0]
    assert (high, mid, high_edge) == pytest.approx((1.0, 0.0, 1.0))
    assert grad_over_std == pytest.approx(2 * math.sqrt(2))  # every step is 2 in x and y, std 1
    stripes = np.cos(2 * np.pi * xx / 8.0)[None, :, :, None]  # 0.125 cycles/px: all in the mid band
    assert radiomics.spectrum(stripes)[0][:2] == pytest.approx((0.0, 1.0), abs=1e-6)


def test_texture_features_do_not_depend_on_a_units_contrast_but_raw_mean_and_sd_do():
    rng = np.random.default_rng(3)
    half = np.repeat([0.0, 1.0], 16 * 16 * 3 // 2)  # two values, equally often: z = +-1 exactly
    levels = np.stack([rng.permutation(half) for _ in range(2)]).reshape(2, 16, 16, 3)
    a = (levels - 0.5).astype(np.float32)  # values -0.5 / 0.5
    b = (0.4 * levels - 0.1).astype(np.float32)  # the same pattern at 0.4x the contrast, shifted
    fa, fb = radiomics.radiomics_features(a), radiomics.radiomics_features(b)
    raw = [radiomics.FEATURE_NAMES.index(n) for n in ("mean", "std")]
    texture = [i for i in range(len(radiomics.FEATURE_NAMES)) if i not in raw]
    assert fa[:, texture] == pytest.approx(fb[:, texture], abs=1e-5)
    assert fb[:, raw[1]] == pytest.approx(0.4 * fa[:, raw[1]], rel=1e-5)  # the s.d. keeps the contrast
    assert np.all(np.abs(radiomics.contrast_normalised(a)) == pytest.approx(1 / radiomics.NORMALISED_SD))


def test_band_spectrum_of_stripes_worked_by_hand():
    yy, xx = np.mgrid[0:16, 0:16]
    across_x = np.cos(2 * np.pi * xx / 4.0)[None, :, :, None]  # 0.25 cycles/px along x only
    f = radiomics.band_spectrum(across_x)[0]
    bands = list(zip(radiomics.BANDS[:-1], radiomics.BANDS[1:]))
    for (lo, hi), value in zip(bands, f[:len(bands)]):
        assert value == pytest.approx(0.0 if lo < 0.25 <= hi else math.log(1e-8), abs=1e-6)  # share 1 or 0
    power = 2 * (16 * 16 / 2) ** 2  # a unit cosine: two conjugate peaks of |256 / 2|^2 each
    low, mid, high = f[len(bands):]
    assert (low, mid) == pytest.approx((0.0, 0.0))  # no power there: 1e-8 / 1e-8
    assert high == pytest.approx(math.log((power + 1e-8) / 1e-8), rel=1e-6)  # all power along x
    along_y = radiomics.band_spectrum(np.swapaxes(across_x, 1, 2))[0]
    assert along_y[-1] == pytest.approx(-high, rel=1e-6)  # the same stripes turned: the balance flips sign


def test_whitening_makes_the_reference_covariance_the_identity_and_floors_thin_directions():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(500, 3)) @ np.array([[3.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 0.2]])
    mean, matrix = radiomics.whitening(base, floor=0.0)
    white = (base - mean) @ matrix
    assert np.cov(white, rowvar=False) == pytest.approx(np.eye(3), abs=1e-9)
    mean, matrix = radiomics.whitening(base, floor=0.05)
    z = (base - base.mean(0)) / base.std(0)  # z-scored with the population s.d., as standardiser does
    lam = np.linalg.eigvalsh(np.cov(z, rowvar=False))
    shrunk = np.linalg.eigvalsh(np.cov((base - mean) @ matrix, rowvar=False))
    assert np.sort(shrunk) == pytest.approx(np.sort(lam / (lam + 0.05)), abs=1e-9)  # lambda / (lambda + floor)




def test_inception_sees_every_slice_as_three_rgb_triplets():
    from vugan.components.evaluator.features.embeddings import slice_triplets, triplets_rgb

    assert slice_triplets(9).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert slice_triplets(3).tolist() == [[0, 0, 0], [1, 1, 1], [2, 2, 2]]  # one slice per triplet
    units = np.stack([np.full((4, 4, 9), 0.1 * k, np.float32) for k in range(2)])
    units = units + (np.arange(9, dtype=np.float32) / 100)[None, None, None, :]  # slice s has value u/10 + s/100
    rgb = triplets_rgb(units, 4)
    assert rgb.shape == (6, 4, 4, 3)
    assert rgb[4, 0, 0].tolist() == pytest.approx([0.13, 0.14, 0.15])  # unit 1, second triplet
    assert rgb[2, 0, 0].tolist() == pytest.approx([0.06, 0.07, 0.08])  # unit 0, last (edge) triplet
