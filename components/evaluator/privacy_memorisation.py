"""Memorisation checks on the synthetic set: distances to closest record, copies, and the C_T data-copying test.

Pure numpy functions of precomputed nearest distances (see mia_distances), plus `memorisation_report`, which runs the
distance passes for one feature space.

Unequal set sizes: the nearest of 8,000 training units is closer than the nearest of 2,000 held-out units even when
nothing is memorised, so the closer-to-train share compares the synthetic unit's nearest neighbour in the smaller set
with its nearest neighbour in an equal-size random subsample of the larger set, averaged over `repeats` subsamples.
Without memorisation the expected share is then 0.5.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from components.evaluator.mia_distances import flatten, nearest_in_subsets


def closer_share(d_train: np.ndarray, d_holdout: np.ndarray) -> float:
    """Share of synthetic units strictly closer to a training unit than to any held-out unit (ties count 1/2).

    Args: d_train, d_holdout: [..., S] nearest distances of the same synthetic units; leading axes (subsample
    repeats) are averaged over.
    """
    d_train, d_holdout = np.asarray(d_train, np.float64), np.asarray(d_holdout, np.float64)
    return float(np.mean((d_train < d_holdout) + 0.5 * (d_train == d_holdout)))


def mann_whitney_z(test: np.ndarray, gen: np.ndarray) -> float:
    """z-score of U = #{(t, g): g > t} + #{g == t} / 2 under the null that both come from one distribution.

    Negative z: the generated distances are smaller than the test distances (Meehan et al. 2020 sign convention:
    generated units sit closer to the training set than fresh real units do, i.e. data copying).
    """
    test, gen = np.asarray(test, np.float64), np.asarray(gen, np.float64)
    n, m = len(test), len(gen)
    ranks = rankdata(np.r_[test, gen])  # average ranks, so ties count one half
    u = ranks[n:].sum() - m * (m + 1) / 2
    return float((u - m * n / 2) / np.sqrt(m * n * (m + n + 1) / 12))


def data_copying_ct(test_d, gen_d, test_cell, gen_cell, n_cells: int, min_cell: int) -> tuple[float, list[dict]]:
    """C_T of Meehan, Chaudhuri & Dasgupta (2020, "A non-parametric test to detect data-copying in generative models").

    Per cell pi: Z_U(pi) = mann_whitney_z(test distances in pi, generated distances in pi), where each distance is
    to the nearest TRAINING unit; C_T = sum over kept cells of P_test(pi) Z_U(pi) / sum of their P_test(pi). Cells
    with fewer than `min_cell` test or generated units are left out (too few for a z-score).

    Returns: (C_T, per-cell rows {cell, n_test, n_gen, weight, z, kept}); C_T is nan when no cell is kept.
    """
    test_d, gen_d = np.asarray(test_d), np.asarray(gen_d)
    test_cell, gen_cell = np.asarray(test_cell), np.asarray(gen_cell)
    rows, num, den = [], 0.0, 0.0
    for c in range(n_cells):
        t, g = test_d[test_cell == c], gen_d[gen_cell == c]
        weight = len(t) / max(len(test_d), 1)
        kept = len(t) >= min_cell and len(g) >= min_cell
        z = mann_whitney_z(t, g) if kept else float("nan")
        if kept:
            num += weight * z
            den += weight
        rows.append({"cell": c, "n_test": int(len(t)), "n_gen": int(len(g)), "weight": weight, "z": z, "kept": kept})
    return (num / den if den > 0 else float("nan")), rows


def copy_radius(holdout_to_train: np.ndarray, quantile: float, factor: float) -> float:
    """Distance under which a synthetic unit counts as a copy of its nearest training unit.

    `factor` x the `quantile` of the held-out units' nearest-training distances: closer to a training unit than
    (almost) any unit of a genuinely new patient comes, with a margin.
    """
    return float(factor * np.quantile(np.asarray(holdout_to_train, np.float64), quantile))


def _equal_size_subsets(n: int, size: int, repeats: int, rng: np.random.Generator) -> list[np.ndarray]:
    if size >= n:
        return [np.arange(n)]
    return [np.sort(rng.choice(n, size, replace=False)) for _ in range(repeats)]


def memorisation_report(train: np.ndarray, holdout: np.ndarray, synthetic: np.ndarray, *, repeats: int,
                        n_cells: int, min_cell: int, copy_quantile: float, copy_factor: float, block_rows: int,
                        seed: int) -> tuple[dict, dict]:
    """All memorisation numbers in one feature space (rows: units, flattened here, or embeddings).

    Returns: (metrics, arrays) where arrays holds the per-unit distances and nearest-training indices for figures.
    """
    from sklearn.cluster import KMeans

    train, holdout, synthetic = flatten(train), flatten(holdout), flatten(synthetic)
    rng = np.random.default_rng(seed)
    size = min(len(train), len(holdout))
    tr_sets = [np.arange(len(train))] + _equal_size_subsets(len(train), size, repeats, rng)
    ho_sets = [np.arange(len(holdout))] + _equal_size_subsets(len(holdout), size, repeats, rng)
    d_tr, i_tr = nearest_in_subsets(synthetic, train, tr_sets, block_rows)
    d_ho, _ = nearest_in_subsets(synthetic, holdout, ho_sets, block_rows)
    d_ho_tr, _ = nearest_in_subsets(holdout, train, [np.arange(len(train))], block_rows)
    syn_train, syn_hold, hold_train = d_tr[0], d_ho[0], d_ho_tr[0]
    # Equal-size comparison: each repeat pairs one subsample of the larger set with the full smaller one.
    eq_tr, eq_ho = d_tr[1:], d_ho[1:]
    share = closer_share(eq_tr, eq_ho)  # [R, S] against [1, S] (or the reverse) broadcasts
    ratio = np.median(eq_tr, axis=0) / np.maximum(np.median(eq_ho, axis=0), 1e-12)

    radius = copy_radius(hold_train, copy_quantile, copy_factor)
    copies = syn_train < radius

    # C_T cells from k-means on the union of the real sets, so the generator does not shape the partition.
    k = max(1, min(n_cells, (len(train) + len(holdout)) // max(min_cell, 1)))
    # k-means in pixel space (36,864 dims) is slow in sklearn (float64 k-means++); cells only need to partition the
    # space, so wide inputs are first sent through a fixed Gaussian random projection to 64 dims (distance-preserving
    # up to a few per cent, Johnson-Lindenstrauss).
    proj = (rng.standard_normal((train.shape[1], 64)).astype(np.float32) / 8.0) if train.shape[1] > 64 else None
    low = (lambda x: x @ proj) if proj is not None else (lambda x: x)
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(np.r_[low(train), low(holdout)])
    ct, cells = data_copying_ct(hold_train, syn_train, km.predict(low(holdout)), km.predict(low(synthetic)), k,
                                min_cell)
    metrics = {
        "closer_to_train_share": share,
        "closer_to_train_correction": (f"equal sizes: {size} units per side, larger side subsampled "
                                       f"{max(len(eq_tr), len(eq_ho))} time(s)"),
        "dcr_train_median": float(np.median(syn_train)), "dcr_holdout_median": float(np.median(syn_hold)),
        "holdout_to_train_median": float(np.median(hold_train)),
        "dcr_ratio_median": float(np.median(ratio)),
        "copy_radius": radius,
        "copy_rule": (f"closer to a training unit than {copy_factor:g} x the distance within which the nearest "
                      f"{100 * copy_quantile:g}% of held-out units sit"),
        "copy_fraction": float(copies.mean()), "n_copies": int(copies.sum()),
        "ct": ct, "ct_cells": k, "ct_cells_kept": int(sum(c["kept"] for c in cells)), "ct_cell_table": cells,
        "n_train": int(len(train)), "n_holdout": int(len(holdout)), "n_synthetic": int(len(synthetic)),
    }
    arrays = {"syn_train": syn_train, "syn_holdout": syn_hold, "holdout_train": hold_train,
              "syn_train_index": i_tr[0], "copies": copies}
    return metrics, arrays
