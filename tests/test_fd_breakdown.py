"""The per-feature breakdown of the Fréchet distance (quality/fd_breakdown.py) on hand-worked Gaussians: a pure shift
is all mean term, a pure scaling all covariance term, independent features split as their 1-D 2-Wasserstein
distances; on random data the parts add up to fidelity.frechet_distance in both the matrix and the Gram form."""
from __future__ import annotations

import numpy as np
import pytest

from vugan.components.evaluator.quality import fd_breakdown, fidelity
from vugan.components.evaluator.quality.fd_breakdown import FeatureNaming, frechet_parts, summary


def _axis_design(scales) -> np.ndarray:
    """Points +-s_d e_d: mean exactly 0, covariance (ddof 1) exactly diag(2 s_d^2 / (2D - 1)), no sampling noise."""
    d = len(scales)
    eye = np.eye(d) * np.asarray(scales, float)
    return np.concatenate([eye, -eye])


def test_equal_covariances_put_everything_in_the_mean_term():
    a = _axis_design([1.0, 2.0])
    parts = frechet_parts(a, a + [3.0, 4.0])  # same covariance, shifted by (3, 4): FD = 9 + 16
    assert parts.mean.tolist() == pytest.approx([9.0, 16.0])
    assert parts.covariance == pytest.approx([0.0, 0.0], abs=1e-9)
    s = summary(parts)
    assert s["mean_share"] == pytest.approx(1.0) and s["covariance_share"] == pytest.approx(0.0, abs=1e-9)
    assert [(f["feature"], round(f["share"], 9)) for f in s["top_features"]] == [("feature 1", 0.64),
                                                                                  ("feature 0", 0.36)]


def test_equal_means_put_everything_in_the_covariance_term():
    # Points (+-1, 0), (0, +-2): cov = diag(2/3, 8/3). b = 2a: cov 4x, same mean 0. The optimal map is x -> 2x, so
    # feature d's part is Var(2 X_d - X_d) = S_dd: 2/3 and 8/3, FD = Tr S = 10/3, shares 0.2 and 0.8.
    a = _axis_design([1.0, 2.0])
    parts = frechet_parts(a, 2.0 * a)
    assert parts.mean.tolist() == [0.0, 0.0]
    assert parts.covariance == pytest.approx([2 / 3, 8 / 3], rel=1e-9)
    s = summary(parts)
    assert s["mean_share"] == 0.0 and s["covariance_share"] == pytest.approx(1.0)
    assert s["total"] == pytest.approx(10 / 3) == pytest.approx(fidelity.frechet_distance_np(a, 2.0 * a))
    assert [f["share"] for f in s["top_features"]] == pytest.approx([0.8, 0.2])


def test_independent_features_split_as_their_one_dimensional_distances():
    # 3-d, diagonal covariances: s.d. sqrt(2/5) x (1, 2, 3) against sqrt(2/5) x (2, 2, 1), shifted by (1, 0, 0).
    # Per feature (mu diff)^2 + (sd_a - sd_b)^2 = 1 + 0.4, 0, 0.4 x 4: 1.4, 0, 1.6; FD 3.0, mean share 1/3.
    a, b = _axis_design([1.0, 2.0, 3.0]), _axis_design([2.0, 2.0, 1.0]) + [1.0, 0.0, 0.0]
    parts = frechet_parts(a, b)
    assert (parts.mean + parts.covariance) == pytest.approx([1.4, 0.0, 1.6], abs=1e-9)
    naming = FeatureNaming(("edge", "contrast", "texture"), (("shape", 1), ("appearance", 2)))
    s = summary(parts, naming)
    assert s["total"] == pytest.approx(3.0) and s["mean_share"] == pytest.approx(1 / 3)
    top = s["top_features"]
    assert [f["feature"] for f in top] == ["texture", "edge", "contrast"]
    assert top[0]["share"] == pytest.approx(1.6 / 3) and top[0]["mean_share"] == 0.0
    assert top[1]["mean_share"] == pytest.approx(1 / 3) and top[1]["covariance_share"] == pytest.approx(0.4 / 3)
    assert [(g["group"], g["features"]) for g in s["groups"]] == [("shape", 1), ("appearance", 2)]
    assert [g["share"] for g in s["groups"]] == pytest.approx([1.4 / 3, 1.6 / 3])


@pytest.mark.parametrize("n_a, n_b", [(400, 300), (12, 300), (9, 7)])  # matrix form, mixed, Gram form (N < D)
def test_parts_add_up_to_the_frechet_distance_on_random_16d_data(n_a, n_b):
    rng = np.random.default_rng(n_a)
    a = rng.standard_normal((n_a, 16)) @ rng.standard_normal((16, 16))
    b = rng.standard_normal((n_b, 16)) * np.linspace(0.5, 2.0, 16) + rng.standard_normal(16)
    parts = frechet_parts(a, b)
    assert parts.total == pytest.approx(fidelity.frechet_distance(a, b), rel=1e-6)
    # Each covariance part is the variance of X_d - Y_d under a valid coupling: never negative.
    assert parts.covariance.min() > -1e-9
    s = summary(parts)
    assert s["mean_share"] + s["covariance_share"] == pytest.approx(1.0)
    shares = [f["share"] for f in s["top_features"]]
    assert len(shares) == fd_breakdown.TOP_FEATURES and shares == sorted(shares, reverse=True) and sum(shares) < 1


def test_identical_sets_have_no_shares_and_bad_naming_is_a_clear_error():
    a = _axis_design([1.0, 2.0])
    s = summary(frechet_parts(a, a))
    assert s["mean_share"] is None and s["covariance_share"] is None  # nothing to attribute
    with pytest.raises(ValueError, match="2 feature names for 3 features"):
        summary(frechet_parts(_axis_design([1, 2, 3]), _axis_design([3, 2, 1])), FeatureNaming(("x", "y")))
    with pytest.raises(ValueError, match="cover 2 features, not the 3"):
        summary(frechet_parts(_axis_design([1, 2, 3]), _axis_design([3, 2, 1])), FeatureNaming(groups=(("g", 2),)))


def test_the_vu_encoder_names_every_feature_and_its_two_blocks():
    from vugan.components.evaluator.features.embeddings import vu_embedder

    vu = vu_embedder()
    assert len(vu.feature_names) == vu.provenance["dim"] == 25 and len(set(vu.feature_names)) == 25
    assert vu.feature_groups == (("appearance (texture + intensity)", 17), ("structure (pooled conv)", 8))
    # Appearance axes are named by the raw features that load on them most.
    assert vu.feature_names[0].startswith("appearance axis 1 (") and vu.feature_names[-1] == "structure axis 8"
