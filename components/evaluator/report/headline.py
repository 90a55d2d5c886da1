"""The evaluator's headline metrics: the few scalars a datasheet or a run summary shows, chosen by the producer of
metrics.json (written there as ``metrics["headline"]``) so that every consumer shows the same ones."""
from __future__ import annotations

import math
import re
from typing import Any, Iterator

_HEADLINE_NAME = re.compile(r"fid|kid|auc|accuracy|acc\b|epsilon|precision|recall|ssim|closer|c_t|coverage", re.I)
# By dotted path (docs/contracts.md, evaluate/metrics.json); the first ones found are shown. Paths that are
# absent are skipped, so a changed layout degrades to the name search in select_headline.
KNOWN_HEADLINES = (
    "fidelity.fid_ratio",
    "fidelity.embeddings.vu.overall.fd_ratio",
    "fidelity.embeddings.vu.overall.kid_ratio",
    "fidelity.embeddings.vu.overall.prdc.precision",
    "fidelity.embeddings.vu.overall.prdc.recall",
    "diversity.ms_ssim.real",
    "diversity.ms_ssim.synthetic",
    "utility.tstr_balanced_accuracy",
    "utility.trtr_balanced_accuracy",
    "privacy.strongest.unit.auc",
    "privacy.strongest.patient.auc",
    "privacy.strongest.patient.tpr_at_1pct_fpr",
    "privacy.detectable.auc",
    "privacy.memorisation.pixel.copied_patients",
    "privacy.memorisation.pixel.closer_to_train_share",
    "privacy.dp.epsilon",
)


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
    """The known headline paths that are present; failing those, numeric leaves named like a headline."""
    leaves = dict(numeric_leaves(metrics))
    known = {k: leaves[k] for k in KNOWN_HEADLINES if k in leaves}
    if known:
        return dict(list(known.items())[:limit])
    picked = {k: v for k, v in leaves.items() if _HEADLINE_NAME.search(k.rsplit(".", 1)[-1])}
    return dict(list((picked or leaves).items())[:limit])
