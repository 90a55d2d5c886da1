"""The headline metrics: the few scalars a datasheet or a run summary shows. The evaluator chooses them when it
writes metrics.json (``metrics["headline"]``) and the datasheet reads them back, so both show the same ones; the
selection lives here, in the release's home, because both sides of the release need it."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
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


def read_metrics(evaluation_dir: str | Path) -> dict:
    """``metrics.json`` of an Evaluation artifact, or {} (the datasheet says so) when missing or not a JSON object."""
    try:
        data = json.loads((Path(evaluation_dir) / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def headline_metrics(metrics: dict, limit: int = 14) -> dict[str, float]:
    """Scalar metrics worth a line in the datasheet: the evaluator's own choice, ``metrics["headline"]``; for a
    metrics.json written without one, the same selection made here."""
    if isinstance(metrics.get("headline"), dict):
        return dict(list(numeric_leaves(metrics["headline"]))[:limit])
    return select_headline(metrics, limit)
