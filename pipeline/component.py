"""The component contract: what a component reads, writes and is configured by, and how it is driven.

Every component declares one :class:`ComponentSpec` in its own small file (``components/<name>/component.py``):
inputs and output (artifact types), config sections (those it defines and those it reads), its executor, and the
hooks through which the command line and the pipeline drive it (its own flags, options, preflight check, cache
key, what the run summary shows). ``components/registry.py`` lists the specs. The CLI (``pipeline.cli``) and the
sequential pipeline (``pipeline.runner``) read only these declarations and never name a component, so each
component can be run on its own (``vugan <name> --out DIR --<input> DIR``), inside a run folder
(``vugan <name> --run DIR``) or by ``vugan run``; all three write the same artifact folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from vugan.pipeline.artifacts import (MANIFEST, ArtifactError, ArtifactType, read_artifact, unmark_artifact,
                                      verify_artifact, write_artifact)
from vugan.pipeline.config import PipelineConfig, fingerprint, write_resolved
from vugan.pipeline.locks import folder_lock

Options = Mapping[str, Any]  # what the command line hands a component beyond config and inputs (ExecContext.options)


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


def executor(module: str) -> Callable[[ExecContext], ExecResult]:
    """``module.execute``, imported when the component runs, not whenever the command line or a config is built
    (so Beam and TensorFlow load only in the process that needs them)."""

    def execute(ctx: ExecContext) -> ExecResult:
        return importlib.import_module(module).execute(ctx)

    execute.__qualname__ = f"executor({module!r})"
    return execute


@dataclasses.dataclass(frozen=True)
class ExtraArgs:
    """Flags unknown to vugan that a component takes and passes on (Apache Beam pipeline options)."""

    kind: str  # what they are, for the error that refuses the others ("an Apache Beam pipeline option")
    unknown: Callable[[Sequence[str]], list[str]]  # those of the given flags that are NOT of this kind


@dataclasses.dataclass(frozen=True)
class CommandLine:
    """What a component adds to the common flags of ``vugan <name>`` and ``vugan run``; every hook is optional."""

    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None  # its own flags
    add_run_arguments: Callable[[argparse.ArgumentParser], None] | None = None  # flags it adds to `vugan run`
    # Parsed flags and extra args -> ExecContext.options. Also called on `vugan run`'s flags, which is why a flag
    # a component adds to `vugan run` has the same name there.
    options: Callable[[argparse.Namespace, Sequence[str]], dict] | None = None
    adjust_config: Callable[[PipelineConfig, argparse.Namespace], PipelineConfig] | None = None  # flags -> config
    extra_args: ExtraArgs | None = None
    child_flags: Callable[[Options], list[str]] | None = None  # its options as flags of its step's command in a run
    # `vugan <name> --run DIR` of a component that is no step of the pipeline: fills in its inputs and --out from
    # the run folder on the parsed flags (it then runs on its own, with the run's saved config).
    in_run_folder: Callable[[argparse.Namespace], None] | None = None


@dataclasses.dataclass(frozen=True)
class Pointer:
    """One line of the summary ``vugan run`` prints: where to find one of the component's outputs."""

    label: str
    path: str  # relative to the component's folder in the run ("" = the folder)
    rank: int  # position in the summary, smallest first
    command: str = ""  # shown instead of the path, formatted with {path} and {runs} (the runs folder)
    refused_note: str = ""  # shown when the step was refused (its preflight said no)


