"""Recovery and exact messages (issue 24): a damaged checkpoint falls back to the newest intact one, a full disk
in train and synthesize gives the documented no-space line, a damaged holdout shard is named, the SavedModel's
signatures refuse NaN noise, too big a batch and out-of-range ids (as int64, before any cast), the report escapes
text cells, and a failed quality rule says which way it failed.

Real files throughout: checkpoints written by a real `vugan train` process and damaged on disk, a real full device
(a tiny tmpfs in a user namespace, skipped where the kernel does not allow one), real gzip TFRecord shards, the
real exported SavedModel.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from support.model_artifacts import CLASS_NAMES, IMAGE_SHAPE, NOISE_DIM, make_evaluation_artifact, make_model_artifact
from support.paths import BIN, ROOT
from support.trainer_runs import TINY, run_cli, sets

# --------------------------------------------------------------------------------------------- checkpoints

CKPT_RUN = TINY + ["trainer.log_every=2", "trainer.image_every=100", "trainer.checkpoint_every=2",
                   "trainer.keep_checkpoints=3"]


def _train(examples, out, steps, timeout=300):
    proc = run_cli(["--examples", str(examples), "--out", str(out), *sets(CKPT_RUN + [f"trainer.steps={steps}"])])
    output, _ = proc.communicate(timeout=timeout)
    return proc.returncode, output


@pytest.fixture(scope="module")
def checkpoints(examples, tmp_path_factory):
    """The checkpoints folder of a real 4-step run: ckpt-2 and ckpt-4, both intact."""
    out = tmp_path_factory.mktemp("ckpt") / "model"
    rc, output = _train(examples, out, 4)
    assert rc == 0, output
    assert (out / "checkpoints" / "ckpt-2.index").exists() and (out / "checkpoints" / "ckpt-4.index").exists()
    return out / "checkpoints"


def _flip_bit(path, offset=None):
    raw = bytearray(path.read_bytes())
    offset = len(raw) // 2 if offset is None else offset
    raw[offset] ^= 0x01  # one bit: the kind of damage that could restore as slightly wrong weights
    path.write_bytes(bytes(raw))


def _data_file(folder, n):
    return folder / f"ckpt-{n}.data-00000-of-00001"


def _bit_flip(folder):
    _flip_bit(_data_file(folder, 4))


def _truncated(folder):
    data = _data_file(folder, 4)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _index_names_missing(folder):
    # The `checkpoint` index names a checkpoint whose files are gone (a copy that lost them, a cleanup).
    (folder / "checkpoint").write_text('model_checkpoint_path: "ckpt-6"\nall_model_checkpoint_paths: "ckpt-2"\n'
                                       'all_model_checkpoint_paths: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-6"\n')


@pytest.mark.slow  # real `vugan train` processes
@pytest.mark.parametrize("damage, bad, used", [(_bit_flip, "ckpt-4", "ckpt-2"), (_truncated, "ckpt-4", "ckpt-2"),
                                               (_index_names_missing, "ckpt-6", "ckpt-4")],
                         ids=["bit_flip", "truncated", "index_names_missing"])
def test_a_damaged_checkpoint_falls_back_to_the_newest_intact_one(checkpoints, examples, tmp_path, damage, bad,
                                                                   used):
    out = tmp_path / "model"
    shutil.copytree(checkpoints, out / "checkpoints")
    damage(out / "checkpoints")
    rc, output = _train(examples, out, 6)
    assert rc == 0, output
    lines = [ln for ln in output.splitlines() if "does not restore" in ln]
    assert len(lines) == 1, output
    assert f"checkpoint {bad} in {out / 'checkpoints'} does not restore" in lines[0]
    assert f"resuming from the newest intact one, {used}, instead" in lines[0]
    assert f"resumed from {out / 'checkpoints' / used} at step {used.split('-')[1]}" in output
    props = json.loads((out / "artifact.json").read_text())["properties"]
    assert props["resumed_from_step"] == int(used.split("-")[1])
    assert props["checkpoint_fallback"]["used"] == used
    assert [b["checkpoint"] for b in props["checkpoint_fallback"]["bad"]] == [bad]
    assert json.loads((out / "model_info.json").read_text())["steps"] == 6


@pytest.mark.slow  # a real `vugan train` process
def test_no_intact_checkpoint_is_one_line_naming_the_folder_and_what_to_do(checkpoints, examples, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(checkpoints, out / "checkpoints")
    _flip_bit(_data_file(out / "checkpoints", 4))
    _flip_bit(_data_file(out / "checkpoints", 2))
    rc, output = _train(examples, out, 6)
    assert rc == 2, output
    errors = [ln for ln in output.splitlines() if ln.startswith("vugan train: error:")]
    assert len(errors) == 1 and "unexpected" not in errors[0], output
    folder = out / "checkpoints"
    assert errors[0].startswith(f"vugan train: error: {folder}: no checkpoint restores intact (ckpt-4: ")
    assert "ckpt-2: " in errors[0] and f"delete the folder {folder} to train from step 0" in errors[0]
    assert not (out / "artifact.json").exists()


# --------------------------------------------------------------------------------------------- disk full

def _can_mount_tmpfs(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        r = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(probe)],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _on_full_device(folder, argv, timeout=300):
    """Run ``argv`` in a user and mount namespace where ``folder`` is a 4 KiB tmpfs: a real device that fills up
    at the first file of any size (the rest of the file system is untouched)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = 'mount -t tmpfs -o size=4k tmpfs "$0" && exec "$@"'
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **{k: v for k, v in __import__("os").environ.items()}}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, str(folder), *argv], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(ROOT))


