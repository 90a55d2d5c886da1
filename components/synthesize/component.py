"""The synthesize contract: Model + Evaluation -> SyntheticDataset, configured by [synthesize], behind the gate.

It reads only the evaluation's summary (verdict and headline metrics): a report-only change leaves it cached. In a
run, its preflight refuses a failed verdict before the step starts (the step's state is then "refused"), unless
``--force-release`` (recorded in the datasheet and the artifact).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping, Sequence

from vugan.components.synthesize.spec import SynthesizeConfig
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import CommandLine, ComponentSpec, Options, Pointer, executor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force-release", action="store_true",
                        help="publish although the verdict failed (recorded in the datasheet and the artifact)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force-release", action="store_true",
                        help="let synthesize write the synthetic set although the verdict failed (recorded)")


def options(args: argparse.Namespace, extra: Sequence[str]) -> dict:
    # --force is the CLI's "ignore the cache" flag only; overriding the gate takes --force-release.
    return {"force_release": bool(getattr(args, "force_release", False))}


def child_flags(opts: Options) -> list[str]:
    return ["--force-release"] if opts.get("force_release") else []


def validate(ctx) -> None:
    from vugan.components.synthesize.run import validate as check

    check(ctx)


def preflight(inputs: Mapping[str, Path], opts: Options) -> str | None:
    from vugan.components.synthesize.release import refusal

    return refusal(inputs["evaluation"], bool(opts.get("force_release")))


SPEC = ComponentSpec(
    name="synthesize",
    artifact_type=ArtifactType.SYNTHETIC_DATASET,
    inputs={"model": ArtifactType.MODEL, "evaluation": ArtifactType.EVALUATION},
    summary_inputs=("evaluation",),  # only the verdict and headline metrics reach the datasheet
    config_sections=("synthesize",),
    config_classes={"synthesize": SynthesizeConfig},
    execute=executor("vugan.components.synthesize.run"),
    cli=CommandLine(add_arguments=add_arguments, add_run_arguments=add_run_arguments, options=options,
                    child_flags=child_flags),
    preflight=preflight,
    validate=validate,  # the chain and the gate, before a previous synthetic set is touched
    pointers=(Pointer("synthetic data", "", rank=4, refused_note="refused by the release gate"),),
    description="draw the shareable synthetic dataset (TFRecords, NIfTI, previews, datasheet) behind the release gate",
)
