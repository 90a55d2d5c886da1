"""The report's fidelity, diversity and utility sections (ReportSection objects): tables, figures and one plain
sentence per number saying what it means and which direction is good."""
from __future__ import annotations

import html

from components.evaluator.report import figures
from components.evaluator.report.types import ReportSection


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1000 or (v != 0 and abs(v) < 1e-3) else f"{v:.{digits}f}"
    return html.escape(str(v))


def table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, str) else fmt(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def overview_section(metrics: dict, grids: figures.Figure) -> ReportSection:
    c = metrics["counts"]
    body = table(["set", "units"], [["real train (generator's training data)", c["train"]],
                                    ["real holdout (patients never seen; real-vs-real baseline)", c["holdout"]],
                                    ["real test (only for the classifier scores)", c["test"]],
                                    ["synthetic (drawn with the training class prior)", c["synthetic"]]])
    return ReportSection("overview", "Data and images",
                         "The real units come from three patient-disjoint splits. The synthetic units were drawn "
                         f"from the generator with seed {metrics['synthetic']['seed']}, with each class as "
                         "frequent as in the training data. Look at the grids first: synthetic units should "
                         "look like the real ones of the same class.", body, (grids,))


def fidelity_section(metrics: dict) -> ReportSection:
    fid = metrics["fidelity"]
    rows, per_class_ratios, overall = [], {}, {}
    for key, e in fid["embeddings"].items():
        o = e["overall"]
        rows.append([e["distance_name"], o["fd"], o["fd_baseline"], o["fd_ratio"]])
        rows.append([e["kernel_name"], _pm(o["kid"], o["kid_std"]), _pm(o["kid_baseline"], o["kid_baseline_std"]),
                     o["kid_ratio"]])
        per_class_ratios[e["distance_name"]] = e["per_class"]
        overall[e["distance_name"]] = o["fd_ratio"]
    px = fid["pixel"]["overall"]
    rows.append(["SWD-pixel", px["swd"], px["swd_baseline"], px["swd_ratio"]])
    body = table(["metric", "synthetic vs train", "holdout vs train (real baseline)", "ratio"], rows)
    for key, reason in fid["skipped"].items():
        body += f'<p class="skipped">SKIPPED: {html.escape(key)} metrics (FID, KID): {html.escape(reason)}</p>'
    class_rows = []
    for key, e in fid["embeddings"].items():
        for name, v in e["per_class"].items():
            class_rows.append([name, e["distance_name"], v["fd"], v["fd_baseline"], v["fd_ratio"],
                               _pm(v["kid"], v["kid_std"]), v["kid_baseline"], v["n"]["synthetic"]])
    body += "<h3>Per class</h3>" + table(
        ["class", "space", "FD synthetic", "FD baseline", "ratio", "KD synthetic", "KD baseline", "n synthetic"],
        class_rows, "compact")
    emb_rows = [[e["distance_name"], html.escape(e["description"]),
                 html.escape(", ".join(f"{k}: {v}" for k, v in e["provenance"].items()))]
                for e in fid["embeddings"].values()]
    body += "<h3>Embeddings used</h3>" + table(["name", "features", "provenance"], emb_rows, "compact text")
    figs = [figures.ratio_bars(per_class_ratios, overall, "Fréchet distance ratio per class")]
    head_key = fid.get("fid_ratio_embedding", "vu") if fid.get("fid_ratio_embedding") in fid["embeddings"] else \
        next(iter(fid["embeddings"]))
    head = fid["embeddings"][head_key]
    dom = head["overall"]
    enc = fid.get("fid_ratio_encoder") or {}
    if enc.get("sha256"):
        body = (f'<p class="note">Headline feature network: <b>{html.escape(str(enc["name"]))}</b> (version '
                f'{html.escape(str(enc["version"]))}, weights sha256 <code>{html.escape(enc["sha256"])}</code>), '
                f'fixed and shipped with vugan, identical on any machine; the release gate reads its '
                f'{html.escape(head["distance_name"])} ratio.</p>') + body
    if dom.get("prdc"):
        figs.append(figures.prdc_bars(dom["prdc"], dom["prdc_baseline"], f"{head['distance_name']} embedding"))
        prdc_rows = []
        for e in fid["embeddings"].values():
            if e["overall"].get("prdc"):
                for k in ("precision", "recall", "density", "coverage"):
                    prdc_rows.append([f"{k} ({e['distance_name']} space)", e["overall"]["prdc"][k],
                                      e["overall"]["prdc_baseline"][k]])
        body += "<h3>Precision, recall, density, coverage</h3>" + table(
            ["metric", "synthetic vs train", "holdout vs train"], prdc_rows, "compact")
    explanation = (
        "<b>Fidelity: do synthetic units look like real ones?</b> Each distance compares the synthetic units with "
        "the real training units in a feature space; <b>lower is better</b>. A raw distance means little on its own, "
        "so each is shown beside the same distance between two groups of <i>real</i> patients (holdout vs train, "
        "same sizes). The <b>ratio</b> is the number to read: about 1 means synthetic units are as close to the "
        "training data as new real patients are; 2 means twice as far. FD-VU/KD-VU (the headline) use vugan's fixed "
        "vertebral-unit network vu-encoder, the same weights in every run, so they compare across runs and sites; "
        "FID/KID use an ImageNet network; FD-domain/KD-domain use a small network trained in this run on the real "
        "test split (not comparable between runs); "
        "SWD-pixel compares raw pixels. Precision and density (higher is better, baseline for scale) say how many "
        "synthetic units fall where real ones are; recall and coverage say how much of the real variety is covered.")
    return ReportSection("fidelity", "Fidelity", explanation, body, tuple(figs))


def diversity_section(metrics: dict) -> ReportSection:
    d = metrics["diversity"]
    rows = [[name, v["real"], v["synthetic"], v["difference"]] for name, v in d["per_class"].items()]
    rows.append(["<b>all classes (mean)</b>", d["ms_ssim"]["real"], d["ms_ssim"]["synthetic"],
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


def utility_section(metrics: dict) -> ReportSection:
    u = metrics["utility"]
    ref = u["reference_study"]
    rows = []
    for key, label in (("trtr", "trained on real train (TRTR)"), ("tstr", "trained on synthetic (TSTR)")):
        v = u[key]
        rows.append([label, v["balanced_accuracy"], v["macro_auc"],
                     " / ".join(fmt(a, 2) for a in v["per_class_auc"].values()), v["best_epoch"]])
    for key, label in (("trtr", "reference study, real (different dataset)"),
                       ("tstr", "reference study, synthetic (different dataset)")):
        rows.append([f"<i>{label}</i>", ref[key]["balanced_accuracy"], ref[key]["macro_auc"], "", ""])
    body = table(["classifier", "balanced accuracy", "macro AUC",
                  "AUC per class (" + " / ".join(u["classes"]) + ")", "chosen epoch"], rows)
    body += (f'<p class="note">Tested on {u["tstr"]["test_size"]} real test units. Model selection: '
             f'{html.escape(u["model_selection"])}. Reference: {html.escape(ref["source"])}. Classes absent from '
             f'the test split have no AUC (n/a).</p>')
    return ReportSection(
        "utility", "Utility (train on synthetic, test on real)",
        "<b>Utility: can the synthetic set replace the real one for training a model?</b> A classifier learns to "
        "tell the spine region from a unit, once from synthetic units (TSTR) and once from real training units "
        "(TRTR); both are scored on real patients neither has seen. <b>Higher is better</b>; TSTR close to TRTR "
        "means the synthetic data carry the same information. Balanced accuracy: chance is 1 / number of regions "
        "present; AUC: 0.5 is chance, 1 is perfect.", body, (figures.utility_bars(u),))


def _pm(v, std) -> str:
    if v is None:
        return "n/a"
    return fmt(v) if std is None else f"{fmt(v)} ± {fmt(std)}"
