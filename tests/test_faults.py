"""Faults of the command line and the operating system end in one line naming what to do, never a traceback.

Real subprocesses of the ``vugan`` entry point (``python -m vugan.pipeline.cli``), real file-system faults (an
immutable or read-only folder, /dev/full), a real second process holding an output folder's lock, and a real
training run whose learning rate is NaN.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vugan.components.trainer.finite import NonFiniteLossError
from support.examples import make_examples_artifact
from vugan.pipeline import console
from vugan.pipeline.cli import main
from vugan.pipeline.config import PipelineConfig, load_config
from vugan.pipeline.locks import FolderLockedError, folder_lock
from support.scans import make_scan, save_nifti, write_manifest

ROOT = Path(__file__).resolve().parents[1]


def vugan(*args, env=None, timeout=300):
    """Run the CLI in a fresh process (TF log level not pre-set: what a user's shell has)."""
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "vugan.pipeline.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *needles):
    assert proc.returncode not in (0, None), proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len([l for l in err if "error:" in l]) == 1, proc.stderr
    for n in needles:
        assert n in proc.stderr, (n, proc.stderr)


@pytest.fixture(scope="module")
def one_scan(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    image, mask, affine = make_scan()
    return write_manifest(d / "scans.csv", [dict(scan_id="s1", patient_id="p1",
                                                 image=save_nifti(d / "i.nii.gz", image, affine),
                                                 vertebra_mask=save_nifti(d / "m.nii.gz", mask, affine))])


# ----------------------------------------------------------------------------------------- flags

@pytest.mark.parametrize("argv, bad", [
    (["preprocess", "--confg", "configs/tiny.toml"], "--confg"),
    (["run", "--manifest", "x.csv", "--sett", "trainer.steps=2"], "--sett"),
    (["train", "--out", "o", "--examples", "e", "--direct_num_workers=2"], "--direct_num_workers=2"),
    (["runs", "--bogus"], "--bogus"),
])
def test_unknown_flags_are_refused_naming_them(argv, bad, capsys, tmp_path):
    argv = [a if a != "o" else str(tmp_path / "o") for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments: {bad}" in err
    # preprocess and run still take Beam options (they are not typos); train takes none.
    assert ("Apache Beam" in err) == (argv[0] in ("preprocess", "run"))
    # A refused command leaves nothing behind: no --out folder, no log.txt.
    assert list(tmp_path.iterdir()) == []


def test_a_usage_error_keeps_an_existing_out_folder_and_its_log(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "log.txt").write_text("an earlier run's log\n")
    with pytest.raises(SystemExit):
        main(["train", "--out", str(out), "--examples", "e", "--bogus"])
    assert (out / "log.txt").read_text().startswith("an earlier run's log")
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "new" / "deeper"), "--help"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


# ----------------------------------------------------------------------------------------- OS faults

def test_out_that_is_a_file_and_manifest_that_is_a_folder_are_one_line(tmp_path, one_scan):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line_error(vugan("phantom", "--out", afile, "--patients", "2"), str(afile), "not a folder")
    assert_one_line_error(vugan("preprocess", "--manifest", tmp_path, "--out", tmp_path / "o"),
                          "is a folder; pass the scans.csv file")


def _make_unwritable(folder: Path) -> None:
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    # root ignores permission bits; the immutable attribute stops it too.
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: no way to make a folder unwritable here")


def test_an_unwritable_out_folder_is_one_line_and_debug_shows_the_traceback(tmp_path, one_scan):
    locked = tmp_path / "locked"
    _make_unwritable(locked)
    try:
        proc = vugan("preprocess", "--manifest", one_scan, "--out", locked / "out")
        assert_one_line_error(proc, str(locked / "out"), "[E")
        assert ("permission denied" in proc.stderr) or ("not permitted" in proc.stderr)
        debug = vugan("preprocess", "--manifest", one_scan, "--out", locked / "out", "--debug")
        assert debug.returncode == 2 and "Traceback" in debug.stderr
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
        locked.chmod(0o755)


def test_a_full_disk_is_described_in_one_line():
    with pytest.raises(OSError) as err:  # /dev/full: every write fails with ENOSPC, a real full device
        with open("/dev/full", "w") as fh:
            fh.write("x" * 10_000)
            fh.flush()
    err.value.filename = "/runs/00001-demo/train/stats.jsonl"
    line = console.describe_os_error(err.value)
    assert err.value.errno == errno.ENOSPC
    assert line == ("/runs/00001-demo/train/stats.jsonl: no space left on the device [ENOSPC]; free some space or "
                    "write to another disk")
    wrapped = RuntimeError("Beam: writing failed")
    wrapped.__cause__ = err.value
    assert console.find_os_error(wrapped) is err.value  # found inside the wrappers Beam and TF add


# ----------------------------------------------------------------------------------------- locks

@pytest.mark.slow  # a lock-holding process and two vugan preprocess processes
def test_a_second_writer_of_one_folder_fails_at_once_naming_the_holder(tmp_path, one_scan):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, '.'); from vugan.pipeline.locks import folder_lock\n"
        f"with folder_lock({str(out)!r}, 'preprocess'):\n    print('held', flush=True); time.sleep(120)")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.time()
        proc = vugan("preprocess", "--manifest", one_scan, "--out", out)
        assert_one_line_error(proc, "being written by another vugan process", f"process {holder.pid}",
                              "preprocess")
        assert not (out / "artifact.json").exists() and not (out / "stats.json").exists()
        with pytest.raises(FolderLockedError, match=f"process {holder.pid}"):
            with folder_lock(out, "preprocess"):
                pass
        assert time.time() - started < 60  # at once: no waiting for the holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # SIGKILL released the lock with the process: no stale lock to clean up.
    proc = vugan("preprocess", "--manifest", one_scan, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "artifact.json").exists()


