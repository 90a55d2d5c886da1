"""The sequential pipeline: preprocess -> train -> evaluate -> synthesize -> export inside one run folder.

A run folder (``runs/00007-demo/``) holds the resolved ``config.toml``, ``run.json`` (state and history of each
component) and one sub-folder per component, named as its CLI command. New runs never reuse a folder. Inside
an existing run, a component is CACHED (skipped) when its artifact exists and neither its config sections, nor
its inputs' fingerprints, nor its options (the preprocess manifest and its content) changed; otherwise it
reruns, and what depends on its output follows only if that output really changed.

Each component runs in its own process (the same ``vugan <component> --out DIR`` command a user would type):
TensorFlow state such as the trainer's logical-device split or mixed-precision policy cannot leak into the
next component, and the log of each step is exactly that command's output (``<component>/log.txt``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from vugan.pipeline.artifacts import MANIFEST, ArtifactError, input_fingerprint, read_artifact
from vugan.pipeline.config import PipelineConfig, dumps_toml, fingerprint, load_config, write_resolved
from vugan.pipeline.locks import folder_lock
from vugan.pipeline.registry import component_spec

ORDER = ("preprocess", "train", "evaluate", "synthesize", "export")
RUN_JSON = "run.json"
_RUN_DIR = re.compile(r"^(\d{5})-")


def _spec(name: str):
    return component_spec(name)


def _producers() -> dict[str, str]:
    """Artifact type -> the pipeline component producing it (how input names map to run sub-folders)."""
    return {_spec(n).artifact_type.value: n for n in ORDER}


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
        for section, values in tomllib.loads(Path(config_path).read_text()).items():
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


def options_key(name: str, config: PipelineConfig, beam_args: Sequence[str]) -> str:
    """What besides config and inputs changes a component's output: the preprocess manifest (path and bytes)."""
    if name != "preprocess":
        return ""
    manifest = config.run.manifest
    digest = ""
    if manifest and "://" not in manifest and Path(manifest).is_file():
        digest = hashlib.sha256(Path(manifest).read_bytes()).hexdigest()[:16]
    return fingerprint({"manifest": manifest, "sha256": digest, "beam_args": list(beam_args)})


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
    return "cached", f"config and inputs unchanged (config {manifest['config_fingerprint']}, " \
                     f"artifact {manifest['fingerprint']})"


def child_command(name: str, run_dir: Path, beam_args: Sequence[str] = (), force_release: bool = False,
                  debug: bool = False) -> list[str]:
    """The standalone command that runs one component of a run (what a user could type); ``debug`` passes
    ``--debug`` on, so library logs and full tracebacks of the component reach the terminal too."""
    spec = _spec(name)
    producers = _producers()
    cmd = [sys.executable, "-m", "vugan.pipeline.cli", name, "--config", str(run_dir / "config.toml"),
           "--out", str(run_dir / name)]
    for inp, t in spec.inputs.items():
        cmd += [f"--{inp}", str(run_dir / producers[t.value])]
    if name == "synthesize" and force_release:
        cmd.append("--force-release")
    if debug:
        cmd.append("--debug")
    if name == "preprocess":
        cmd += list(beam_args)
    return cmd


# ------------------------------------------------------------------------------------------------ execution

def _release_refusal(run_dir: Path, force_release: bool) -> str | None:
    """Why synthesize may not run (the evaluator's verdict failed and no override), or None."""
    from vugan.components.synthesize.release import refusal

    return refusal(run_dir / "evaluate", force_release)


