"""Plain data passed from the metric modules (fidelity, privacy) to the HTML report writer."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Figure:
    name: str  # file stem under figures/, e.g. "privacy_roc_unit"
    title: str
    caption: str  # one or two sentences a non-ML reviewer can read
    png: bytes


@dataclasses.dataclass(frozen=True)
class ReportSection:
    key: str  # stable anchor id, e.g. "fidelity", "privacy"
    title: str
    explanation: str  # what the numbers mean and which direction is good, in plain language (HTML allowed)
    body_html: str = ""  # tables etc.; figures are embedded by the report writer
    figures: tuple[Figure, ...] = ()
