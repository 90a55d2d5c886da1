"""Fidelity metrics as pure functions over precomputed features (or pixels): FD/FID, KID, PRDC and SWD.

Nothing here knows which network produced the features, so the same code gives "FID" on Inception features,
"FD-domain" on the domain encoder's and so on; the caller names the result. FD and KID come from tensorflow-gan
(imported only through ``models.tfgan_compat``); PRDC and the sliced Wasserstein distance are numpy, with
nearest-neighbour distances computed in row blocks so that 10,000 x 10,000 sets never build a full matrix of
more than ``block`` rows at a time.
"""
from __future__ import annotations

import math

import numpy as np


def _tfgan():
    from vugan.models.tfgan_compat import tfgan  # the one place tensorflow-gan is imported (stack-notes.md)

    return tfgan


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's).

    Args:
      feats_a, feats_b: [N, D] and [M, D] features; N, M >= 2.
    Returns:
      ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), unbiased covariances, computed in float64.
      Zero for a set against itself; lower is better.

    tensorflow-gan's ``frechet_classifier_distance_from_activations`` does the work whenever D <= min(N, M). For
    small sets in many dimensions (e.g. 30 units of one class in 2048 Inception features) its two D x D matrix
    square roots cost minutes on a CPU, so :func:`frechet_distance_gram` (the same quantity through an
    N x M matrix, exact) is used instead; tests check both against an independent scipy computation.
    """
    import tensorflow as tf

    a, b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
    if a.shape[1] > min(len(a), len(b)):
        return frechet_distance_gram(a, b)
    value = _tfgan().eval.frechet_classifier_distance_from_activations(
        tf.constant(a, tf.float64), tf.constant(b, tf.float64))
    # sqrtm round-off can leave a tiny negative value for identical sets; a distance is never below zero.
    return max(float(value), 0.0)


def frechet_distance_gram(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """The Fréchet distance through the N x M cross-Gram matrix (exact; cheap when N, M < D).

    With centred data A [N, D] and B [M, D], S_a = A'A / (N-1) and S_b = B'B / (M-1). The non-zero eigenvalues
    of S_a S_b are those of (A B')(A B')' / ((N-1)(M-1)), so Tr (S_a S_b)^(1/2) is the sum of the singular
    values (nuclear norm) of A B' / sqrt((N-1)(M-1)), and Tr S_a = ||A||_F^2 / (N-1).
    """
    a, b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
    ca, cb = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    trace_sqrt = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(na * nb)
    value = (((a.mean(0) - b.mean(0)) ** 2).sum() + (ca * ca).sum() / na + (cb * cb).sum() / nb
             - 2.0 * trace_sqrt)
    return max(float(value), 0.0)


def frechet_distance_np(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """The same Fréchet distance in plain numpy (symmetric eigendecompositions), for the thousands of calls of a
    bootstrap, where a TensorFlow call per distance would cost more than the arithmetic. Tr (S_a S_b)^(1/2) is
    the sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric, so eigvalsh applies).
    More dimensions than rows go through :func:`frechet_distance_gram`."""
    a, b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
    if a.shape[1] > min(len(a), len(b)):
        return frechet_distance_gram(a, b)
    sa, sb = np.cov(a, rowvar=False, ddof=1), np.cov(b, rowvar=False, ddof=1)
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.maximum(w, 0.0))) @ v.T
    trace_sqrt = np.sqrt(np.maximum(np.linalg.eigvalsh(root_a @ sb @ root_a), 0.0)).sum()
    value = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2.0 * trace_sqrt
    return max(float(value), 0.0)


def kernel_distance(feats_a: np.ndarray, feats_b: np.ndarray, max_block_size: int = 1024,
                    seed: int = 0) -> tuple[float, float | None]:
    """Kernel (Inception) distance: unbiased squared MMD with the cubic polynomial kernel (x.y/d + 1)^3.

    tensorflow-gan splits both sets into contiguous blocks of at most ``max_block_size`` and averages the
    per-block estimates; rows are shuffled first (fixed ``seed``) because our sets arrive sorted by class and a
    block must be a random sample. When one block would hold everything, four blocks are used instead so that a
    standard error can be given (still unbiased, slightly noisier).

    Returns:
      (kid, std): the mean over blocks and its standard error (None with a single block). Lower is better;
      it can be slightly negative for two samples of the same distribution.
    """
    import tensorflow as tf

    a, b = _as_2d(feats_a, "feats_a"), _as_2d(feats_b, "feats_b")
    rng = np.random.default_rng(seed)
    a, b = a[rng.permutation(len(a))], b[rng.permutation(len(b))]
    n_bigger, n_smaller = max(len(a), len(b)), min(len(a), len(b))
    block = max_block_size
    if n_bigger <= max_block_size and n_smaller >= 8:
        block = math.ceil(n_bigger / 4)
    mean, std = _tfgan().eval.kernel_classifier_distance_and_std_from_activations(
        tf.constant(a, tf.float64), tf.constant(b, tf.float64), max_block_size=block)
    std = float(std)
    return float(mean), (None if math.isnan(std) else std)


# ----------------------------------------------------------------------------------------------- k-NN (PRDC)

def pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(x), len(y)] via the Gram trick, clipped at 0 before the square root."""
    x = x.astype(np.float64, copy=False)
    y = y.astype(np.float64, copy=False)
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.maximum(sq, 0.0))


