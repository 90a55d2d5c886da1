"""The canary audit: the attacks' own power, measured on the model (issue 23, item 4).

A model trained with ``trainer.canaries`` (components/trainer/canaries.py) has public phantom patients inside its
training set (INSERTED) and others of the same cohort it never saw (HELD BACK). Membership of a canary is known
for sure, so the attacks the gate runs (on the released images, and on the model itself) are scored here with
the inserted canaries as members and the held-back ones as non-members: how strongly they single out a patient
who WAS trained on is a direct measurement of their power on this very model.

For a model trained with differential privacy the same scores give an EMPIRICAL LOWER BOUND on epsilon
(Jagielski, Ullman & Oprea 2020; Nasr et al. 2021). An (epsilon, delta)-DP mechanism forces every membership test
to satisfy TPR <= e^epsilon FPR + delta and TNR <= e^epsilon FNR + delta, so at a threshold with true rates
(TPR, FPR):

    epsilon >= log((TPR - delta) / FPR)        and        epsilon >= log((TNR - delta) / FNR).

The true rates are unknown; with Clopper-Pearson bounds (TPR_lower, FPR_upper) that hold together with
probability >= 1 - a, ``eps_lb = log((TPR_lower - delta) / FPR_upper)`` is a lower bound at confidence 1 - a.
The threshold that gives the largest bound is chosen on the same canaries, so the level is split (Bonferroni)
over every (threshold, direction) pair tried and over the attacks: the strongest bound reported holds at the
stated confidence. Membership is per PATIENT (the DP unit): a patient's score is the mean (privacy.patient_aggregate)
of its units' scores, and rates count patients, so a handful of canaries bounds epsilon only coarsely:
``eps_ceiling`` says the largest bound the canaries could show at all (perfect separation).
If the lower bound exceeds the accounted epsilon, the accounting or the training is wrong: the gate FAILS.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from vugan.components.evaluator import knn
from vugan.components.evaluator.privacy import stats as mia_stats
from vugan.components.evaluator.privacy.attacks import _model_attacks, released_image_scores
from vugan.components.schema import UnitArrays

CONFIDENCE = 0.95
FORMULA = ("eps_lb = max over thresholds and directions of log((TPR_lower - delta) / FPR_upper) and "
           "log((TNR_lower - delta) / FNR_upper), Clopper-Pearson bounds per patient, Bonferroni over every "
           "(attack, threshold, direction) tried (Jagielski et al. 2020; Nasr et al. 2021)")


# ------------------------------------------------------------------------------------------------ the bound

def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a binomial proportion k / n at confidence 1 - alpha (each side
    alpha / 2); (0, 1) when n is 0."""
    from scipy.stats import beta

    k, n = int(k), int(n)
    if n <= 0:
        return 0.0, 1.0
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def eps_lower_bound(tp: int, n_pos: int, fp: int, n_neg: int, delta: float, alpha: float) -> float:
    """log((TPR_lower - delta) / FPR_upper) at one threshold, both bounds Clopper-Pearson at 1 - alpha (so they hold
    together with probability >= 1 - alpha); 0 when that is not positive (no evidence against any epsilon)."""
    tpr_lo = clopper_pearson(tp, n_pos, alpha)[0]
    fpr_hi = clopper_pearson(fp, n_neg, alpha)[1]
    if tpr_lo - delta <= 0 or fpr_hi <= 0:
        return 0.0
    return max(0.0, math.log((tpr_lo - delta) / fpr_hi))


def best_eps_lower_bound(member_scores, nonmember_scores, delta: float, alpha: float) -> dict:
    """The largest bound over every threshold (a patient is called a member when its score >= t) and both
    directions, at family-wise level ``alpha`` (Bonferroni over the 2 x thresholds pairs tried)."""
    m = np.asarray(member_scores, np.float64)
    n = np.asarray(nonmember_scores, np.float64)
    thresholds = np.unique(np.r_[m, n])
    a = alpha / max(1, 2 * len(thresholds))
    best = {"eps_lb": 0.0, "threshold": None, "direction": None, "tp": None, "fp": None,
            "n_members": int(len(m)), "n_nonmembers": int(len(n)), "tests": int(2 * len(thresholds)),
            "alpha_per_test": a}
    for t in thresholds:
        tp, fp = int(np.sum(m >= t)), int(np.sum(n >= t))
        for direction, value in (("TPR/FPR", eps_lower_bound(tp, len(m), fp, len(n), delta, a)),
                                 ("TNR/FNR", eps_lower_bound(len(n) - fp, len(n), len(m) - tp, len(m), delta, a))):
            if value > best["eps_lb"]:
                best.update(eps_lb=value, threshold=float(t), direction=direction, tp=tp, fp=fp)
    return best


