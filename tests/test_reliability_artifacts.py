"""Issue 24, "every artifact is trusted only when complete": a folder is marked finished only once its writer is done
(killed mid-rerun, it reads as incomplete), a refused rerun leaves the old artifact exactly as it was, consumers
check the files they read against the digests their producer recorded (naming the file that differs), a split
whose record count disagrees with its artifact is refused, and `vugan runs` tells a killed run from a running one.

Real files, real TFRecords, real `vugan` subprocesses and real SIGKILLs. Only entry points that exist before the fix
are used (the CLI, ComponentSpec.run, read_artifact / write_artifact, inspect_examples, load_inputs), so this file
runs unchanged against the earlier code, where these tests fail.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support.paths import BIN

EXAMPLES_FILES = {"Split-train/data-00000-of-00001.tfrecord.gz": b"\x1f\x8b" + bytes(range(200)),
                  "stats.json": b'{"vus_written": 3}\n', "nested/notes.txt": b"crops of three units\n"}


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the lock a process may leave aside) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".vugan.lock"}


def _artifact(folder: Path, files: dict[str, bytes], artifact_type: str = "Examples",
              producer: str = "preprocess") -> Path:
    """A finished artifact of real files, marked with the same function the components use."""
    from vugan.pipeline.artifacts import ArtifactType, write_artifact

    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    write_artifact(folder, artifact_type=ArtifactType(artifact_type), producer=producer, config_fingerprint="test",
                   counts={"train": 3})
    return folder


def _stub(component: str):
    """The real component's contract (inputs, output, checks) with an executor that only records that it ran."""
    from vugan.pipeline.component import ExecResult
    from vugan.pipeline.registry import components

    ran: list[Path] = []

    def execute(ctx):
        ran.append(ctx.out_dir)
        (ctx.out_dir / "ran.txt").write_text("ran")
        return ExecResult(counts={})

    return dataclasses.replace(components().spec(component), execute=execute), ran


def _env(extra_path: Path | None = None) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return env


# ------------------------------------------------------------------------------------------------ half-written

@pytest.mark.slow
def test_synthesize_killed_mid_rerun_reads_as_incomplete(tmp_path):
    """A real `vugan synthesize` rerun over a finished folder, SIGKILLed once it rewrote its first NIfTI: the folder
    no longer reads as finished, and a consumer (`vugan audit --synthetic`) refuses it."""
    from support.examples import make_examples_artifact
    from support.model_artifacts import CLASS_NAMES, IMAGE_SHAPE, make_evaluation_artifact, make_model_artifact
    from vugan.pipeline.artifacts import ArtifactError, read_artifact
    from vugan.pipeline.config import load_config

    overrides = ["synthesize.units_per_class=300", "synthesize.preview_units=0"]  # enough NIfTIs to be caught
    config = load_config(None, overrides)
    model = make_model_artifact(tmp_path / "train")
    evaluation = make_evaluation_artifact(tmp_path / "evaluate", passed=True, model_dir=model, config=config)
    out = tmp_path / "synthetic"
    command = [str(BIN / "vugan"), "synthesize", "--model", str(model), "--evaluation", str(evaluation),
               "--out", str(out), *[x for o in overrides for x in ("--set", o)]]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
    assert first.returncode == 0, first.stderr[-3000:]
    assert read_artifact(out)["counts"]["units"] == 900

    started = time.time_ns()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(),
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            nifti = out / "nifti"
            try:
                rewritten = [p for p in nifti.iterdir() if p.stat().st_mtime_ns >= started]
            except OSError:
                rewritten = []
            if rewritten:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "the rerun finished before it could be killed mid-way"
    assert len(list((out / "nifti").iterdir())) < 900  # it really was killed half-way

    with pytest.raises(ArtifactError, match=r"incomplete.*rerun"):
        read_artifact(out)
    examples = make_examples_artifact(tmp_path / "examples", shape=IMAGE_SHAPE, class_names=CLASS_NAMES)
    audit = subprocess.run([str(BIN / "vugan"), "audit", "--examples", str(examples), "--synthetic", str(out),
                            "--out", str(tmp_path / "audit")], capture_output=True, text=True, timeout=600,
                           env=_env())
    assert audit.returncode == 2, (audit.stdout[-2000:], audit.stderr[-2000:])
    assert str(out) in audit.stderr and "incomplete" in audit.stderr and "rerun" in audit.stderr


def test_refused_synthesize_rerun_leaves_the_old_artifact_as_it_was(tmp_path):
    """A rerun refused by the release gate (failed verdict) touches nothing: marker, config.toml and payload."""
    from support.model_artifacts import make_evaluation_artifact, make_model_artifact
    from vugan.components.synthesize.component import SPEC
    from vugan.pipeline.config import load_config

    model = make_model_artifact(tmp_path / "train")
    config = load_config(None, ["synthesize.units_per_class=2", "synthesize.shards=1"])
    passed = make_evaluation_artifact(tmp_path / "passed", passed=True, model_dir=model, config=config)
    out = tmp_path / "synthetic"
    SPEC.run(config, {"model": model, "evaluation": passed}, out)
    before = _snapshot(out)

    other = load_config(None, ["synthesize.units_per_class=2", "synthesize.shards=2"])  # another config.toml
    failed = make_evaluation_artifact(tmp_path / "failed", passed=False, reasons=["mia_auc 0.81 > 0.6"],
                                      model_dir=model, config=other)
    with pytest.raises(ValueError, match="mia_auc 0.81"):
        SPEC.run(other, {"model": model, "evaluation": failed}, out)
    assert _snapshot(out) == before


