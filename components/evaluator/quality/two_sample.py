"""Classifier two-sample test (C2ST): can a simple classifier tell the synthetic units from real ones?

Why this and not a distance ratio for the gate: a ratio such as FD(synthetic, real) / FD(real, real) has a
denominator that shrinks as the cohort grows (more patients, less sampling noise between two real samples), so one
generator scored 60 against a 5-patient holdout and 150 against a 40-patient one. The C2ST's out-of-fold ROC AUC
is an effect size: 0.5 when the two sets cannot be told apart, 1.0 when they always can, and what it converges to
depends on the two distributions, not on how many patients were drawn. More patients only narrow its interval.

The test, in a fixed feature space (the vu-encoder's, never trained on this run's data):
  * real units keep their patients, synthetic units are their own groups; folds never split a patient, so the
    classifier cannot score a real unit by recognising its patient from the training folds;
  * a logistic regression (L2, features standardised on the training folds, classes weighted to balance) gives an
    out-of-fold score to every unit; the AUC of those scores is the effect size;
  * its 95% interval comes from a cluster bootstrap of the scores (real patients and synthetic units resampled);
  * per class: the real units of class c against the synthetic units labelled c, so a swapped class (thoracic
    units labelled lumbar) or a missing class cannot hide behind a good overall number.

Pure numpy + scikit-learn; deterministic for a given seed and content order (canonical.py gives the order).
"""
from __future__ import annotations

import numpy as np

