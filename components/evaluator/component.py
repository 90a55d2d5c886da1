"""The evaluator's contract: Examples + Model -> Evaluation (metrics.json, verdict.json, report.html).

It defines [evaluator] and [privacy] and reads [synthesize] too: it stages and judges the very set synthesize will
publish (components/synthesize/release/).
"""
from __future__ import annotations

from vugan.components.evaluator.privacy.spec import PrivacyConfig
from vugan.components.evaluator.spec import EvaluatorConfig
from vugan.components.synthesize.release.verdict import verdict_word
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import Column, ComponentSpec, Pointer, executor


SPEC = ComponentSpec(
    name="evaluate",
    artifact_type=ArtifactType.EVALUATION,
    inputs={"examples": ArtifactType.EXAMPLES, "model": ArtifactType.MODEL},
    config_sections=("evaluator", "privacy", "synthesize"),
    config_classes={"evaluator": EvaluatorConfig, "privacy": PrivacyConfig},
    execute=executor("vugan.components.evaluator.run"),
    description="fidelity, diversity, utility and privacy of the synthetic set; metrics.json, report.html, verdict",
    pointers=(Pointer("report", "report.html", rank=1),),
    runs_column=Column("verdict", verdict_word),
)
