"""The report's fidelity, diversity and utility sections (ReportSection objects): tables, figures and one plain
sentence per number saying what it means and which direction is good."""
from __future__ import annotations

import html

from vugan.components.evaluator.report import figures
from vugan.components.evaluator.report.types import ReportSection
from vugan.components.evaluator.results import Evaluation


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1000 or (v != 0 and abs(v) < 1e-3) else f"{v:.{digits}f}"
    return html.escape(str(v))


class Html(str):
    """A table cell that is deliberate markup (bold, italics), put into the report as it is. Every other text
    cell is escaped: a class name, a path or a reason from the data must never become markup."""


def cell(value) -> str:
    """A table cell's HTML: ``Html`` as given, other text escaped, numbers formatted (``fmt``)."""
    if isinstance(value, Html):
        return str(value)
    return html.escape(value) if isinstance(value, str) else fmt(value)


def table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def overview_section(evaluation: Evaluation, grids: figures.Figure) -> ReportSection:
    c = evaluation.counts
    body = table(["set", "units"], [["real train (generator's training data)", c["train"]],
                                    ["real holdout (patients never seen; real-vs-real baseline)", c["holdout"]],
                                    ["real test (only for the classifier scores)", c["test"]],
                                    ["synthetic (drawn with the training class prior)", c["synthetic"]]])
    return ReportSection("overview", "Data and images",
                         "The real units come from three patient-disjoint splits. The synthetic units were drawn "
                         f"from the generator with seed {evaluation.synthetic['seed']}, with each class as "
                         "frequent as in the training data. Look at the grids first: synthetic units should "
                         "look like the real ones of the same class.", body, (grids,))


def _ratio_ci(o: dict) -> str:
    r, ci = o.get("fd_ratio"), o.get("fd_ratio_ci")
    if r is None:
        return "n/a"
    return f"{fmt(r, 2)} [{fmt(ci[0], 2)}, {fmt(ci[1], 2)}]" if ci else fmt(r, 2)


def _kid_cell(o: dict) -> str:
    if o.get("kid_ratio") is not None:
        return f"ratio {fmt(o['kid_ratio'], 2)}"
    if o.get("kid_difference") is None:
        return "n/a"
    se = o.get("kid_difference_se")
    return f"difference {fmt(o['kid_difference'])}" + ("" if se is None else f" ± {fmt(se)}")


def _pct(share) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def breakdown_table(embeddings: dict, top: int = 3) -> str:
    """Which features carry each space's Fréchet distance against holdout (metrics.json "fd_breakdown"): the mean
    and covariance shares, the groups' shares and the ``top`` features, so a tuner sees what to fix. Empty when no
    space has a breakdown (an evaluation written before it existed)."""
    rows = []
    for e in embeddings.values():
        b = e["against_holdout"]["overall"].get("fd_breakdown")
        if not b:
            continue
        groups = "; ".join(f"{g['group']} {_pct(g['share'])}" for g in b.get("groups", [])) or "n/a"
        features = "; ".join(f"{f['feature']} {_pct(f['share'])}" for f in b["top_features"][:top])
        rows.append([e["distance_name"], f"{_pct(b['mean_share'])} / {_pct(b['covariance_share'])}", groups,
                     features])
    if not rows:
        return ""
    return ("<h3>Which features carry the distance (against holdout)</h3>"
            '<p class="note">Each distance split into its mean term (the sets\' averages differ) and covariance term '
            "(their spread and correlations differ), and per feature: the share of the transport cost between the "
            "two fitted Gaussians that lies along it (the parts add up to the distance; metrics.json fd_breakdown "
            "lists the top 10, overall and per class).</p>"
            + table(["space", "mean / covariance share", "groups", f"top {top} features"], rows, "compact text"))


