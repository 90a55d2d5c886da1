"""The audit's contract: any synthetic set (--synthetic DIR) judged against an Examples artifact's splits.

It runs alone, as no step of a run; inside a run folder (``--run DIR``) its inputs are the run's own Examples and
synthetic set, into ``DIR/audit``. It reads [evaluator] and [privacy] (defined by the evaluator).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import CommandLine, ComponentSpec, executor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--synthetic", type=Path, help="synthetic set: a folder with Split-synthetic/ TFRecords, "
                                                       "or NIfTI units with manifest.csv or one folder per class")


def options(args: argparse.Namespace, extra: Sequence[str]) -> dict:
    if getattr(args, "synthetic", None) is None:
        raise ValueError("audit: pass --synthetic DIR (Split-synthetic/ TFRecords or a folder of NIfTI units), "
                         "or --run RUN_DIR to audit a run's own synthesize output")
    return {"synthetic": str(args.synthetic)}


def defaults_in_run(args: argparse.Namespace) -> None:
    """``vugan audit --run DIR``: audit is not a step of a run, but inside one its inputs are obvious: the run's
    Examples (DIR/preprocess), its synthetic set (DIR/synthesize, unless --synthetic is given), into DIR/audit
    (unless --out is given). Fills those in on ``args`` and leaves the run's saved config as the base."""
    run_dir = Path(args.run)
    if not (run_dir / "config.toml").exists():
        raise FileNotFoundError(f"{run_dir}: no config.toml; is this a run folder made by `vugan run`?")
    args.examples = args.examples or run_dir / "preprocess"
    args.synthetic = args.synthetic or run_dir / "synthesize"
    args.out = args.out or run_dir / "audit"
    for what, path in (("--examples", args.examples), ("--synthetic", args.synthetic)):
        if not Path(path).is_dir():
            raise FileNotFoundError(f"audit --run {run_dir}: {path} ({what}) does not exist; run the pipeline "
                                    f"first (vugan run --run {run_dir}) or pass {what} DIR")


def synthetic_is_complete(ctx) -> None:
    """A synthetic set that vugan wrote is audited only when finished and unchanged (its artifact.json and the
    recorded digests); a set from elsewhere (no artifact.json, no vugan config.toml) is read as it is."""
    from vugan.pipeline.artifacts import MANIFEST
    from vugan.pipeline.component import check_input

    folder = Path(ctx.options["synthetic"])
    config = folder / "config.toml"
    written_by_vugan = (folder / MANIFEST).exists() or (
        config.is_file() and "[synthesize]" in config.read_text(errors="replace"))
    if written_by_vugan:
        check_input(folder, ArtifactType.SYNTHETIC_DATASET)


SPEC = ComponentSpec(
    name="audit",
    artifact_type=ArtifactType.EVALUATION,
    inputs={"examples": ArtifactType.EXAMPLES},
    config_sections=("evaluator", "privacy"),
    execute=executor("vugan.components.evaluator.audit"),
    in_pipeline=False,
    validate=synthetic_is_complete,
    cli=CommandLine(add_arguments=add_arguments, options=options, in_run_folder=defaults_in_run),
    description="judge any synthetic set (TFRecords or NIfTI) against an Examples artifact's splits: fidelity, "
                "image-only privacy attacks, copies and the release gate; metrics.json, verdict.json, report.html",
)