def test_export_over_another_components_artifact_is_refused_untouched(tmp_path):
    """`vugan export --out` naming a folder that holds another kind of artifact (a model, its own input or another)
    is refused before anything in it changes."""
    from vugan.pipeline.artifacts import read_artifact

    model = _artifact(tmp_path / "train", {"generator.keras": b"weights", "model_info.json": b"{}"}, "Model", "train")
    other_model = _artifact(tmp_path / "other-train", {"generator.keras": b"other weights"}, "Model", "train")
    before = _snapshot(other_model)
    export, ran = _stub("export")
    from vugan.pipeline.config import load_config

    with pytest.raises(ValueError, match=r"holds a Model artifact.*another --out"):
        export.run(load_config(None), {"model": model}, other_model)
    assert not ran and _snapshot(other_model) == before and read_artifact(other_model)["type"] == "Model"
    before = _snapshot(model)
    with pytest.raises(ValueError, match=r"--out .* is also its input --model"):
        export.run(load_config(None), {"model": model}, model)
    assert not ran and _snapshot(model) == before


# ------------------------------------------------------------------------------------------------ digests

def _change(folder: Path, how: str) -> str:
    """Change the artifact's payload after it was made; returns the relative path of the file that differs."""
    shard = "Split-train/data-00000-of-00001.tfrecord.gz"
    if how == "flipped byte":  # same size: only the digest can tell
        data = bytearray((folder / shard).read_bytes())
        data[100] ^= 0x01
        (folder / shard).write_bytes(bytes(data))
        return shard
    if how == "truncated":
        (folder / shard).write_bytes((folder / shard).read_bytes()[:120])
        return shard
    if how == "missing":
        (folder / "nested" / "notes.txt").unlink()
        return "nested/notes.txt"
    (folder / "Split-train" / "data-extra.tfrecord.gz").write_bytes(b"\x1f\x8b more")  # "extra"
    return "Split-train/data-extra.tfrecord.gz"


@pytest.mark.parametrize("how", ["flipped byte", "truncated", "missing", "extra"])
def test_a_consumer_refuses_an_input_whose_file_changed_naming_it(tmp_path, how):
    from vugan.pipeline.artifacts import ArtifactError
    from vugan.pipeline.config import load_config

    examples = _artifact(tmp_path / "examples", EXAMPLES_FILES)
    rel = _change(examples, how)
    train, ran = _stub("train")
    with pytest.raises(ArtifactError) as info:
        train.run(load_config(None), {"examples": examples}, tmp_path / "model")
    message = str(info.value)
    assert str(examples / rel) in message and "rerun preprocess" in message
    assert not ran and not (tmp_path / "model" / "config.toml").exists()


def test_an_old_manifest_without_digests_is_checked_by_its_fingerprint(tmp_path):
    """artifact.json written before per-file digests: still readable, checked by the whole-payload fingerprint."""
    from vugan.pipeline.artifacts import MANIFEST, ArtifactError
    from vugan.pipeline.config import load_config

    examples = _artifact(tmp_path / "examples", EXAMPLES_FILES)
    manifest = json.loads((examples / MANIFEST).read_text())
    old = {k: v for k, v in manifest.items() if k not in ("files", "skip_dirs")}
    (examples / MANIFEST).write_text(json.dumps(old))
    train, ran = _stub("train")
    train.run(load_config(None), {"examples": examples}, tmp_path / "model")  # unchanged: accepted
    assert ran
    _change(examples, "flipped byte")
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(examples))}.*fingerprint.*rerun preprocess"):
        train.run(load_config(None), {"examples": examples}, tmp_path / "model-2")


# ------------------------------------------------------------------------------------------------ truncated shard

