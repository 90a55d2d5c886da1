"""Statistics of membership-inference attacks: scores in, numbers out (pure numpy).

Convention everywhere: a HIGHER score means "more likely a member" (attacks negate distances), label 1 = member.
The AUC bootstrap resamples whole patients (a cluster bootstrap), because units of one patient are correlated and
the patient is what must be protected; resampling units would give CIs that are too narrow.
"""
from __future__ import annotations

import numpy as np


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, int]:
    # Index of each score among the sorted unique values; ties share an index.
    uniq, inverse = np.unique(np.asarray(scores, np.float64), return_inverse=True)
    return inverse.ravel(), len(uniq)


def _auc_from_groups(inverse: np.ndarray, n_groups: int, labels: np.ndarray, weights: np.ndarray) -> float:
    pos = np.bincount(inverse, weights=weights * (labels == 1), minlength=n_groups)
    neg = np.bincount(inverse, weights=weights * (labels == 0), minlength=n_groups)
    wp, wn = pos.sum(), neg.sum()
    if wp == 0 or wn == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    # Mann-Whitney: a (member, non-member) pair counts 1 when the member scores higher, 1/2 on a tie.
    return float(np.sum(pos * (neg_below + 0.5 * neg)) / (wp * wn))


def roc_auc(scores, labels, weights=None) -> float:
    """Area under the ROC curve = P(member score > non-member score) + P(tie) / 2.

    Args:
      scores: [N] floats, higher = member. labels: [N] in {0, 1}. weights: optional [N] non-negative unit weights
        (a pair weighs the product of its two weights).
    Returns: the AUC, or nan when one class is empty.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, np.float64)
    inverse, n = _tie_groups(scores)
    return _auc_from_groups(inverse, n, labels, w)


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1); a unit is called member when score >= t."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    # Keep only the last index of each run of equal scores so ties move the curve diagonally.
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp, fp = np.cumsum(y)[last], np.cumsum(1 - y)[last]
    n_pos, n_neg = max(y.sum(), 1), max(len(y) - y.sum(), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def tpr_at_fpr(scores, labels, fpr_target: float) -> float:
    """Largest TPR over thresholds whose FPR <= fpr_target (no interpolation: a reachable operating point).

    With n non-members the smallest non-zero FPR is 1/n; below that the value is the TPR at FPR = 0.
    """
    fpr, tpr = roc_curve(scores, labels)
    ok = fpr <= fpr_target + 1e-12
    return float(tpr[ok].max())


def bootstrap_auc_ci(scores, labels, groups, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the AUC under a stratified cluster bootstrap.

    Members' groups (patients) and non-members' groups are resampled with replacement separately, each keeping its
    group count; a unit weighs the number of times its group was drawn.

    Args:
      groups: [N] group ids (patients); a group must not hold both members and non-members.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    _, gidx = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    gidx = gidx.ravel()
    n_g = gidx.max() + 1
    glabel = np.full(n_g, -1)
    glabel[gidx] = labels
    if np.any(np.bincount(gidx, weights=labels, minlength=n_g) % np.bincount(gidx, minlength=n_g) != 0):
        raise ValueError("a group (patient) holds both members and non-members; membership must be per patient")
    strata = [np.nonzero(glabel == c)[0] for c in (0, 1)]
    if min(len(s) for s in strata) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    inverse, n = _tie_groups(scores)
    aucs = np.empty(n_boot)
    for b in range(n_boot):
        counts = np.zeros(n_g)
        for s in strata:
            counts += np.bincount(s[rng.integers(0, len(s), len(s))], minlength=n_g)
        aucs[b] = _auc_from_groups(inverse, n, labels, counts[gidx])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(aucs, [alpha, 1 - alpha])
    return float(lo), float(hi)


def aggregate_by_group(scores, labels, groups, how: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group score (mean or max of its units' scores), label and id, groups in sorted order."""
    if how not in ("mean", "max"):
        raise ValueError(f"aggregate {how!r}: allowed values are 'mean', 'max'")
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    ids, gidx = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    gidx = gidx.ravel()
    n = len(ids)
    if how == "mean":
        agg = np.bincount(gidx, weights=scores, minlength=n) / np.bincount(gidx, minlength=n)
    else:
        agg = np.full(n, -np.inf)
        np.maximum.at(agg, gidx, scores)
    glabel = np.zeros(n, int)
    glabel[gidx] = labels
    return agg, glabel, ids


