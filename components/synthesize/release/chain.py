"""The release chain: what is released is what was judged.

The evaluator records in verdict.json the release it judged (:func:`release_spec`: model fingerprint, generator
variant, seed, count, filter; plus the candidate's digest). Synthesize publishes only when every link matches what
it is asked to release (:func:`check_release`, never overridable: a verdict on another set says nothing), and only
when the verdict passed or the release is forced (:func:`release_decision`; the override is recorded).
"""
from __future__ import annotations

import datetime as _dt
import getpass
import os
from pathlib import Path

from vugan.components.synthesize.release.candidate import CANDIDATE, candidate_digest
from vugan.components.synthesize.release.verdict import (VERDICT_FILE, ReleaseMismatch, ReleaseRefused, Verdict,
                                                         read_verdict)


def generator_variant(use_ema: bool, info: dict) -> str:
    return "EMA" if use_ema and info.get("ema") else "raw"


def release_spec(model_fingerprint: str, variant: str, seed: int, units_per_class: int, release_filter: bool) -> dict:
    return {"model_fingerprint": model_fingerprint, "generator": variant, "seed": int(seed),
            "units_per_class": int(units_per_class), "release_filter": bool(release_filter)}


_LINKS = {"model_fingerprint": "model fingerprint", "generator": "generator variant (synthesize.use_ema)",
          "seed": "seed (synthesize.seed)", "units_per_class": "count (synthesize.units_per_class)",
          "release_filter": "release filter (synthesize.release_filter)"}


def check_release(evaluation_dir: str | Path, expected: dict) -> dict:
    """The evaluation's release record when it judged exactly ``expected`` and its candidate is intact; else
    raises ReleaseMismatch naming the first difference (no override: a verdict on another set says nothing)."""
    record = read_verdict(evaluation_dir).release
    where = Path(evaluation_dir) / VERDICT_FILE
    if record is None:
        raise ReleaseMismatch(f"synthesize: {where} records no judged release candidate; rerun the evaluator "
                              "(vugan evaluate) with this model and [synthesize] config")
    for key, label in _LINKS.items():
        if record.get(key) != expected[key]:
            raise ReleaseMismatch(
                f"synthesize: the evaluation judged another set: {label} is {record.get(key)!r} there but "
                f"{expected[key]!r} here; no synthetic data was written. Rerun the evaluator for this model and "
                "config (vugan evaluate, or vugan run --run DIR)")
    digest = candidate_digest(Path(evaluation_dir) / CANDIDATE)
    if record.get("candidate_sha256") != digest:
        raise ReleaseMismatch(f"synthesize: the judged candidate under {Path(evaluation_dir) / CANDIDATE} changed "
                              f"since the verdict (sha256 {digest[:12]} != {str(record.get('candidate_sha256'))[:12]})"
                              "; rerun the evaluator")
    return record


def release_decision(verdict: Verdict, force: bool, who: str | None = None, when: str | None = None) -> dict:
    """The release record; raises :class:`ReleaseRefused` for a failed verdict without ``force``."""
    if verdict.passed:
        return {"passed": True, "forced": False, "reasons": list(verdict.reasons)}
    if not force:
        reasons = "; ".join(verdict.reasons) or "no reason given"
        raise ReleaseRefused(
            f"synthesize: the evaluator's verdict did not pass ({reasons}); no synthetic data was written. "
            f"Improve the model, or pass --force-release to release anyway (the override is recorded in the datasheet)")
    return {"passed": False, "forced": True, "reasons": list(verdict.reasons),
            "forced_by": who or _user(), "forced_at": when or now()}


def refusal(evaluation_dir: str | Path, force: bool) -> str | None:
    """Why a run may not release (the verdict failed and no override), or None: the pipeline's check before it
    starts synthesize, so a refused release is a state of the run, not a crash of its step."""
    verdict = read_verdict(evaluation_dir)
    if verdict.passed or force:
        return None
    return "release gate: verdict failed (" + ("; ".join(verdict.reasons) or "no reason given") + \
           "); pass --force-release to vugan run or vugan synthesize to override (recorded)"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER", "unknown")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