def _halve_a_train_shard(root: Path) -> Path:
    """Rewrite the first train shard with half its records: still a valid gzip TFRecord file."""
    import tensorflow as tf

    from vugan.components import schema

    shard = Path(schema.shard_files(str(root), "train")[0])
    records = list(tf.data.TFRecordDataset(str(shard), compression_type="GZIP").as_numpy_iterator())
    assert len(records) >= 2
    with tf.io.TFRecordWriter(str(shard), options="GZIP") as writer:
        for raw in records[: len(records) // 2]:
            writer.write(raw)
    assert len(list(tf.data.TFRecordDataset(str(shard), compression_type="GZIP"))) == len(records) // 2
    return shard


@pytest.fixture()
def truncated_examples(tmp_path):
    from support.examples import make_examples_artifact

    root = make_examples_artifact(tmp_path / "examples", n_per_class=8, shape=(16, 16, 3), num_shards=2)
    return root, _halve_a_train_shard(root)


def test_a_truncated_shard_is_refused_by_the_trainer_contract_naming_the_file(truncated_examples, tmp_path):
    from vugan.pipeline.artifacts import ArtifactError
    from vugan.pipeline.config import load_config

    root, shard = truncated_examples
    train, ran = _stub("train")
    with pytest.raises(ArtifactError, match=rf"{re.escape(str(shard))}.*rerun preprocess"):
        train.run(load_config(None), {"examples": root}, tmp_path / "model")
    assert not ran


def test_the_trainer_refuses_a_split_whose_record_count_disagrees(truncated_examples):
    from vugan.components.trainer.data import inspect_examples

    root, _ = truncated_examples  # 24 train records in 2 shards of 12; one shard now holds 6
    with pytest.raises(ValueError, match=r"split 'train' holds 18 records.*records 24.*rerun preprocess"):
        inspect_examples(root)


def test_the_evaluator_refuses_a_split_whose_record_count_disagrees(truncated_examples):
    from vugan.components.evaluator.run import load_inputs

    root, _ = truncated_examples
    with pytest.raises(ValueError, match=r"split 'train' holds 18 records.*records 24.*rerun preprocess"):
        load_inputs(root)


# ------------------------------------------------------------------------------------------------ the runner

TOY = textwrap.dedent('''
    """Toy steps: make (Examples) -> hang (Model), which writes one file and then waits to be killed."""
    import dataclasses
    import time

    from vugan.pipeline.artifacts import ArtifactType
    from vugan.pipeline.component import ComponentSpec, ExecResult
    from vugan.pipeline.registry import Registry


    @dataclasses.dataclass(frozen=True)
    class ToyConfig:
        value: int = 1


    def make(ctx):
        (ctx.out_dir / "made.txt").write_text(f"made {ctx.config.toy.value}")
        return ExecResult(counts={"value": ctx.config.toy.value})


    def hang(ctx):
        (ctx.out_dir / "started.txt").write_text("started")
        if ctx.config.toy.value == 7:
            time.sleep(600)
        return ExecResult(counts={})


    MAKE = ComponentSpec(name="make", artifact_type=ArtifactType.EXAMPLES, inputs={}, config_sections=("toy",),
                         config_classes={"toy": ToyConfig}, execute=make)
    HANG = ComponentSpec(name="hang", artifact_type=ArtifactType.MODEL, inputs={"examples": ArtifactType.EXAMPLES},
                         config_sections=("toy",), execute=hang)
    REGISTRY = Registry((MAKE, HANG))
''')


def _toy_vugan(toy: Path, *args: str, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    env = {**_env(toy), "VUGAN_COMPONENTS": "toy_hang"}
    command = [sys.executable, "-m", "vugan.pipeline.cli", *args]
    if popen:
        return subprocess.Popen(command, env=env, cwd=str(toy), **popen)
    return subprocess.run(command, env=env, cwd=str(toy), capture_output=True, text=True, timeout=300)


def _status_row(runs_text: str, run: str) -> str:
    return next(line for line in runs_text.splitlines() if line.startswith(run))


def test_vugan_runs_tells_a_killed_run_from_a_running_one(tmp_path):
    (tmp_path / "toy_hang.py").write_text(TOY)
    runs = tmp_path / "runs"
    done = _toy_vugan(tmp_path, "run", "--runs-dir", str(runs), "--manifest", "x.csv")
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = runs / "00001-run"
    (run_dir / "hang" / "started.txt").unlink()  # written again once the hanging step starts

    proc = _toy_vugan(tmp_path, "run", "--run", str(run_dir), "--set", "toy.value=7", stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (run_dir / "hang" / "started.txt").exists() or \
                json.loads((run_dir / "run.json").read_text())["components"]["hang"]["state"] != "running":
            assert time.time() < deadline and proc.poll() is None, "the hanging step never started"
            time.sleep(0.05)
        live = _toy_vugan(tmp_path, "runs", "--runs-dir", str(runs))
        assert _status_row(live.stdout, run_dir.name).split()[-1] == "running", live.stdout
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    after = _toy_vugan(tmp_path, "runs", "--runs-dir", str(runs))
    assert after.returncode == 0, after.stderr
    assert _status_row(after.stdout, run_dir.name).split()[-1] == "interrupted", after.stdout


def test_a_cached_step_whose_files_changed_reruns(tmp_path):
    """The pipeline's cache trusts a step's artifact only while its files are what the step wrote."""
    (tmp_path / "toy_hang.py").write_text(TOY)
    runs = tmp_path / "runs"
    assert _toy_vugan(tmp_path, "run", "--runs-dir", str(runs), "--manifest", "x.csv").returncode == 0
    run_dir = runs / "00001-run"
    (run_dir / "make" / "made.txt").write_text("made 2")
    again = _toy_vugan(tmp_path, "run", "--run", str(run_dir))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "make: runs" in again.stdout and str(run_dir / "make" / "made.txt") in again.stdout, again.stdout
    assert (run_dir / "make" / "made.txt").read_text() == "made 1"
