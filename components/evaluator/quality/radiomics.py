"""Network-free radiomics features of a vertebral unit, for the Fréchet Radiomic Distance (FRD).

Why our own: the ``frd-score`` package (1.0.1) installs with our pins but its pyradiomics extraction costs
0.14-0.28 s per unit (docs/evaluation.md): 23-47 minutes for a 10,000-unit evaluation on 2 cores. The features
follow the IBSI / pyradiomics definitions on a FIXED bin grid, so two sets are binned identically.

Contrast first (IBSI's advice for MR, whose intensities have no physical unit): every unit is CONTRAST-NORMALISED
(z-scored over all its voxels, divided by NORMALISED_SD and clipped to [-1, 1]) before its texture is measured, and
its raw brightness and contrast are kept as two features of their own. Without this the spread of contrast between
patients, scanners and sequences moved every texture feature at once and hid blur and the GAN's checkerboard within
the spread of 5-12 real patients (the generators of configs/demo.toml scored FRD 3.2-3.8 while a person sees at a
glance that they are not real; docs/evaluation.md).

  * raw: mean and standard deviation of the unit as stored;
  * first order (normalised unit, every slice): skewness, excess kurtosis, 10th/50th/90th percentile, interquartile
    range, mean absolute deviation, histogram entropy and uniformity;
  * sharpness: mean and standard deviation of the in-plane gradient magnitude, variance of the in-plane
    Laplacian, mean absolute difference between neighbouring slices, and the first two of those on the two EDGE
    slices alone (the reference study's artefacts were at the edge slices);
  * GLCM (grey-level co-occurrence, 16 levels, distance 1, the four in-plane directions, symmetric, counts pooled
    over slices and directions): contrast, dissimilarity, homogeneity (inverse difference), angular second moment,
    entropy, correlation;
  * GLRLM (grey-level run lengths, 16 levels, rows and columns pooled): short- and long-run emphasis, grey-level
    and run-length non-uniformity (normalised), run percentage;
  * Fourier texture: the share of in-plane power in a high and a mid spatial-frequency band (all slices, and the
    high band on the edge slices) and gradient / standard deviation;
  * power spectrum (raw unit): the log share of in-plane power in each of seven radial bands (BANDS) and, in three
    bands, the log ratio of power along x over power along y (streaks and stripes tilt it; blur empties the high
    bands; a checkerboard fills them).

Every function is pure numpy and deterministic. The distance is fidelity.frechet_distance on the features WHITENED
with the real TRAIN split (whitening: z-score, then ZCA by its correlation matrix, one transform for every set of a
comparison): correlated features (nine first-order statistics all following a unit's intensity profile) would
otherwise give one direction of real variation many votes and outvote a texture defect.
"""
from __future__ import annotations

import numpy as np

FEATURES_VERSION = "frd-features-2"  # bump whenever a feature changes: cached features (features/cache.py) key on it
LEVELS = 16
HIST_BINS = 32
GLCM_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))  # (dy, dx): right, down, down-right, down-left

NORMALISED_SD = 3.0  # a contrast-normalised unit spans +-3 standard deviations of its own voxels on [-1, 1]
# Radial bands of the in-plane power spectrum (cycles per pixel) and the three bands whose x/y balance is measured.
BANDS = (0.03, 0.06, 0.1, 0.15, 0.22, 0.3, 0.4, 1.0)
ANISOTROPY_BANDS = ((0.03, 0.1), (0.1, 0.22), (0.22, 1.0))
# Added to every eigenvalue of the train split's correlation matrix before whitening: directions with less than 5% of
# one feature's variance (near-collinear combinations, noisy with ~200 units in 42 dimensions) are damped, not blown up.
WHITENING_FLOOR = 0.05