def top_n_member_share(scores, labels, n: int) -> float:
    """Reference-study readout: share of members among the n highest-scoring candidates (ties broken by order)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")[:n]
    return float(np.mean(np.asarray(labels)[order]))


def attack_summary(scores, labels, groups, *, aggregate: str, n_boot: int, seed: int,
                   top_n_fraction: float = 1 / 3, quantile: float | None = None) -> dict:
    """Everything the report and gate need about one attack, per unit and per patient.

    Returns: {"unit": {...}, "patient": {...}} with auc, auc_ci [lo, hi], tpr_at_1pct_fpr, tpr_at_0.1pct_fpr,
    n_members, n_nonmembers, chance_top_n, top_n, top_n_member_share; plus "aggregate" (mean/max).
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    if not np.all(np.isfinite(scores)):
        raise ValueError("attack scores must be finite")
    out = {"aggregate": aggregate}
    p_scores, p_labels, p_ids = aggregate_by_group(scores, labels, groups, aggregate)
    for level, (s, y, g) in {"unit": (scores, labels, groups), "patient": (p_scores, p_labels, p_ids)}.items():
        n_top = max(1, int(round(top_n_fraction * len(s))))
        lo, hi = bootstrap_auc_ci(s, y, g, n_boot, seed)
        out[level] = {
            "auc": roc_auc(s, y), "auc_ci": [lo, hi],
            "tpr_at_1pct_fpr": tpr_at_fpr(s, y, 0.01), "tpr_at_0.1pct_fpr": tpr_at_fpr(s, y, 0.001),
            "n_members": int(y.sum()), "n_nonmembers": int(len(y) - y.sum()),
            "top_n": n_top, "top_n_member_share": top_n_member_share(s, y, n_top), "chance_top_n": float(y.mean()),
            "members_above_all_nonmembers": members_above_all(s, y),
        }
        if quantile is not None:
            r = quantile_rank(int(len(y) - y.sum()), quantile)
            out[level].update(quantile=float(quantile), quantile_rank=r, members_above_quantile=members_above_rank(s, y, r))
    return out


# ------------------------------------------------------------------------------------------------ tests by patient
#
# Under the null hypothesis "the synthetic set does not depend on who was a member" (members and non-members are
# random draws from one population of patients, and the synthetic set is fixed), the per-patient scores of members
# and non-members are exchangeable. Two permutation tests are then exact whatever the attack:
#   * the Mann-Whitney AUC, whose null standard deviation is sqrt((m + n + 1) / (12 m n)) for m members and n
#     non-members (no tie correction: ties shrink the true variance, so leaving it out is conservative);
#   * the low-FPR tail: K = the number of members scoring above EVERY non-member; P(K >= k) = prod_{i<k} (m - i) /
#     (m + n - i) (the top k of a random ranking are all members). It catches a generator that memorised a few
#     patients, which moves the AUC only a little.

def null_auc_sd(n_members: int, n_nonmembers: int) -> float:
    m, n = int(n_members), int(n_nonmembers)
    if m < 1 or n < 1:
        return float("nan")
    return float(np.sqrt((m + n + 1) / (12.0 * m * n)))