def _execute(step: Step, run_dir: Path, log_prefix: bool = True) -> tuple[int, str]:
    """Run the child command, streaming its output to the console and to ``<component>/log.txt``."""
    out_dir = run_dir / step.name
    out_dir.mkdir(parents=True, exist_ok=True)
    # No stale "finished" marker while the component reruns: a crash leaves the folder unfinished, not old.
    (out_dir / MANIFEST).unlink(missing_ok=True)
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
               beam_args: Sequence[str], force_release: bool, command: str, debug: bool = False) -> RunResult:
    state = _load_state(run_dir)
    state.setdefault("components", {})
    steps: list[Step] = []
    rerunning: dict[str, str] = {}
    for name in names:
        opt_key = options_key(name, config, beam_args)
        action, reason = decide(name, run_dir, config, state, opt_key, force, rerunning if dry_run else {})
        if action == "run" and name == "synthesize":
            refusal = None if dry_run and "evaluate" in rerunning else _release_refusal(run_dir, force_release)
            if refusal:
                action, reason = "refused", refusal
        step = Step(name, action, reason, child_command(name, run_dir, beam_args, force_release, debug))
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
                # The payload of an earlier release no longer matches this model/evaluation: unmark it.
                (run_dir / name / MANIFEST).unlink(missing_ok=True)
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
    where = [
        ("report", run_dir / "evaluate" / "report.html"),
        ("TensorBoard", f"tensorboard --logdir {tb_root}   (this run: {run_dir / 'train' / 'logs'})"),
        ("SavedModel", run_dir / "export" / "saved_model"),
        ("synthetic data", run_dir / "synthesize"),
    ]
    lines.append("")
    for label, target in where:
        note = ""
        if isinstance(target, Path) and not target.exists():
            note = "   (not written)"
        if label == "synthetic data" and by_name.get("synthesize") and by_name["synthesize"].action == "refused":
            note = "   (refused by the release gate)"
        lines.append(f"  {label + ':':<16} {target}{note}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ entry points

def run_pipeline(config: PipelineConfig, runs_dir: str | Path = "runs", manifest: str | None = None,
                 dry_run: bool = False, config_path: str | Path | None = None, extra_args: Sequence[str] = (),
                 run_dir: str | Path | None = None, force: bool = False, force_release: bool = False,
                 command: str = "vugan run", debug: bool = False) -> RunResult:
    """Run every component in order into a new numbered run folder, or inside ``run_dir`` with caching.

    Args:
      config: the resolved config (for ``run_dir``: the run's saved config plus overrides, see
        :func:`resolve_run_config`).
      manifest: scans.csv to preprocess; overrides ``config.run.manifest`` and is saved in the run's config.
      extra_args: Beam pipeline options for preprocess.
      force: rerun every component even when cached. force_release: let synthesize publish despite a failed
        verdict (recorded in its datasheet). debug: each component runs with ``--debug``.
    """
    if manifest:
        config = config.replace("run", manifest=_absolute_manifest(manifest))
    elif config.run.manifest:
        config = config.replace("run", manifest=_absolute_manifest(config.run.manifest))
    if run_dir is None and not config.run.manifest:
        raise ValueError("vugan run: no manifest; pass --manifest scans.csv or set run.manifest in the config")
    if dry_run:
        target = Path(run_dir) if run_dir is not None else Path(runs_dir) / next_run_name(runs_dir, config.run.name)
        result = _run_steps(target, config, ORDER, force=force, dry_run=True, beam_args=extra_args,
                            force_release=force_release, command=command, debug=debug)
        print(f"plan for {target}{'' if run_dir is not None else ' (new run; nothing is created by --dry-run)'}:")
        print(format_plan(result.steps))
        return result
    if run_dir is None:
        target = new_run_dir(runs_dir, config.run.name)
        state = {"run": target.name, "created_at": _now(), "config_source": str(config_path or ""),
                 "components": {n: {"state": "pending"} for n in ORDER}, "history": []}
        _save_state(target, state)
    else:
        target = Path(run_dir)
        if not target.is_dir():
            raise FileNotFoundError(f"run folder {target} does not exist")
    with folder_lock(target, "run"):  # two `vugan run --run DIR` at once would interleave run.json
        write_resolved(config, target)
        result = _run_steps(target, config, ORDER, force=force, dry_run=False, beam_args=extra_args,
                            force_release=force_release, command=command, debug=debug)
    print(_summary(result, Path(runs_dir) if run_dir is None else None))
    return result


def rerun_component(run_dir: str | Path, name: str, config: PipelineConfig, options: Mapping[str, Any] | None = None,
                    force: bool = False, dry_run: bool = False, overrides: Sequence[str] = (),
                    config_path: str | Path | None = None) -> RunResult:
    """``vugan <name> --run DIR``: rerun one component from the artifacts its inputs left in the run folder.

    ``config`` should come from :func:`resolve_run_config` (the run's saved config plus overrides); it becomes
    the run's saved config, so a later ``vugan run --run DIR`` does not undo the change.
    """
    run_dir = Path(run_dir)
    if name not in ORDER:
        raise ValueError(f"{name}: not a pipeline component; allowed: {', '.join(ORDER)}")
    if not (run_dir / "config.toml").exists():
        raise FileNotFoundError(f"{run_dir}: no config.toml; is this a run folder made by `vugan run`?")
    options = dict(options or {})
    if options.get("manifest"):
        config = config.replace("run", manifest=_absolute_manifest(str(options["manifest"])))
    beam_args = list(options.get("beam_args") or [])
    force_release = bool(options.get("force_release")) and name == "synthesize"
    command = f"vugan {name} --run {run_dir}" + "".join(f" --set {o}" for o in overrides)
    if dry_run:
        result = _run_steps(run_dir, config, [name], force=force, dry_run=True, beam_args=beam_args,
                            force_release=force_release, command=command)
        print(f"plan for {run_dir}:")
        print(format_plan(result.steps))
        return result
    with folder_lock(run_dir, "run"):
        write_resolved(config, run_dir)
        result = _run_steps(run_dir, config, [name], force=force, dry_run=False, beam_args=beam_args,
                            force_release=force_release, command=command)
    stale = [n for n in ORDER[ORDER.index(name) + 1:] if component_status(run_dir, n)[0] == "stale"]
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
    """A table of runs (oldest first) with each component's status and the release verdict."""
    runs_dir = Path(runs_dir)
    from vugan.components.synthesize.release import verdict_word

    runs = sorted(p for p in runs_dir.iterdir() if p.is_dir() and _RUN_DIR.match(p.name)) if runs_dir.is_dir() else []
    if not runs:
        return f"no runs in {runs_dir}"
    header = f"{'run':<24} {'created':<20} " + " ".join(f"{n:<10}" for n in ORDER) + " verdict"
    lines = [header]
    for run in runs:
        state = _load_state(run)
        cells = [component_status(run, n, state)[0] for n in ORDER]
        verdict = verdict_word(run / "evaluate")
        created = str(state.get("created_at", "?"))[:19].replace("T", " ")
        lines.append(f"{run.name:<24} {created:<20} " + " ".join(f"{c:<10}" for c in cells) + f" {verdict}")
    return "\n".join(lines)
