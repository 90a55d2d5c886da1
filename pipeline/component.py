"""The component contract: declared inputs, outputs and config sections, and one ``execute`` function.

Every component (``components/<name>/run.py``) exposes a module-level ``SPEC`` of type :class:`ComponentSpec`.
The CLI and the sequential pipeline only ever talk to components through it, so each component can be run on
its own (``vugan <name> --out DIR --<input> DIR``), inside a run folder (``vugan <name> --run DIR``) or by
``vugan run``; all three write the same artifact folder.
"""
from __future__ import annotations

import dataclasses
import errno
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from vugan.pipeline.artifacts import ArtifactType, read_artifact, write_artifact
from vugan.pipeline.config import PipelineConfig, fingerprint, write_resolved
from vugan.pipeline.locks import folder_lock


@dataclasses.dataclass(frozen=True)
class ExecContext:
    """What an executor gets: the resolved config, its input artifact folders and its output folder."""

    config: PipelineConfig
    inputs: Mapping[str, Path]
    out_dir: Path
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # CLI extras: manifest, beam args, force
    log: Callable[[str], None] = print


@dataclasses.dataclass(frozen=True)
class ExecResult:
    counts: Mapping[str, Any]
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    summary: Mapping[str, Any] | None = None  # what consumers decide on (pipeline.artifacts.write_artifact)


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
    name: str  # CLI sub-command and run sub-folder
    artifact_type: ArtifactType
    inputs: Mapping[str, ArtifactType]  # input name -> expected artifact type (name is also the CLI flag)
    config_sections: tuple[str, ...]  # the sections whose values change this component's output
    execute: Callable[[ExecContext], ExecResult]
    description: str = ""
    skip_dirs: tuple[str, ...] = ()  # output sub-folders not part of the payload fingerprint (logs, checkpoints)
    # Inputs of which this component reads only the producer's summary (e.g. the verdict): a change elsewhere in
    # that artifact leaves this component cached.
    summary_inputs: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.config_sections:
            raise ValueError(f"component {self.name}: declare at least one config section")

    def config_fingerprint(self, config: PipelineConfig) -> str:
        return fingerprint({name: dataclasses.asdict(getattr(config, name)) for name in self.config_sections})

    def run(self, config: PipelineConfig, inputs: Mapping[str, str | Path], out_dir: str | Path,
            options: Mapping[str, Any] | None = None, log: Callable[[str], None] = print) -> dict:
        """Check inputs, execute, write ``config.toml`` and ``artifact.json``; return the manifest."""
        missing = sorted(set(self.inputs) - set(inputs))
        if missing:
            raise ValueError(f"{self.name}: input {missing[0]!r} is required (pass --{missing[0]} DIR)")
        for name, expected in self.inputs.items():
            read_artifact(inputs[name], expected)
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "the output path exists and is a file, not a folder", str(out_dir))
        out_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(out_dir, self.name):  # a second writer of this folder fails at once, naming the first
            write_resolved(config, out_dir, self.config_sections)
            started = time.time()
            ctx = ExecContext(config=config, inputs={k: Path(v) for k, v in inputs.items()}, out_dir=out_dir,
                              options=dict(options or {}), log=log)
            result = self.execute(ctx)
            properties = {**result.properties, "wall_seconds": round(time.time() - started, 2)}
            return write_artifact(out_dir, artifact_type=self.artifact_type, producer=self.name,
                                  config_fingerprint=self.config_fingerprint(config), inputs=ctx.inputs,
                                  counts=result.counts, properties=properties, skip_dirs=self.skip_dirs,
                                  summary=result.summary)