def fidelity_section(evaluation: Evaluation) -> ReportSection:
    fid = evaluation.fidelity
    rows, per_class_ratios, overall = [], {}, {}
    for key, e in fid.embeddings.items():
        ho, tr = e["against_holdout"]["overall"], e["overall"]
        n = ho["n"]
        rows.append([e["distance_name"], _ratio_ci(ho), _ratio_ci(tr), _kid_cell(ho),
                     f"{n['synthetic']} / {n['real']} units, {n['synthetic_patients']} / {n['real_patients']} "
                     f"patients vs {n['reference_patients']} reference patients"])
        per_class_ratios[e["distance_name"]] = e["against_holdout"]["per_class"]
        overall[e["distance_name"]] = ho["fd_ratio"]
    body = table(["space", "ratio against HOLDOUT patients [95% interval]",
                  "ratio against TRAIN patients [95% interval]", f"kernel distance (against holdout)",
                  "sizes (synthetic / real comparator)"], rows)
    rule = (f'<p class="note">The release gate reads the ratio against holdout in the {html.escape(str(fid.fid_ratio_embedding))} '
            f'space: {fmt(fid.fid_ratio, 2)}, and, as a network-free second opinion, the FRD ratio against '
            f'holdout: {fmt(fid.frd_ratio, 2)}.</p>')
    if fid.possible_copying:
        rule += ('<p class="warning">POSSIBLE COPYING: against the generator\'s own training patients the synthetic '
                 'units are clearly closer than new real patients are (interval below 1). Read the privacy '
                 'sections.</p>')
    body += rule + breakdown_table(fid.embeddings)
    px = fid.pixel["overall"]
    body += (f'<p class="note">SWD-pixel (raw pixels, synthetic vs train beside holdout vs train): '
             f'{fmt(px["swd"])} vs {fmt(px["swd_baseline"])}, ratio {fmt(px["swd_ratio"], 2)}.</p>')
    for key, reason in fid.skipped.items():
        body += f'<p class="skipped">SKIPPED: {html.escape(key)} metrics: {html.escape(reason)}</p>'
    class_rows = []
    for key, e in fid.embeddings.items():
        for name, v in e["against_holdout"]["per_class"].items():
            class_rows.append([name, e["distance_name"], _ratio_ci(v), _ratio_ci(e["per_class"][name]),
                               (v.get("n") or {}).get("synthetic")])
    body += "<h3>Per class</h3>" + table(
        ["class", "space", "ratio against holdout [95%]", "ratio against train [95%]", "n synthetic"],
        class_rows, "compact")
    emb_rows = [[e["distance_name"], e["description"], ", ".join(f"{k}: {v}" for k, v in e["provenance"].items())]
                for e in fid.embeddings.values()]
    body += "<h3>Feature spaces used</h3>" + table(["name", "features", "provenance"], emb_rows, "compact text")
    figs = [figures.ratio_bars(per_class_ratios, overall, "Fréchet distance ratio per class (against holdout)")]
    head = fid.embeddings[fid.fid_ratio_embedding]["against_holdout"]["overall"]
    used = fid.embeddings[fid.fid_ratio_embedding]["against_holdout"].get("comparator")
    if used:
        body = (f'<p class="note">Real comparator against holdout: {used["real_patients_compared"]} of '
                f'{used["real_patients_available"]} training patients ({used["real_units_compared"]} of '
                f'{used["real_units_available"]} units); {used["real_patients_left_out"]} left out because the '
                f'synthetic set had too few units of one of their classes to mirror them.</p>') + body
    if head.get("prdc"):
        figs.append(figures.prdc_bars(head["prdc"], head["prdc_baseline"],
                                      fid.embeddings[fid.fid_ratio_embedding]["distance_name"] + " space"))
    enc = fid.fid_ratio_encoder or {}
    if enc.get("sha256"):
        body = (f'<p class="note">Headline feature network: <b>{html.escape(str(enc["name"]))}</b> (version '
                f'{html.escape(str(enc["version"]))}, weights sha256 <code>{html.escape(enc["sha256"])}</code>), '
                f'fixed and shipped with vugan, identical on any machine; the release gate reads its ratio against '
                f'holdout patients.</p>') + body
        prdc_rows = []
        for e in fid.embeddings.values():
            o = e["against_holdout"]["overall"]
            if o.get("prdc"):
                for k in ("precision", "recall", "density", "coverage"):
                    prdc_rows.append([f"{k} ({e['distance_name']} space)", o["prdc"][k], o["prdc_baseline"][k]])
        body += "<h3>Precision, recall, density, coverage (against holdout)</h3>" + table(
            ["metric", "synthetic", "real patients (baseline)"], prdc_rows, "compact")
    explanation = (
        "<b>Fidelity: do synthetic units look like real ones?</b> A distance between two sets of units is measured "
        "in a feature space; <b>lower is better</b>. A raw distance means little on its own, so each is divided by "
        "the same distance for <i>real</i> patients: the <b>ratio</b> is the number to read. About 1 means the "
        "synthetic units are as close to the reference patients as other real patients are; 5 means five times "
        "as far. Both sides are compared fairly: the synthetic units are grouped into as many pseudo-patients as "
        "the real side has patients, with the same units of each class. The reference is either the "
        "<b>holdout</b> patients (never seen by the generator: the fair test) or the generator's own "
        "<b>training</b> patients, where a ratio clearly <b>below</b> 1 is a warning sign of copying, not a good "
        "result. The bracket is a 95% interval from resampling patients: with few patients it is wide, and a "
        "ratio whose interval holds 1 cannot be told apart from real data. FD-VU/KD-VU (the headline) use vugan's fixed "
        "vertebral-unit network vu-encoder, the same weights in every run, so they compare across runs and sites; "
        "FRD uses textbook radiomics features (no neural network), so fidelity does not hang on one network; "
        "FD-domain uses a small network trained in this run on the real test split (not comparable between runs); "
        "FD-InceptionV3 uses keras' ImageNet InceptionV3 (not the standard FID network, so not a published FID). "
        "Kernel distances are shown as a "
        "difference with its standard error when the real baseline is too close to zero for a ratio.")
    return ReportSection("fidelity", "Fidelity", explanation, body, tuple(figs))