@pytest.mark.slow  # a real `vugan train` process
def test_disk_full_while_training_is_the_documented_no_space_line(examples, tmp_path):
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("no user namespaces here (unshare -rm): cannot make a small real device without root")
    out = tmp_path / "model"
    proc = _on_full_device(out / "checkpoints", [str(BIN / "vugan"), "train", "--examples", str(examples),
                                                 "--out", str(out), *sets(CKPT_RUN + ["trainer.steps=2"])])
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("vugan train: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "unexpected" not in errors[0] and str(out / "checkpoints") in errors[0], errors[0]
    assert errors[0].endswith("no space left on the device [ENOSPC]; free some space or write to another disk")
    assert not (out / "artifact.json").exists()


@pytest.mark.slow  # a real `vugan synthesize` process
def test_disk_full_while_synthesizing_is_the_documented_no_space_line(tmp_path):
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("no user namespaces here (unshare -rm): cannot make a small real device without root")
    from vugan.pipeline.config import load_config

    model = make_model_artifact(tmp_path / "train", ema=True)
    evaluation = make_evaluation_artifact(tmp_path / "evaluate", passed=True, model_dir=model,
                                          config=load_config(None))
    out = tmp_path / "synthesize"
    proc = _on_full_device(out / "Split-synthetic", [str(BIN / "vugan"), "synthesize", "--model", str(model),
                                                     "--evaluation", str(evaluation), "--out", str(out)])
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("vugan synthesize: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "unexpected" not in errors[0] and str(out / "Split-synthetic") in errors[0], errors[0]
    assert errors[0].endswith("no space left on the device [ENOSPC]; free some space or write to another disk")
    assert not (out / "artifact.json").exists()


def test_a_tensorflow_full_disk_error_reads_as_the_os_error():
    """TensorFlow's own error for a full device (written to /dev/full, a real one) gives the console's line."""
    import tensorflow as tf

    from vugan.pipeline import console

    with pytest.raises(tf.errors.OpError) as err:
        with tf.io.gfile.GFile("/dev/full", "w") as fh:
            fh.write("x" * 100_000)
    found = console.find_os_error(err.value)
    assert found is not None, str(err.value)
    assert console.describe_os_error(found) == ("/dev/full: no space left on the device [ENOSPC]; free some space "
                                                "or write to another disk")


# --------------------------------------------------------------------------------------------- evaluate inputs

@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_a_damaged_holdout_shard_is_named_with_its_split(tmp_path, damage):
    from support.examples import make_examples_artifact
    from vugan.components import schema
    from vugan.components.evaluator.run import load_inputs

    examples = make_examples_artifact(tmp_path / "examples", n_per_class=4, shape=(16, 16, 3))
    shard = sorted(schema.shard_files(str(examples), "holdout"))[-1]
    raw = bytearray(open(shard, "rb").read())
    if damage == "flipped":
        raw[len(raw) // 2] ^= 0xFF  # inside the deflate stream: the gzip CRC or the record CRC no longer holds
    else:
        raw = raw[: len(raw) // 2]
    open(shard, "wb").write(bytes(raw))
    with pytest.raises(ValueError) as err:
        load_inputs(examples)
    message = str(err.value)
    assert message.startswith(f"{shard}: shard of the 'holdout' split cannot be read ("), message
    assert "rerun `vugan preprocess`" in message and "\n" not in message


# --------------------------------------------------------------------------------------------- serving

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The real exported SavedModel (the exporter component, default config), loaded in this process."""
    import tensorflow as tf

    from vugan.components.exporter.component import SPEC
    from vugan.pipeline.config import load_config

    root = tmp_path_factory.mktemp("serve")
    model = make_model_artifact(root / "train", ema=True)
    SPEC.run(load_config(None), {"model": model}, root / "export")
    return root, tf.saved_model.load(str(root / "export" / "saved_model"))


def _refused(fn, **inputs) -> str:
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        fn(**inputs)
    return err.value.message


@pytest.mark.slow  # the exporter reloads its SavedModel in a fresh process
def test_serving_refuses_non_finite_noise(served):
    import tensorflow as tf

    _, m = served
    ids = [0, 1]  # a list: converted to the signature's own dtype
    for bad in (np.nan, np.inf, -np.inf):
        noise = np.zeros((2, NOISE_DIM), np.float32)
        noise[1, 3] = bad
        message = _refused(m.signatures["serving_default"], class_ids=ids, noise=tf.constant(noise))
        assert "noise must be finite (no NaN or infinity)" in message, message
    ok = m.signatures["serving_default"](class_ids=ids, noise=tf.zeros([2, NOISE_DIM]))
    assert ok["images"].shape == (2, *IMAGE_SHAPE) and np.isfinite(ok["images"].numpy()).all()


@pytest.mark.slow  # the exporter reloads its SavedModel in a fresh process
def test_serving_checks_class_ids_as_sent_before_any_cast(served):
    import tensorflow as tf

    _, m = served
    for bad in ([2**32 + 1], [-1], [0, 2**31]):  # 2**32 + 1 would be 1 (thoracic) after a cast to int32
        for name, extra in (("generate", {"seed": tf.constant(0, tf.int64)}),
                            ("serving_default", {"noise": tf.zeros([len(bad), NOISE_DIM])})):
            message = _refused(m.signatures[name], class_ids=tf.constant(bad, tf.int64), **extra)
            assert "class_ids must be integers in [0, 2] (3 classes: cervical, thoracic, lumbar)" in message
    ok = m.signatures["generate"](class_ids=tf.constant([2, 1], tf.int64), seed=tf.constant(3, tf.int64))
    assert [s.decode() for s in ok["class_names"].numpy()] == ["lumbar", "thoracic"]


@pytest.mark.slow  # the exporter reloads its SavedModel in a fresh process
def test_serving_bounds_the_batch(served, tmp_path):
    import tensorflow as tf

    from vugan.components.exporter import core
    from vugan.models.bundle import load_model_bundle

    root, m = served
    message = _refused(m.signatures["generate"], class_ids=[0] * 1025, seed=tf.constant(0, tf.int64))
    assert "at most 1024 class ids per request (exporter.max_batch)" in message, message
    assert m.signatures["generate"](class_ids=[0] * 1024, seed=tf.constant(0, tf.int64))["images"].shape[0] == 1024
    assert json.loads((root / "export" / "export_info.json").read_text())["max_batch"] == 1024
    # The bound is the exporter's setting, written into the graph.
    bundle = load_model_bundle(root / "train", ema=True)
    core.export_generator(bundle.generator, CLASS_NAMES, NOISE_DIM, IMAGE_SHAPE, tmp_path / "sm", max_batch=3)
    small = tf.saved_model.load(str(tmp_path / "sm"))
    message = _refused(small.signatures["serving_default"], class_ids=tf.zeros([4], tf.int64),
                       noise=tf.zeros([4, NOISE_DIM]))
    assert "at most 3 class ids per request" in message
    assert small.signatures["serving_default"](class_ids=tf.zeros([3], tf.int64),
                                               noise=tf.zeros([3, NOISE_DIM]))["images"].shape[0] == 3


@pytest.mark.slow  # saved_model_cli processes
def test_saved_model_cli_refuses_an_id_that_a_cast_would_wrap(served, tmp_path):
    root, _ = served
    np.save(tmp_path / "ids.npy", np.array([2**32 + 1], np.int64))
    np.save(tmp_path / "seed.npy", np.array(3, np.int64))
    run = subprocess.run([str(BIN / "saved_model_cli"), "run", "--dir", str(root / "export" / "saved_model"),
                          "--tag_set", "serve", "--signature_def", "generate", "--inputs",
                          f"class_ids={tmp_path / 'ids.npy'};seed={tmp_path / 'seed.npy'}",
                          "--outdir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and not (tmp_path / "out" / "images.npy").exists()
    assert "class_ids must be integers in [0, 2]" in run.stderr


# --------------------------------------------------------------------------------------------- report wording

def test_report_tables_escape_text_cells():
    from vugan.components.evaluator.report import sections

    html = sections.table(["class", "value"], [["<script>alert(1)</script> & co", 1.5]])
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert "<td>1.500</td>" in html


def test_a_failed_quality_rule_says_which_way_it_failed():
    from vugan.components.evaluator import gate
    from vugan.components.evaluator.privacy.spec import PrivacyConfig
    from vugan.components.evaluator.results import Evaluation

    cfg = PrivacyConfig(max_fid_ratio=5.0, max_frd_ratio=5.0, min_tstr_balanced_accuracy=0.5)
    evaluation = Evaluation.from_dict({"fidelity": {"fid_ratio": 60.06, "frd_ratio": 2.0},
                                       "utility": {"tstr_balanced_accuracy": 0.4}})
    ok, reasons = gate.quality_rules(evaluation, cfg)
    assert not ok
    assert ("FAIL: FD-VU ratio against holdout patients (fidelity.fid_ratio) 60.060 is above the limit 5.000 "
            "(rule: <= 5.000)") in reasons
    assert ("FAIL: TSTR balanced accuracy (utility.tstr_balanced_accuracy) 0.400 is below the limit 0.500 "
            "(rule: >= 0.500)") in reasons
    # A rule that held still reads as the rule.
    assert "PASS: FRD ratio against holdout patients (fidelity.frd_ratio) 2.000 <= 5.000" in reasons