def normal_quantile(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def members_above_all(scores, labels) -> int:
    """K: members whose score is strictly above the highest non-member score."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    if not np.any(labels == 0):
        return 0
    return int(np.sum(scores[labels == 1] > scores[labels == 0].max()))


def tail_p_value(k: int, n_members: int, n_nonmembers: int) -> float:
    """P(K >= k) under exchangeability (see above)."""
    m, n = int(n_members), int(n_nonmembers)
    if k <= 0:
        return 1.0
    if k > m:
        return 0.0
    i = np.arange(k)
    return float(np.exp(np.sum(np.log(m - i) - np.log(m + n - i))))


def tail_k_needed(n_members: int, n_nonmembers: int, alpha: float) -> int | None:
    """Smallest k with P(K >= k) < alpha (None when even all members above all non-members is not enough)."""
    for k in range(1, int(n_members) + 1):
        if tail_p_value(k, n_members, n_nonmembers) < alpha:
            return k
    return None


def patient_tests(auc: float, k_above: int, n_members: int, n_nonmembers: int, *, n_tests: int, alpha: float,
                  margin: float, quantile: dict | None = None) -> dict:
    """The tests of one attack at the family-wise level `alpha` shared by `n_tests` tests (Bonferroni).

    The AUC test is two-sided: far BELOW 0.5 is a finding too (a biased split, or an attack an adversary would
    simply flip). `quantile` ({"rank": r, "members_above": K_r, "quantile": q}) adds the test of the members above
    the q-quantile of the non-members (see "memorised share" below). Returns the corrected confidence bounds, the
    decision and a p-value per test.
    """
    from scipy.stats import norm

    sd = null_auc_sd(n_members, n_nonmembers)
    a = alpha / n_tests
    z = normal_quantile(1 - a / 2)
    lo, hi = max(0.0, auc - z * sd), min(1.0, auc + z * sd)
    p_auc = float(2 * norm.sf(abs(auc - 0.5) / sd)) if np.isfinite(sd) and np.isfinite(auc) else 1.0
    p_tail = tail_p_value(k_above, n_members, n_nonmembers)
    above = bool(np.isfinite(lo) and lo > 0.5 + margin)
    below = bool(np.isfinite(hi) and hi < 0.5 - margin)
    tail = bool(p_tail < a)
    out = {"null_sd": sd, "corrected_level": 1 - a, "auc_bounds_corrected": [lo, hi], "p_auc": min(p_auc, 1.0),
           "members_above_all_nonmembers": int(k_above), "p_tail": p_tail,
           "leak_auc": above, "flipped_auc": below, "leak_tail": tail, "leak_quantile": False}
    p_min = min(p_auc, p_tail)
    if quantile is not None:
        p_q = rank_tail_p_value(quantile["members_above"], n_members, n_nonmembers, quantile["rank"])
        out.update(members_above_quantile=int(quantile["members_above"]), quantile=float(quantile["quantile"]),
                   quantile_rank=int(quantile["rank"]), p_quantile=p_q, leak_quantile=bool(p_q < a))
        p_min = min(p_min, p_q)
    out["finding"] = above or below or tail or out["leak_quantile"]
    out["evidence"] = -np.log10(max(p_min, 1e-300))
    return out


def detectable_auc(n_members: int, n_nonmembers: int, *, n_tests: int, alpha: float, margin: float,
                   power: float) -> float:
    """Smallest per-patient AUC the corrected AUC test finds with probability `power` (normal approximation with
    the null variance, which is larger than the variance at AUC > 0.5, so the figure is a safe upper estimate)."""
    sd = null_auc_sd(n_members, n_nonmembers)
    z = normal_quantile(1 - alpha / n_tests / 2) + normal_quantile(power)
    return float(min(1.0, 0.5 + margin + z * sd))


# ------------------------------------------------------------------------------------------------ memorised share
#
# The tail test above needs k members above EVERY non-member. Its generalisation counts the members above the r-th
# highest non-member (r = 1: the tail test; r = ceil((1 - q) n): the members above the q-quantile of the non-members,
# which also sees patients exposed a little less than totally). Under exchangeability the ranking is a random
# arrangement of m members and n non-members, and K_r >= k exactly when the first k + r - 1 places hold at least k
# members: a hypergeometric tail, exact for any attack.
#
# Power for "a share s of the members memorised": a memorised patient scores above every non-member (what a
# generator that reproduces the patient gives a distance attack); the other members stay exchangeable with the
# non-members. With e = s m memorised, K_r = e + K'_r, where K'_r is the same statistic on (m - e) members and n
# non-members, so the power is exact too: P(K'_r >= k_needed - e).
#
# What no rank test can do: its p-value for e memorised patients on top of a random ranking is at least
# P(top e all members) = prod_{i<e} (m - i) / (m + n - i), about (m / (m + n))^e, so below a level a it needs
# e > log(a) / log(m / (m + n)) patients whatever the statistic. At 100 a side and a = 0.05 / 12 that is 8 patients:
# 5% of 100 members cannot be found by a membership test; attacking more members (all training patients against
# all non-members, attacks.select_candidates) lowers the share, and copies of a patient are the copy test's.

def quantile_rank(n_nonmembers: int, quantile: float) -> int:
    """r: how many non-members may score at or above the threshold ("above the q-quantile of n non-members")."""
    return max(1, int(np.ceil((1.0 - quantile) * int(n_nonmembers) - 1e-9)))


def members_above_rank(scores, labels, r: int) -> int:
    """K_r: members whose score is strictly above the r-th highest non-member score (ties count against)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(int)
    non = np.sort(scores[labels == 0])[::-1]
    if len(non) < r:
        return 0
    return int(np.sum(scores[labels == 1] > non[r - 1]))


def rank_tail_p_value(k: int, n_members: int, n_nonmembers: int, r: int) -> float:
    """P(K_r >= k) under exchangeability: at least k members in the first k + r - 1 places."""
    from scipy.stats import hypergeom

    m, n = int(n_members), int(n_nonmembers)
    if k <= 0:
        return 1.0
    if k > m:
        return 0.0
    draws = min(k + int(r) - 1, m + n)
    return float(min(1.0, hypergeom.sf(k - 1, m + n, m, draws)))


def rank_k_needed(n_members: int, n_nonmembers: int, r: int, level: float) -> int | None:
    """Smallest k with P(K_r >= k) < level (None: not even all members would do)."""
    for k in range(1, int(n_members) + 1):
        if rank_tail_p_value(k, n_members, n_nonmembers, r) < level:
            return k
    return None


def memorised_power(n_memorised: int, n_members: int, n_nonmembers: int, r: int, level: float) -> float:
    """Exact power of the K_r test at `level` when n_memorised members score above every non-member (see above)."""
    need = rank_k_needed(n_members, n_nonmembers, r, level)
    e = int(n_memorised)
    if need is None:
        return 0.0
    if e >= need:
        return 1.0
    return rank_tail_p_value(need - e, n_members - e, n_nonmembers, r)


def detectable_memorised(n_members: int, n_nonmembers: int, ranks, level: float, power: float) -> dict:
    """Smallest number (and share) of memorised member patients that one of the K_r tests (r in `ranks`, each at
    `level`) finds with probability >= `power`; the union of the tests finds it at least as often.

    Returns {"patients": e or None, "share": e / m or None, "power": the power reached}."""
    m, n = int(n_members), int(n_nonmembers)
    for e in range(1, m + 1):
        got = max(memorised_power(e, m, n, r, level) for r in ranks)
        if got >= power:
            return {"patients": e, "share": e / m, "power": got}
    return {"patients": None, "share": None, "power": 0.0}
