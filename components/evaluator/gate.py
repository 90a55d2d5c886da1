"""The release gate: the typed evaluation (results.py) in, a verdict a data-protection reviewer can read out.

Privacy has three outcomes, each with its reason:
  * LEAK FOUND: a training patient has a near-copy in the set (zero tolerance by default), also one hidden by a
    shift, slice reversal, flip, monotone intensity remap or pasted slice (privacy/copies.py), or an attack's evidence
    excludes chance: its per-patient AUC bound, corrected for every attack tried, lies beyond 0.5 +/- margin (far
    below 0.5 counts too: a biased split, or an attack an adversary flips), or more members score above every
    non-member than chance allows, or the C_T data-copying score is below its threshold;
  * NO LEAK FOUND AT THE DETECTABLE SIZE: nothing above, and the cohort was large enough that an attack with
    per-patient AUC >= the stated size would have been found with the stated power;
  * NOT ENOUGH PATIENTS TO TELL: nothing found, but that detectable AUC is above privacy.max_detectable_auc.
Releasing needs the second, or the third together with a differential-privacy guarantee per patient with
epsilon <= privacy.max_dp_epsilon (said in so many words), plus the quality rules: the C2ST AUC overall and per
class (an effect size with one meaning at every cohort size), TSTR against TRTR, and the FD-VU / FRD ratio rules
when configured (off by default: reported, their meaning drifts with the number of patients).
"""
from __future__ import annotations

import numpy as np

from vugan.components.evaluator.privacy.spec import PrivacyConfig
from vugan.components.evaluator.results import Evaluation, PrivacyResult
from vugan.components.synthesize.release.verdict import Verdict  # the one verdict type (the release's home)

LEAK, NO_LEAK, TOO_FEW = "leak found", "no leak found at the detectable size", "not enough patients to tell"




