"""``datasheet.md`` of a synthetic dataset (after Gebru et al., "Datasheets for Datasets", 2018): what is in it,
where it came from, whether the release gate passed, and what it is and is not fit for."""
from __future__ import annotations

from typing import Any, Mapping, Sequence


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def dp_lines(dp: Mapping[str, Any] | None) -> list[str]:
    """The datasheet's formal-privacy paragraph from the model's model_info.json "dp" record (trainer)."""
    if not dp or not dp.get("enabled"):
        return ["The model was not trained with differential privacy (model_info.json `dp.enabled` is false): "
                "the privacy evidence is the evaluator's empirical attacks only."]
    eps = dp.get("epsilon")
    return [
        _table([("epsilon", "none (no noise)" if eps is None else f"{eps:.2f} ({str(dp.get('accountant')).upper()})"),
                ("delta", f"{dp.get('delta', 0):.1e}"), ("privacy unit", dp.get("unit")),
                ("sampling", dp.get("sampling")), ("DP-SGD steps", dp.get("steps")),
                ("noise multiplier", dp.get("noise_multiplier")), ("clip norm", dp.get("clip_norm")),
                ("stopped at target epsilon", "yes" if dp.get("stopped_at_target_epsilon") else "no")],
               ("item", "value")),
        "", str(dp.get("statement", "")), *(["", dp["pretraining_note"]] if dp.get("pretraining_note") else []),
        "", str(dp.get("class_prior_note", "")),
        "The synthetic units are post-processing of the DP generator, so the same guarantee covers this dataset."]


def burned_in_line(record: Mapping[str, Any] | None) -> str:
    """What the training data's preprocess did with DICOM flagged BurnedInAnnotation = YES (its Examples
    artifact's ``burned_in_annotation`` property)."""
    if not record:
        return ("Burned-in annotation: not recorded (the training data's Examples artifact predates the check of "
                "DICOM BurnedInAnnotation); assume text drawn into scan pixels may have reached the training crops.")
    if not record.get("accepted"):
        return ("Burned-in annotation: training scans flagged BurnedInAnnotation = YES were refused "
                "(preprocess.accept_burned_in = false).")
    return (f"Burned-in annotation: ACCEPTED (preprocess.accept_burned_in = true): {record.get('scans', '?')} "
            "training scan(s) flagged BurnedInAnnotation = YES were used, so text drawn into their pixels (names, "
            "dates) may have reached the training crops and be imitated in these units; look at them before sharing.")


def render(*, created_at: str, version: str, summary: Mapping[str, Any], class_names: Sequence[str],
           image_shape: Sequence[int], conditioning: str, base_seed: int, model: Mapping[str, Any],
           release: Mapping[str, Any], metrics: Mapping[str, float], metrics_found: bool,
           geometry_note: str, dp: Mapping[str, Any] | None = None,
           burned_in: Mapping[str, Any] | None = None) -> str:
    h, w, k = image_shape
    out = [
        "# Datasheet: synthetic vertebral-unit dataset",
        "",
        f"Generated {created_at} by vugan {version} (`vugan synthesize`).",
        "",
        "## Contents",
        f"{summary['units']} synthetic vertebral units (VUs), {len(class_names)} classes "
        f"(conditioning: {conditioning}), each {h} x {w} pixels x {k} parasagittal slices, float32 in [-1, 1].",
        "",
        _table([(i, n, summary["counts"].get(n, 0)) for i, n in enumerate(class_names)],
               ("class id", "class", "units")),
        "",
        "Files: `Split-synthetic/data-*.tfrecord.gz` (the real data's record schema, `components/schema.py`, with "
        "`synthetic = 1`), `nifti/<unit>.nii.gz` (one volume per unit), `previews/<class>.png` (middle slices), "
        "`manifest.csv` (unit, class, seed, files).",
        "",
        f"Geometry: {geometry_note}",
        "",
        burned_in_line(burned_in),
        "",
        "## Provenance",
        _table([
            ("model fingerprint", f"`{model.get('fingerprint', '?')}`"),
            ("model artifact", f"`{model.get('uri', '?')}`"),
            ("generator", "EMA weights" if model.get("ema") else "raw (non-EMA) weights"),
            ("training steps", model.get("steps", "?")),
            ("training data fingerprint", f"`{model.get('examples_fingerprint', '?')}`"),
            ("evaluation fingerprint", f"`{model.get('evaluation_fingerprint', '?')}`"),
            ("base seed", base_seed),
        ], ("item", "value")),
        "",
        "Seeds per class (one per chunk of up to 1024 units; noise = numpy default_rng(seed) standard normal):",
        "",
        _table([(n, ", ".join(str(s) for s in summary["seeds"].get(n, []))) for n in class_names],
               ("class", "seeds")),
        "",
        "## Release gate (the evaluator's verdict)",
    ]
    if release.get("passed"):
        out.append("**Passed.** The evaluator judged exactly this set (the staged candidate below) and its fidelity "
                   "and privacy checks passed.")
    else:
        out.append("**FAILED, released by override.** The evaluator's verdict did not pass; this set was written "
                   f"because `--force-release` was given by **{release.get('forced_by')}** at {release.get('forced_at')}. "
                   "Treat it as not cleared for sharing.")
    filt = release.get("filter") or {}
    if filt:
        out += ["", f"Release filter: {'on' if filt.get('enabled') else 'off'}"
                + (f"; {filt.get('dropped_units', 0)} near-copies of training units dropped before judging "
                   f"({filt.get('rule', '')})" if filt.get("enabled") else "") + "."]
    if release.get("candidate_sha256"):
        out += ["", f"Judged candidate sha256: `{release['candidate_sha256']}` (model, generator variant, seed, "
                "count and filter checked against the evaluation before writing)."]
    reasons = release.get("reasons") or []
    if reasons:
        out += ["", "Verdict reasons:", ""] + [f"- {r}" for r in reasons]
    out += ["", "## Differential privacy (from the model's model_info.json)", ""] + dp_lines(dp)
    out += ["", "## Headline metrics (from evaluate/metrics.json)", ""]
    if metrics:
        out.append(_table([(k, f"{v:.4g}") for k, v in metrics.items()], ("metric", "value")))
    else:
        out.append("No metrics were found" + (" in metrics.json." if metrics_found else
                                              " (metrics.json missing or unreadable)."))
    out += [
        "", "## Intended use",
        "- Developing and testing analysis code, teaching, and method comparisons where real patient data cannot "
        "be shared; augmentation experiments whose results are confirmed on real data.",
        "- Sharing only under the release gate above; the evaluation report (evaluate/report.html) belongs with it.",
        "", "## Limitations",
        "- Synthetic units imitate the training crops' appearance; they are not diagnoses and carry no clinical "
        "ground truth beyond the class label they were conditioned on. Not for clinical use.",
        "- Privacy was judged on exactly these units; fidelity and utility on the evaluator's own sample of the "
        "same generator. Rare anatomy and pathology are likely under-represented or absent.",
        "- Privacy evidence is empirical (attacks and memorisation tests), not a formal guarantee unless the "
        "model was trained with differential privacy (see the model's training configuration).",
        "- Units are independent draws: `patient_pseudo_id` is unique per unit and no two units come from one "
        "synthetic patient, so the set cannot stand in for per-patient analyses.",
        "",
    ]
    return "\n".join(out)
