"""Report sections of the privacy evaluation: plain-language summary, attack table, ROC curves, distance histograms,
closest synthetic-training pairs and the reference study's numbers as context."""
from __future__ import annotations

import html

import numpy as np

from vugan.components.evaluator.privacy import stats as mia_stats
from vugan.components.evaluator.report import privacy_figures as pf
from vugan.components.evaluator.report.types import Figure, ReportSection
from vugan.components.evaluator.results import PrivacyResult

# Reference study (Sun et al. 2023, tcoroller/pGAN notebooks): share of training VUs among the top 333 of 1,000
# candidates, training vs same-study held-out (chance 0.5). See docs reference-study.md section 3.3.
REFERENCE_TOP_N = {"pixel, attack 1 (nearest / median)": 0.53, "pixel, attack 2 (density)": 0.54,
                   "UMAP-32, attack 1": 0.53, "UMAP-32, attack 2": 0.53}


def _fmt(x, nd=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"


def attack_table(attacks: dict, skipped: dict) -> str:
    head = ("<tr><th>attack</th><th>family</th><th>space</th><th>level</th><th>AUC</th><th>95% CI</th>"
            "<th>TPR @ 1% FPR</th><th>TPR @ 0.1% FPR</th><th>members / non-members</th>"
            "<th>top-N member share (N; chance)</th><th>s / 1000 queries</th></tr>")
    rows = []
    for name, a in attacks.items():
        for level in ("unit", "patient"):
            r = a[level]
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{html.escape(a['family'])}</td><td>{a['space']}</td>"
                f"<td>{level}{' (' + a['aggregate'] + ')' if level == 'patient' else ''}</td>"
                f"<td>{_fmt(r['auc'])}</td><td>[{_fmt(r['auc_ci'][0])}, {_fmt(r['auc_ci'][1])}]</td>"
                f"<td>{_fmt(r['tpr_at_1pct_fpr'])}</td><td>{_fmt(r['tpr_at_0.1pct_fpr'])}</td>"
                f"<td>{r['n_members']} / {r['n_nonmembers']}</td>"
                f"<td>{_fmt(r['top_n_member_share'], 2)} ({r['top_n']}; {_fmt(r['chance_top_n'], 2)})</td>"
                f"<td>{_fmt(a['seconds_per_1000_queries'], 2)}</td></tr>")
    skip = "".join(f"<li>{html.escape(k)}: skipped, {html.escape(v)}</li>" for k, v in skipped.items())
    return (f"<table class='privacy-attacks'>{head}{''.join(rows)}</table>"
            + (f"<p>Not run:</p><ul>{skip}</ul>" if skip else ""))


def memorisation_table(memo: dict) -> str:
    keys = [("closer_to_train_share", "share of synthetic units closer to a training than a held-out unit (0.5 = no "
             "memorisation)"), ("dcr_train_median", "median distance synthetic -> nearest training unit"),
            ("dcr_holdout_median", "median distance synthetic -> nearest held-out unit"),
            ("holdout_to_train_median", "median distance held-out -> nearest training unit"),
            ("dcr_ratio_median", "median per-unit ratio (train / held-out nearest distance, equal sizes)"),
            ("copy_radius", "copy radius"), ("copy_fraction", "share flagged as copies"),
            ("ct", "C_T data-copying z (<< 0 = copying, ~0 = fine, > 0 = underfit)"),
            ("ct_cells_kept", "C_T cells used")]
    spaces = list(memo)
    head = "<tr><th>quantity</th>" + "".join(f"<th>{s}</th>" for s in spaces) + "</tr>"
    rows = "".join(f"<tr><td>{label}</td>" + "".join(
        f"<td>{_fmt(memo[s].get(k)) if not isinstance(memo[s].get(k), int) else memo[s].get(k)}</td>"
        for s in spaces) + "</tr>" for k, label in keys)
    notes = "".join(f"<li>{s}: {html.escape(memo[s]['closer_to_train_correction'])}</li>" for s in spaces)
    return f"<table class='privacy-memorisation'>{head}{rows}</table><ul>{notes}</ul>"


def reference_figure(attacks: dict) -> bytes:
    """Bar chart: the reference study's top-N member shares beside ours (chance line at 0.5)."""
    plt = pf._plt()
    ours = {f"ours: {n}": a["unit"]["top_n_member_share"] for n, a in attacks.items()
            if a["family"].startswith("reference")}
    labels = [f"reference: {k}" for k in REFERENCE_TOP_N] + list(ours)
    values = list(REFERENCE_TOP_N.values()) + list(ours.values())
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1))
    ax.barh(range(len(values)), values, color=["#999"] * len(REFERENCE_TOP_N) + ["#2a6"] * len(ours))
    ax.axvline(0.5, color="k", ls="--", lw=0.8)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of training units among the top N candidates")
    return pf._png(fig)


