"""The evaluator's headline: the few scalars a datasheet or a run summary shows, written into metrics.json as
``metrics["headline"]`` so that every consumer shows the same ones.

Which metrics, and in which order, is the release's choice (synthesize/release/headline.py: ``KNOWN_HEADLINES``,
the paths the datasheet falls back to for a metrics.json written without a headline); here each is read by
attribute from the typed evaluation (results.py)."""
from __future__ import annotations

import math

from vugan.components.evaluator.results import Evaluation, jsonable
from vugan.components.synthesize.release.headline import KNOWN_HEADLINES, select_headline


def _at(node, *keys):
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


# One reader per path of KNOWN_HEADLINES (tests/test_evaluator_results.py checks that both name the same paths).
READERS = {
    "fidelity.fid_ratio": lambda e: e.fidelity.fid_ratio,
    "fidelity.embeddings.vu.overall.fd_ratio": lambda e: _at(e.fidelity.embeddings, "vu", "overall", "fd_ratio"),
    "fidelity.embeddings.vu.overall.kid_ratio": lambda e: _at(e.fidelity.embeddings, "vu", "overall", "kid_ratio"),
    "fidelity.embeddings.vu.overall.prdc.precision":
        lambda e: _at(e.fidelity.embeddings, "vu", "overall", "prdc", "precision"),
    "fidelity.embeddings.vu.overall.prdc.recall":
        lambda e: _at(e.fidelity.embeddings, "vu", "overall", "prdc", "recall"),
    "diversity.ms_ssim.real": lambda e: _at(e.diversity, "ms_ssim", "real"),
    "diversity.ms_ssim.synthetic": lambda e: _at(e.diversity, "ms_ssim", "synthetic"),
    "utility.tstr_balanced_accuracy": lambda e: e.utility.tstr_balanced_accuracy,
    "utility.trtr_balanced_accuracy": lambda e: e.utility.trtr_balanced_accuracy,
    "privacy.strongest.unit.auc": lambda e: _at(e.privacy.strongest, "unit", "auc"),
    "privacy.strongest.patient.auc": lambda e: _at(e.privacy.strongest, "patient", "auc"),
    "privacy.strongest.patient.tpr_at_1pct_fpr": lambda e: _at(e.privacy.strongest, "patient", "tpr_at_1pct_fpr"),
    "privacy.detectable.auc": lambda e: _at(e.privacy.detectable, "auc"),
    "privacy.memorisation.pixel.copied_patients": lambda e: _at(e.privacy.memorisation, "pixel", "copied_patients"),
    "privacy.memorisation.pixel.closer_to_train_share":
        lambda e: _at(e.privacy.memorisation, "pixel", "closer_to_train_share"),
    "privacy.dp.epsilon": lambda e: _at(e.privacy.dp, "epsilon"),
}


def _number(value) -> float | None:
    value = jsonable(value)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def headline(evaluation: Evaluation, limit: int = 14) -> dict[str, float]:
    """The headline of an evaluation: the known metrics that are present (a role the evaluation lacks, e.g. no
    privacy, is skipped), at most ``limit``; failing all of them, the name search of select_headline."""
    known = {}
    for path in KNOWN_HEADLINES:
        try:
            value = _number(READERS[path](evaluation))
        except AttributeError:  # the role is absent (None)
            continue
        if value is not None:
            known[path] = value
    if known:
        return dict(list(known.items())[:limit])
    return select_headline(jsonable(evaluation.to_dict()), limit)