def eps_ceiling(n_members: int, n_nonmembers: int, delta: float, alpha: float) -> float:
    """The largest bound any attack could give with these canaries: every member above every non-member, with
    the fewest thresholds (two scores, four tests). The audit's resolution: a larger epsilon cannot be told apart."""
    return best_eps_lower_bound(np.ones(n_members), np.zeros(n_nonmembers), delta, alpha)["eps_lb"]


# ------------------------------------------------------------------------------------------------ the audit

def load_canaries(model_dir, record: dict) -> tuple[UnitArrays, UnitArrays]:
    """(inserted, held back) units the trainer wrote into the model folder, checked against the fingerprints
    model_info.json records (a changed canary folder is refused, never audited)."""
    from vugan.components import schema
    from vugan.components.trainer.canaries import HELD_BACK, INSERTED, patient_fingerprint

    out = []
    for name in (INSERTED, HELD_BACK):
        folder = Path(model_dir) / record.get("folder", "canaries") / name
        files = sorted(str(p) for p in folder.glob(schema.SHARD_GLOB))
        units = schema.arrays_from_records(list(schema.iter_records(files)))
        found = sorted({patient_fingerprint(p) for p in np.asarray(units.patients).astype(str)})
        if found != sorted(record.get(name) or []) or len(units) != record.get(f"{name}_units"):
            raise ValueError(f"{folder}: the {name.replace('_', ' ')} canaries ({len(found)} patients, {len(units)} "
                             f"units) differ from what {Path(model_dir) / 'model_info.json'} records under "
                             f"canaries.{name}; restore the model folder as the trainer wrote it")
        out.append(units)
    return out[0], out[1]