def kth_neighbour_radii(x: np.ndarray, k: int, block: int = 1024) -> np.ndarray:
    """Distance from each row of ``x`` to its k-th nearest OTHER row (the k-NN ball radius of Naeem et al.)."""
    if len(x) <= k:
        raise ValueError(f"k-NN radii need more than k={k} points, got {len(x)}")
    radii = np.empty(len(x))
    for start in range(0, len(x), block):
        d = pairwise_distances(x[start:start + block], x)
        # Column 0 after partition is the point itself (distance 0); the k-th other point is index k.
        radii[start:start + block] = np.partition(d, k, axis=1)[:, k]
    return radii


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, block: int = 1024) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020, "Reliable fidelity and diversity metrics").

    Each real point r gets a ball of radius rad_r = distance to its k-th nearest real neighbour; likewise fakes.
      precision = share of fakes inside at least one real ball (fidelity: do fakes look real?)
      recall    = share of reals inside at least one fake ball (diversity: is the real variety covered?)
      density   = (1 / k) * mean over fakes of the number of real balls containing it (about 1 when matched)
      coverage  = share of reals whose ball contains at least one fake
    "Inside" means distance < radius, as in the reference implementation. All in [0, 1] except density
    (>= 0); higher is better for each.
    """
    real, fake = _as_2d(real, "real"), _as_2d(fake, "fake")
    real_r = kth_neighbour_radii(real, k, block)
    fake_r = kth_neighbour_radii(fake, k, block)
    in_any_real = np.zeros(len(fake), bool)
    real_ball_count = np.zeros(len(fake))
    real_covered = np.zeros(len(real), bool)
    real_in_any_fake = np.zeros(len(real), bool)
    for start in range(0, len(real), block):
        d = pairwise_distances(real[start:start + block], fake)  # [b, n_fake]
        inside_real_ball = d < real_r[start:start + block, None]
        in_any_real |= inside_real_ball.any(0)
        real_ball_count += inside_real_ball.sum(0)
        real_covered[start:start + block] = inside_real_ball.any(1)
        real_in_any_fake[start:start + block] = (d < fake_r[None, :]).any(1)
    return {
        "precision": float(in_any_real.mean()),
        "recall": float(real_in_any_fake.mean()),
        "density": float(real_ball_count.mean() / k),
        "coverage": float(real_covered.mean()),
    }


# ----------------------------------------------------------------------------------------------- SWD

def sliced_wasserstein(x: np.ndarray, y: np.ndarray, n_projections: int = 256, seed: int = 0,
                       n_quantiles: int = 512) -> float:
    """Sliced Wasserstein-1 distance between two point clouds (e.g. flattened pixels).

    Both sets are projected on ``n_projections`` random unit directions (fixed ``seed``); on each line the 1-D
    Wasserstein-1 distance is the mean absolute difference of matched quantiles (``n_quantiles`` levels, so the
    sets may differ in size). The result is the mean over directions, in the input's units; 0 for identical sets,
    lower is better. Projections are done in chunks to bound memory.
    """
    # float32: 10,000 flattened 64x64x9 crops are 1.5 GB in float32, twice that in float64.
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    y = np.asarray(y, np.float32).reshape(len(y), -1)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"sliced_wasserstein: need at least 2 points per set, got {len(x)} and {len(y)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"sliced_wasserstein: dimensions differ ({x.shape[1]} vs {y.shape[1]})")
    rng = np.random.default_rng(seed)
    levels = (np.arange(n_quantiles) + 0.5) / n_quantiles
    total = 0.0
    for start in range(0, n_projections, 64):
        m = min(64, n_projections - start)
        dirs = rng.standard_normal((x.shape[1], m)).astype(np.float32)
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
        qx = _sorted_quantiles(x @ dirs, levels)
        qy = _sorted_quantiles(y @ dirs, levels)
        total += np.abs(qx - qy).mean(0).sum()
    return float(total / n_projections)


def _sorted_quantiles(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Column quantiles by one sort plus linear interpolation (np.quantile with many levels is far slower)."""
    v = np.sort(values, axis=0)
    pos = levels * (len(v) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(v) - 1)
    frac = (pos - lo)[:, None]
    return v[lo] * (1 - frac) + v[hi] * frac


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name}: expected [N >= 2, D] features, got shape {x.shape}")
    return x
