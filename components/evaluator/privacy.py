"""Privacy evaluation of a synthetic set and the release gate: the two entry points the evaluator calls.

`evaluate_privacy` runs every membership-inference attack (distance attacks on the released images in pixel and
embedding space, the generator reconstruction attack and the discriminator attacks when a model bundle is given)
and the memorisation checks, and returns metrics plus report sections. `release_gate` turns the whole metrics.json
dict into a Verdict listing every rule, passed or failed, with measured value and threshold.

Candidates: members (units of training patients) and non-members (units of held-out patients) are balanced by
drawing WHOLE patients from the larger side until the unit counts match (at most `max_queries` per side), so
per-patient scores use all of a drawn patient's units and the reference study's top-N share has chance ~0.5.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from components.evaluator import mia_stats
from components.evaluator.mia_distances import flatten, query_distances
from components.evaluator.privacy_spec import PrivacyConfig
from components.evaluator.report_types import ReportSection
from components.schema import UnitArrays

# Attack catalogue: name -> (family, one-line description, direction of the raw quantity).
ATTACKS = {
    "fbb_nearest": ("full black-box (GAN-Leaks)", "distance to the nearest synthetic unit", "lower = member"),
    "ref_pairwise": ("reference study, attack 1", "nearest-synthetic distance / median distance to all synthetic",
                     "lower = member"),
    "ref_density": ("reference study, attack 2", "synthetic units within the global density radius",
                    "higher = member"),
    "pbb_reconstruction": ("partial black-box (GAN-Leaks)", "generator reconstruction error after optimising z",
                           "lower = member"),
    "logan_realfake": ("white-box (LOGAN)", "discriminator real/fake logit", "higher = member"),
    "logan_aux_confidence": ("white-box (LOGAN, ac-GAN head)", "auxiliary head's probability of the true class",
                             "higher = member"),
}


@dataclasses.dataclass(frozen=True)
class PrivacyResult:
    metrics: dict
    sections: list[ReportSection]


@dataclasses.dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": list(self.reasons), "forced": False}


# ------------------------------------------------------------------------------------------------ candidates

def select_candidates(member_patients: np.ndarray, nonmember_patients: np.ndarray, max_per_side: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of member and non-member units, drawn a whole patient at a time, with about equal unit counts.

    Raises ValueError when a patient is on both sides (membership would be ill-defined).
    """
    m_p, n_p = np.asarray(member_patients).astype(str), np.asarray(nonmember_patients).astype(str)
    overlap = set(m_p) & set(n_p)
    if overlap:
        raise ValueError(f"{len(overlap)} patient(s) are both members and non-members, e.g. {sorted(overlap)[0]!r}; "
                         "the train and holdout splits must be patient-disjoint")
    rng = np.random.default_rng(seed)
    target = min(len(m_p), len(n_p), max_per_side)

    def draw(patients: np.ndarray) -> np.ndarray:
        ids = np.unique(patients)
        rng.shuffle(ids)
        chosen, count = [], 0
        for pid in ids:
            units = np.nonzero(patients == pid)[0]
            if count >= target:
                break
            chosen.append(units)
            count += len(units)
        return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)

    return draw(m_p), draw(n_p)


# ------------------------------------------------------------------------------------------------ attacks

def distance_attack_scores(candidates: np.ndarray, synthetic: np.ndarray, cfg: PrivacyConfig) -> tuple[dict, dict]:
    """Scores (higher = member) of the three attacks on released images, in one feature space; plus raw arrays."""
    qd = query_distances(candidates, synthetic, block_rows=cfg.block_rows, median=True,
                         density_quantile=cfg.density_quantile)
    scores = {
        "fbb_nearest": -qd.nearest.astype(np.float64),
        "ref_pairwise": -(qd.nearest / np.maximum(qd.median, 1e-12)).astype(np.float64),
        "ref_density": qd.count_within.astype(np.float64),
    }
    return scores, {"nearest": qd.nearest, "radius": qd.radius}


