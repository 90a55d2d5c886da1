"""The sequential pipeline: the registry's steps (``components/registry.py``), in order, inside one run folder.

A run folder (``runs/00007-demo/``) holds the resolved ``config.toml``, ``run.json`` (state and history of each
component) and one sub-folder per component, named as its CLI command. New runs never reuse a folder. Inside
an existing run, a component is CACHED (skipped) when its artifact exists and neither its config sections, nor
its inputs' fingerprints, nor its options key (``ComponentSpec.options_key``, e.g. a manifest and its content)
changed; otherwise it reruns, and what depends on its output follows only if that output really changed. A step
whose ``preflight`` says no is REFUSED (a state of the run, not a crash).

This module reads only the components' declared contracts (``pipeline.component``); it names none of them.

Each component runs in its own process (the same ``vugan <component> --out DIR`` command a user would type):
TensorFlow state such as the trainer's logical-device split or mixed-precision policy cannot leak into the
next component, and the log of each step is exactly that command's output (``<component>/log.txt``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from vugan.pipeline.artifacts import MANIFEST, ArtifactError, input_fingerprint, read_artifact, unmark_artifact
from vugan.pipeline.component import ComponentSpec, Options, check_input
from vugan.pipeline.config import PipelineConfig, dumps_toml, fingerprint, load_config, read_toml_file, write_resolved
from vugan.pipeline.locks import folder_lock, is_locked
from vugan.pipeline.registry import components

RUN_JSON = "run.json"
_RUN_DIR = re.compile(r"^(\d{5})-")


def _spec(name: str) -> ComponentSpec:
    return components().spec(name)


def _order() -> tuple[str, ...]:
    return components().order


def _producers() -> dict[str, str]:
    """Artifact type -> the pipeline step producing it (how input names map to run sub-folders)."""
    return components().producers


def _input_dirs(spec: ComponentSpec, run_dir: Path) -> dict[str, Path]:
    producers = _producers()
    return {inp: run_dir / producers[t.value] for inp, t in spec.inputs.items()}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ run folders

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create ``runs_dir/<next number>-<name>``; numbers only grow, so an earlier run is never reused."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in runs_dir.iterdir() if (m := _RUN_DIR.match(p.name))]
    number = max(taken, default=0) + 1
    while True:
        path = runs_dir / f"{number:05d}-{_slug(name)}"
        try:
            path.mkdir()  # exist_ok=False: two concurrent `vugan run`s cannot share a folder
            return path
        except FileExistsError:
            number += 1


def next_run_name(runs_dir: str | Path, name: str) -> str:
    runs_dir = Path(runs_dir)
    taken = [int(m.group(1)) for p in runs_dir.iterdir() if (m := _RUN_DIR.match(p.name))] if runs_dir.is_dir() else []
    return f"{max(taken, default=0) + 1:05d}-{_slug(name)}"


def resolve_run_config(run_dir: str | Path, config_path: str | Path | None = None,
                       overrides: Iterable[str] = ()) -> PipelineConfig:
    """The run's saved ``config.toml``, then the keys of ``config_path`` (if any), then ``--set`` overrides."""
    saved_path = Path(run_dir) / "config.toml"
    if not saved_path.exists():
        raise FileNotFoundError(f"{run_dir}: no config.toml; is this a run folder made by `vugan run`?")
    merged = tomllib.loads(saved_path.read_text())
    if config_path is not None:
        if not Path(config_path).exists():
            raise FileNotFoundError(f"config file {config_path} does not exist")
        for section, values in read_toml_file(config_path).items():
            merged.setdefault(section, {}).update(values if isinstance(values, dict) else {})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(dumps_toml(merged))
        return load_config(path, list(overrides))


def _absolute_manifest(manifest: str) -> str:
    # A relative local path would stop working once the run is rerun from another directory.
    if not manifest or "://" in manifest:
        return manifest
    return str(Path(manifest).expanduser().resolve())


# ------------------------------------------------------------------------------------------------ run.json

def _load_state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / RUN_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        return {"run": run_dir.name, "components": {}, "history": []}


def _save_state(run_dir: Path, state: dict) -> None:
    state["updated_at"] = _now()
    tmp = run_dir / (RUN_JSON + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str) + "\n")
    os.replace(tmp, run_dir / RUN_JSON)


# ------------------------------------------------------------------------------------------------ planning

