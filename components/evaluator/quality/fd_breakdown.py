"""Which features carry a Fréchet distance: its mean and covariance terms, and a per-feature split that adds up.

The Fréchet distance between the Gaussians fitted to two feature sets is ||mu_a - mu_b||^2 + Tr(S_a + S_b -
2 (S_a S_b)^(1/2)). The mean term is already a sum over features. The covariance (trace) term is not, so it is split
through the fact that makes the Fréchet distance meaningful: it IS the squared 2-Wasserstein distance between the
two Gaussians, E||X - Y||^2 under the optimal coupling of X ~ N(mu_a, S_a) and Y ~ N(mu_b, S_b). That expectation
is a sum over features, E (X_d - Y_d)^2 = (mu_a,d - mu_b,d)^2 + S_a,dd + S_b,dd - 2 K_dd, where K = Cov(X, Y) is the
coupling's cross-covariance. So feature d's share is how much of the transport cost (moving one set's units onto
the other's as cheaply as possible) happens along feature d; every share is >= 0 (a variance), and they add up to
the distance exactly.

The optimal K: with any square-root factors A, B (A'A = S_a, B'B = S_b) and the SVD A B' = U Sigma V', K = A' U V' B
has Tr K = sum(Sigma) = Tr (S_a S_b)^(1/2) (the largest trace any coupling reaches), and U V' is a contraction, so
[[S_a, K], [K', S_b]] is a valid joint covariance. The factors are the centred data (N x D, exact and cheap when
N <= D, as for one class's units in 2048 Inception features) or the symmetric matrix square root (D x D): the same
choice fidelity.frechet_distance makes between its Gram and matrix forms.

Pure numpy, float64; the caller names the features (features/embeddings.py: Embedder.feature_names, groups).
"""
from __future__ import annotations

import dataclasses

import numpy as np

TOP_FEATURES = 10  # how many features metrics.json lists by share


@dataclasses.dataclass(frozen=True)
class FrechetParts:
    """Per-feature parts of one Fréchet distance: ``mean[d] + covariance[d]`` summed over d is the distance."""
    mean: np.ndarray  # [D] (mu_a,d - mu_b,d)^2
    covariance: np.ndarray  # [D] (S_a + S_b - K - K')_dd under the optimal coupling

    @property
    def mean_term(self) -> float:
        return float(self.mean.sum())

    @property
    def covariance_term(self) -> float:
        return float(self.covariance.sum())

    @property
    def total(self) -> float:
        return self.mean_term + self.covariance_term


@dataclasses.dataclass(frozen=True)
class FeatureNaming:
    """What a feature space calls its features: ``names`` (one per feature; empty: "feature <index>") and
    ``groups``, consecutive blocks (name, width) in feature order whose widths add up to D (empty: no groups)."""
    names: tuple[str, ...] = ()
    groups: tuple[tuple[str, int], ...] = ()

    def resolved(self, dim: int) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
        names = self.names or tuple(f"feature {i}" for i in range(dim))
        if len(names) != dim:
            raise ValueError(f"fd_breakdown: {len(names)} feature names for {dim} features; the embedder's "
                             f"feature_names must name every feature it returns (or be empty)")
        if self.groups and sum(w for _, w in self.groups) != dim:
            raise ValueError(f"fd_breakdown: feature groups {self.groups} cover {sum(w for _, w in self.groups)} "
                             f"features, not the {dim} the embedder returns")
        return names, self.groups


def _root_factor(x: np.ndarray) -> np.ndarray:
    """F with F'F = the unbiased covariance of ``x`` [N, D]: the scaled centred rows when N <= D (fewer rows),
    else the symmetric square root of the covariance (eigenvalues clipped at 0 against round-off)."""
    centred = x - x.mean(0)
    if len(x) <= x.shape[1]:
        return centred / np.sqrt(len(x) - 1)
    w, v = np.linalg.eigh(centred.T @ centred / (len(x) - 1))
    return (v * np.sqrt(np.maximum(w, 0.0))) @ v.T


def frechet_parts(feats_a: np.ndarray, feats_b: np.ndarray) -> FrechetParts:
    """The Fréchet distance of two feature sets, split per feature (module docstring).

    Args:
      feats_a, feats_b: [N, D] and [M, D] features; N, M >= 2.
    Returns:
      FrechetParts; its total equals fidelity.frechet_distance(feats_a, feats_b) up to round-off (that function
      clips a round-off negative total at 0; this one does not, so the parts always add up).
    """
    a, b = (np.asarray(x, np.float64) for x in (feats_a, feats_b))
    if a.ndim != 2 or b.ndim != 2 or len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_parts: expected [N >= 2, D] and [M >= 2, D] features, got {a.shape} and {b.shape}")
    fa, fb = _root_factor(a), _root_factor(b)
    u, _, vt = np.linalg.svd(fa @ fb.T, full_matrices=False)
    cross_diag = ((fa.T @ u) * (vt @ fb).T).sum(1)  # diag of K = A' U V' B, without forming K
    covariance = (fa * fa).sum(0) + (fb * fb).sum(0) - 2.0 * cross_diag
    return FrechetParts(mean=(a.mean(0) - b.mean(0)) ** 2, covariance=covariance)


def _share(part: float, total: float) -> float | None:
    return float(part / total) if total > 0 else None


def summary(parts: FrechetParts, naming: FeatureNaming = FeatureNaming(), top: int = TOP_FEATURES) -> dict:
    """The metrics.json form: the two terms, their shares of the distance, the ``top`` features by share (each
    with its mean and covariance shares) and, when the space defines them, the groups' shares. Shares are None
    when the distance is 0 (nothing to attribute)."""
    names, groups = naming.resolved(len(parts.mean))
    total = parts.total
    per_feature = parts.mean + parts.covariance
    order = np.argsort(-per_feature, kind="stable")[:top]
    out = {"total": total, "mean_term": parts.mean_term, "covariance_term": parts.covariance_term,
           "mean_share": _share(parts.mean_term, total), "covariance_share": _share(parts.covariance_term, total),
           "top_features": [{"feature": names[d], "share": _share(per_feature[d], total),
                             "mean_share": _share(parts.mean[d], total),
                             "covariance_share": _share(parts.covariance[d], total)} for d in order],
           "method": "per feature: E(X_d - Y_d)^2 under the optimal (2-Wasserstein) coupling of the two fitted "
                     "Gaussians; the parts add up to the Fréchet distance"}
    if groups:
        bounds = np.cumsum([0] + [w for _, w in groups])
        out["groups"] = [{"group": name, "features": int(w), "share": _share(per_feature[lo:hi].sum(), total),
                          "mean_share": _share(parts.mean[lo:hi].sum(), total)}
                         for (name, w), lo, hi in zip(groups, bounds[:-1], bounds[1:])]
    return out