def _model_attacks(bundle, images, class_ids, labels, cfg, seed, timings, skipped, scores_out, idx_out):
    """Generator and discriminator attacks; fills scores_out[name] and idx_out[name] (candidate rows used)."""
    n_classes = len(bundle.class_names)
    if cfg.whitebox_enabled:
        logit, conf, sec = _discriminator_scores(bundle, images, class_ids)
        scores_out["logan_realfake"], scores_out["logan_aux_confidence"] = logit, conf
        idx_out["logan_realfake"] = idx_out["logan_aux_confidence"] = np.arange(len(images))
        timings["logan_realfake"] = timings["logan_aux_confidence"] = sec
    else:
        skipped["logan_realfake"] = skipped["logan_aux_confidence"] = "turned off (privacy.whitebox_enabled = false)"
    if cfg.pbb_enabled:
        from components.evaluator.mia_model_attacks import reconstruction_errors

        # The reconstruction attack is costly: a balanced random subsample of candidate units (a patient's score
        # then averages, or maxes, only its sampled units).
        rng = np.random.default_rng(seed + 7)
        sub = np.concatenate([rng.permutation(np.nonzero(labels == c)[0])[:cfg.pbb_max_queries] for c in (1, 0)])
        sub = np.sort(sub)
        err, sec = reconstruction_errors(bundle.generator, int(bundle.noise_dim), n_classes, images[sub],
                                         class_ids[sub], steps=cfg.pbb_steps, restarts=cfg.pbb_restarts,
                                         lr=cfg.pbb_lr, batch=cfg.pbb_batch, class_mode=cfg.pbb_class, seed=seed)
        scores_out["pbb_reconstruction"], idx_out["pbb_reconstruction"] = -err, sub
        timings["pbb_reconstruction"] = sec
    else:
        skipped["pbb_reconstruction"] = "turned off (privacy.pbb_enabled = false)"


def _discriminator_scores(bundle, images, class_ids):
    from components.evaluator.mia_model_attacks import discriminator_scores

    return discriminator_scores(bundle.discriminator, images, class_ids)


def strongest(attacks: dict, level: str) -> dict:
    """The attack with the highest upper CI bound of its AUC at `level` (conservative: the gate's worst case)."""
    best = None
    for name, a in attacks.items():
        hi = a[level]["auc_ci"][1]
        if np.isfinite(hi) and (best is None or hi > best[1]):
            best = (name, hi)
    if best is None:
        return {}
    a = attacks[best[0]][level]
    return {"attack": best[0], "auc": a["auc"], "auc_ci": a["auc_ci"], "tpr_at_1pct_fpr": a["tpr_at_1pct_fpr"],
            "n_members": a["n_members"], "n_nonmembers": a["n_nonmembers"]}


# ------------------------------------------------------------------------------------------------ entry point

