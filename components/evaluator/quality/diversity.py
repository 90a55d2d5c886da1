"""Diversity: mean pairwise MS-SSIM within each class, synthetic beside real, and the mode-collapse check.

Two images of a set that are near copies have MS-SSIM close to 1; a varied set has a low mean pairwise value.
A generator that collapsed onto few modes makes its synthetic pairs MORE similar than real pairs of the same
class, so "synthetic minus real" above a margin is the warning sign.
"""
from __future__ import annotations

import dataclasses

import numpy as np

# The first three of Wang et al.'s five scale weights (those tf.image.ssim_multiscale uses by default),
# renormalised to sum to 1: at 64x64 only three scales (64, 32, 16 px) fit a 7-px filter (stack-notes.md).
_WANG_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclasses.dataclass(frozen=True)
class MsSsimSettings:
    scales: int = 3
    filter_size: int = 7
    pairs_per_class: int = 500
    max_val: float = 2.0  # images live in [-1, 1]

    def usable_scales(self, height: int, width: int) -> int:
        """Scales that keep the coarsest image at least ``filter_size`` pixels wide (fewer for tiny crops)."""
        scales, side = 1, min(height, width)
        while scales < self.scales and side // 2 ** scales >= self.filter_size:
            scales += 1
        return scales


def ms_ssim_pairs(a: np.ndarray, b: np.ndarray, settings: MsSsimSettings, batch: int = 256) -> np.ndarray:
    """MS-SSIM of each pair (a[i], b[i]); images [N, H, W, K], each slice a channel, averaged over slices.

    Returns [N] values in [0, 1] (1 = identical).
    """
    import tensorflow as tf

    if a.shape != b.shape:
        raise ValueError(f"ms_ssim_pairs: shapes differ {a.shape} vs {b.shape}")
    scales = settings.usable_scales(a.shape[1], a.shape[2])
    weights = np.array(_WANG_WEIGHTS[:scales]) / sum(_WANG_WEIGHTS[:scales])
    # The filter may not exceed the coarsest scale either (it matters only for crops below 16 px).
    filter_size = min(settings.filter_size, min(a.shape[1], a.shape[2]) // 2 ** (scales - 1))
    out = []
    for start in range(0, len(a), batch):
        out.append(tf.image.ssim_multiscale(
            tf.constant(a[start:start + batch], tf.float32), tf.constant(b[start:start + batch], tf.float32),
            max_val=settings.max_val, power_factors=tuple(float(w) for w in weights),
            filter_size=filter_size).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def sample_pairs(n: int, n_pairs: int, rng: np.random.Generator,
                 groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` random index pairs (i, j) with i != j from range(n) (all pairs when there are fewer).

    With ``groups`` (one id per index, e.g. the patient), only pairs from different groups are drawn: two
    adjacent units of one patient share anatomy and contrast, so same-patient pairs raise the real set's
    MS-SSIM and hide a collapsed generator (synthetic units are independent draws, a group each).
    """
    if n < 2:
        return np.zeros(0, int), np.zeros(0, int)
    if groups is None:
        total = n * (n - 1) // 2
        if total <= n_pairs:
            i, j = np.triu_indices(n, 1)
            return i, j
        i = rng.integers(0, n, n_pairs)
        j = (i + rng.integers(1, n, n_pairs)) % n  # never equal to i
        return i, j
    groups = np.asarray(groups)
    if n * (n - 1) // 2 > 20 * n_pairs:  # large set: draw and reject same-group pairs, never list them all
        i = rng.integers(0, n, 4 * n_pairs)
        j = (i + rng.integers(1, n, 4 * n_pairs)) % n
        keep = groups[i] != groups[j]
        return i[keep][:n_pairs], j[keep][:n_pairs]  # fewer only when nearly every pair is one patient's
    i, j = np.triu_indices(n, 1)
    keep = groups[i] != groups[j]
    i, j = i[keep], j[keep]
    if len(i) > n_pairs:
        pick = rng.choice(len(i), n_pairs, replace=False)
        i, j = i[pick], j[pick]
    return i, j


def mean_pairwise_ms_ssim(images: np.ndarray, labels: np.ndarray, settings: MsSsimSettings,
                          seed: int, groups: np.ndarray | None = None) -> dict[int, float | None]:
    """Per class: mean MS-SSIM over sampled pairs of that class (None when a class has fewer than 2 units, or,
    with ``groups``, fewer than 2 groups); with ``groups`` only cross-group (cross-patient) pairs count."""
    rng = np.random.default_rng(seed)
    result: dict[int, float | None] = {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        i, j = sample_pairs(len(idx), settings.pairs_per_class, rng,
                            None if groups is None else np.asarray(groups)[idx])
        result[int(c)] = float(ms_ssim_pairs(images[idx[i]], images[idx[j]], settings).mean()) if len(i) else None
    return result


def diversity_report(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray,
                     class_names: tuple[str, ...], settings: MsSsimSettings, margin: float,
                     seed: int, real_patients: np.ndarray | None = None,
                     fake_patients: np.ndarray | None = None) -> dict:
    """MS-SSIM per class and overall (mean over classes present in both) for real and synthetic units.

    With ``real_patients`` the real pairs are cross-patient only (synthetic units are independent draws, so
    every synthetic pair already is): the two sides are then compared like for like. ``fake_patients`` does the
    same for a "synthetic" set that has patients (real units scored as if synthetic, in the calibration).

    ``mode_collapse_warning`` is True when synthetic exceeds real by more than ``margin`` overall or in any
    class; the classes at fault are listed.
    """
    real_ms = mean_pairwise_ms_ssim(real, real_labels, settings, seed, groups=real_patients)
    fake_ms = mean_pairwise_ms_ssim(fake, fake_labels, settings, seed + 1, groups=fake_patients)
    per_class, flagged = {}, []
    for c, name in enumerate(class_names):
        r, f = real_ms.get(c), fake_ms.get(c)
        per_class[name] = {"real": r, "synthetic": f,
                           "difference": None if r is None or f is None else f - r}
        if r is not None and f is not None and f - r > margin:
            flagged.append(name)
    both = [v for v in per_class.values() if v["difference"] is not None]
    real_mean = float(np.mean([v["real"] for v in both])) if both else None
    fake_mean = float(np.mean([v["synthetic"] for v in both])) if both else None
    overall_flag = real_mean is not None and fake_mean - real_mean > margin
    return {
        "ms_ssim": {"real": real_mean, "synthetic": fake_mean,
                    "difference": None if real_mean is None else fake_mean - real_mean},
        "per_class": per_class,
        "mode_collapse_margin": margin,
        "mode_collapse_warning": bool(overall_flag or flagged),
        "mode_collapse_classes": flagged,
        "settings": {**dataclasses.asdict(settings), "scales_used": settings.usable_scales(*real.shape[1:3])},
        "real_pairs": "cross-patient only" if real_patients is not None else "any two units",
    }
