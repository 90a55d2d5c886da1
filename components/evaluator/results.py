"""The evaluator's typed results: what the gate, the report and the headline read, by attribute.

Each role returns one small frozen record (fidelity, utility, privacy) and :class:`Evaluation` holds them; metrics.json
is written from them once, by ``to_dict()``, whose keys and order are the file's (docs/contracts.md). The records
are shallow on purpose: their top-level fields are typed, the per-space and per-attack detail below them stays the
nested dicts the metric modules already build (and the JSON file shows). ``from_dict`` reads a metrics.json back
(missing keys become None, so the gate can say what is missing instead of crashing).

:func:`jsonable` is the one JSON sanitiser of the evaluator (numpy to Python, NaN/inf to None).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


def jsonable(obj):
    """numpy scalars/arrays to Python, tuples to lists, NaN/inf to None (metrics.json stays strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _internal(default=None):
    """A field that travels with the record in memory but is never written to metrics.json (arrays for figures)."""
    return dataclasses.field(default=default, repr=False, compare=False, metadata={"json": False})


def _optional(default=None):
    """A JSON field written only when set (keys that metrics.json has only in some runs)."""
    return dataclasses.field(default=default, metadata={"optional": True})


class _Record:
    """to_dict / from_dict in field order, shared by the records below."""

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.metadata.get("json", True) or (value is None and f.metadata.get("optional")):
                continue
            out[f.name] = value.to_dict() if isinstance(value, _Record) else value
        return out

    @classmethod
    def from_dict(cls, data: dict | None):
        data = data if isinstance(data, dict) else {}
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)
                      if f.init and f.metadata.get("json", True)})


@dataclasses.dataclass(frozen=True)
class FidelityResult(_Record):
    """Fair FD/KID/PRDC per feature space (core.fidelity_in_space) and the ratios the gate reads."""
    embeddings: dict  # space key ("vu", "inception", "domain", "radiomics") -> comparison against train and holdout
    skipped: dict  # space -> why it was not computed
    pixel: dict  # sliced Wasserstein distance in pixel space
    fid_ratio: float | None  # headline: FD ratio against HOLDOUT patients in the headline space (the gate's rule)
    fid_ratio_ci: list | None
    fid_ratio_embedding: str
    fid_ratio_reference: str
    fid_ratio_against_train: float | None
    fid_ratio_against_train_ci: list | None
    possible_copying: bool
    fid_ratio_encoder: dict  # name, version, sha256 of the headline network
    frd_ratio: float | None  # network-free second opinion (radiomics), against holdout
    frd_ratio_ci: list | None
    comparison: str
    # quality/two_sample.py: the classifier two-sample test (C2ST AUC) overall and per class in the fixed vu space,
    # the effect size the gate's fidelity rule reads (its meaning does not change with the number of patients).
    # Last, and written only when set, so the keys before it keep their order and older files read back unchanged.
    two_sample: dict | None = _optional()


@dataclasses.dataclass(frozen=True)
class UtilityResult(_Record):
    """TRTR and TSTR region classifiers scored on the real TEST split, the TSTR learning curve, and the class check."""
    target: str
    classes: list
    trtr: dict
    tstr: dict
    model_selection: str
    reference_study: dict
    tstr_balanced_accuracy: float | None
    trtr_balanced_accuracy: float | None
    learning_curve: list
    tstr_equal_size: dict | None
    tstr_equal_size_balanced_accuracy: float | None
    # quality/class_check.py: are generated units recognisably of their class (a real-trained classifier labels them)
    # Last, and written only when set, so the keys before it keep their order and older files read back unchanged.
    class_check: dict | None = _optional()


@dataclasses.dataclass(frozen=True)
class PrivacyEvidence:
    """The per-candidate arrays behind the privacy numbers, for the report's figures (never written to JSON)."""
    scores: dict  # attack -> scores (higher = member) of the candidate rows it used
    used: dict  # attack -> candidate rows
    labels: np.ndarray  # 1 member, 0 non-member, per candidate row
    groups: np.ndarray  # patient of each candidate row
    memorisation: dict  # space -> distance arrays of memorisation_report