# ----------------------------------------------------------------------------------------- output

@pytest.mark.slow  # two vugan preprocess processes
def test_the_terminal_shows_vugan_lines_only_and_the_log_keeps_the_rest(tmp_path, one_scan):
    out = tmp_path / "out"
    proc = vugan("preprocess", "--manifest", one_scan, "--out", out)
    assert proc.returncode == 0, proc.stderr
    terminal = proc.stdout + proc.stderr
    for noise in ("I0000", "W0000", "apitools", "WARNING", "cuda", "absl", "Warning:"):
        assert noise not in terminal, (noise, terminal)
    assert "preprocess: 4 units written" in terminal and '"vus_written": 4' in terminal
    log = (out / "log.txt").read_text()
    assert "apitools" in log  # Beam's import notice went to the log, not away
    debug = vugan("preprocess", "--manifest", one_scan, "--out", tmp_path / "out2", "--debug")
    assert debug.returncode == 0 and "apitools" in debug.stdout + debug.stderr


# ----------------------------------------------------------------------------------------- training

def test_training_stops_with_a_clear_error_at_the_first_non_finite_loss(tmp_path):
    from vugan.components.trainer.component import SPEC

    examples = make_examples_artifact(tmp_path / "examples", n_per_class=8, shape=(16, 16, 3))
    cfg = load_config(None, ["trainer.width=4", "trainer.batch_size=8", "trainer.noise_dim=16", "trainer.steps=6",
                             "trainer.log_every=3", "trainer.checkpoint_every=2"])
    # Config and --set refuse NaN (test_config); a program building the dataclass itself can still pass one.
    cfg = PipelineConfig({**cfg.sections, "trainer": dataclasses.replace(cfg.trainer, lr_g=float("nan"))})
    out = tmp_path / "train"
    with pytest.raises(NonFiniteLossError, match=r"not finite at step 2 \(d_loss nan, g_loss nan\)"):
        SPEC.run(cfg, {"examples": examples}, out, log=lambda m: None)
    # The G update of step 1 made G NaN; step 2 saw it; nothing of it was saved or exported.
    assert not (out / "artifact.json").exists()
    assert not list(out.glob("checkpoints/ckpt-*")) and not (out / "model").exists()


def test_the_lock_file_goes_when_the_writer_finishes(tmp_path):
    with folder_lock(tmp_path, "phantom"):
        assert (tmp_path / ".vugan.lock").exists()
    assert not (tmp_path / ".vugan.lock").exists()
    with folder_lock(tmp_path, "phantom"):  # and the folder can be taken again
        pass
