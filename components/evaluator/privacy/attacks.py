"""Privacy evaluation of a synthetic set: every membership-inference attack and memorisation check, by patient.

Who is who (every set is whole patients, so per-patient scores use all of a patient's units):
  * members: units of training patients;
  * non-member candidates and DOMIAS reference: the held-out patients, split at random into two patient-disjoint
    parts (`privacy.reference_fraction` of them are the reference; the reference is never a candidate);
  * candidates: equally many member and non-member PATIENTS (at most `privacy.max_query_patients` a side), all of
    their units.

Attacks on the released images (the ones `vugan audit` can run and the release gate judges), in the pixel space
(after knn.py's fixed projection) and, when an encoder is given, in its embedding space:
  fbb_nearest (GAN-Leaks full black-box), ref_pairwise and ref_density (the reference study's two attacks) and
  domias (van Breugel et al. 2023: density of the synthetic set against the reference data at the query, by k-NN).
Attacks that need the model (generator reconstruction, discriminator logits) are reported as the worst case: the
discriminator is never released, so they are not part of the gate.

Statistics per patient are exact permutation tests (privacy/stats.py); gate.py turns them into the verdict.
"""
from __future__ import annotations

import time

import numpy as np

from vugan.components.evaluator import knn
from vugan.components.evaluator.privacy import stats as mia_stats
from vugan.components.evaluator.privacy.invariant_features import invariant_features
from vugan.components.evaluator.privacy.spec import PrivacyConfig
from vugan.components.evaluator.results import PrivacyEvidence, PrivacyResult, jsonable
from vugan.components.schema import UnitArrays

# Attack catalogue: name -> (family, one-line description, direction of the raw quantity).
ATTACKS = {
    "fbb_nearest": ("full black-box (GAN-Leaks)", "distance to the nearest synthetic unit", "lower = member"),
    "ref_pairwise": ("reference study, attack 1", "nearest-synthetic distance / median distance to synthetic",
                     "lower = member"),
    "ref_density": ("reference study, attack 2", "synthetic units within the global density radius",
                    "higher = member"),
    "domias": ("DOMIAS (density ratio)", "k-NN density of the synthetic set / of the reference patients' units",
               "higher = member"),
    "pbb_reconstruction": ("partial black-box (GAN-Leaks)", "generator reconstruction error after optimising z",
                           "lower = member"),
    "logan_realfake": ("white-box (LOGAN)", "discriminator real/fake logit", "higher = member"),
    "logan_aux_confidence": ("white-box (LOGAN, ac-GAN head)", "auxiliary head's probability of the true class",
                             "higher = member"),
}
RELEASED_IMAGE_ATTACKS = ("fbb_nearest", "ref_pairwise", "ref_density", "domias")
MODEL_ATTACKS = ("pbb_reconstruction", "logan_realfake", "logan_aux_confidence")
INVARIANT_ATTACKS = ("fbb_nearest",)  # attacks also run in the transform-blind features (invariant_features.py)
MEDIAN_SAMPLE = 2048  # synthetic units a query's median distance is estimated from (a population statistic)


# ------------------------------------------------------------------------------------------------ candidates

def _patients_of(patients: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(patients).astype(str))


