"""Memorisation checks on the synthetic set: distances to closest record, copies, and the C_T data-copying test.

Pure numpy functions of precomputed nearest distances (see knn.py), plus `memorisation_report`, which runs the
distance passes for one feature space.

Unequal set sizes: the nearest of 8,000 training units is closer than the nearest of 2,000 held-out units even when
nothing is memorised, so the closer-to-train share compares the synthetic unit's nearest neighbour among equally many
PATIENTS of each side (the larger side subsampled by patient, `repeats` times): balancing by units instead biases the
share upwards (100 train / 20 holdout patients with no memorisation gave 0.62), because units of one patient are alike.

Copies are counted per training PATIENT: a synthetic unit closer to a training unit than the copy radius is a
near-copy of that unit's patient, and the gate tolerates none by default (privacy.max_copied_patients = 0).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from vugan.components.evaluator import knn


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


def _patient_subsets(patients: np.ndarray, n_patients: int, repeats: int, rng: np.random.Generator):
    ids = np.unique(patients)
    if n_patients >= len(ids):
        return [np.arange(len(patients))]
    return [np.nonzero(np.isin(patients, rng.choice(ids, n_patients, replace=False)))[0] for _ in range(repeats)]


def _nearest_within(queries: np.ndarray, refs: np.ndarray, subsets, block_rows: int,
                    nearest_in_all: np.ndarray) -> np.ndarray:
    """[len(subsets), len(queries)] nearest distances within each subset of refs; a subset that is the whole set
    (the smaller side, never subsampled) reuses ``nearest_in_all`` instead of searching again."""
    return np.stack([nearest_in_all if len(s) == len(refs) else
                     knn.Index(refs[s], block_rows).search(queries, 1)[0][:, 0] for s in subsets])


def memorisation_report(train: np.ndarray, train_patients: np.ndarray, holdout: np.ndarray,
                        holdout_patients: np.ndarray, synthetic: np.ndarray, *, cfg, seed: int) -> tuple[dict, dict]:
    """All memorisation numbers in one feature space (rows already projected or embedded).

    Returns: (metrics, arrays) where arrays holds the per-unit distances, nearest-training indices and the copy mask.
    """
    from sklearn.cluster import KMeans

    train, holdout, synthetic = knn.flatten(train), knn.flatten(holdout), knn.flatten(synthetic)
    train_patients, holdout_patients = np.asarray(train_patients).astype(str), np.asarray(holdout_patients).astype(str)
    rng = np.random.default_rng(seed)
    train_index = knn.Index(train, cfg.block_rows)
    d, i = train_index.search(synthetic, 1)
    syn_train, syn_train_index = d[:, 0], i[:, 0]
    syn_hold = knn.Index(holdout, cfg.block_rows).search(synthetic, 1)[0][:, 0]
    hold_train = train_index.search(holdout, 1)[0][:, 0]

    n_p = min(len(np.unique(train_patients)), len(np.unique(holdout_patients)))
    eq_tr = _nearest_within(synthetic, train, _patient_subsets(train_patients, n_p, cfg.closer_repeats, rng),
                            cfg.block_rows, syn_train)
    eq_ho = _nearest_within(synthetic, holdout, _patient_subsets(holdout_patients, n_p, cfg.closer_repeats, rng),
                            cfg.block_rows, syn_hold)
    share = closer_share(eq_tr, eq_ho)  # [R, S] against [1, S] (or the reverse) broadcasts
    ratio = np.median(eq_tr, axis=0) / np.maximum(np.median(eq_ho, axis=0), 1e-12)

    radius = copy_radius(hold_train, cfg.copy_quantile, cfg.copy_factor)
    copies = syn_train < radius
    copied_patients = np.unique(train_patients[syn_train_index[copies]])

    # C_T cells from k-means on the union of the real sets, so the generator does not shape the partition. The
    # cell minimum applies to held-out and synthetic units, so the number of cells follows the HOLDOUT size.
    k = max(1, min(cfg.ct_cells, len(holdout) // max(cfg.ct_min_cell, 1)))
    low = knn.Projection(train.shape[1], 32)  # cells only need to partition the space
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(np.r_[low(train), low(holdout)])
    ct, cells = data_copying_ct(hold_train, syn_train, km.predict(low(holdout)), km.predict(low(synthetic)), k,
                                cfg.ct_min_cell)
    metrics = {
        "closer_to_train_share": share,
        "closer_to_train_correction": (f"equal patients: {n_p} per side, larger side subsampled by patient "
                                       f"{max(len(eq_tr), len(eq_ho))} time(s)"),
        "dcr_train_median": float(np.median(syn_train)), "dcr_holdout_median": float(np.median(syn_hold)),
        "holdout_to_train_median": float(np.median(hold_train)),
        "dcr_ratio_median": float(np.median(ratio)),
        "copy_radius": radius,
        "copy_rule": (f"closer to a training unit than {cfg.copy_factor:g} x the distance within which the nearest "
                      f"{100 * cfg.copy_quantile:g}% of held-out units sit"),
        "copy_fraction": float(copies.mean()), "n_copies": int(copies.sum()),
        "copied_patients": int(len(copied_patients)), "train_patients": int(len(np.unique(train_patients))),
        "ct": ct, "ct_cells": k, "ct_cells_kept": int(sum(c["kept"] for c in cells)), "ct_cell_table": cells,
        "n_train": int(len(train)), "n_holdout": int(len(holdout)), "n_synthetic": int(len(synthetic)),
    }
    arrays = {"syn_train": syn_train, "syn_holdout": syn_hold, "holdout_train": hold_train,
              "syn_train_index": syn_train_index, "copies": copies}
    return metrics, arrays
