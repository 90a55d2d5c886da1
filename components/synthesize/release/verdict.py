"""The verdict: the evaluator's decision on a release candidate, and ``verdict.json``, its one file.

The release gate (components/evaluator/gate.py) returns a :class:`Verdict`; the evaluator writes it with
:func:`write_verdict`; synthesize, the pipeline's preflight and ``vugan runs`` read it with :func:`read_verdict`.
Anything but ``"passed": true`` counts as not passed: a missing or unreadable file never releases data.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

VERDICT_FILE = "verdict.json"


class ReleaseRefused(ValueError):
    """The evaluator's verdict did not pass and the release was not forced."""


class ReleaseMismatch(ReleaseRefused):
    """The evaluation judged another set than the one asked for (model, generator variant, seed, count, filter)."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    passed: bool
    outcome: str  # the privacy outcome (gate.LEAK, NO_LEAK, TOO_FEW, or "privacy not evaluated")
    reasons: Sequence[str]
    headline: str = ""
    found: bool = True  # False when verdict.json is missing or unreadable (then never passed)
    release: Mapping[str, Any] | None = None  # the release chain it judged (chain.release_spec + digest), if any

    def to_dict(self) -> dict:
        """The verdict.json fields the gate decides (the evaluator adds the release chain or the audited set)."""
        return {"passed": self.passed, "privacy_outcome": self.outcome, "headline": self.headline,
                "reasons": list(self.reasons), "forced": False}


def write_verdict(out_dir: str | Path, verdict: Mapping[str, Any]) -> Path:
    """Write ``verdict.json`` (a JSON-ready dict: :meth:`Verdict.to_dict` plus what the evaluator adds)."""
    path = Path(out_dir) / VERDICT_FILE
    path.write_text(json.dumps(verdict, indent=2) + "\n")
    return path


def read_verdict(evaluation_dir: str | Path) -> Verdict:
    """``verdict.json`` of an Evaluation artifact; a missing or unreadable one is a not-passed, not-found verdict."""
    path = Path(evaluation_dir) / VERDICT_FILE
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        return Verdict(False, "", (f"no readable verdict at {path} ({type(exc).__name__})",), found=False)
    reasons = data.get("reasons") or []
    if not isinstance(reasons, list):
        reasons = [str(reasons)]
    release = data.get("release")
    return Verdict(data.get("passed") is True, str(data.get("privacy_outcome") or ""), tuple(str(r) for r in reasons),
                   headline=str(data.get("headline") or ""), found=True,
                   release=release if isinstance(release, dict) else None)


def verdict_word(evaluation_dir: str | Path) -> str:
    """One word for ``vugan runs``: passed, failed, unreadable, or "-" when there is no verdict yet."""
    if not (Path(evaluation_dir) / VERDICT_FILE).exists():
        return "-"
    verdict = read_verdict(evaluation_dir)
    return "unreadable" if not verdict.found else ("passed" if verdict.passed else "failed")