def memorised_sentence(det: dict) -> str:
    mem = det.get("memorised") or {}
    if not mem or mem.get("share") is None:
        return ""
    return (f", and so would a generator that memorised {100 * mem['share']:.0f}% of the training patients "
            f"({mem['patients']} patients, each scoring above every non-member)")


def coverage_sentence(cov: dict) -> str:
    if not cov:
        return ""
    return (f" The attacks judged {cov['attacked_patients']} of {cov['train_patients']} training patients "
            f"({100 * cov['attacked_share']:.0f}%); the copy check judged all of them.")


def summary_html(priv: PrivacyResult) -> str:
    c, st = priv.candidates, priv.strongest
    parts = [
        f"<p><b>What was tried.</b> We played the attacker: given {c['member_units']} image units of "
        f"{c['member_patients']} patients whose scans trained the generator and {c['nonmember_units']} units of "
        f"{c['nonmember_patients']} patients it never saw ({c['reference_patients']} further unseen patients serve "
        "as DOMIAS's reference), can anyone tell which patients were in the training "
        f"data by looking at the {c['synthetic_units']} released synthetic units (or, worse, at the model)? "
        f"{len(priv.attacks)} attacks were run, including the two of the reference study. Each is scored by "
        "its AUC: 0.5 means guessing, 1.0 means every training patient is found. Results are given per image unit "
        f"and per patient (patient score = {priv.patient_aggregate} over the patient's units).</p>"]
    s = st.get("patient")
    if s:
        t = s.get("tests") or {}
        lo, hi = t.get("auc_bounds_corrected", [None, None])
        parts.append(f"<p><b>Strongest attack per patient</b> (the one with the strongest evidence): "
                     f"{html.escape(s['attack'])}, AUC {_fmt(s['auc'])} (95% CI {_fmt(s['auc_ci'][0])} to "
                     f"{_fmt(s['auc_ci'][1])}; corrected for the {priv.family['tests']} tests tried: "
                     f"{_fmt(lo)} to {_fmt(hi)}); it finds {_fmt(s['tpr_at_1pct_fpr'], 2)} of the training patients "
                     f"at a 1% false-positive rate and {_fmt(s['tpr_at_0.1pct_fpr'], 2)} at 0.1%.</p>")
    det = priv.detectable or {}
    parts.append(f"<p><b>What this cohort could detect:</b> an attack with per-patient AUC of at least "
                 f"{_fmt(det.get('auc'))} would have been found with {100 * det.get('power', 0):.0f}% power"
                 f"{html.escape(memorised_sentence(det))}.{html.escape(coverage_sentence(priv.coverage or {}))}</p>")
    w = st.get("model_worst_case")
    if w:
        parts.append(f"<p><b>Worst case with the model</b> (not part of the gate: the discriminator is never "
                     f"released): {html.escape(w['attack'])}, per-patient AUC {_fmt(w['auc'])} (95% CI "
                     f"{_fmt(w['auc_ci'][0])} to {_fmt(w['auc_ci'][1])}).</p>")
    for space, m in priv.memorisation.items():
        parts.append(
            f"<p><b>Copies ({space} space):</b> {m['copied_patients']} of {m['train_patients']} training patients "
            f"have a near-copy ({m['n_copies']} of {m['n_synthetic']} synthetic units): {html.escape(m['copy_rule'])} "
            f"(of a training unit, i.e. within {_fmt(m['copy_radius'], 2)}). "
            f"{100 * m['closer_to_train_share']:.0f}% of synthetic units are closer to the training data than to "
            "equally many held-out patients (50% expected without memorisation); the C_T data-copying score is "
            f"{_fmt(m['ct'], 2)} (strongly negative values, below about -3, mean copying).</p>")
    parts.append(_transformed_copies_line(priv.copies))
    if priv.skipped:
        parts.append("<p><b>Not tried:</b> " + "; ".join(f"{html.escape(k)} ({html.escape(v)})"
                                                         for k, v in priv.skipped.items()) + ".</p>")
    parts.append("<p>These are empirical attacks, not a formal guarantee: a stronger attack than those tried may "
                 "exist. Please look at the closest synthetic-training pairs below.</p>")
    return "".join(parts)


def privacy_sections(priv: PrivacyResult, syn_images: np.ndarray, train_images: np.ndarray,
                     cfg) -> list[ReportSection]:
    """The report's privacy sections, drawn from the attacks' numbers and evidence (privacy/attacks.py).

    Args:
      priv: evaluate_privacy's result (with its evidence). syn_images / train_images: the judged synthetic set and
        the members (the closest-pairs grid shows them). cfg: PrivacyConfig.
    """
    if not priv.enabled:
        return [ReportSection("privacy", "Privacy", "Privacy evaluation turned off (privacy.enabled = false).")]
    ev = priv.evidence
    return build_sections(priv, ev.scores, ev.used, ev.labels, ev.groups, ev.memorisation, syn_images, train_images,
                          cfg)


