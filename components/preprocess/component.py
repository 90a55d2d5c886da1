"""The preprocess contract: scans.csv (run.manifest or --manifest) -> Examples, configured by [preprocess].

Unknown flags are Apache Beam pipeline options, passed through to the Beam job; the manifest's bytes and those
options are part of the cache key (a changed manifest reruns preprocess in a run folder).
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Sequence

from vugan.components.preprocess.spec import PreprocessConfig
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import CommandLine, ComponentSpec, ExtraArgs, Options, executor
from vugan.pipeline.config import PipelineConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", help="scans.csv to preprocess (local or gs://); overrides run.manifest")


def options(args: argparse.Namespace, extra: Sequence[str]) -> dict:
    # `vugan run` has --manifest too (it sets run.manifest); its extra args are Beam options as well.
    return {"manifest": getattr(args, "manifest", None), "beam_args": list(extra or [])}


def unknown_beam_flags(args: Sequence[str]) -> list[str]:
    from vugan.components.preprocess.beam_pipeline import unknown_beam_flags as unknown

    return unknown(args)


def options_key(config: PipelineConfig, opts: Options) -> dict:
    """The manifest (path and bytes) and the Beam options: what besides config and inputs changes the output."""
    manifest = config.run.manifest
    digest = ""
    if manifest and "://" not in manifest and Path(manifest).is_file():
        digest = hashlib.sha256(Path(manifest).read_bytes()).hexdigest()[:16]
    return {"manifest": manifest, "sha256": digest, "beam_args": list(opts.get("beam_args") or [])}


SPEC = ComponentSpec(
    name="preprocess",
    artifact_type=ArtifactType.EXAMPLES,
    inputs={},
    config_sections=("preprocess",),
    config_classes={"preprocess": PreprocessConfig},
    execute=executor("vugan.components.preprocess.run"),
    cli=CommandLine(add_arguments=add_arguments, options=options,
                    extra_args=ExtraArgs("an Apache Beam pipeline option", unknown_beam_flags)),
    options_key=options_key,
    description="MRI volumes (scans.csv) -> vertebral-unit crops in per-split TFRecords (Apache Beam)",
)