@dataclasses.dataclass
class Step:
    name: str
    action: str  # "run", "cached", "blocked", "refused"
    reason: str
    command: list[str] = dataclasses.field(default_factory=list)


def options_key(spec: ComponentSpec, config: PipelineConfig, options: Options) -> str:
    """What besides config and inputs changes a component's output (its declared options key), fingerprinted."""
    return "" if spec.options_key is None else fingerprint(spec.options_key(config, options))


def _config_diff(out_dir: Path, spec, config: PipelineConfig) -> str:
    """Which keys changed since the artifact was made ("evaluator.min_synthetic 1000 -> 500")."""
    try:
        old = tomllib.loads((out_dir / "config.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return "config changed"
    new = config.to_dict()
    changes = []
    for section in spec.config_sections:
        before, after = old.get(section, {}), new.get(section, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                changes.append(f"{section}.{key} {before.get(key, '(unset)')!r} -> {after.get(key, '(unset)')!r}")
    return "config changed: " + (", ".join(changes[:6]) if changes else "fingerprint differs")


def decide(name: str, run_dir: Path, config: PipelineConfig, state: dict, opt_key: str, force: bool,
           rerunning: Mapping[str, str]) -> tuple[str, str]:
    """(action, reason) for one component given the current folder. ``rerunning`` maps upstream components that
    will run in this plan (dry run) to why; during a real run it is empty, as upstream outputs then exist."""
    spec = _spec(name)
    producers = _producers()
    out_dir = run_dir / name
    upstream = {inp: producers[t.value] for inp, t in spec.inputs.items()}
    for inp, producer in upstream.items():
        if state.get("components", {}).get(producer, {}).get("state") in ("failed", "blocked", "refused"):
            return "blocked", f"input {inp} missing: {producer} {state['components'][producer]['state']}"
    if not (out_dir / MANIFEST).exists():
        return "run", "no finished artifact yet"
    if force:
        return "run", "--force"
    try:
        manifest = read_artifact(out_dir, spec.artifact_type)
    except ArtifactError as exc:
        return "run", f"unreadable artifact ({exc})"
    if manifest.get("config_fingerprint") != spec.config_fingerprint(config):
        return "run", _config_diff(out_dir, spec, config)
    recorded = state.get("components", {}).get(name, {}).get("options_key")
    if recorded is not None and recorded != opt_key:
        return "run", "manifest or Beam options changed"
    for inp, producer in upstream.items():
        if producer in rerunning:
            return "run", f"upstream {producer} reruns (its output may change)"
        summary_only = inp in spec.summary_inputs
        try:
            current = input_fingerprint(read_artifact(run_dir / producer), summary_only)
        except ArtifactError:
            return "blocked", f"input {inp} ({producer}/) is not a finished artifact"
        before = input_fingerprint(manifest.get("inputs", {}).get(inp, {"fingerprint": None}), summary_only)
        if before != current:
            return "run", f"input {inp} changed ({before} -> {current})"
    try:  # cached means trusted as it is: the files must still be what the component wrote
        check_input(out_dir, spec.artifact_type)
    except ArtifactError as exc:
        return "run", f"its files changed since it was made ({exc})"
    return "cached", f"config and inputs unchanged (config {manifest['config_fingerprint']}, " \
                     f"artifact {manifest['fingerprint']})"


def child_command(name: str, run_dir: Path, options: Options | None = None, extra_args: Sequence[str] = (),
                  debug: bool = False) -> list[str]:
    """The standalone command that runs one component of a run (what a user could type): its inputs from the
    run's folders, its options as its declared flags, and the run's extra args when it takes them (they go last:
    they are its own pass-through flags); ``debug`` passes ``--debug`` on, so library logs and full tracebacks of
    the component reach the terminal too."""
    spec = _spec(name)
    cmd = [sys.executable, "-m", "vugan.pipeline.cli", name, "--config", str(run_dir / "config.toml"),
           "--out", str(run_dir / name)]
    for inp, folder in _input_dirs(spec, run_dir).items():
        cmd += [f"--{inp}", str(folder)]
    if spec.cli.child_flags is not None:
        cmd += spec.cli.child_flags(options or {})
    if debug:
        cmd.append("--debug")
    if spec.cli.extra_args is not None:
        cmd += list(extra_args)
    return cmd


# ------------------------------------------------------------------------------------------------ execution

def _refusal(spec: ComponentSpec, run_dir: Path, options: Options, dry_run: bool,
             rerunning: Mapping[str, str]) -> str | None:
    """Why the step may not run now (its declared preflight), or None. A plan cannot ask while an input's
    producer reruns first: that input is not there yet."""
    if spec.preflight is None:
        return None
    producers = _producers()
    if dry_run and any(producers[t.value] in rerunning for t in spec.inputs.values()):
        return None
    return spec.preflight(_input_dirs(spec, run_dir), options)


def _execute(step: Step, run_dir: Path, log_prefix: bool = True) -> tuple[int, str]:
    """Run the child command, streaming its output to the console and to ``<component>/log.txt``."""
    out_dir = run_dir / step.name
    out_dir.mkdir(parents=True, exist_ok=True)
    # No stale "finished" marker while the component reruns: a crash leaves the folder unfinished, not old.
    unmark_artifact(out_dir)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tail: list[str] = []
    with open(out_dir / "log.txt", "a") as log:
        log.write(f"\n# {_now()} {' '.join(step.command)}\n")
        proc = subprocess.Popen(step.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=os.getcwd())
        for line in proc.stdout:
            log.write(line)
            print(f"[{step.name}] {line}" if log_prefix else line, end="", flush=True)
            tail = (tail + [line.rstrip()])[-15:]
        code = proc.wait()
    return code, "\n".join(tail)


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    steps: list[Step]

    @property
    def ok(self) -> bool:
        return all(s.action in ("done", "cached") for s in self.steps)


def _run_steps(run_dir: Path, config: PipelineConfig, names: Sequence[str], *, force: bool, dry_run: bool,
               options: Mapping[str, Options], extra_args: Sequence[str], command: str,
               debug: bool = False) -> RunResult:
    state = _load_state(run_dir)
    state.setdefault("components", {})
    steps: list[Step] = []
    rerunning: dict[str, str] = {}
    for name in names:
        spec, opts = _spec(name), options.get(name, {})
        opt_key = options_key(spec, config, opts)
        action, reason = decide(name, run_dir, config, state, opt_key, force, rerunning if dry_run else {})
        if action == "run":
            refusal = _refusal(spec, run_dir, opts, dry_run, rerunning)
            if refusal:
                action, reason = "refused", refusal
        step = Step(name, action, reason, child_command(name, run_dir, opts, extra_args, debug))
        steps.append(step)
        if dry_run:
            if action == "run":
                rerunning[name] = reason
            # Planned states feed the next decisions (a blocked input blocks its dependants).
            state["components"].setdefault(name, {})
            if action in ("blocked", "refused"):
                state["components"][name] = {**state["components"][name], "state": action}
            continue
        entry = state["components"].setdefault(name, {})
        if action == "run":
            print(f"==> {name}: runs ({reason})", flush=True)
            entry.update(state="running", reason=reason, started_at=_now(), command=step.command)
            _save_state(run_dir, state)
            code, tail = _execute(step, run_dir)
            entry["finished_at"] = _now()
            if code == 0 and (run_dir / name / MANIFEST).exists():
                manifest = read_artifact(run_dir / name)
                entry.update(state="done", fingerprint=manifest["fingerprint"], options_key=opt_key,
                             config_fingerprint=manifest["config_fingerprint"], error=None,
                             seconds=manifest.get("properties", {}).get("wall_seconds"))
                step.action = "done"
            else:
                entry.update(state="failed", error=tail or f"exit code {code}")
                step.action, step.reason = "failed", f"exit code {code}: {tail.splitlines()[-1] if tail else ''}"
        else:
            print(f"==> {name}: {action.upper()} ({reason})", flush=True)
            entry.update(state=action, reason=reason)
            if action == "cached":
                entry.setdefault("options_key", opt_key)
            if action == "refused":
                # An earlier output no longer matches what its preflight now refuses (e.g. a release of another
                # evaluation): unmark it.
                unmark_artifact(run_dir / name)
        _save_state(run_dir, state)
    if not dry_run:
        state.setdefault("history", []).append(
            {"at": _now(), "command": command, "config_fingerprint": fingerprint(config.to_dict()),
             "steps": {s.name: s.action for s in steps}})
        _save_state(run_dir, state)
    return RunResult(run_dir, steps)


def format_plan(steps: Sequence[Step]) -> str:
    lines = [f"{'component':<11} {'action':<8} why"]
    for s in steps:
        lines.append(f"{s.name:<11} {s.action.upper():<8} {s.reason}")
    lines.append("")
    lines += ["commands:"] + [f"  {' '.join(s.command)}" for s in steps if s.action == "run"]
    return "\n".join(lines)


def _summary(result: RunResult, runs_dir: Path | None) -> str:
    run_dir = result.run_dir
    status = "finished" if result.ok else "finished with problems"
    by_name = {s.name: s for s in result.steps}
    lines = [f"\nRun {run_dir.name} {status} ({run_dir})"]
    for s in result.steps:
        lines.append(f"  {s.name:<11} {s.action:<8} {s.reason if s.action != 'done' else ''}".rstrip())
    tb_root = runs_dir if runs_dir is not None else run_dir.parent
    pointers = sorted(((p, spec) for spec in components().pipeline for p in spec.pointers), key=lambda x: x[0].rank)
    lines.append("")
    for pointer, spec in pointers:
        path = run_dir / spec.name / pointer.path
        if pointer.command:
            target, note = pointer.command.format(path=path, runs=tb_root), ""
        else:
            target, note = path, "" if path.exists() else "   (not written)"
        step = by_name.get(spec.name)
        if pointer.refused_note and step is not None and step.action == "refused":
            note = f"   ({pointer.refused_note})"
        lines.append(f"  {pointer.label + ':':<16} {target}{note}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ entry points

def run_pipeline(config: PipelineConfig, runs_dir: str | Path = "runs", manifest: str | None = None,
                 dry_run: bool = False, config_path: str | Path | None = None, extra_args: Sequence[str] = (),
                 run_dir: str | Path | None = None, force: bool = False,
                 options: Mapping[str, Options] | None = None, command: str = "vugan run",
                 debug: bool = False) -> RunResult:
    """Run every component in order into a new numbered run folder, or inside ``run_dir`` with caching.

    Args:
      config: the resolved config (for ``run_dir``: the run's saved config plus overrides, see
        :func:`resolve_run_config`).
      manifest: the scans.csv manifest the run reads; overrides ``config.run.manifest`` and is saved in the run's config.
      extra_args: pass-through flags (Beam pipeline options) for the step that takes them (ComponentSpec.cli).
      options: component name -> its options (what its ``cli.options`` hook made of `vugan run`'s flags).
      force: rerun every component even when cached. debug: each component runs with ``--debug``.
    """
    options = dict(options or {})
    order = _order()
    if manifest:
        config = config.replace("run", manifest=_absolute_manifest(manifest))
    elif config.run.manifest:
        config = config.replace("run", manifest=_absolute_manifest(config.run.manifest))
    if run_dir is None and not config.run.manifest:
        raise ValueError("vugan run: no manifest; pass --manifest scans.csv or set run.manifest in the config")
    if dry_run:
        target = Path(run_dir) if run_dir is not None else Path(runs_dir) / next_run_name(runs_dir, config.run.name)
        result = _run_steps(target, config, order, force=force, dry_run=True, options=options,
                            extra_args=extra_args, command=command, debug=debug)
        print(f"plan for {target}{'' if run_dir is not None else ' (new run; nothing is created by --dry-run)'}:")
        print(format_plan(result.steps))
        return result
    if run_dir is None:
        target = new_run_dir(runs_dir, config.run.name)
        state = {"run": target.name, "created_at": _now(), "config_source": str(config_path or ""),
                 "components": {n: {"state": "pending"} for n in order}, "history": []}
        _save_state(target, state)
    else:
        target = Path(run_dir)
        if not target.is_dir():
            raise FileNotFoundError(f"run folder {target} does not exist")
    with folder_lock(target, "run"):  # two `vugan run --run DIR` at once would interleave run.json
        write_resolved(config, target)
        result = _run_steps(target, config, order, force=force, dry_run=False, options=options,
                            extra_args=extra_args, command=command, debug=debug)
    print(_summary(result, Path(runs_dir) if run_dir is None else None))
    return result


def rerun_component(run_dir: str | Path, name: str, config: PipelineConfig, options: Options | None = None,
                    force: bool = False, dry_run: bool = False, overrides: Sequence[str] = (),
                    config_path: str | Path | None = None, extra_args: Sequence[str] = ()) -> RunResult:
    """``vugan <name> --run DIR``: rerun one component from the artifacts its inputs left in the run folder.

    ``config`` should come from :func:`resolve_run_config` (the run's saved config plus overrides); it becomes
    the run's saved config, so a later ``vugan run --run DIR`` does not undo the change.
    """
    run_dir = Path(run_dir)
    order = _order()
    if name not in order:
        raise ValueError(f"{name}: not a pipeline component; allowed: {', '.join(order)}")
    if not (run_dir / "config.toml").exists():
        raise FileNotFoundError(f"{run_dir}: no config.toml; is this a run folder made by `vugan run`?")
    options = dict(options or {})
    if options.get("manifest"):  # a component's --manifest is the run's manifest ([run] manifest), kept absolute
        config = config.replace("run", manifest=_absolute_manifest(str(options["manifest"])))
    command = f"vugan {name} --run {run_dir}" + "".join(f" --set {o}" for o in overrides)
    if dry_run:
        result = _run_steps(run_dir, config, [name], force=force, dry_run=True, options={name: options},
                            extra_args=extra_args, command=command)
        print(f"plan for {run_dir}:")
        print(format_plan(result.steps))
        return result
    with folder_lock(run_dir, "run"):
        write_resolved(config, run_dir)
        result = _run_steps(run_dir, config, [name], force=force, dry_run=False, options={name: options},
                            extra_args=extra_args, command=command)
    stale = [n for n in order[order.index(name) + 1:] if component_status(run_dir, n)[0] == "stale"]
    if stale:
        print(f"note: downstream now stale: {', '.join(stale)} (vugan run --run {run_dir} reruns them)")
    return result


def component_status(run_dir: Path, name: str, state: dict | None = None) -> tuple[str, str]:
    """(status, detail) as ``vugan runs`` shows it; "stale" when an input changed since the artifact was made."""
    state = state if state is not None else _load_state(run_dir)
    recorded = state.get("components", {}).get(name, {})
    out_dir = run_dir / name
    if not (out_dir / MANIFEST).exists():
        st = recorded.get("state", "-")
        if st == "running" and not (is_locked(out_dir) or is_locked(run_dir)):
            # run.json says running, but no process holds the component's or the run's lock: the kernel drops a
            # lock when its holder dies, however it dies, so that run was killed or interrupted.
            return "interrupted", ("its process ended before finishing (killed or interrupted); rerun with "
                                   f"vugan run --run {run_dir}")
        return (st if st in ("failed", "refused", "blocked", "running", "pending") else "-"), recorded.get("reason", "")
    try:
        manifest = read_artifact(out_dir)
    except ArtifactError as exc:
        return "broken", str(exc)
    for inp, lineage in manifest.get("inputs", {}).items():
        producer = _producers().get(lineage.get("type"))
        if producer is None:
            continue
        summary_only = inp in _spec(name).summary_inputs
        try:
            current = input_fingerprint(read_artifact(run_dir / producer), summary_only)
        except ArtifactError:
            return "stale", f"input {inp} missing"
        if current != input_fingerprint({"fingerprint": None, **lineage}, summary_only):
            return "stale", f"input {inp} changed"
    return recorded.get("state", "done") if recorded.get("state") in ("done", "cached") else "done", ""


def list_runs(runs_dir: str | Path = "runs") -> str:
    """A table of runs (oldest first) with each step's status and the steps' declared columns (the verdict)."""
    runs_dir = Path(runs_dir)
    runs = sorted(p for p in runs_dir.iterdir() if p.is_dir() and _RUN_DIR.match(p.name)) if runs_dir.is_dir() else []
    if not runs:
        return f"no runs in {runs_dir}"
    order = _order()
    columns = [(spec.name, spec.runs_column) for spec in components().pipeline if spec.runs_column is not None]
    header = f"{'run':<24} {'created':<20} " + " ".join(f"{n:<10}" for n in order) + \
        "".join(f" {column.title}" for _, column in columns)
    lines = [header]
    for run in runs:
        state = _load_state(run)
        cells = [component_status(run, n, state)[0] for n in order]
        extra = "".join(f" {column.read(run / name)}" for name, column in columns)
        created = str(state.get("created_at", "?"))[:19].replace("T", " ")
        lines.append(f"{run.name:<24} {created:<20} " + " ".join(f"{c:<10}" for c in cells) + extra)
    return "\n".join(lines)