def diversity_section(evaluation: Evaluation) -> ReportSection:
    d = evaluation.diversity
    rows = [[name, v["real"], v["synthetic"], v["difference"]] for name, v in d["per_class"].items()]
    rows.append([Html("<b>all classes (mean)</b>"), d["ms_ssim"]["real"], d["ms_ssim"]["synthetic"],
                 d["ms_ssim"]["difference"]])
    body = table(["class", "real (train)", "synthetic", "synthetic - real"], rows)
    if d["mode_collapse_warning"]:
        where = ", ".join(d["mode_collapse_classes"]) or "overall"
        body = (f'<p class="warning">MODE-COLLAPSE WARNING: synthetic units are more alike than real ones by more '
                f'than {d["mode_collapse_margin"]} ({html.escape(where)}).</p>') + body
    else:
        body = f'<p class="ok">No mode-collapse warning (margin {d["mode_collapse_margin"]}).</p>' + body
    s = d["settings"]
    body += (f'<p class="note">MS-SSIM with {s["scales_used"]} scales, filter size {s["filter_size"]}, '
             f'up to {s["pairs_per_class"]} random pairs per class, all slices; real pairs: '
             f'{html.escape(d.get("real_pairs", "any two units"))} (two units of one patient share anatomy and '
             f'contrast, so same-patient pairs would raise the real value).</p>')
    return ReportSection(
        "diversity", "Diversity",
        "<b>Diversity: is the synthetic set as varied as the real one?</b> MS-SSIM measures how alike two images "
        "are (1 = identical). We average it over random pairs of units of the same class. The synthetic value "
        "should be close to the real value; clearly <b>higher</b> than real means the generator produces "
        "near-repeats (mode collapse), which is bad.", body, (figures.msssim_bars(d["per_class"]),))