def evaluate_privacy(members: UnitArrays, nonmembers: UnitArrays, synthetic: UnitArrays, bundle, embed_fn,
                     cfg: PrivacyConfig, seed: int) -> PrivacyResult:
    """Run every attack and memorisation check; see the module docstring for the candidate design.

    Args:
      members / nonmembers: real train / holdout units (patient-disjoint). synthetic: released units.
      bundle: models.bundle.ModelBundle or None (model attacks are then reported as skipped).
      embed_fn: images [N, H, W, K] -> features [N, D], or None (embedding-space checks are then skipped).
    Returns: PrivacyResult(metrics, sections); metrics["attacks"][name] holds per-unit and per-patient statistics.
    """
    from components.evaluator.privacy_memorisation import memorisation_report
    from components.evaluator.privacy_report import build_sections

    if not cfg.enabled:
        return PrivacyResult({"enabled": False}, [ReportSection("privacy", "Privacy", "Privacy evaluation turned off "
                                                                "(privacy.enabled = false).")])
    if len(members) == 0 or len(nonmembers) == 0 or len(synthetic) == 0:
        raise ValueError(f"privacy needs members, non-members and synthetic units; got {len(members)}, "
                         f"{len(nonmembers)}, {len(synthetic)}")
    t0 = time.perf_counter()
    mi, ni = select_candidates(members.patients, nonmembers.patients, cfg.max_queries, seed)
    images = np.concatenate([members.images[mi], nonmembers.images[ni]])
    class_ids = np.concatenate([members.class_ids[mi], nonmembers.class_ids[ni]]).astype(np.int32)
    groups = np.concatenate([members.patients[mi], nonmembers.patients[ni]]).astype(str)
    labels = np.r_[np.ones(len(mi), int), np.zeros(len(ni), int)]
    # Shuffle so that ties (e.g. many zero density counts) are not broken in favour of the members listed first.
    order = np.random.default_rng(seed + 2).permutation(len(labels))
    images, class_ids, groups, labels = images[order], class_ids[order], groups[order], labels[order]
    rng = np.random.default_rng(seed + 1)
    syn_idx = np.sort(rng.permutation(len(synthetic))[:cfg.max_synthetic])
    syn_images = synthetic.images[syn_idx]

    def candidates_of(m_rows: np.ndarray, n_rows: np.ndarray) -> np.ndarray:
        return np.concatenate([m_rows[mi], n_rows[ni]])[order]

    # Per space: (candidates, synthetic, all members, all non-members); candidates are rows of the last two, so
    # each real unit is embedded once.
    m_flat, n_flat = flatten(members.images), flatten(nonmembers.images)
    spaces = {"pixel": (flatten(images), flatten(syn_images), m_flat, n_flat)}  # views, no copies
    skipped: dict[str, str] = {}
    if embed_fn is not None:
        m_emb, n_emb, s_emb = (np.asarray(embed_fn(x), np.float32)
                               for x in (members.images, nonmembers.images, syn_images))
        spaces["embedding"] = (candidates_of(m_emb, n_emb), s_emb, m_emb, n_emb)
    else:
        skipped["embedding space"] = "no embedding function given"

    phase: dict[str, float] = {}
    tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        phase[name] = round(now - tick, 3)
        tick = now

    lap("setup_and_embedding")
    scores, used, timings, raw = {}, {}, {}, {}
    for space, (cand, syn, _, _) in spaces.items():
        t = time.perf_counter()
        s, r = distance_attack_scores(cand, syn, cfg)
        sec = (time.perf_counter() - t) / len(cand)
        for name, v in s.items():
            scores[f"{space}.{name}"], used[f"{space}.{name}"], timings[f"{space}.{name}"] = v, np.arange(len(v)), sec
        raw[space] = r
    if bundle is None:
        for name in ("pbb_reconstruction", "logan_realfake", "logan_aux_confidence"):
            skipped[name] = "no model bundle given (synthetic set evaluated without its generator)"
    else:
        _model_attacks(bundle, images, class_ids, labels, cfg, seed, timings, skipped, scores, used)
    lap("attacks")

    attacks = {}
    for name, s in scores.items():
        idx = used[name]
        base = name.split(".")[-1]
        family, what, direction = ATTACKS[base]
        summary = mia_stats.attack_summary(s, labels[idx], groups[idx], aggregate=cfg.patient_aggregate,
                                           n_boot=cfg.bootstrap, seed=seed, top_n_fraction=cfg.top_n_fraction)
        attacks[name] = {"family": family, "score": what, "direction": direction,
                         "space": name.split(".")[0] if "." in name else "model",
                         "seconds_per_1000_queries": 1000 * timings[name], **summary}
    lap("statistics")

    memo, memo_arrays = {}, {}
    for space, (_, syn, tr, ho) in spaces.items():
        memo[space], memo_arrays[space] = memorisation_report(
            tr, ho, syn, repeats=cfg.closer_repeats, n_cells=cfg.ct_cells, min_cell=cfg.ct_min_cell,
            copy_quantile=cfg.copy_quantile, copy_factor=cfg.copy_factor, block_rows=cfg.block_rows, seed=seed)
    lap("memorisation")

    metrics = {
        "enabled": True,
        "patient_aggregate": cfg.patient_aggregate,
        "candidates": {"member_units": int(len(mi)), "nonmember_units": int(len(ni)),
                       "member_patients": int(len(np.unique(groups[labels == 1]))),
                       "nonmember_patients": int(len(np.unique(groups[labels == 0]))),
                       "synthetic_units": int(len(syn_idx)),
                       "selection": "whole patients drawn at random until unit counts match"},
        "attacks": attacks,
        "skipped": skipped,
        "strongest": {"unit": strongest(attacks, "unit"), "patient": strongest(attacks, "patient")},
        "density_radius": {space: raw[space]["radius"] for space in raw},
        "memorisation": memo,
        "seconds": phase,
    }
    sections = build_sections(metrics, scores, used, labels, groups, raw, memo_arrays, syn_images,
                              members.images, cfg)
    lap("figures")
    phase["total"] = round(time.perf_counter() - t0, 3)
    return PrivacyResult(json_safe(metrics), sections)


