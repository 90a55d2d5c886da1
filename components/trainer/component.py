"""The trainer's contract: Examples -> Model (the ac-GAN), configured by [trainer]."""
from __future__ import annotations

from vugan.components.trainer.spec import TrainerConfig
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import ComponentSpec, Pointer, executor


SPEC = ComponentSpec(
    name="train",
    artifact_type=ArtifactType.MODEL,
    inputs={"examples": ArtifactType.EXAMPLES},
    config_sections=("trainer",),
    config_classes={"trainer": TrainerConfig},
    execute=executor("vugan.components.trainer.run"),
    description="train the class-conditional GAN (ac-GAN) on vertebral-unit examples",
    skip_dirs=("logs", "checkpoints"),
    pointers=(Pointer("TensorBoard", "logs", rank=2, command="tensorboard --logdir {runs}   (this run: {path})"),),
)
