"""A whole ``vugan run`` (configs/tiny.toml) with hospital-like identifiers and a salt: no output holds either.

The salt is given twice, as a user might: on the command line, which is refused (shell history, process lists,
config.toml and run.json would keep it) without echoing it, and in the environment, where it is used. Then every
file of the run folder is searched byte for byte: run.json, config.toml, logs, stats, dead letters, TFRecords
(raw, decompressed, and their string features), preview and sample PNGs, the HTML report, TensorBoard event
files, the SavedModel, the synthetic set.
"""
from __future__ import annotations

import csv
import json

import pytest

from vugan.components import schema
from vugan.components.preprocess.manifest import pseudonym
from support.identity_leaks import LONG_NEEDLE, text_and_binary
from support.pipeline_runs import TINY_SALT, vugan

# slow tier: the tiny end-to-end run, and vugan processes on it
pytestmark = pytest.mark.slow


def _identifiers(run_dir):
    manifest = json.loads((run_dir / "run.json").read_text())
    config = (run_dir / "config.toml").read_text()
    path = next(line.split("=", 1)[1].strip().strip('"') for line in config.splitlines()
                if line.startswith("manifest"))
    rows = list(csv.DictReader(open(path)))
    assert rows and manifest
    return rows, sorted({r["patient_id"] for r in rows} | {r["scan_id"] for r in rows})


def test_a_salt_on_the_command_line_is_refused_without_echoing_it(tiny, tmp_path):
    run_dir, _ = tiny
    rows, _ = _identifiers(run_dir)
    cli_salt = "cli-salt-93be51a0d7"
    proc = vugan("run", "--config", "configs/tiny.toml", "--manifest", str(tmp_path / "x.csv"),
                 "--runs-dir", str(tmp_path / "runs"), "--set", f"preprocess.salt='{cli_salt}'",
                 env={"VUGAN_SALT": TINY_SALT})
    assert proc.returncode == 2 and "export VUGAN_SALT or set preprocess.salt_file" in proc.stderr
    assert cli_salt not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # refused before any folder is made


def test_no_output_of_a_full_run_holds_the_salt_or_an_identifier(tiny):
    run_dir, proc = tiny
    rows, identifiers = _identifiers(run_dir)
    assert len(identifiers) >= 8 and all(len(i) >= LONG_NEEDLE for i in identifiers)
    text, binary = text_and_binary(run_dir)
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    kinds = {p.name if p.suffix not in (".png", ".gz") else p.suffix for p in files}
    for needed in ("run.json", "config.toml", "log.txt", "stats.json", "dead_letters.jsonl", ".png",
                   "report.html", "saved_model.pb"):
        assert needed in kinds, needed
    assert any(".tfevents." in p.name for p in files)  # TensorBoard
    assert any(p.name.endswith(".tfrecord.gz") for p in files)
    for needle in [TINY_SALT, *identifiers]:
        for encoded in (needle.encode(), needle.encode("utf-16-le")):
            assert encoded not in text, needle
            assert encoded not in binary, needle
    terminal = proc.stdout + proc.stderr
    assert TINY_SALT not in terminal and not any(i in terminal for i in identifiers)
    # The search read real content.
    assert len(binary) > 1_000_000 and schema.PATIENT.encode() in text


def test_the_environment_salt_is_the_one_used(tiny):
    run_dir, _ = tiny
    rows, _ = _identifiers(run_dir)
    artifact = json.loads((run_dir / "preprocess" / "artifact.json").read_text())
    assert artifact["properties"]["salt_source"] == "env"
    expected = {pseudonym(TINY_SALT, "patient", r["patient_id"]) for r in rows}
    seen = {rec.patient for s in schema.SPLITS
            for rec in schema.iter_records(schema.shard_files(str(run_dir / "preprocess"), s))}
    assert seen and seen <= expected