@dataclasses.dataclass(frozen=True)
class Column:
    """A column of ``vugan runs``: one word read from the component's folder in each run."""

    title: str
    read: Callable[[Path], str]


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
    config_classes: Mapping[str, type] = dataclasses.field(default_factory=dict)  # sections it defines
    in_pipeline: bool = True  # a step of `vugan run`; otherwise it runs alone (vugan <name> --out DIR)
    cli: CommandLine = CommandLine()
    # What besides config and inputs changes its output (a JSON-able value, fingerprinted into run.json's
    # options_key): a change reruns it in a run folder.
    options_key: Callable[[PipelineConfig, Options], Any] | None = None
    # Why it may not run now (a reason, shown as the step's state "refused"), or None; given its input folders
    # and options. The pipeline asks before it starts the step.
    preflight: Callable[[Mapping[str, Path], Options], str | None] | None = None
    # Checks that refuse the run (raise ValueError/ArtifactError naming what and what to do) and need the full
    # context: called by run() after the inputs are verified and before the output folder is touched, so a
    # refused rerun leaves the previous artifact exactly as it was (marker, config.toml, payload).
    validate: Callable[[ExecContext], None] | None = None
    pointers: tuple[Pointer, ...] = ()
    runs_column: Column | None = None

    def __post_init__(self):
        if not self.config_sections:
            raise ValueError(f"component {self.name}: declare at least one config section")
        unknown = sorted(set(self.summary_inputs) - set(self.inputs))
        if unknown:
            raise ValueError(f"component {self.name}: summary input {unknown[0]!r} is not one of its inputs")
        if not self.in_pipeline and (self.preflight or self.cli.child_flags or self.cli.add_run_arguments):
            raise ValueError(f"component {self.name}: preflight, child_flags and add_run_arguments are for "
                             "pipeline steps; it declares in_pipeline=False")

    @property
    def takes_run_folder(self) -> bool:
        """Whether ``vugan <name>`` has ``--run DIR`` (and ``--force``, ``--dry-run``)."""
        return self.in_pipeline or self.cli.in_run_folder is not None

    def config_fingerprint(self, config: PipelineConfig) -> str:
        return fingerprint({name: dataclasses.asdict(getattr(config, name)) for name in self.config_sections})

    def run(self, config: PipelineConfig, inputs: Mapping[str, str | Path], out_dir: str | Path,
            options: Mapping[str, Any] | None = None, log: Callable[[str], None] = print) -> dict:
        """Check inputs, execute, write ``config.toml`` and ``artifact.json``; return the manifest.

        Everything that may refuse the run comes first (inputs, the output folder, ``preflight``, ``validate``):
        a refusal leaves the folder as it was. Then the old marker goes (``unmark_artifact``) before the first
        byte changes, and the new one is written last: killed in between, the folder reads as incomplete.
        """
        missing = sorted(set(self.inputs) - set(inputs))
        if missing:
            raise ValueError(f"{self.name}: input {missing[0]!r} is required (pass --{missing[0]} DIR)")
        input_dirs = {k: Path(v) for k, v in inputs.items()}
        for name, expected in self.inputs.items():
            check_input(input_dirs[name], expected)
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "the output path exists and is a file, not a folder", str(out_dir))
        self._refuse_foreign_output(out_dir, input_dirs)
        ctx = ExecContext(config=config, inputs=input_dirs, out_dir=out_dir, options=dict(options or {}), log=log)
        out_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(out_dir, self.name):  # a second writer of this folder fails at once, naming the first
            self._refuse_before_writing(ctx)
            unmark_artifact(out_dir)
            write_resolved(config, out_dir, self.config_sections)
            started = time.time()
            result = self.execute(ctx)
            properties = {**result.properties, "wall_seconds": round(time.time() - started, 2)}
            return write_artifact(out_dir, artifact_type=self.artifact_type, producer=self.name,
                                  config_fingerprint=self.config_fingerprint(config), inputs=ctx.inputs,
                                  counts=result.counts, properties=properties, skip_dirs=self.skip_dirs,
                                  summary=result.summary)

    def _refuse_before_writing(self, ctx: ExecContext) -> None:
        """The component's own refusals (``validate``, then ``preflight``), while the folder is untouched."""
        if self.validate is not None:
            self.validate(ctx)
        if self.preflight is not None:
            reason = self.preflight(ctx.inputs, ctx.options)
            if reason:
                raise ValueError(f"{self.name}: refused: {reason}; {ctx.out_dir} was left as it was")

    def _refuse_foreign_output(self, out_dir: Path, inputs: Mapping[str, Path]) -> None:
        """Never write over an input, nor over another component's artifact (an exporter pointed at a model
        folder)."""
        resolved = out_dir.resolve()
        for name, folder in inputs.items():
            if folder.resolve() == resolved:
                raise ValueError(f"{self.name}: --out {out_dir} is also its input --{name}; choose another folder")
        if not (out_dir / MANIFEST).is_file():
            return
        try:
            found = read_artifact(out_dir)
        except ArtifactError:
            return  # an unreadable marker marks nothing worth keeping: this run replaces it
        if found.get("type") != self.artifact_type.value:
            raise ValueError(f"{out_dir}: holds a {found.get('type')} artifact (made by {found.get('producer')}), "
                             f"not a {self.artifact_type.value}; {self.name} will not write over it: choose another "
                             f"--out folder")


def check_input(folder: str | Path, expected: ArtifactType | None = None) -> dict:
    """An input folder as a consumer must find it: a finished artifact of the expected type whose files are what
    its producer wrote (``verify_artifact``); returns its manifest. Manifests older than per-file digests do not
    record their producer's ``skip_dirs``: they come from the producer's declared contract."""
    manifest = read_artifact(folder, expected)
    skip_dirs = None
    if "skip_dirs" not in manifest:
        from vugan.pipeline.registry import components

        try:
            skip_dirs = components().spec(manifest.get("producer", "")).skip_dirs
        except (KeyError, ValueError):
            skip_dirs = ()
    return verify_artifact(folder, expected, skip_dirs)