FEATURE_NAMES = (
    "mean", "std", "skewness", "kurtosis", "p10", "p50", "p90", "iqr", "mad", "entropy", "uniformity",
    "grad_mean", "grad_std", "laplacian_var", "slice_diff", "edge_grad_mean", "edge_laplacian_var",
    "glcm_contrast", "glcm_dissimilarity", "glcm_homogeneity", "glcm_asm", "glcm_entropy", "glcm_correlation",
    "glrlm_sre", "glrlm_lre", "glrlm_gln", "glrlm_rln", "glrlm_rp",
    "spectrum_high", "spectrum_mid", "spectrum_high_edge", "gradient_over_std",
    *(f"log_power_{lo:g}_{hi:g}" for lo, hi in zip(BANDS[:-1], BANDS[1:])),
    *(f"log_x_over_y_{lo:g}_{hi:g}" for lo, hi in ANISOTROPY_BANDS),
)
# Bands of the in-plane power spectrum, radius in cycles per pixel (0.5 = Nyquist on an axis): the HIGH band holds a 2-4 px
# checkerboard and fine noise, the MID band fine anatomy; blur empties both.
HIGH_BAND = (0.2, 1.0)  # up to the corner of the spectrum (0.707 cycles/px)
MID_BAND = (0.08, 0.2)


def quantise(images: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """Values in [-1, 1] -> integer levels 0..levels-1 on a fixed grid of bin width 2 / levels."""
    q = np.floor((np.clip(images, -1.0, 1.0) + 1.0) * (levels / 2.0)).astype(np.int16)
    return np.minimum(q, levels - 1)


# ----------------------------------------------------------------------------------------------- first order

def first_order(images: np.ndarray) -> np.ndarray:
    """[n, ...] -> [n, 11]: mean, std, skewness, kurtosis, p10, p50, p90, IQR, MAD, entropy, uniformity.

    std is the population standard deviation; skewness and kurtosis are the moment ratios m3 / m2^1.5 and
    m4 / m2^2 - 3 (0 for a constant image); entropy (bits) and uniformity are of a HIST_BINS-bin histogram
    over [-1, 1].
    """
    x = np.asarray(images, np.float32).reshape(len(images), -1)
    mean, c, c2, m2 = _centred(x)
    m3, m4 = (c2 * c).mean(1, dtype=np.float64), (c2 * c2).mean(1, dtype=np.float64)
    safe = np.where(m2 > 1e-12, m2, 1.0)
    skew = np.where(m2 > 1e-12, m3 / safe ** 1.5, 0.0)
    kurt = np.where(m2 > 1e-12, m4 / safe ** 2 - 3.0, 0.0)
    p10, p25, p50, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90], axis=1).astype(np.float64)
    mad = np.abs(c).mean(1, dtype=np.float64)
    p = _row_histograms(quantise(x, HIST_BINS), HIST_BINS) / x.shape[1]
    entropy = -(p * np.log2(np.where(p > 0, p, 1.0))).sum(1)
    uniformity = (p ** 2).sum(1)
    return np.stack([mean, np.sqrt(m2), skew, kurt, p10, p50, p90, p75 - p25, mad, entropy, uniformity], 1)


def _centred(x: np.ndarray):
    """[n, m] float32 rows -> (mean, centred rows, their squares, second moment): what first_order and
    mean_and_std share, computed one way so that both give the same numbers."""
    mean = x.mean(1, dtype=np.float64)
    c = x - mean[:, None].astype(np.float32)
    c2 = c * c
    return mean, c, c2, c2.mean(1, dtype=np.float64)


def mean_and_std(images: np.ndarray) -> np.ndarray:
    """[n, ...] -> [n, 2]: first_order's mean and standard deviation alone (no percentiles, no histogram)."""
    mean, _, _, m2 = _centred(np.asarray(images, np.float32).reshape(len(images), -1))
    return np.stack([mean, np.sqrt(m2)], 1)


def _row_histograms(values: np.ndarray, bins: int) -> np.ndarray:
    """[n, m] integers in 0..bins-1 -> [n, bins] counts per row (one bincount, no Python loop)."""
    n = len(values)
    flat = (np.arange(n)[:, None] * bins + values).ravel()
    return np.bincount(flat, minlength=n * bins).reshape(n, bins).astype(np.float64)


# ----------------------------------------------------------------------------------------------- sharpness