def split_reference(nonmember_patients: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit indices of (non-member candidates, DOMIAS reference): a random patient-disjoint split of the holdout.

    Both parts get at least one patient when there are two or more."""
    p = np.asarray(nonmember_patients).astype(str)
    ids = _patients_of(p)
    np.random.default_rng([seed, 11]).shuffle(ids)
    n_ref = int(round(fraction * len(ids)))
    n_ref = min(max(n_ref, 1), len(ids) - 1) if len(ids) >= 2 else 0
    ref = set(ids[:n_ref])
    is_ref = np.array([x in ref for x in p], bool)
    return np.nonzero(~is_ref)[0], np.nonzero(is_ref)[0]


def select_candidates(member_patients: np.ndarray, nonmember_patients: np.ndarray, max_patients: int,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit indices of the member and non-member candidates: every patient of each side (at most max_patients a
    side, drawn at random), all their units.

    Every training patient is attacked, not as many as there are non-members: with the default 60/20/20 split a
    balanced draw attacked about 22% of them. The tests are exact for any m and n, and more members lower the
    share of memorised patients the tail tests need (privacy/stats.py, "memorised share").
    Raises ValueError when a patient is on both sides (membership would be ill-defined).
    """
    m_p, n_p = np.asarray(member_patients).astype(str), np.asarray(nonmember_patients).astype(str)
    overlap = set(m_p) & set(n_p)
    if overlap:
        raise ValueError(f"{len(overlap)} patient(s) are both members and non-members, e.g. {sorted(overlap)[0]!r}; "
                         "the train and holdout splits must be patient-disjoint")
    rng = np.random.default_rng(seed)

    def draw(patients: np.ndarray) -> np.ndarray:
        ids = _patients_of(patients)
        chosen = set(rng.permutation(ids)[:max_patients])
        return np.nonzero([x in chosen for x in patients])[0]

    return draw(m_p), draw(n_p)


def coverage(member_patients: np.ndarray, attacked_member_patients: np.ndarray) -> dict:
    """How many training patients the attacks judged; the copy check always judges every one."""
    total = len(_patients_of(member_patients))
    attacked = len(_patients_of(attacked_member_patients))
    return {"train_patients": total, "attacked_patients": attacked, "attacked_share": attacked / max(total, 1),
            "copy_checked_patients": total}


# ------------------------------------------------------------------------------------------------ attacks

def released_image_scores(candidates: np.ndarray, synthetic: np.ndarray, reference: np.ndarray,
                          cfg: PrivacyConfig, seed: int) -> dict:
    """Scores (higher = member) of the attacks on released images, in one (projected) feature space."""
    syn_index = knn.Index(synthetic, cfg.block_rows)
    k = max(1, min(cfg.domias_k, len(synthetic), len(reference)))
    d_syn, _ = syn_index.search(candidates, k)
    rng = np.random.default_rng([seed, 5])
    sample = synthetic[np.sort(rng.permutation(len(synthetic))[:MEDIAN_SAMPLE])]
    d_sample = knn.pairwise(candidates, sample)
    median = np.median(d_sample, axis=1)
    # Density radius: the density_quantile of all candidate-synthetic distances, estimated on the sample.
    radius = float(np.quantile(d_sample, cfg.density_quantile))
    counts = syn_index.count_within(candidates, radius)
    scores = {"fbb_nearest": -d_syn[:, 0].astype(np.float64),
              "ref_pairwise": -(d_syn[:, 0] / np.maximum(median, 1e-12)).astype(np.float64),
              "ref_density": counts.astype(np.float64)}
    if len(reference):
        d_ref, _ = knn.Index(reference, cfg.block_rows).search(candidates, k)
        # k-NN density ~ k / (n r_k^dim): the log ratio is dim x (log r_ref - log r_syn) plus a constant; the
        # factor dim does not change any ranking, so the score is the log ratio of the k-th neighbour distances.
        scores["domias"] = (np.log(np.maximum(d_ref[:, -1], 1e-12)) - np.log(np.maximum(d_syn[:, -1], 1e-12))
                            ).astype(np.float64)
    return {"scores": scores, "nearest": d_syn[:, 0], "radius": radius}


def _model_attacks(bundle, images, class_ids, labels, groups, cfg, seed, timings, skipped, scores_out, idx_out):
    """Generator and discriminator attacks; fills scores_out[name] and idx_out[name] (candidate rows used)."""
    n_classes = len(bundle.class_names)
    if cfg.whitebox_enabled:
        from vugan.components.evaluator.privacy.model_attacks import discriminator_scores

        logit, conf, sec = discriminator_scores(bundle.discriminator, images, class_ids)
        scores_out["logan_realfake"], scores_out["logan_aux_confidence"] = logit, conf
        idx_out["logan_realfake"] = idx_out["logan_aux_confidence"] = np.arange(len(images))
        timings["logan_realfake"] = timings["logan_aux_confidence"] = sec
    else:
        skipped["logan_realfake"] = skipped["logan_aux_confidence"] = "turned off (privacy.whitebox_enabled = false)"
    if cfg.pbb_enabled:
        from vugan.components.evaluator.privacy.model_attacks import reconstruction_errors

        # Costly: whole patients, at most pbb_max_patients a side.
        rng = np.random.default_rng(seed + 7)
        chosen = set()
        for c in (1, 0):
            ids = np.unique(groups[labels == c])
            chosen |= set(rng.permutation(ids)[:cfg.pbb_max_patients])
        sub = np.nonzero([g in chosen for g in groups])[0]
        err, sec = reconstruction_errors(bundle.generator, int(bundle.noise_dim), n_classes, images[sub],
                                         class_ids[sub], steps=cfg.pbb_steps, restarts=cfg.pbb_restarts,
                                         lr=cfg.pbb_lr, batch=cfg.pbb_batch, class_mode=cfg.pbb_class, seed=seed)
        scores_out["pbb_reconstruction"], idx_out["pbb_reconstruction"] = -err, sub
        timings["pbb_reconstruction"] = sec
    else:
        skipped["pbb_reconstruction"] = "turned off (privacy.pbb_enabled = false)"


def memorised_detectable(m_pat: int, n_pat: int, n_tests: int, cfg: PrivacyConfig) -> dict:
    """The smallest share of memorised member patients (each scoring above every non-member) that the tail and
    quantile tests find with cfg.power, at the family's corrected level (privacy/stats.py, "memorised share")."""
    ranks = (1, mia_stats.quantile_rank(n_pat, cfg.memorised_quantile))
    out = mia_stats.detectable_memorised(m_pat, n_pat, ranks, cfg.alpha / n_tests, cfg.power)
    return {**out, "assumption": "a memorised patient scores above every non-member in a gated attack",
            "floor_patients": mia_stats.rank_k_needed(m_pat, n_pat, 1, cfg.alpha / n_tests)}


def gated_attacks(attacks: dict) -> list[str]:
    return [n for n in attacks if n.split(".")[-1] in RELEASED_IMAGE_ATTACKS]


def _quantile_test(patient: dict) -> dict | None:
    if "members_above_quantile" not in patient:
        return None
    return {"rank": patient["quantile_rank"], "members_above": patient["members_above_quantile"],
            "quantile": patient["quantile"]}


def add_patient_tests(attacks: dict, cfg: PrivacyConfig) -> int:
    """Adds the corrected per-patient tests to every attack; the family is the attacks on released images (AUC and
    tail each, plus the memorised-share quantile test where the summary has it). Returns the family's size."""
    family = gated_attacks(attacks)
    n_tests = max(1, sum(2 + (_quantile_test(attacks[n]["patient"]) is not None) for n in family))
    for name, a in attacks.items():
        p = a["patient"]
        a["patient"]["tests"] = mia_stats.patient_tests(
            p["auc"], p["members_above_all_nonmembers"], p["n_members"], p["n_nonmembers"], n_tests=n_tests,
            alpha=cfg.alpha, margin=cfg.auc_margin, quantile=_quantile_test(p))
        a["gated"] = name in family
    return n_tests


def strongest(attacks: dict, level: str = "patient", gated_only: bool = True) -> dict:
    """The attack with the strongest EVIDENCE (smallest p-value of its per-patient tests), ties broken by the
    distance of its AUC from 0.5, never by the width of its interval."""
    best, key = None, None
    for name, a in attacks.items():
        if gated_only and not a.get("gated"):
            continue
        t = a["patient"].get("tests") or {}
        auc = a[level]["auc"]
        k = (t.get("evidence", 0.0), abs(auc - 0.5) if np.isfinite(auc) else -1)
        if key is None or k > key:
            best, key = name, k
    if best is None:
        return {}
    a = attacks[best][level]
    out = {"attack": best, "auc": a["auc"], "auc_ci": a["auc_ci"], "tpr_at_1pct_fpr": a["tpr_at_1pct_fpr"],
           "tpr_at_0.1pct_fpr": a["tpr_at_0.1pct_fpr"], "n_members": a["n_members"],
           "n_nonmembers": a["n_nonmembers"]}
    if level == "patient":
        out["tests"] = attacks[best]["patient"]["tests"]
    return out


# ------------------------------------------------------------------------------------------------ entry point

def evaluate_privacy(members: UnitArrays, nonmembers: UnitArrays, synthetic: UnitArrays, bundle, embed_fn,
                     cfg: PrivacyConfig, seed: int, synthetic_rows: np.ndarray | None = None,
                     synthetic_copy_rows: dict | None = None) -> PrivacyResult:
    """Run every attack and memorisation check; see the module docstring for who is who. Numbers only: the
    report's privacy sections are drawn from the result (report/privacy_sections.py, ``privacy_sections``).

    Args:
      members / nonmembers: real train / holdout units (patient-disjoint). synthetic: the set to be released.
      bundle: models.bundle.ModelBundle or None (model attacks are then reported as skipped).
      embed_fn: images [N, H, W, K] -> features [N, D] from an encoder that never saw the members, or None.
      synthetic_rows: the synthetic set's pixel rows already through knn.Projection (a large set streamed through
        the projection chunk by chunk, bench/privacy.py); synthetic.images is then not read (needs no embed_fn).
      synthetic_copy_rows: with synthetic_rows, the set's rows of the transformed-copy test (privacy/copies.py
        ``query_rows``, streamed the same way).
    Returns:
      a PrivacyResult (results.py): its JSON fields, the near-copy mask of the synthetic set and the per-candidate
      evidence the report's figures draw.
    """
    from vugan.components.evaluator.privacy.memorisation import memorisation_report

    if not cfg.enabled:
        return PrivacyResult(enabled=False)
    if len(members) == 0 or len(nonmembers) == 0 or len(synthetic) == 0 or (
            synthetic_rows is not None and len(synthetic_rows) != len(synthetic)):
        raise ValueError(f"privacy needs members, non-members and synthetic units; got {len(members)}, "
                         f"{len(nonmembers)}, {len(synthetic)}")
    t0 = time.perf_counter()
    pool, ref = split_reference(nonmembers.patients, cfg.reference_fraction, seed)
    mi, ni_pool = select_candidates(members.patients, nonmembers.patients[pool], cfg.max_query_patients, seed)
    ni = pool[ni_pool]
    labels = np.r_[np.ones(len(mi), int), np.zeros(len(ni), int)]
    groups = np.concatenate([members.patients[mi], nonmembers.patients[ni]]).astype(str)
    class_ids = np.concatenate([members.class_ids[mi], nonmembers.class_ids[ni]]).astype(np.int32)
    # Shuffle so that ties (e.g. many zero density counts) are not broken in favour of the members listed first.
    order = np.random.default_rng(seed + 2).permutation(len(labels))
    labels, groups, class_ids = labels[order], groups[order], class_ids[order]

    def candidates_of(m_rows: np.ndarray, n_rows: np.ndarray) -> np.ndarray:
        return np.concatenate([m_rows[mi], n_rows[ni]])[order]

    # Per space: members, non-members and synthetic rows, each real unit projected (or embedded) once.
    proj = knn.Projection(int(np.prod(members.images.shape[1:])), cfg.knn_dims)
    if synthetic_rows is not None and embed_fn is not None:
        raise ValueError("synthetic_rows replaces the synthetic images only without an encoder")
    syn_rows = proj(synthetic.images) if synthetic_rows is None else np.asarray(synthetic_rows, np.float32)
    spaces = {"pixel": (proj(members.images), proj(nonmembers.images), syn_rows)}
    skipped: dict[str, str] = {}
    if cfg.invariant_space and synthetic_rows is None:
        spaces["invariant"] = tuple(invariant_features(x.images) for x in (members, nonmembers, synthetic))
    elif cfg.invariant_space:
        skipped["invariant space"] = "the synthetic set was given as projected rows only"
    if embed_fn is not None:
        spaces["embedding"] = tuple(np.asarray(embed_fn(x), np.float32)
                                    for x in (members.images, nonmembers.images, synthetic.images))
    else:
        skipped["embedding space"] = "no encoder given"
    phase: dict[str, float] = {"setup_and_embedding": round(time.perf_counter() - t0, 3)}

    scores, used, timings, raw = {}, {}, {}, {}
    tick = time.perf_counter()
    for space, (m_rows, n_rows, s_rows) in spaces.items():
        t = time.perf_counter()
        cand = candidates_of(m_rows, n_rows)
        r = released_image_scores(cand, s_rows, n_rows[ref], cfg, seed)
        sec = (time.perf_counter() - t) / len(cand)
        for name, v in r["scores"].items():
            if space == "invariant" and name not in INVARIANT_ATTACKS:
                continue  # one attack there keeps the family (and so its Bonferroni price) small
            scores[f"{space}.{name}"], used[f"{space}.{name}"], timings[f"{space}.{name}"] = v, np.arange(len(v)), sec
        raw[space] = r
    if not len(ref):
        skipped["domias"] = "no reference patients (the holdout has fewer than two patients)"
    if bundle is None:
        for name in MODEL_ATTACKS:
            skipped[name] = "no model given (the synthetic set is judged by its images alone)"
    else:
        images = candidates_of(members.images, nonmembers.images)
        _model_attacks(bundle, images, class_ids, labels, groups, cfg, seed, timings, skipped, scores, used)
        del images
    phase["attacks"] = round(time.perf_counter() - tick, 3)

    tick = time.perf_counter()
    attacks = {}
    gated = gated_attacks(scores)
    for name, s in scores.items():
        idx = used[name]
        base = name.split(".")[-1]
        family, what, direction = ATTACKS[base]
        summary = mia_stats.attack_summary(s, labels[idx], groups[idx], aggregate=cfg.patient_aggregate,
                                           n_boot=cfg.bootstrap, seed=seed, top_n_fraction=cfg.top_n_fraction,
                                           quantile=cfg.memorised_quantile if name in gated else None)
        attacks[name] = {"family": family, "score": what, "direction": direction,
                         "space": name.split(".")[0] if "." in name else "model",
                         "seconds_per_1000_queries": 1000 * timings[name], **summary}
    n_tests = add_patient_tests(attacks, cfg)
    phase["statistics"] = round(time.perf_counter() - tick, 3)

    tick = time.perf_counter()
    memo, memo_arrays = {}, {}
    for space, (m_rows, n_rows, s_rows) in spaces.items():
        if space == "invariant":
            continue  # an attack space only: the copy check keeps its own distances (memorisation.py)
        memo[space], memo_arrays[space] = memorisation_report(
            m_rows, members.patients, n_rows, nonmembers.patients, s_rows, cfg=cfg, seed=seed)
    phase["memorisation"] = round(time.perf_counter() - tick, 3)

    tick = time.perf_counter()
    copies, copy_mask = _transformed_copies(members, nonmembers, synthetic, synthetic_rows, synthetic_copy_rows,
                                            cfg, seed)
    phase["transformed_copies"] = round(time.perf_counter() - tick, 3)

    m_pat, n_pat = (len(np.unique(groups[labels == c])) for c in (1, 0))
    metrics = {
        "enabled": True,
        "patient_aggregate": cfg.patient_aggregate,
        "distance": proj.describe() + " (pixel space); faiss-cpu exact k-NN (components/evaluator/knn.py)",
        "candidates": {"member_units": int(labels.sum()), "nonmember_units": int(len(labels) - labels.sum()),
                       "member_patients": int(m_pat), "nonmember_patients": int(n_pat),
                       "reference_patients": int(len(np.unique(nonmembers.patients[ref]))),
                       "reference_units": int(len(ref)), "synthetic_units": int(len(synthetic)),
                       "selection": "every member and non-member patient (at most privacy.max_query_patients a "
                                    "side), whole patients; the DOMIAS reference patients are held-out patients that "
                                    "are never candidates"},
        "attacks": attacks,
        "family": {"attacks": gated_attacks(attacks), "tests": n_tests, "alpha": cfg.alpha,
                   "margin": cfg.auc_margin, "correction": "Bonferroni over three tests (AUC, low-FPR tail, members "
                                                           "above the non-members' quantile) per attack on released "
                                                           "images"},
        "detectable": {
            "auc": mia_stats.detectable_auc(m_pat, n_pat, n_tests=n_tests, alpha=cfg.alpha, margin=cfg.auc_margin,
                                            power=cfg.power),
            "power": cfg.power,
            "tail_members": mia_stats.tail_k_needed(m_pat, n_pat, cfg.alpha / n_tests),
            "memorised": memorised_detectable(m_pat, n_pat, n_tests, cfg)},
        "coverage": coverage(members.patients, groups[labels == 1]),
        "skipped": skipped,
        "strongest": {"unit": strongest(attacks, "unit"), "patient": strongest(attacks, "patient"),
                      "model_worst_case": strongest({k: v for k, v in attacks.items()
                                                     if k in MODEL_ATTACKS}, "patient", gated_only=False)},
        "density_radius": {space: raw[space]["radius"] for space in raw},
        "memorisation": memo,
        "seconds": phase,
        "copies": copies,
    }
    phase["total"] = round(time.perf_counter() - t0, 3)
    evidence = PrivacyEvidence(scores=scores, used=used, labels=labels, groups=groups, memorisation=memo_arrays)
    return PrivacyResult(**jsonable(metrics), copy_mask=memo_arrays["pixel"]["copies"] | copy_mask,
                         evidence=evidence)


def _transformed_copies(members, nonmembers, synthetic, synthetic_rows, synthetic_copy_rows, cfg, seed):
    """(metrics, mask) of the copy test that sees through shifts, reversal, flips, remaps and pasted slices."""
    from vugan.components.evaluator.privacy.copies import transformed_copy_report

    if synthetic_rows is not None and synthetic_copy_rows is None:
        raise ValueError("synthetic_rows needs synthetic_copy_rows too (privacy/copies.py query_rows), or the "
                         "transformed-copy test could not run")
    return transformed_copy_report(members.images, members.patients, nonmembers.images, nonmembers.patients,
                                   None if synthetic_rows is not None else synthetic.images, cfg=cfg, seed=seed,
                                   syn_rows=synthetic_copy_rows)
