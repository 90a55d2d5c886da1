"""``vugan phantom --out DIR [--patients N] [--seed S]``: write a synthetic spine MRI cohort (see core.py)."""
from __future__ import annotations

import time

from vugan.components.phantom.core import generate_cohort
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import ExecContext, ExecResult


def execute(ctx: ExecContext) -> ExecResult:
    cfg = ctx.config.phantom
    started = time.time()
    counts = generate_cohort(ctx.out_dir, cfg, log=ctx.log)
    return ExecResult(counts=counts, properties={
        "manifest": "scans.csv",
        "centroids": "VerSe list; X, Y, Z = voxel indices along array axes 0, 1, 2",
        "seconds_per_scan": round((time.time() - started) / max(counts["scans"], 1), 3),
    })