def canary_audit(inserted: UnitArrays, held_back: UnitArrays, synthetic: UnitArrays, reference: UnitArrays,
                 bundle, cfg, seed: int, dp: dict | None = None, confidence: float = CONFIDENCE) -> dict:
    """Every attack with the inserted canaries as members and the held-back ones as non-members.

    Args:
      synthetic: the judged set (the release candidate). reference: real held-out units (DOMIAS's reference).
      bundle: the model (the model attacks are skipped without it). cfg: the [privacy] config.
      dp: model_info.json "dp"; its delta enters the bound (0 without DP) and its epsilon is reported beside it.
    Returns: the metrics.json "canary" block (results.CanaryResult's fields).
    """
    if len(inserted) == 0 or len(held_back) == 0:
        raise ValueError(f"the canary audit needs inserted and held-back canaries; got {len(inserted)} and "
                         f"{len(held_back)} units")
    t0 = time.perf_counter()
    dp = dp or {}
    delta = float(dp.get("delta") or 0.0) if dp.get("enabled") else 0.0
    images = np.concatenate([inserted.images, held_back.images])
    labels = np.r_[np.ones(len(inserted), int), np.zeros(len(held_back), int)]
    groups = np.concatenate([inserted.patients, held_back.patients]).astype(str)
    class_ids = np.concatenate([inserted.class_ids, held_back.class_ids]).astype(np.int32)
    proj = knn.Projection(int(np.prod(images.shape[1:])), cfg.knn_dims)
    ref_rows = proj(reference.images) if len(reference) else np.zeros((0, cfg.knn_dims), np.float32)
    released = released_image_scores(proj(images), proj(synthetic.images), ref_rows, cfg, seed)["scores"]
    scores = {f"pixel.{k}": v for k, v in released.items()}
    used = {k: np.arange(len(labels)) for k in scores}
    timings, skipped = {}, {}
    if bundle is not None:
        # Every canary, also for the costly reconstruction attack (the gate's run samples pbb_max_patients a side):
        # the canaries are few, and an attack scored on 5 of them could never show an epsilon bound.
        n_patients = len(np.unique(groups))
        model_cfg = dataclasses.replace(cfg, pbb_max_patients=max(cfg.pbb_max_patients, n_patients))
        _model_attacks(bundle, images, class_ids, labels, groups, model_cfg, seed, timings, skipped, scores, used)
    else:
        skipped["model attacks"] = "no model given"
    alpha = (1 - confidence) / max(1, len(scores))  # the strongest bound is the max over attacks
    attacks = {}
    for name, s in scores.items():
        idx = used[name]
        summary = mia_stats.attack_summary(s, labels[idx], groups[idx], aggregate=cfg.patient_aggregate,
                                           n_boot=cfg.bootstrap, seed=seed, top_n_fraction=cfg.top_n_fraction)
        p_scores, p_labels, _ = mia_stats.aggregate_by_group(s, labels[idx], groups[idx], cfg.patient_aggregate)
        p = summary["patient"]
        attacks[name] = {"auc": p["auc"], "auc_ci": p["auc_ci"], "tpr_at_1pct_fpr": p["tpr_at_1pct_fpr"],
                         "tpr_at_0.1pct_fpr": p["tpr_at_0.1pct_fpr"], "n_members": p["n_members"],
                         "n_nonmembers": p["n_nonmembers"],
                         "members_above_all_nonmembers": p["members_above_all_nonmembers"],
                         "unit_auc": summary["unit"]["auc"],
                         "epsilon_bound": best_eps_lower_bound(p_scores[p_labels == 1], p_scores[p_labels == 0],
                                                               delta, alpha)}
    best = max(attacks, key=lambda k: (attacks[k]["epsilon_bound"]["eps_lb"], abs(attacks[k]["auc"] - 0.5)))
    eps_lb = attacks[best]["epsilon_bound"]["eps_lb"]
    accounted = dp.get("epsilon") if dp.get("enabled") else None
    n_in, n_out = len(np.unique(inserted.patients)), len(np.unique(held_back.patients))
    return {
        "enabled": True,
        "patients": {"inserted": int(n_in), "held_back": int(n_out), "inserted_units": int(len(inserted)),
                     "held_back_units": int(len(held_back)), "synthetic_units": int(len(synthetic))},
        "attacks": attacks,
        "skipped": skipped,
        "strongest": {"attack": best, **{k: attacks[best][k] for k in ("auc", "auc_ci", "tpr_at_1pct_fpr")}},
        "epsilon": {"lower_bound": eps_lb, "attack": best, "ceiling": eps_ceiling(n_in, n_out, delta, alpha),
                    "accounted": accounted, "delta": delta, "confidence": confidence, "formula": FORMULA,
                    "exceeds_accounted": bool(accounted is not None and eps_lb > float(accounted))},
        "seconds": round(time.perf_counter() - t0, 3),
    }


def canary_statement(canary: dict) -> tuple[bool, str]:
    """(holds, one line) for the verdict: the audit is informative, except that an empirical lower bound above
    the accounted epsilon means the privacy accounting or the training is wrong."""
    eps, best = canary["epsilon"], canary["strongest"]
    p = canary["patients"]
    line = (f"canary audit ({p['inserted']} inserted vs {p['held_back']} held-back public phantom patients): "
            f"strongest attack {best['attack']}, per-patient AUC {_fmt(best['auc'])} [95% CI "
            f"{_fmt(best['auc_ci'][0])}, {_fmt(best['auc_ci'][1])}], TPR {_fmt(best['tpr_at_1pct_fpr'], 2)} at "
            f"1% FPR; empirical epsilon lower bound {_fmt(eps['lower_bound'], 2)} at {100 * eps['confidence']:.0f}% "
            f"confidence (at most {_fmt(eps['ceiling'], 2)} with these canaries)")
    if eps["accounted"] is None:
        return True, line + "; the model has no DP guarantee to compare it with"
    if eps["exceeds_accounted"]:
        return False, (line + f" EXCEEDS the accounted epsilon {_fmt(eps['accounted'], 2)}: the privacy accounting "
                       "or the training is wrong; do not release, and check the DP settings and the trainer")
    return True, line + f", within the accounted epsilon {_fmt(eps['accounted'], 2)}"


def _fmt(x, nd=3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"