def _fmt(x, nd=3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def privacy_findings(priv: PrivacyResult, cfg: PrivacyConfig) -> tuple[list[str], list[str]]:
    """(findings that mean a leak, notes) from the privacy result."""
    findings, notes = [], []
    pix = (priv.memorisation or {}).get("pixel") or {}
    if "copied_patients" not in pix:
        findings.append("copy check missing (pixel-space memorisation not computed)")
    else:
        n_pat, n_units = pix["copied_patients"], pix["n_copies"]
        text = (f"{n_pat} of {pix['train_patients']} training patients have a near-copy in the set ({n_units} of "
                f"{pix['n_synthetic']} synthetic units within the copy radius {_fmt(pix['copy_radius'], 2)}: "
                f"{pix['copy_rule']}); allowed: {cfg.max_copied_patients}")
        (findings if n_pat > cfg.max_copied_patients else notes).append(text)
    transformed_copy_findings(priv, cfg, findings, notes)
    for name, a in (priv.attacks or {}).items():
        if not a.get("gated"):
            continue
        t, p = a["patient"]["tests"], a["patient"]
        lo, hi = t["auc_bounds_corrected"]
        if t["leak_auc"]:
            findings.append(f"attack {name}: per-patient AUC {_fmt(p['auc'])}, corrected {100 * t['corrected_level']:.2f}% "
                            f"bound {_fmt(lo)} > 0.5 + {cfg.auc_margin:g} ({p['n_members']} vs {p['n_nonmembers']} patients)")
        if t["flipped_auc"]:
            findings.append(f"attack {name}: per-patient AUC {_fmt(p['auc'])}, corrected bound {_fmt(hi)} < 0.5 - "
                            f"{cfg.auc_margin:g}: far below chance, so the split is biased or the flipped attack "
                            "finds the members")
        if t["leak_tail"]:
            findings.append(f"attack {name}: {t['members_above_all_nonmembers']} member patients score above every "
                            f"non-member (p = {t['p_tail']:.2g} < {cfg.alpha / priv.family['tests']:.2g})")
        if t.get("leak_quantile"):
            findings.append(memorised_finding(name, t, priv.family['tests'], cfg))
    notes.extend(coverage_notes(priv))
    for space, m in (priv.memorisation or {}).items():
        ct = m.get("ct")
        if ct is None or not np.isfinite(ct):
            notes.append(f"C_T ({space}) not computable: fewer than {cfg.ct_min_cell} held-out units per cell")
        elif ct < cfg.min_ct:
            findings.append(f"C_T data-copying score ({space}) {ct:.2f} < {cfg.min_ct:g}")
        else:
            notes.append(f"C_T ({space}) {ct:.2f} >= {cfg.min_ct:g}")
    return findings, notes


def memorised_finding(name: str, t: dict, n_tests: int, cfg: PrivacyConfig) -> str:
    """The FAIL line of the memorised-share test (privacy/stats.py)."""
    return (f"attack {name}: {t['members_above_quantile']} member patients score above the "
            f"{100 * t['quantile']:g}th percentile of the non-members (at most {t['quantile_rank'] - 1} non-members "
            f"above it; p = {t['p_quantile']:.2g} < {cfg.alpha / n_tests:.2g}): a share of the patients is memorised")


def memorised_clause(det: dict, cfg: PrivacyConfig) -> str:
    """', and a generator that memorised 8% of the member patients ...' for the PASS line (empty when unknown)."""
    mem = det.get("memorised") or {}
    if not mem:
        return ""
    if mem.get("share") is None:
        return "; no share of memorised patients would have been found with that power"
    return (f"; and a generator that memorised {100 * mem['share']:.0f}% of the member patients "
            f"({mem['patients']} patients, each scoring above every non-member) would have been found with "
            f"{100 * cfg.power:.0f}% power")


def coverage_notes(priv: PrivacyResult) -> list[str]:
    """How many training patients the attacks judged, and that the copy check judged all of them."""
    cov = priv.coverage or {}
    if not cov:
        return []
    return [f"the attacks judged {cov['attacked_patients']} of {cov['train_patients']} training patients "
            f"({100 * cov['attacked_share']:.0f}%); the copy check judged all {cov['copy_checked_patients']}"]


def transformed_copy_findings(priv: PrivacyResult, cfg: PrivacyConfig, findings: list, notes: list) -> None:
    """The transform-invariant copy test (privacy/copies.py): a training patient copied under a shift, reversal,
    flip, monotone remap, blur or as a pasted slice is a leak; the finding names the transform family matched."""
    c = priv.copies
    if not c or "copied_patients" not in c:
        findings.append("transformed-copy check missing (privacy/copies.py not run)")
        return
    fp = c.get("false_positive_rate_per_patient") or {}
    ci = fp.get("ci95") or [None, None]
    calib = (f"fresh patients flagged {fp.get('flagged')} of {fp.get('fresh_patients')} (cross-fitted, 95% CI "
             f"{_fmt(ci[0], 2)} to {_fmt(ci[1], 2)})")
    if c["copied_patients"] > cfg.max_copied_patients:
        seen = [f"{m['units']} unit(s) by {', '.join(m['transforms'])}" for m in c.get("matches", [])[:3]]
        findings.append(f"{c['copied_patients']} of {c['train_patients']} training patients have a copy under a "
                        f"small transform ({c['n_copies']} of {c['n_synthetic']} synthetic units; "
                        f"{'; '.join(seen)}); allowed: {cfg.max_copied_patients}; {calib}")
    else:
        notes.append(f"no training patient has a copy under shifts, reversal, flips, monotone remaps, blur or a pasted "
                     f"slice ({c['copied_patients']} of {c['train_patients']}); {calib}")


def privacy_outcome(priv: PrivacyResult, cfg: PrivacyConfig) -> tuple[str, list[str], str]:
    """(outcome, reasons, one-line headline) of the privacy part."""
    findings, notes = privacy_findings(priv, cfg)
    det = priv.detectable or {}
    c = priv.candidates or {}
    best = (priv.strongest or {}).get("patient") or {}
    auc_det = det.get("auc")
    size = (f"{c.get('member_patients', 0)} member vs {c.get('nonmember_patients', 0)} non-member patients, "
            f"{(priv.family or {}).get('tests', 0)} tests at family-wise alpha {cfg.alpha:g}")
    strongest = (f"strongest attack per patient: {best['attack']}, AUC {_fmt(best['auc'])} "
                 f"[95% CI {_fmt(best['auc_ci'][0])}, {_fmt(best['auc_ci'][1])}], TPR {_fmt(best['tpr_at_1pct_fpr'], 2)} "
                 f"at 1% FPR" if best else "no attack on released images ran")
    reasons = [f"FAIL: {f}" for f in findings] + [f"NOTE: {n}" for n in notes] + [f"NOTE: {strongest}"]
    if findings:
        return LEAK, reasons, f"{LEAK}: {findings[0]}"
    if auc_det is None or not np.isfinite(auc_det) or auc_det > cfg.max_detectable_auc:
        reasons.append(f"FAIL: {TOO_FEW}: only an attack with per-patient AUC >= {_fmt(auc_det)} would have been "
                       f"found with {100 * cfg.power:.0f}% power ({size}); the gate needs <= "
                       f"{cfg.max_detectable_auc:g}")
        return TOO_FEW, reasons, (f"{TOO_FEW}: an attack would need per-patient AUC >= {_fmt(auc_det, 2)} to be "
                                  f"found with {100 * cfg.power:.0f}% power")
    reasons.append(f"PASS: {NO_LEAK}: an attack with per-patient AUC >= {_fmt(auc_det)} would have been found with "
                   f"{100 * cfg.power:.0f}% power ({size}); so would {det.get('tail_members')} member patients "
                   f"scoring above every non-member{memorised_clause(det, cfg)}")
    return NO_LEAK, reasons, (f"{NO_LEAK}: an attack with per-patient AUC >= {_fmt(auc_det, 2)} would have been "
                              f"found with {100 * cfg.power:.0f}% power")


def _dp_release(dp: dict, cfg: PrivacyConfig) -> tuple[bool, str]:
    if not dp or not dp.get("enabled"):
        return False, "the model has no differential-privacy guarantee"
    eps = dp.get("epsilon")
    if dp.get("unit") != "patient":
        return False, f"the DP guarantee (epsilon {_fmt(eps, 2)}) is per {dp.get('unit')}, not per patient"
    if cfg.max_dp_epsilon <= 0 or eps is None or eps > cfg.max_dp_epsilon:
        return False, (f"DP epsilon {_fmt(eps, 2)} per patient is not within privacy.max_dp_epsilon = "
                       f"{cfg.max_dp_epsilon:g}")
    return True, (f"the cohort is too small for attacks to tell, and the model is differentially private with "
                  f"epsilon = {eps:.2f} (delta {dp.get('delta')}) per patient, within the configured "
                  f"{cfg.max_dp_epsilon:g}: any membership attack on one patient is bounded by that guarantee")


def quality_rules(evaluation: Evaluation, cfg: PrivacyConfig) -> tuple[bool, list[str]]:
    """The fidelity and utility rules; each reads the metric its privacy.*_key names (results.GATE_METRICS)."""
    ok, reasons = True, []
    for key, thr, op, label in [(cfg.fid_ratio_key, cfg.max_fid_ratio, "<=", "FD-VU ratio against holdout patients"),
                                (cfg.frd_ratio_key, cfg.max_frd_ratio, "<=", "FRD ratio against holdout patients"),
                                (cfg.tstr_key, cfg.min_tstr_balanced_accuracy, ">=", "TSTR balanced accuracy")]:
        if thr <= 0:
            reasons.append(f"OFF: {label} not checked (threshold 0){_reported(evaluation, key)}")
            continue
        v = evaluation.reading(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
            ok = False
            reasons.append(f"FAIL: quality metric {key} missing")
            continue
        good = v <= thr if op == "<=" else v >= thr
        ok &= good
        reasons.append(rule_line(good, f"{label} ({key})", v, op, thr))
    for rules in (two_sample_rules, tstr_against_trtr):
        good, lines = rules(evaluation, cfg)
        ok &= good
        reasons += lines
    return ok, reasons + comparator_notes(evaluation)


def _reported(evaluation: Evaluation, key: str) -> str:
    """'; reported: 2.000' for a rule switched off, so the number the team selects on stays in the verdict."""
    v = evaluation.reading(key)
    return f"; reported: {v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else ""


def two_sample_rules(evaluation: Evaluation, cfg: PrivacyConfig) -> tuple[bool, list[str]]:
    """The fidelity rule with one meaning at every cohort size: the C2ST AUC (quality/two_sample.py), overall and
    for each class the real data has, within privacy.max_c2st_auc; a class the synthetic set lacks fails."""
    label = "C2ST AUC synthetic vs real (vu space)"
    if cfg.max_c2st_auc <= 0:
        return True, [f"OFF: {label} not checked (threshold 0)"]
    ts = (evaluation.fidelity.two_sample if evaluation.fidelity is not None else None) or {}
    if not ts.get("overall"):
        return False, ["FAIL: quality metric fidelity.two_sample missing"]
    ok, lines = True, []
    for name, r in [("overall", ts["overall"]), *((f"class {c}", r) for c, r in (ts.get("per_class") or {}).items())]:
        if r.get("missing"):
            ok = False
            lines.append(f"FAIL: {label}, {name}: the synthetic set has no unit of this class (the real reference "
                         f"has {r.get('real_units')})")
        elif r.get("auc") is None:  # too few units to tell is no pass: on 10-patient draws a swap hid there
            ok = False
            lines.append(f"FAIL: {label}, {name}: too few units to judge ({r.get('not_judged', 'no AUC')}; "
                         f"{r.get('real_units')} real, {r.get('synthetic_units')} synthetic units)")
        else:
            good = r["auc"] <= cfg.max_c2st_auc
            ok &= good
            ci = r.get("auc_ci") or [None, None]
            lines.append(rule_line(good, f"{label}, {name} [95% CI {_fmt(ci[0])}, {_fmt(ci[1])}]", r["auc"], "<=",
                                   cfg.max_c2st_auc))
    return ok, lines


def tstr_against_trtr(evaluation: Evaluation, cfg: PrivacyConfig) -> tuple[bool, list[str]]:
    """TSTR judged against TRTR (the same classifier trained on real train units, same test split): the share
    of the real data's balanced accuracy that training on the synthetic set keeps, at least privacy.min_tstr_to_trtr."""
    label = "TSTR / TRTR balanced accuracy"
    if cfg.min_tstr_to_trtr <= 0:
        return True, [f"OFF: {label} not checked (threshold 0)"]
    u = evaluation.utility
    tstr, trtr = (None, None) if u is None else (u.tstr_balanced_accuracy, u.trtr_balanced_accuracy)
    if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in (tstr, trtr)) or trtr <= 0:
        return False, ["FAIL: quality metric utility.tstr_balanced_accuracy or utility.trtr_balanced_accuracy missing"]
    share = tstr / trtr
    good = share >= cfg.min_tstr_to_trtr
    return good, [rule_line(good, f"{label} (TSTR {tstr:.3f}, TRTR {trtr:.3f})", share, ">=", cfg.min_tstr_to_trtr)]


def comparator_notes(evaluation: Evaluation) -> list[str]:
    """Fair selection never drops a patient silently: how many real patients each fair comparison of the headline
    space left out (the synthetic set had too few units of one of their classes to mirror them)."""
    f = evaluation.fidelity
    space = ((f.embeddings or {}).get(f.fid_ratio_embedding) or {}) if f is not None else {}
    notes = []
    for reference, block in (("holdout", space.get("against_holdout") or {}), ("train", space)):
        used = block.get("comparator") or {}
        if used.get("real_patients_left_out"):
            notes.append(f"NOTE: the FD ratios against {reference} compare {used['real_patients_compared']} of "
                         f"{used['real_patients_available']} real patients: {used['real_patients_left_out']} left "
                         f"out because the synthetic set has too few units of one of their classes to mirror them")
    return notes


def rule_line(good: bool, what: str, value: float, op: str, limit: float) -> str:
    """'PASS: X 2.000 <= 5.000' reads as the rule that held; a failure says the value, which way it missed and the
    rule, so that 'FAIL: X 60.060 <= 5.000' can never be read as if it held."""
    if good:
        return f"PASS: {what} {value:.3f} {op} {limit:.3f}"
    side = "above the limit" if op == "<=" else "below the limit"
    return f"FAIL: {what} {value:.3f} is {side} {limit:.3f} (rule: {op} {limit:.3f})"


def release_gate(evaluation: Evaluation, cfg: PrivacyConfig) -> Verdict:
    """Never raises on missing metrics: a missing privacy evaluation is a failed verdict naming it (a metrics.json
    read back: ``Evaluation.from_dict``)."""
    priv = evaluation.privacy
    if priv is None or not priv.enabled:
        return Verdict(False, "privacy not evaluated",
                       ["FAIL: privacy metrics missing (privacy evaluation not run or turned off)",
                        *canary_rule(evaluation)[1]], "privacy not evaluated")
    outcome, reasons, headline = privacy_outcome(priv, cfg)
    privacy_ok = outcome == NO_LEAK
    if outcome == TOO_FEW:
        privacy_ok, why = _dp_release(priv.dp or {}, cfg)
        reasons.append(f"{'PASS' if privacy_ok else 'FAIL'}: release under differential privacy: {why}")
    quality_ok, q_reasons = quality_rules(evaluation, cfg)
    canary_ok, c_reasons = canary_rule(evaluation)
    return Verdict(bool(privacy_ok and quality_ok and canary_ok), outcome, reasons + q_reasons + c_reasons, headline)


def canary_rule(evaluation: Evaluation) -> tuple[bool, list[str]]:
    """The canary audit's line (privacy/canary.py): a NOTE, or a FAIL when its empirical epsilon lower bound
    exceeds the accounted epsilon (the accounting or the training is then wrong). No audit: no line."""
    canary = evaluation.canary
    if canary is None or not canary.enabled:
        return True, []
    from vugan.components.evaluator.privacy.canary import canary_statement

    holds, line = canary_statement(canary.to_dict())
    return holds, [f"{'NOTE' if holds else 'FAIL'}: {line}"]
