"""The ``vugan`` command as a user runs it, fresh interpreters, and the end-to-end tiny run (configs/tiny.toml on a
phantom cohort with hospital-like identifiers) that the pipeline, notebook and identity tests share through the
session fixture ``tiny`` (tests/conftest.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.paths import BIN, ROOT


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (nothing from this test process, such as Keras objects, is there)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(ROOT))


def vugan(*args: str, timeout: float = 900, cwd: Path | None = None,
          env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed ``vugan`` command, as a user runs it."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([str(BIN / "vugan"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(cwd or ROOT))


def last_json(stdout: str, tag: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith(tag + " ")]
    assert lines, f"no {tag} line in output:\n{stdout[-3000:]}"
    return json.loads(lines[-1][len(tag) + 1:])


# ------------------------------------------------------------------------------------------------ the tiny run

# The tiny run is a sponsor's run: identifiers that look like a hospital's, a salt from the environment. The
# identity test (test_run_identity.py) searches every output of it for these.
TINY_SALT = "tiny-run-salt-5f0e2b9c71d4"


def sponsor_ids(index: int, sequence: str) -> tuple[str, str]:
    """(patient_id, scan_id) a hospital might use for phantom patient ``index``."""
    return f"MRN-{731000 + index}-KLINIKUM", f"ACC-{2024000 + 2 * index + (sequence == 'T2')}-SPINE"


def tiny_run(base: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """An end-to-end ``vugan run`` of configs/tiny.toml (phantom cohort first) under ``base``: (run folder, process).

    Minutes of work: tests take it through the session fixture ``tiny`` (tests/conftest.py), which runs it once,
    and change only copies of it (:func:`copy_run`)."""
    import csv

    base.mkdir(parents=True, exist_ok=True)
    phantom = vugan("phantom", "--config", "configs/tiny.toml", "--out", str(base / "phantom"))
    assert phantom.returncode == 0, phantom.stderr[-3000:]
    # The phantom's manifest with hospital-like identifiers (absolute paths to the same volumes).
    rows = list(csv.DictReader(open(base / "phantom" / "scans.csv")))
    manifest = base / "sponsor-phantom" / "scans.csv"
    manifest.parent.mkdir()
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            index = int(r["patient_id"].split("-")[1]) - 1
            r["patient_id"], r["scan_id"] = sponsor_ids(index, r["sequence"])
            for col in ("image", "vertebra_mask", "centroids"):
                if r.get(col):
                    r[col] = str((base / "phantom" / r[col]).resolve())
            w.writerow(r)
    # --force-release: two training steps cannot pass the gate; the datasheet records the override.
    proc = vugan("run", "--config", "configs/tiny.toml", "--manifest", str(manifest),
                 "--runs-dir", str(base / "runs"), "--force-release", env={"VUGAN_SALT": TINY_SALT})
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    return base / "runs" / "00001-tiny", proc


def copy_run(run_dir: Path, dest: Path) -> Path:
    import shutil

    target = dest / run_dir.name
    shutil.copytree(run_dir, target)
    return target
