"""The exporter's contract: Model -> PushedModel (a SavedModel for TF Serving), configured by [exporter]."""
from __future__ import annotations

from vugan.components.exporter.spec import ExporterConfig
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import ComponentSpec, Pointer, executor


SPEC = ComponentSpec(
    name="export",
    artifact_type=ArtifactType.PUSHED_MODEL,
    inputs={"model": ArtifactType.MODEL},
    config_sections=("exporter",),
    config_classes={"exporter": ExporterConfig},
    execute=executor("vugan.components.exporter.run"),
    description="trained generator -> TensorFlow SavedModel (serving_default, generate) for TF Serving",
    pointers=(Pointer("SavedModel", "saved_model", rank=3),),  # run.SAVED_MODEL
)
