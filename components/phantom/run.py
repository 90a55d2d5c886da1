"""``vugan phantom --out DIR [--patients N] [--seed S]``: write a synthetic spine MRI cohort (see core.py)."""
from __future__ import annotations

import argparse
import time

from vugan.components.phantom.core import generate_cohort
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import ComponentSpec, ExecContext, ExecResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patients", type=int, default=None, help="number of patients (overrides phantom.patients)")
    parser.add_argument("--seed", type=int, default=None, help="cohort seed (overrides phantom.seed)")


def adjust_config(config, args):
    changes = {k: getattr(args, k) for k in ("patients", "seed") if getattr(args, k, None) is not None}
    return config.replace("phantom", **changes) if changes else config


def execute(ctx: ExecContext) -> ExecResult:
    cfg = ctx.config.phantom
    started = time.time()
    counts = generate_cohort(ctx.out_dir, cfg, log=ctx.log)
    return ExecResult(counts=counts, properties={
        "manifest": "scans.csv",
        "centroids": "VerSe list; X, Y, Z = voxel indices along array axes 0, 1, 2",
        "seconds_per_scan": round((time.time() - started) / max(counts["scans"], 1), 3),
    })


SPEC = ComponentSpec(
    name="phantom",
    artifact_type=ArtifactType.PHANTOM_COHORT,
    inputs={},
    config_sections=("phantom",),
    execute=execute,
    description="write a synthetic sagittal spine MRI cohort (C1..S1) with vertebra masks and centroids",
)
