"""The evaluator's headline metrics: the few scalars a datasheet or a run summary shows, chosen by the producer of
metrics.json (written there as ``metrics["headline"]``) so that every consumer shows the same ones.

``headline`` reads them from the typed evaluation; ``select_headline`` finds the same paths in a metrics.json dict
(synthesize reads one written without a headline), and falls back to numeric leaves named like a headline."""
from __future__ import annotations

import math
import re
from typing import Any, Iterator

from vugan.components.evaluator.results import Evaluation, jsonable

_HEADLINE_NAME = re.compile(r"fid|kid|auc|accuracy|acc\b|epsilon|precision|recall|ssim|closer|c_t|coverage", re.I)
# Read by attribute from the typed evaluation (results.py), named by their dotted path in metrics.json
# (docs/contracts.md); the first ones present are shown.
KNOWN_HEADLINES = (
    ("fidelity.fid_ratio", lambda e: e.fidelity.fid_ratio),
    ("fidelity.embeddings.vu.overall.fd_ratio", lambda e: _at(e.fidelity.embeddings, "vu", "overall", "fd_ratio")),
    ("fidelity.embeddings.vu.overall.kid_ratio", lambda e: _at(e.fidelity.embeddings, "vu", "overall", "kid_ratio")),
    ("fidelity.embeddings.vu.overall.prdc.precision",
     lambda e: _at(e.fidelity.embeddings, "vu", "overall", "prdc", "precision")),
    ("fidelity.embeddings.vu.overall.prdc.recall",
     lambda e: _at(e.fidelity.embeddings, "vu", "overall", "prdc", "recall")),
    ("diversity.ms_ssim.real", lambda e: _at(e.diversity, "ms_ssim", "real")),
    ("diversity.ms_ssim.synthetic", lambda e: _at(e.diversity, "ms_ssim", "synthetic")),
    ("utility.tstr_balanced_accuracy", lambda e: e.utility.tstr_balanced_accuracy),
    ("utility.trtr_balanced_accuracy", lambda e: e.utility.trtr_balanced_accuracy),
    ("privacy.strongest.unit.auc", lambda e: _at(e.privacy.strongest, "unit", "auc")),
    ("privacy.strongest.patient.auc", lambda e: _at(e.privacy.strongest, "patient", "auc")),
    ("privacy.strongest.patient.tpr_at_1pct_fpr", lambda e: _at(e.privacy.strongest, "patient", "tpr_at_1pct_fpr")),
    ("privacy.detectable.auc", lambda e: _at(e.privacy.detectable, "auc")),
    ("privacy.memorisation.pixel.copied_patients", lambda e: _at(e.privacy.memorisation, "pixel", "copied_patients")),
    ("privacy.memorisation.pixel.closer_to_train_share",
     lambda e: _at(e.privacy.memorisation, "pixel", "closer_to_train_share")),
    ("privacy.dp.epsilon", lambda e: _at(e.privacy.dp, "epsilon")),
)


def _at(node, *keys):
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def _number(value) -> float | None:
    value = jsonable(value)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def headline(evaluation: Evaluation, limit: int = 14) -> dict[str, float]:
    """The headline of an evaluation: the known metrics that are present (a role the evaluation lacks, e.g. no
    privacy, is skipped), at most ``limit``; failing all of them, the name search of select_headline."""
    known = {}
    for path, read in KNOWN_HEADLINES:
        try:
            value = _number(read(evaluation))
        except AttributeError:  # the role is absent (None)
            continue
        if value is not None:
            known[path] = value
    if known:
        return dict(list(known.items())[:limit])
    return select_headline(jsonable(evaluation.to_dict()), limit)


def numeric_leaves(value: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, float]]:
    """(dotted path, value) of every finite number in a nested dict (booleans are not numbers here)."""
    if isinstance(value, bool) or depth > 6:
        return
    if isinstance(value, (int, float)) and math.isfinite(value):
        yield prefix, float(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from numeric_leaves(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)


def select_headline(metrics: dict, limit: int = 14) -> dict[str, float]:
    """The known headline paths present in a metrics.json dict; failing those, numeric leaves named like a
    headline."""
    leaves = dict(numeric_leaves(metrics))
    known = {k: leaves[k] for k, _ in KNOWN_HEADLINES if k in leaves}
    if known:
        return dict(list(known.items())[:limit])
    picked = {k: v for k, v in leaves.items() if _HEADLINE_NAME.search(k.rsplit(".", 1)[-1])}
    return dict(list((picked or leaves).items())[:limit])
