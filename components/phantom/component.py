"""The phantom's contract: a synthetic spine MRI cohort from [phantom]; it runs alone, as no step of a run."""
from __future__ import annotations

import argparse

from vugan.components.phantom.spec import PhantomConfig
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import CommandLine, ComponentSpec, executor
from vugan.pipeline.config import PipelineConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patients", type=int, default=None, help="number of patients (overrides phantom.patients)")
    parser.add_argument("--seed", type=int, default=None, help="cohort seed (overrides phantom.seed)")


def adjust_config(config: PipelineConfig, args: argparse.Namespace) -> PipelineConfig:
    changes = {k: getattr(args, k) for k in ("patients", "seed") if getattr(args, k, None) is not None}
    return config.replace("phantom", **changes) if changes else config


SPEC = ComponentSpec(
    name="phantom",
    artifact_type=ArtifactType.PHANTOM_COHORT,
    inputs={},
    config_sections=("phantom",),
    config_classes={"phantom": PhantomConfig},
    execute=executor("vugan.components.phantom.run"),
    in_pipeline=False,  # it makes the scans a run starts from: `vugan phantom --out DIR`, then `vugan run`
    cli=CommandLine(add_arguments=add_arguments, adjust_config=adjust_config),
    description="write a synthetic sagittal spine MRI cohort (C1..S1) with vertebra masks and centroids",
)