def build_sections(priv: PrivacyResult, scores, used, labels, groups, memo_arrays, syn_images, train_images, cfg):
    attacks = priv.attacks
    figs = []
    for level in ("unit", "patient"):
        curves = {}
        for name, s in scores.items():
            y, g = labels[used[name]], groups[used[name]]
            if level == "patient":
                s, y, _ = mia_stats.aggregate_by_group(s, y, g, cfg.patient_aggregate)
            curves[name] = (s, y, attacks[name][level]["auc"])
        figs.append(Figure(f"privacy_roc_{level}", f"Membership-inference ROC curves, per {level}",
                           f"Each curve is one attack telling training from held-out {level}s; the dashed diagonal "
                           "is guessing. The right panel zooms on low false-positive rates.",
                           pf.roc_figure(curves, f"per {level}")))
    figs.append(Figure("privacy_reference_topn", "Reference study's readout beside ours",
                       "Share of training units among the top third of candidates ranked by each distance attack; "
                       "grey: the reference study (Sun et al. 2023), green: this run; 0.5 is guessing.",
                       reference_figure(attacks)))
    mem_figs = []
    for space in memo_arrays:
        near = -scores[f"{space}.fbb_nearest"]
        mem_figs.append(Figure(
            f"privacy_hist_candidates_{space}", f"Distance to the nearest synthetic unit ({space})",
            "Training (member) and held-out (non-member) units: overlapping histograms mean the synthetic set "
            "does not sit closer to the training patients.",
            pf.histogram_figure({"members": near[labels == 1], "non-members": near[labels == 0]},
                                f"nearest synthetic distance ({space})", "distance")))
        a = memo_arrays[space]
        mem_figs.append(Figure(
            f"privacy_hist_dcr_{space}", f"Distance to closest record ({space})",
            "Synthetic units' distance to their nearest training and held-out unit, and held-out units' distance "
            "to the nearest training unit (what a new patient looks like); a spike near 0 for synthetic-to-training "
            "would mean copies.",
            pf.histogram_figure({"synthetic -> training": a["syn_train"], "synthetic -> held-out": a["syn_holdout"],
                                 "held-out -> training": a["holdout_train"]}, f"distance to closest record ({space})",
                                "distance")))
    a = memo_arrays["pixel"]
    k = min(cfg.grid_pairs, len(a["syn_train"]))
    # Distinct training units first (each with its closest synthetic unit), so one popular training unit cannot fill
    # the grid; the remaining rows (a collapsed generator) are the next closest pairs.
    order = np.argsort(a["syn_train"], kind="stable")
    _, first = np.unique(a["syn_train_index"][order], return_index=True)
    distinct = order[np.sort(first)]
    closest = np.r_[distinct, order[~np.isin(order, distinct)]][:k]
    mem_figs.append(Figure(
        "privacy_closest_pairs", "Closest synthetic-training pairs (pixel space)",
        f"The {len(closest)} closest synthetic-training pairs (distinct training units first), centre slice, with "
        "their difference. A reviewer should check these do not show the same patient.",
        pf.pair_grid_figure(syn_images[closest], train_images[a["syn_train_index"][closest]],
                            a["syn_train"][closest], "closest synthetic-training pairs")))
    explanation = summary_html(priv)
    body = attack_table(attacks, priv.skipped) + (
        "<p>Reference study at N = 333 of 1,000 candidates (train vs same-study held-out, chance 0.5): "
        + ", ".join(f"{k} {v:.2f}" for k, v in REFERENCE_TOP_N.items()) + ".</p>")
    return [ReportSection("privacy", "Privacy: membership inference", explanation, body, tuple(figs)),
            ReportSection("privacy_memorisation", "Privacy: memorisation and copies",
                          "Does the generator reproduce training units? Distances to the closest real record, the "
                          "share of synthetic units nearer to training than held-out data, the C_T data-copying "
                          "test (Meehan et al. 2020) and the closest pairs for visual inspection.",
                          memorisation_table(priv.memorisation), tuple(mem_figs))]