@dataclasses.dataclass(frozen=True)
class PrivacyResult(_Record):
    """Membership-inference attacks and memorisation checks (privacy/attacks.py): numbers only.

    A disabled evaluation has ``enabled`` False and nothing else; ``encoder`` and ``dp`` are set by the judging
    path (which encoder the attacks used, the model's formal guarantee)."""
    enabled: bool
    patient_aggregate: str | None = _optional()
    distance: str | None = _optional()
    candidates: dict | None = _optional()
    attacks: dict | None = _optional()
    family: dict | None = _optional()
    detectable: dict | None = _optional()
    coverage: dict | None = _optional()  # training patients the attacks judged (attacks.coverage)
    skipped: dict | None = _optional()
    strongest: dict | None = _optional()
    density_radius: dict | None = _optional()
    memorisation: dict | None = _optional()
    seconds: dict | None = _optional()
    encoder: str | None = _optional()
    dp: dict | None = _optional()
    copies: dict | None = _optional()  # the transform-invariant copy test (privacy/copies.py)
    copy_mask: np.ndarray | None = _internal()  # [n synthetic] near-copies of a training unit, either copy test
    evidence: PrivacyEvidence | None = _internal()

    @property
    def metrics(self) -> dict:
        """The privacy block of metrics.json."""
        return self.to_dict()

    @classmethod
    def from_dict(cls, data: dict | None):
        data = data if isinstance(data, dict) else {}
        return super().from_dict({"enabled": False, **data}) if data else None


@dataclasses.dataclass(frozen=True)
class CanaryResult(_Record):
    """The canary audit (privacy/canary.py): the attacks scored on public phantom canaries the model was (inserted)
    and was not (held back) trained on, and for a DP model the empirical lower bound on epsilon beside the
    accounted one. Written only for a model trained with trainer.canaries."""
    enabled: bool
    patients: dict | None = None  # inserted / held-back patients and units, synthetic units judged
    attacks: dict | None = None  # attack -> per-patient AUC [CI], TPR at low FPR, epsilon_bound
    skipped: dict | None = None
    strongest: dict | None = None
    epsilon: dict | None = None  # lower_bound, ceiling, accounted, delta, confidence, formula, exceeds_accounted
    seconds: float | None = None

    @classmethod
    def from_dict(cls, data: dict | None):
        return super().from_dict(data) if isinstance(data, dict) and data else None


@dataclasses.dataclass(frozen=True)
class Evaluation(_Record):
    """Everything the evaluator measured on one synthetic set: the body of metrics.json (the run record around
    it, verdict, timings, config, inputs and headline, is added by the judging path)."""
    counts: dict
    class_names: list
    synthetic: dict  # how the set was drawn or where it came from
    fidelity: FidelityResult | None
    diversity: dict | None  # MS-SSIM report of quality/diversity.py
    utility: UtilityResult | None
    privacy: PrivacyResult | None = _optional()
    release: dict | None = _optional()  # the release chain (evaluate only)
    canary: CanaryResult | None = _optional()  # the canary audit (a model trained with trainer.canaries)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Evaluation":
        data = data if isinstance(data, dict) else {}
        return cls(counts=data.get("counts"), class_names=data.get("class_names"), synthetic=data.get("synthetic"),
                   fidelity=FidelityResult.from_dict(data["fidelity"]) if "fidelity" in data else None,
                   diversity=data.get("diversity"),
                   utility=UtilityResult.from_dict(data["utility"]) if "utility" in data else None,
                   privacy=PrivacyResult.from_dict(data.get("privacy")), release=data.get("release"),
                   canary=CanaryResult.from_dict(data.get("canary")))

    def reading(self, name: str) -> Any:
        """The scalar a gate rule names (privacy.fid_ratio_key, frd_ratio_key, tstr_key): one of GATE_METRICS."""
        if name not in GATE_METRICS:
            raise ValueError(f"{name!r} is not a metric the release gate can read; allowed: "
                             f"{', '.join(GATE_METRICS)}")
        role, attribute = GATE_METRICS[name]
        record = getattr(self, role)
        return None if record is None else jsonable(getattr(record, attribute))


# The metrics a gate rule may name (the privacy.*_key config values, spelled as their metrics.json paths).
GATE_METRICS = {
    "fidelity.fid_ratio": ("fidelity", "fid_ratio"),
    "fidelity.frd_ratio": ("fidelity", "frd_ratio"),
    "utility.tstr_balanced_accuracy": ("utility", "tstr_balanced_accuracy"),
    "utility.tstr_equal_size_balanced_accuracy": ("utility", "tstr_equal_size_balanced_accuracy"),
}
