"""Fair real-vs-real baselines for distribution distances, and patient-bootstrap intervals on their ratios.

A distance such as FD between two SAMPLES depends on how many units each has and on how many independent
patients they come from: 90 holdout units from 5 patients are far less varied than 90 independent synthetic
draws, so "FD(holdout, train)" is inflated and every ratio over it flatters the generator. The rules here:

  * synthetic and real comparators face the SAME reference set and have the same number of patients and of units
    per class: independent synthetic draws are grouped into PSEUDO-PATIENTS, each mirroring one real patient's
    list of classes (so a pseudo-patient has as many units of each class as its real twin); real patients that
    cannot be mirrored (not enough synthetic units of a class) are left out of the real side too. A synthetic set
    that already has patients (e.g. real held-out units scored as if synthetic, the calibration control) keeps
    them: both sides are cut to the same number of patients, then to the same units per class;
  * intervals come from a PATIENT bootstrap: the reference, real and synthetic sides are each resampled by
    (pseudo-)patient with replacement and both distances recomputed; the 95% interval combines the spread of the
    two log distances (ratio_interval).

Pure numpy; every draw comes from the generator passed in, so a fixed seed gives the same numbers anywhere.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Side:
    """One set of a comparison: features with a class id and a (pseudo-)patient id per unit."""
    feats: np.ndarray  # [n, D]
    labels: np.ndarray  # [n] int
    groups: np.ndarray  # [n] patient ids (str)

    def take(self, idx: np.ndarray, groups: np.ndarray | None = None) -> "Side":
        return Side(self.feats[idx], self.labels[idx], self.groups[idx] if groups is None else groups)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_groups(self) -> int:
        return len(np.unique(self.groups))


def independent_units(groups: np.ndarray) -> bool:
    """True when every unit is its own group (a generator's independent draws)."""
    return len(np.unique(groups)) == len(groups)


def pseudo_patients(real_labels: np.ndarray, real_groups: np.ndarray, syn_labels: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group independent synthetic units into pseudo-patients that mirror the real patients' class lists.

    Real patients are visited in a random order; each takes, without replacement, as many synthetic units of each
    class as it has; a patient whose classes cannot all be served is skipped (and dropped from the real side).

    Returns:
      (real_idx, syn_idx, syn_groups): the real units kept, the synthetic units used, and each used synthetic
      unit's pseudo-patient id ("pseudo-<real patient>"), so both sides have identical class counts per patient.
    """
    pools = {c: list(rng.permutation(np.flatnonzero(syn_labels == c))) for c in np.unique(syn_labels)}
    real_idx, syn_idx, syn_groups = [], [], []
    for patient in rng.permutation(np.unique(real_groups)):
        rows = np.flatnonzero(real_groups == patient)
        need = np.bincount(real_labels[rows])
        if any(len(pools.get(c, [])) < k for c, k in enumerate(need) if k):
            continue
        for c, k in enumerate(need):
            for _ in range(k):
                syn_idx.append(pools[c].pop())
                syn_groups.append(f"pseudo-{patient}")
        real_idx.extend(rows)
    order = np.argsort(syn_idx, kind="stable")
    return (np.sort(np.asarray(real_idx, int)), np.asarray(syn_idx, int)[order],
            np.asarray(syn_groups, object)[order])


def equal_sides(real: Side, syn: Side, rng: np.random.Generator) -> tuple[Side, Side]:
    """The real and synthetic comparators cut to equal patients and equal units per class (module docstring)."""
    if independent_units(syn.groups):
        r_idx, s_idx, s_groups = pseudo_patients(real.labels, real.groups, syn.labels, rng)
        return real.take(r_idx), syn.take(s_idx, s_groups)
    n_pat = min(real.n_groups, syn.n_groups)
    sides = []
    for side in (real, syn):
        keep = rng.permutation(np.unique(side.groups))[:n_pat]
        sides.append(side.take(np.flatnonzero(np.isin(side.groups, keep))))
    real, syn = sides
    r_keep, s_keep = [], []
    for c in np.union1d(real.labels, syn.labels):
        r, s = np.flatnonzero(real.labels == c), np.flatnonzero(syn.labels == c)
        k = min(len(r), len(s))
        r_keep.append(rng.permutation(r)[:k])
        s_keep.append(rng.permutation(s)[:k])
    return real.take(np.sort(np.concatenate(r_keep))), syn.take(np.sort(np.concatenate(s_keep)))


def group_resample(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one cluster-bootstrap resample: as many groups as there are, drawn with replacement."""
    unique, inverse = np.unique(groups, return_inverse=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    picks = rng.integers(0, len(unique), len(unique))
    return np.concatenate([members[p] for p in picks])


def bootstrap_ratios(ref: Side, real: Side, syn: Side, distance: Callable[[np.ndarray, np.ndarray], float],
                     classes: list[int], n_boot: int, rng: np.random.Generator) -> dict:
    """Patient-bootstrap distributions of distance(ref, syn) and distance(ref, real), overall and per class.

    Returns:
      {None: [k, 2] array of (synthetic distance, baseline distance) per resample, c: ...} for the overall
      comparison (key None) and each class in ``classes``; a resample where either side has fewer than 2 units
      of the class, or a distance is 0, is skipped for that class.
    """
    out: dict = {None: [], **{c: [] for c in classes}}
    for _ in range(n_boot):
        r, b, s = (side.take(group_resample(side.groups, rng)) for side in (ref, real, syn))
        for c in out:
            masks = [np.ones(len(x), bool) if c is None else x.labels == c for x in (r, b, s)]
            if min(m.sum() for m in masks) < 2:
                continue
            base = distance(r.feats[masks[0]], b.feats[masks[1]])
            value = distance(r.feats[masks[0]], s.feats[masks[2]])
            if base > 0 and value > 0:
                out[c].append((value, base))
    return {c: np.asarray(v, np.float64).reshape(-1, 2) for c, v in out.items()}


def ratio_interval(pairs: np.ndarray, estimate: float | None, level: float = 0.95) -> list[float] | None:
    """95% interval of a distance ratio: log(estimate) +/- z * sqrt(var log d_syn + var log d_real), the two
    variances taken from the patient bootstrap SEPARATELY; None with fewer than 20 resamples.

    Why not the percentiles of the resampled ratio: a resample that draws a patient twice is less varied, so BOTH
    distances grow and the resampled ratio is pulled towards 1. On a null of blob patients (40 random splits, 20
    patients a side, FRD) the ratio's own percentile interval held 1 in 100% of splits whatever the truth, its
    bias-corrected version in only 62%, and this interval in 97.5% (nominal 95%); see docs/evaluation.md.
    """
    from scipy.special import ndtri

    pairs = np.asarray(pairs, np.float64).reshape(-1, 2)
    if estimate is None or estimate <= 0 or len(pairs) < 20:
        return None
    spread = float(np.sqrt(np.log(pairs[:, 0]).var(ddof=1) + np.log(pairs[:, 1]).var(ddof=1)))
    half = ndtri(1 - (1 - level) / 2) * spread
    return [float(estimate * np.exp(-half)), float(estimate * np.exp(half))]


def kid_reading(kid: float | None, kid_std: float | None, base: float | None, base_std: float | None) -> dict:
    """How a kernel distance is shown: as a ratio when its real baseline is clearly above zero (more than two
    standard errors), else as the difference synthetic - baseline with its standard error (a ratio over a
    baseline of 0.002 +/- 0.002 means nothing)."""
    if kid is None or base is None:
        return {"kid_ratio": None, "kid_difference": None, "kid_difference_se": None, "kid_reading": "n/a"}
    se = None if kid_std is None or base_std is None else float(np.hypot(kid_std, base_std))
    clear = base_std is not None and base > 2 * base_std
    return {"kid_ratio": kid / base if clear else None, "kid_difference": kid - base, "kid_difference_se": se,
            "kid_reading": "ratio" if clear else "difference (baseline not clearly above zero)"}
