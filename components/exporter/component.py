"""The exporter's contract: Model -> PushedModel (a SavedModel for TF Serving), configured by [exporter]."""
from __future__ import annotations

from vugan.components.exporter.spec import ExporterConfig
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import ComponentSpec, ExecContext, ExecResult, Pointer


def execute(ctx: ExecContext) -> ExecResult:
    from vugan.components.exporter import run  # loaded when it runs, not whenever the command line is built

    return run.execute(ctx)


SPEC = ComponentSpec(
    name="export",
    artifact_type=ArtifactType.PUSHED_MODEL,
    inputs={"model": ArtifactType.MODEL},
    config_sections=("exporter",),
    config_classes={"exporter": ExporterConfig},
    execute=execute,
    description="trained generator -> TensorFlow SavedModel (serving_default, generate) for TF Serving",
    pointers=(Pointer("SavedModel", "saved_model", rank=3),),  # run.SAVED_MODEL
)