FOLDS = 5
C = 0.1  # strong L2: tens of units per class must not be fitted unit by unit
MIN_UNITS = 5  # per side and class; fewer and the class is reported as not judged (never silently)
BOOTSTRAP = 200
CLASSIFIER = (f"logistic regression (L2, C={C}, balanced class weights) on standardised features, {FOLDS} folds "
              f"that never split a real patient; out-of-fold ROC AUC")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney ROC AUC of ``scores`` for ``labels`` (1 positive, 0 negative), ties counted half.

    0.5 when the scores cannot separate the two, 1.0 when every positive scores above every negative."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs both classes, got {n_pos} positives and {n_neg} negatives")
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def group_folds(groups: np.ndarray, labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number of each row: whole groups per fold, each side's groups dealt round-robin in a seeded order so
    every fold holds real and synthetic units."""
    folds = np.zeros(len(groups), int)
    rng = np.random.default_rng(seed)
    for side in (0, 1):
        side_groups = np.unique(groups[labels == side])
        for k, g in enumerate(rng.permutation(side_groups)):
            folds[(groups == g) & (labels == side)] = k % n_folds
    return folds


def out_of_fold_scores(feats: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int,
                       n_folds: int = FOLDS) -> np.ndarray:
    """Synthetic-vs-real score of every row from a classifier that never saw the row (nor its patient)."""
    from sklearn.linear_model import LogisticRegression

    n_folds = int(min(n_folds, len(np.unique(groups[labels == 0])), len(np.unique(groups[labels == 1]))))
    if n_folds < 2:
        raise ValueError("a two-sample test needs at least two groups on each side")
    folds = group_folds(groups, labels, n_folds, seed)
    scores = np.zeros(len(labels))
    for k in range(n_folds):
        test, train = folds == k, folds != k
        mean, sd = feats[train].mean(0), feats[train].std(0)
        sd = np.where(sd > 0, sd, 1.0)
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
        clf.fit((feats[train] - mean) / sd, labels[train])
        scores[test] = clf.decision_function((feats[test] - mean) / sd)
    return scores


def cluster_interval(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, seed: int,
                     n_boot: int = BOOTSTRAP) -> list[float]:
    """95% percentile interval of the AUC over cluster-bootstrap resamples (groups drawn with replacement per side)."""
    rng = np.random.default_rng([seed, 1])
    sides = []
    for side in (0, 1):
        rows = np.flatnonzero(labels == side)
        uniq, inv = np.unique(groups[rows], return_inverse=True)
        sides.append([rows[inv == g] for g in range(len(uniq))])
    values = []
    for _ in range(n_boot):
        picked = [np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
                  for members in sides]
        idx = np.concatenate(picked)
        values.append(roc_auc(scores[idx], labels[idx]))
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def content_groups(feats: np.ndarray, n_groups: int, seed: int) -> np.ndarray:
    """Synthetic units grouped by content (k-means on standardised features, ``n_groups`` clusters), so units
    that resemble each other closely (several units of one patient scored as if synthetic; a generator repeating
    itself) fall in one fold together and the classifier cannot win by recognising a cluster it trained on."""
    from sklearn.cluster import KMeans

    n_groups = int(max(2, min(n_groups, len(feats))))
    sd = feats.std(0)
    z = (feats - feats.mean(0)) / np.where(sd > 0, sd, 1.0)
    return KMeans(n_groups, n_init=4, random_state=seed).fit_predict(z).astype(str)


def c2st(real: np.ndarray, real_groups: np.ndarray, synthetic: np.ndarray, synthetic_groups: np.ndarray | None,
         seed: int, units_per_group: float | None = None) -> dict:
    """C2ST of two feature sets [n, D], [m, D]: {"auc", "auc_ci", "real_units", "real_patients",
    "synthetic_units"}. Synthetic is the positive class: AUC 0.5 = indistinguishable.

    ``synthetic_groups`` None: the synthetic units are grouped by content (content_groups) into one group per
    ``units_per_group`` units (default: the real side's units per patient)."""
    if synthetic_groups is None:
        per = units_per_group or len(real) / max(len(np.unique(real_groups)), 1)
        synthetic_groups = (content_groups(np.asarray(synthetic, np.float64), round(len(synthetic) / per), seed)
                            if len(synthetic) >= 2 else np.zeros(len(synthetic), str))
    n_groups = (len(np.unique(real_groups)), len(np.unique(synthetic_groups)))
    if min(len(real), len(synthetic)) < MIN_UNITS or min(n_groups) < 2:
        return {"auc": None, "real_units": int(len(real)), "synthetic_units": int(len(synthetic)),
                "not_judged": f"fewer than {MIN_UNITS} units or 2 groups on a side"}
    feats = np.concatenate([np.asarray(real, np.float64), np.asarray(synthetic, np.float64)])
    labels = np.r_[np.zeros(len(real), int), np.ones(len(synthetic), int)]
    groups = np.r_[np.array([f"r|{g}" for g in real_groups], object),
                   np.array([f"s|{g}" for g in synthetic_groups], object)]
    scores = out_of_fold_scores(feats, labels, groups, seed)
    return {"auc": roc_auc(scores, labels), "auc_ci": cluster_interval(scores, labels, groups, seed),
            "real_units": int(len(real)), "real_patients": int(len(np.unique(real_groups))),
            "synthetic_units": int(len(synthetic))}


def per_class_c2st(real: np.ndarray, real_labels: np.ndarray, real_groups: np.ndarray, synthetic: np.ndarray,
                   synthetic_labels: np.ndarray, synthetic_groups: np.ndarray | None, class_names, seed: int,
                   units_per_group: float | None = None) -> dict:
    """C2ST overall and for each class the real reference has: {"overall": ..., "per_class": {name: ...},
    "classifier"}. A class the real reference has and the synthetic set lacks is ``{"missing": True, ...}``; one
    with fewer than MIN_UNITS units on a side is ``{"auc": None, "not_judged": why}``."""
    real_labels, synthetic_labels = np.asarray(real_labels), np.asarray(synthetic_labels)
    real_groups = np.asarray(real_groups).astype(str)
    if synthetic_groups is not None:
        synthetic_groups = np.asarray(synthetic_groups).astype(str)
    per = units_per_group
    out = {"overall": c2st(real, real_groups, synthetic, synthetic_groups, seed, per), "per_class": {},
           "classifier": CLASSIFIER, "min_units": MIN_UNITS}
    for c, name in enumerate(class_names):
        r, s = real_labels == c, synthetic_labels == c
        n_r, n_s = int(r.sum()), int(s.sum())
        if n_r == 0:
            continue  # the real data has no such class: nothing to compare with
        if n_s == 0:
            out["per_class"][name] = {"auc": None, "missing": True, "real_units": n_r, "synthetic_units": 0}
        else:
            # Content groups are formed within the class (None), so each class has groups on both sides.
            groups = None if synthetic_groups is None else synthetic_groups[s]
            out["per_class"][name] = c2st(real[r], real_groups[r], synthetic[s], groups, seed + 1 + c, per)
    return out