def utility_section(evaluation: Evaluation) -> ReportSection:
    u = evaluation.utility
    ref = u.reference_study
    rows = []
    for key, label in (("trtr", "trained on real train (TRTR)"),
                       ("tstr", f"trained on synthetic, configured size ({u.tstr.get('train_units', 0) + u.tstr.get('val_units', 0)} units)")):
        v = getattr(u, key)
        rows.append([label, v["balanced_accuracy"], v["macro_auc"],
                     " / ".join(fmt(a, 2) for a in v["per_class_auc"].values()), v["best_epoch"]])
    for key, label in (("trtr", "reference study, real (different dataset)"),
                       ("tstr", "reference study, synthetic (different dataset)")):
        rows.append([Html(f"<i>{html.escape(label)}</i>"), ref[key]["balanced_accuracy"], ref[key]["macro_auc"],
                     "", ""])
    trtr_units = u.trtr.get("train_units", 0) + u.trtr.get("val_units", 0)
    for p in u.learning_curve or []:
        label = f"trained on synthetic, {p['multiple']:g}x the real training size ({p['units']} units)"
        if p.get("scores"):
            v = p["scores"]
            marked = Html(html.escape(label) + (" <b>like for like</b>" if p["multiple"] == 1.0 else ""))
            rows.insert(len(rows) - 2, [marked, v["balanced_accuracy"], v["macro_auc"],
                                        " / ".join(fmt(a, 2) for a in v["per_class_auc"].values()), v["best_epoch"]])
        else:
            rows.insert(len(rows) - 2, [label, "not run", p.get("missing", ""), "", ""])
    body = table(["classifier", "balanced accuracy", "macro AUC",
                  "AUC per class (" + " / ".join(u.classes) + ")", "chosen epoch"], rows)
    body += (f'<p class="note">TRTR learns from {trtr_units} real units. Compare TRTR with TSTR at 1x (the same '
             f'number of units per class): a TSTR above TRTR only at larger sizes is a data-quantity effect, not '
             f'better data.</p>')
    body += (f'<p class="note">Tested on {u.tstr["test_size"]} real test units. Model selection: '
             f'{html.escape(u.model_selection)}. Reference: {html.escape(ref["source"])}. Classes absent from '
             f'the test split have no AUC (n/a).</p>')
    if u.class_check:
        body += class_check_table(u.class_check)
    return ReportSection(
        "utility", "Utility (train on synthetic, test on real)",
        "<b>Utility: can the synthetic set replace the real one for training a model?</b> A classifier learns to "
        "tell the spine region from a unit, once from synthetic units (TSTR) and once from real training units "
        "(TRTR); both are scored on real patients neither has seen. <b>Higher is better</b>; TSTR close to TRTR "
        "means the synthetic data carry the same information. Balanced accuracy: chance is 1 / number of regions "
        "present; AUC: 0.5 is chance, 1 is perfect.", body, (figures.utility_bars(u),))


def class_check_table(check: dict) -> str:
    """One row: the share of generated units a real-trained classifier labels with their class, per class, beside
    the same classifier on the real test split (its ceiling)."""
    per_class = " / ".join(f"{name} {fmt(v, 2)}" for name, v in check["per_class"].items())  # escaped by table
    body = "<h3>Class check</h3>" + table(
        ["generated units labelled with their class", "per class", "real test units (the ceiling)",
         "generated units"],
        [[check["accuracy"], per_class or "n/a", check["real_test_accuracy"], check["generated"]]], "compact")
    note = (f'Are generated units recognisably of their class? A classifier independent of the GAN '
            f'({html.escape(check["classifier"])}) labels them; read the score against the ceiling. A class the '
            f'training split lacks cannot be named by it (n/a).')
    if check.get("missing"):
        note += f' Not run: {html.escape(check["missing"])}.'
    return body + f'<p class="note">{note}</p>'


def _pm(v, std) -> str:
    if v is None:
        return "n/a"
    return fmt(v) if std is None else f"{fmt(v)} ± {fmt(std)}"