def dp_section(dp: dict | None, strongest: dict) -> ReportSection:
    """The formal guarantee of the model (model_info.json "dp", written by the trainer) beside the empirical
    attacks' strongest AUCs, so the two kinds of privacy evidence are read together."""
    dp = dp or {}
    rows = [("Strongest attack per unit (AUC)", _fmt((strongest.get("unit") or {}).get("auc"))),
            ("Strongest attack per patient (AUC)", _fmt((strongest.get("patient") or {}).get("auc")))]
    if not dp.get("enabled"):
        text = ("<p>The model was <b>not</b> trained with differential privacy: the attacks above are the only "
                "privacy evidence, and they bound only the attacks tried.</p>")
        rows.insert(0, ("Differential privacy", "off"))
    else:
        eps = dp.get("epsilon")
        rows[:0] = [("epsilon (" + str(dp.get("accountant", "?")).upper() + ")", _fmt(eps, 2)),
                    ("delta", f"{dp['delta']:.1e}" if dp.get("delta") is not None else "n/a"),
                    ("privacy unit", html.escape(str(dp.get("unit")))),
                    ("sampling", html.escape(str(dp.get("sampling")))),
                    ("DP-SGD steps", str(dp.get("steps"))),
                    ("stopped at target epsilon", "yes" if dp.get("stopped_at_target_epsilon") else "no")]
        pretraining = f"{html.escape(dp['pretraining_note'])} " if dp.get("pretraining_note") else ""
        text = (f"<p><b>Formal guarantee.</b> {html.escape(str(dp.get('statement', '')))} {pretraining}"
                f"{html.escape(str(dp.get('class_prior_note', '')))}</p><p>A guarantee of (epsilon, delta)-DP "
                "caps the advantage of ANY membership attack on one privacy unit, including attacks not tried here; "
                "the AUCs beside it are what the attacks tried actually achieved. "
                f"{html.escape(str(dp.get('diagnostics_note', '')))}</p>")
    table = ("<table><tr><th>item</th><th>value</th></tr>"
             + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in rows) + "</table>")
    return ReportSection("privacy_dp", "Privacy: differential-privacy guarantee beside the attacks", text, table)


def canary_section(canary) -> ReportSection:
    """The canary audit (privacy/canary.py): how strongly each attack singles out public phantom patients the
    model was trained on against ones it was not, and for a DP model the empirical epsilon lower bound."""
    eps, pat = canary.epsilon or {}, canary.patients or {}
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(a.get('auc'))}</td><td>[{_fmt((a.get('auc_ci') or [None])[0])}, "
        f"{_fmt((a.get('auc_ci') or [None, None])[1])}]</td><td>{_fmt(a.get('tpr_at_1pct_fpr'), 2)}</td>"
        f"<td>{_fmt((a.get('epsilon_bound') or {}).get('eps_lb'), 2)}</td></tr>"
        for name, a in (canary.attacks or {}).items())
    table = ("<table><tr><th>attack</th><th>per-patient AUC</th><th>95% CI</th><th>TPR at 1% FPR</th>"
             "<th>epsilon lower bound</th></tr>" + rows + "</table>")
    accounted = eps.get("accounted")
    text = (f"<p>The model was trained with {pat.get('inserted')} public phantom <b>canary</b> patients inserted "
            f"among its training patients; {pat.get('held_back')} more of the same cohort were held back. Each attack "
            "is scored with the inserted canaries as members and the held-back ones as non-members: an AUC near 0.5 "
            "means the attacks cannot tell who was trained on, even for patients where the answer is known.</p>"
            f"<p><b>Empirical epsilon lower bound: {_fmt(eps.get('lower_bound'), 2)}</b> at "
            f"{100 * (eps.get('confidence') or 0):.0f}% confidence (attack {html.escape(str(eps.get('attack')))}); "
            f"with this many canaries no bound above {_fmt(eps.get('ceiling'), 2)} can be shown. "
            + (f"Accounted epsilon: {_fmt(accounted, 2)}. A lower bound above it would mean the accounting or the "
               "training is wrong (the gate then fails). " if accounted is not None else
               "The model has no DP guarantee; the bound is what the attacks prove at least. ")
            + f"Formula: {html.escape(str(eps.get('formula')))}.</p>")
    return ReportSection("privacy_canary", "Privacy: canary audit (the attacks' power on this model)", text, table)


def _transformed_copies_line(c: dict | None) -> str:
    """One line on the copy test that sees through shifts, reversal, flips, remaps and pasted slices."""
    if not c:
        return "<p><b>Copies under small transforms:</b> not computed.</p>"
    fp = c.get("false_positive_rate_per_patient") or {}
    seen = "; ".join(f"{m['units']} unit(s): {', '.join(m['transforms'])}" for m in c.get("matches", [])[:3])
    return (f"<p><b>Copies under small transforms</b> (shifts, slice reversal, flips, monotone intensity remaps, a "
            f"pasted slice): {c['copied_patients']} of {c['train_patients']} training patients"
            f"{' (' + html.escape(seen) + ')' if seen else ''}; fresh patients flagged {fp.get('flagged')} of "
            f"{fp.get('fresh_patients')}.</p>")