def json_safe(obj):
    """nan / inf -> None (strict JSON has neither), numpy scalars -> Python numbers, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    return obj


# ------------------------------------------------------------------------------------------------ release gate

def _lookup(metrics: dict, dotted: str):
    node = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _rule(reasons: list, ok: bool, text: str) -> bool:
    reasons.append(f"{'PASS' if ok else 'FAIL'}: {text}")
    return ok


def _counts(s: dict, level: str) -> str:
    # A wide CI from few patients fails the rule too; saying the counts tells the reviewer why.
    if "n_members" not in s:
        return ""
    return f" ({s['n_members']} member / {s['n_nonmembers']} non-member {level}s)"


def release_gate(metrics: dict, cfg: PrivacyConfig) -> Verdict:
    """Check every rule; the Verdict passes only when all do. Never raises on missing metrics: a missing metric is a
    failed rule naming it (except for rules turned off with a 0 threshold, reported as off)."""
    reasons: list[str] = []
    ok = True
    priv = metrics.get("privacy") if isinstance(metrics, dict) else None
    if not isinstance(priv, dict) or not priv.get("enabled", False):
        ok &= _rule(reasons, False, "privacy metrics missing (privacy evaluation not run or turned off)")
        priv = {}
    for level in ("unit", "patient"):
        s = (priv.get("strongest") or {}).get(level) or {}
        hi = (s.get("auc_ci") or [None, None])[1]
        if hi is None or not np.isfinite(hi):
            ok &= _rule(reasons, False, f"privacy metric strongest attack AUC per {level} missing")
        else:
            ok &= _rule(reasons, hi <= cfg.max_attack_auc_upper,
                        f"strongest attack per {level} ({s['attack']}): AUC {s['auc']:.3f}, upper 95% bound "
                        f"{hi:.3f} <= {cfg.max_attack_auc_upper:.3f}{_counts(s, level)}")
    memo = priv.get("memorisation") or {}
    checks = [("closer_to_train_share", "share of synthetic units closer to training than held-out data",
               cfg.max_closer_to_train_share, max, "<="),
              ("copy_fraction", "share of synthetic units flagged as copies", cfg.max_copy_fraction, max, "<="),
              ("ct", "C_T data-copying z-score", cfg.min_ct, min, ">=")]
    for key, label, thr, worst, op in checks:
        vals = {sp: m.get(key) for sp, m in memo.items() if m.get(key) is not None and np.isfinite(m.get(key))}
        if not vals:
            present = any(key in m for m in memo.values())
            ok &= _rule(reasons, False, f"privacy metric {key} " + (
                "not computable (too few units; for C_T lower privacy.ct_min_cell)" if present else "missing"))
            continue
        sp = (max if worst is max else min)(vals, key=vals.get)
        v = vals[sp]
        ok &= _rule(reasons, v <= thr if op == "<=" else v >= thr, f"{label} (worst space: {sp}) {v:.3f} {op} {thr:.3f}")
    for key, thr, op, label in [(cfg.fid_ratio_key, cfg.max_fid_ratio, "<=", "FID / real-real baseline"),
                                (cfg.tstr_key, cfg.min_tstr_balanced_accuracy, ">=", "TSTR balanced accuracy")]:
        if thr <= 0:
            reasons.append(f"OFF: {label} not checked (threshold 0)")
            continue
        v = _lookup(metrics, key)
        if v is None or not np.isfinite(v):
            ok &= _rule(reasons, False, f"fidelity metric {key} missing")
        else:
            ok &= _rule(reasons, v <= thr if op == "<=" else v >= thr, f"{label} ({key}) {v:.3f} {op} {thr:.3f}")
    return Verdict(bool(ok), reasons)