def sharpness(images: np.ndarray) -> np.ndarray:
    """[n, H, W, K] -> [n, 6]: gradient mean/std, Laplacian variance, neighbouring-slice difference, and the
    gradient mean and Laplacian variance of the two edge slices (first and last). Blur lowers all of them;
    a high-frequency checkerboard raises the Laplacian variance far above any real unit's."""
    x = np.asarray(images, np.float32)
    gy = np.diff(x, axis=1)[:, :, :-1, :]
    gx = np.diff(x, axis=2)[:, :-1, :, :]
    grad = np.sqrt(gx ** 2 + gy ** 2)  # [n, H-1, W-1, K]
    lap = (x[:, 1:-1, 1:-1] * -4.0 + x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:])
    n = len(x)
    slice_diff = np.abs(np.diff(x, axis=3)).reshape(n, -1).mean(1, dtype=np.float64) if x.shape[3] > 1 else np.zeros(n)
    edge = [0, x.shape[3] - 1]
    flat = lambda a: a.reshape(n, -1)  # noqa: E731
    return np.stack([flat(grad).mean(1, dtype=np.float64), flat(grad).std(1, dtype=np.float64),
                     flat(lap).var(1, dtype=np.float64), slice_diff,
                     flat(grad[..., edge]).mean(1, dtype=np.float64), flat(lap[..., edge]).var(1, dtype=np.float64)],
                    1)


