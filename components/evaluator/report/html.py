"""The one self-contained HTML page a scientist or data-protection reviewer reads (report.html).

Layout: title and run facts, the release-gate verdict banner, then the sections in order (ours: overview,
fidelity, diversity, utility; then the privacy evaluator's). Every figure is embedded as a base64 PNG data URI
(the page needs no other file) and also written to ``figures/<name>.png``.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

from vugan.components.evaluator.report.types import ReportSection

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:0 auto;padding:1em 2em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.facts{color:#555;font-size:.9em}
.verdict{padding:1em 1.2em;border-radius:6px;margin:1em 0;font-size:1.05em}
.verdict.pass{background:#e3f6e5;border:2px solid #2e7d32} .verdict.fail{background:#fdecea;border:2px solid #c62828}
.verdict h2{border:none;margin:0 0 .3em 0} .verdict li{font-size:.9em}
.explain{background:#f5f7fa;border-left:4px solid #90a4ae;padding:.6em 1em;margin:.6em 0}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:right} th{background:#eceff1} td:first-child,th:first-child{text-align:left}
table.compact{font-size:.8em} table.text td{text-align:left}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.88em;color:#444}
.warning{color:#b71c1c;font-weight:bold} .ok{color:#2e7d32} .skipped{color:#8d6e00;font-weight:bold}
.note{font-size:.85em;color:#555} nav a{margin-right:1em}
"""


def verdict_banner(verdict: dict | None) -> str:
    """Green PASS or red FAIL box listing every rule of the release gate."""
    if verdict is None:
        return ('<div class="verdict fail"><h2>Release gate: NO VERDICT</h2>'
                '<p>The privacy evaluation did not run, so this synthetic set must not be released.</p></div>')
    passed = bool(verdict.get("passed"))
    word = "PASSED: the synthetic set may be released" if passed else "FAILED: do not release this synthetic set"
    forced = ' <span class="warning">(forced)</span>' if verdict.get("forced") else ""
    items = "".join(f"<li>{html.escape(r)}</li>" for r in verdict.get("reasons", []))
    outcome = verdict.get("privacy_outcome")
    privacy = (f'<p class="privacy-outcome"><b>Privacy: {html.escape(str(outcome))}.</b> '
               f'{html.escape(str(verdict.get("headline", "")))}</p>') if outcome else ""
    return (f'<div id="verdict" class="verdict {"pass" if passed else "fail"}"><h2>Release gate {word}{forced}</h2>'
            f'{privacy}<p>Every FAIL line below blocks the release; each line gives the measured value and its '
            f'threshold, NOTE lines are for the reviewer.</p><ul>{items}</ul></div>')


def render_section(section: ReportSection) -> str:
    figs = "".join(
        f'<figure id="fig-{html.escape(f.name)}"><img alt="{html.escape(f.title)}" '
        f'src="data:image/png;base64,{base64.b64encode(f.png).decode()}">'
        f'<figcaption><b>{html.escape(f.title)}.</b> {html.escape(f.caption)}</figcaption></figure>'
        for f in section.figures)
    return (f'<section id="{html.escape(section.key)}"><h2>{html.escape(section.title)}</h2>'
            f'<div class="explain">{section.explanation}</div>{section.body_html}{figs}</section>')


def build_html(title: str, facts: dict, verdict: dict | None, sections: Sequence[ReportSection]) -> str:
    nav = "".join(f'<a href="#{html.escape(s.key)}">{html.escape(s.title)}</a>' for s in sections)
    fact_line = " · ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in facts.items())
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"facts\">{fact_line}</p>{verdict_banner(verdict)}"
            f"<nav>{nav}</nav>{''.join(render_section(s) for s in sections)}</body></html>")


def write_report(out_dir: str | Path, title: str, facts: dict, verdict: dict | None,
                 sections: Sequence[ReportSection]) -> Path:
    """Write ``report.html`` and ``figures/<name>.png`` (figure names must be unique across sections)."""
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for section in sections:
        for fig in section.figures:
            if fig.name in seen:
                raise ValueError(f"report: two figures are named {fig.name!r}; figure names must be unique")
            seen.add(fig.name)
            (fig_dir / f"{fig.name}.png").write_bytes(fig.png)
    path = out_dir / "report.html"
    path.write_text(build_html(title, facts, verdict, sections), encoding="utf-8")
    return path