def in_plane_power(images: np.ndarray, count_conjugate_pairs: bool):
    """Power spectrum of each slice (mean removed) on rfft2's half-plane: (power [n, h, w//2+1, k], |f_y| [h, 1],
    f_x [1, w//2+1], radius, total power [n, k]). rfft2 keeps one bin of each conjugate pair: with
    ``count_conjugate_pairs`` every column but f_x = 0 (and Nyquist, for even w) counts twice, so a pattern along x
    and the same pattern along y get equal power."""
    x = np.asarray(images, np.float32)
    h, w = x.shape[1:3]
    centred = x - x.mean((1, 2), keepdims=True)
    power = np.abs(np.fft.rfft2(centred, axes=(1, 2))) ** 2
    fy = np.abs(np.fft.fftfreq(h))[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    if count_conjugate_pairs:
        weight = np.full(fx.shape[1], 2.0)
        weight[0] = 1.0
        if w % 2 == 0:
            weight[-1] = 1.0
        power = power * weight[None, None, :, None]
    return power, fy, fx, np.sqrt(fy ** 2 + fx ** 2), power.sum((1, 2)) + 1e-12


def spectrum(images: np.ndarray) -> np.ndarray:
    """[n, H, W, K] -> [n, 4]: share of each slice's in-plane power (mean removed) in HIGH_BAND and MID_BAND,
    averaged over slices; the HIGH share of the two edge slices; and the mean gradient magnitude over the
    standard deviation (a sharpness that does not depend on the unit's contrast). Shares are contrast-free, so they
    vary little between real patients and much under blur or a periodic texture."""
    x = np.asarray(images, np.float32)
    n, h, w, k = x.shape
    # The half-plane as rfft2 gives it, conjugate pairs counted once (as in frd-features-1, whose values it keeps).
    power, fy, fx, radius, total = in_plane_power(x, count_conjugate_pairs=False)

    def share(band, slices=slice(None)):
        mask = ((radius > band[0]) & (radius <= band[1]))[None, :, :, None]
        return ((power * mask).sum((1, 2)) / total)[:, slices].mean(1, dtype=np.float64)

    gy = np.diff(x, axis=1)[:, :, :-1, :]
    gx = np.diff(x, axis=2)[:, :-1, :, :]
    grad = np.sqrt(gx ** 2 + gy ** 2).reshape(n, -1).mean(1, dtype=np.float64)
    std = x.reshape(n, -1).std(1, dtype=np.float64)
    return np.stack([share(HIGH_BAND), share(MID_BAND), share(HIGH_BAND, [0, k - 1]),
                     grad / np.maximum(std, 1e-6)], 1)


# ----------------------------------------------------------------------------------------------- GLCM

def glcm(levels_img: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """[n, H, W, K] integer levels -> [n, levels, levels] symmetric co-occurrence probabilities, counts pooled
    over GLCM_OFFSETS and all slices (each pair counted in both orders)."""
    q = np.asarray(levels_img, np.int64)
    n, h, w, _ = q.shape
    counts = np.zeros((n, levels * levels))
    for dy, dx in GLCM_OFFSETS:
        x0, x1 = max(0, -dx), w - max(0, dx)  # columns x with x + dx inside the image
        a = q[:, :h - dy, x0:x1]
        b = q[:, dy:, x0 + dx:x1 + dx]
        unit = np.repeat(np.arange(n), a[0].size)
        pair = (a * levels + b).reshape(-1)
        pair_t = (b * levels + a).reshape(-1)
        counts += np.bincount(unit * levels * levels + pair, minlength=n * levels * levels).reshape(n, -1)
        counts += np.bincount(unit * levels * levels + pair_t, minlength=n * levels * levels).reshape(n, -1)
    counts = counts.reshape(n, levels, levels)
    return counts / np.maximum(counts.sum((1, 2), keepdims=True), 1.0)


def glcm_features(p: np.ndarray) -> np.ndarray:
    """[n, L, L] co-occurrence probabilities -> [n, 6]: contrast, dissimilarity, homogeneity, ASM, entropy,
    correlation (0 where a unit has a single grey level)."""
    levels = p.shape[1]
    i, j = np.meshgrid(np.arange(levels), np.arange(levels), indexing="ij")
    d = np.abs(i - j)
    contrast = (p * d ** 2).sum((1, 2))
    dissimilarity = (p * d).sum((1, 2))
    homogeneity = (p / (1.0 + d)).sum((1, 2))
    asm = (p ** 2).sum((1, 2))
    entropy = -(p * np.log2(np.where(p > 0, p, 1.0))).sum((1, 2))
    mu = (p * i).sum((1, 2))  # symmetric: the same for rows and columns
    var = (p * (i - mu[:, None, None]) ** 2).sum((1, 2))
    cov = (p * (i - mu[:, None, None]) * (j - mu[:, None, None])).sum((1, 2))
    correlation = np.where(var > 1e-12, cov / np.where(var > 1e-12, var, 1.0), 0.0)
    return np.stack([contrast, dissimilarity, homogeneity, asm, entropy, correlation], 1)


# ----------------------------------------------------------------------------------------------- GLRLM

def run_lengths(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal values along each row of ``rows`` [R, W]: (row index, level, length) of every run."""
    r, w = rows.shape
    change = np.ones((r, w), bool)
    np.not_equal(rows[:, 1:], rows[:, :-1], out=change[:, 1:])
    flat_start = np.flatnonzero(change)
    # A run never crosses a row end: the next row always starts a new run.
    lengths = np.diff(flat_start, append=r * w)
    return flat_start // w, rows.ravel()[flat_start], lengths


def glrlm_features(levels_img: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """[n, H, W, K] integer levels -> [n, 5]: SRE, LRE, GLN and RLN (both normalised by the run count squared),
    run percentage; runs along rows and along columns of every slice, pooled."""
    q = np.asarray(levels_img, np.int16)
    n, h, w, k = q.shape
    out = np.zeros((n, 5))
    n_runs = np.zeros(n)
    sre, lre = np.zeros(n), np.zeros(n)
    by_level = np.zeros((n, levels))
    by_length = np.zeros((n, max(h, w) + 1))
    for slab in (q.transpose(0, 3, 1, 2).reshape(n * k * h, w), q.transpose(0, 3, 2, 1).reshape(n * k * w, h)):
        row, level, length = run_lengths(slab)
        unit = row // (len(slab) // n)
        level = level.astype(np.int64)
        n_runs += np.bincount(unit, minlength=n)
        sre += np.bincount(unit, 1.0 / length ** 2, minlength=n)
        lre += np.bincount(unit, length.astype(np.float64) ** 2, minlength=n)
        by_level += np.bincount(unit * levels + level, minlength=n * levels).reshape(n, levels)
        width = by_length.shape[1]
        by_length += np.bincount(unit * width + length, minlength=n * width).reshape(n, width)
    out[:, 0] = sre / n_runs
    out[:, 1] = lre / n_runs
    out[:, 2] = (by_level ** 2).sum(1) / n_runs ** 2
    out[:, 3] = (by_length ** 2).sum(1) / n_runs ** 2
    out[:, 4] = n_runs / (2.0 * h * w * k)
    return out


# ----------------------------------------------------------------------------------------------- all

def contrast_normalised(images: np.ndarray) -> np.ndarray:
    """[n, ...] -> each unit z-scored over all its voxels, / NORMALISED_SD, clipped to [-1, 1] (a constant unit: 0)."""
    x = np.asarray(images, np.float32)
    flat = x.reshape(len(x), -1)
    mean = flat.mean(1, dtype=np.float64).astype(np.float32)
    std = flat.std(1, dtype=np.float64).astype(np.float32)
    shape = (len(x),) + (1,) * (x.ndim - 1)
    z = (x - mean.reshape(shape)) / np.maximum(std, 1e-6).reshape(shape)
    return np.clip(z / NORMALISED_SD, -1.0, 1.0)


def band_spectrum(images: np.ndarray) -> np.ndarray:
    """[n, H, W, K] -> [n, 10]: log share of each slice's in-plane power (mean removed) in the seven BANDS, and the
    log ratio of power with |f_x| > |f_y| over power with |f_y| > |f_x| in the three ANISOTROPY_BANDS, averaged over
    slices. Shares and ratios do not depend on the unit's contrast."""
    power, fy, fx, radius, total = in_plane_power(images, count_conjugate_pairs=True)

    def band_power(mask):
        return (power * mask[None, :, :, None]).sum((1, 2))  # [n, k]

    out = [np.log(band_power((radius > lo) & (radius <= hi)) / total + 1e-8).mean(1, dtype=np.float64)
           for lo, hi in zip(BANDS[:-1], BANDS[1:])]
    for lo, hi in ANISOTROPY_BANDS:
        band = (radius > lo) & (radius <= hi)
        along_x, along_y = band_power(band & (fx > fy)), band_power(band & (fy > fx))
        out.append(np.log((along_x + 1e-8) / (along_y + 1e-8)).mean(1, dtype=np.float64))
    return np.stack(out, 1)


def radiomics_features(images: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """[n, H, W, K] in [-1, 1] -> [n, len(FEATURE_NAMES)] float64 features (not yet whitened): the raw mean and
    standard deviation, the texture groups on the contrast-normalised unit, the band spectrum of the raw unit."""
    x = np.asarray(images, np.float32)
    if x.ndim != 4:
        raise ValueError(f"radiomics_features: expected [n, H, W, K] units, got shape {x.shape}")
    u = contrast_normalised(x)
    q = quantise(u, levels)
    return np.concatenate([mean_and_std(x), first_order(u)[:, 2:], sharpness(u), glcm_features(glcm(q, levels)),
                           glrlm_features(q, levels), spectrum(u), band_spectrum(x)], 1)


def standardiser(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the reference features; a feature constant in the reference gets scale 1."""
    ref = np.asarray(reference, np.float64)
    scale = ref.std(0)
    return ref.mean(0), np.where(scale > 1e-12, scale, 1.0)


def whitening(reference: np.ndarray, floor: float = WHITENING_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """(mean, matrix) such that (features - mean) @ matrix is the reference z-scored and then ZCA-whitened by its
    correlation matrix C: matrix = diag(1 / scale) @ V diag(1 / sqrt(lambda + floor)) V^T, with C = V diag(lambda) V^T.
    With floor 0 the reference's covariance becomes the identity; the floor damps directions it barely spans."""
    mean, scale = standardiser(reference)
    z = (np.asarray(reference, np.float64) - mean) / scale
    corr = np.atleast_2d(np.cov(z, rowvar=False)) if len(z) > 1 else np.eye(z.shape[1])
    lam, vec = np.linalg.eigh(corr)
    zca = (vec / np.sqrt(np.maximum(lam, 0.0) + floor)) @ vec.T
    return mean, zca / scale[:, None]
