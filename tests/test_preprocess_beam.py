"""Preprocess end to end on the Beam DirectRunner: real lumbar MRI, bad input, DICOM without identities, options.

One session-scoped run of the 17 real scans feeds several tests; the bad-input cohort runs in the multi-process
DirectRunner mode so that mode is exercised too.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter

import nibabel as nib
import numpy as np
import pytest

from vugan.components import schema
from vugan.components.preprocess import beam_pipeline, component, run
from vugan.components.preprocess.manifest import ManifestError, plan_tasks, pseudonym
from vugan.components.preprocess.units import process_scan
from vugan.pipeline.config import load_config
from support.identity_leaks import LONG_NEEDLE, text_and_binary
from support.paths import REAL_DATA
from support.scans import IDENTITY, NON_RAS, make_scan, save_dicom_series, save_nifti, to_layout, write_manifest

REAL = str(REAL_DATA)

UNITS6 = ["L1/L2", "L2/L3", "L3/L4", "L4/L5", "T11/T12", "T12/L1"]


def _records(out):
    return {s: list(schema.iter_records(schema.shard_files(str(out), s))) for s in schema.SPLITS}


@pytest.fixture(scope="session")
def real_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    manifest = component.SPEC.run(load_config(None), {}, out, options={"manifest": f"{REAL}/scans.csv"})
    return out, manifest, _records(out)


@pytest.mark.slow  # Beam over the 17 real scans (the session's real_run)
@pytest.mark.real_data
def test_real_data_writes_102_units_without_dead_letters(real_run):
    out, manifest, records = real_run
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["scans_in"], stats["scans_ok"], stats["scans_failed"]) == (17, 17, 0)
    assert (stats["vus_written"], stats["vus_rejected"], stats["vus_found"]) == (102, 0, 102)
    assert (out / "dead_letters.jsonl").read_text() == ""
    regions = Counter(r.region for rs in records.values() for r in rs)
    assert regions == {"thoracic": 34, "lumbar": 68}
    by_split_region = {s: dict(Counter(r.region for r in rs)) for s, rs in records.items() if rs}
    assert by_split_region == stats["by_split_region"]
    props = manifest["properties"]
    assert props["image_shape"] == [64, 64, 9] and props["class_names"] == ["cervical", "thoracic", "lumbar"]
    assert props["conditioning"] == "region" and props["unit"] == "disc"
    assert props["splits"] == {s: len(rs) for s, rs in records.items()} and sum(props["splits"].values()) == 102
    assert props["salt_source"] == ("env" if os.environ.get("VUGAN_SALT") else "random")
    for s in schema.SPLITS:
        files = schema.shard_files(str(out), s)
        assert [os.path.basename(f) for f in files] == ["data-00000-of-00001.tfrecord.gz"]


@pytest.mark.slow  # Beam over the 17 real scans (the session's real_run)
@pytest.mark.real_data
def test_real_data_records_are_well_formed_and_split_by_patient(real_run):
    out, _, records = real_run
    patients = {s: {r.patient for r in rs} for s, rs in records.items()}
    assert all(not (patients[a] & patients[b]) for a in schema.SPLITS for b in schema.SPLITS if a < b)
    assert sum(len(p) for p in patients.values()) == 17
    scans = Counter(r.scan for rs in records.values() for r in rs)
    assert len(scans) == 17 and set(scans.values()) == {6}
    ids = {row.split(",")[0] for row in open(f"{REAL}/scans.csv").read().splitlines()[1:]}
    for rs in records.values():
        for r in rs:
            assert r.image.shape == (64, 64, 9) and r.image.dtype == np.float32
            assert -1.0 <= r.image.min() and r.image.max() <= 1.0 and r.image.std() > 0.1
            assert r.level_name in UNITS6 and r.region == schema.unit_region(r.level_name)
            assert r.class_id == schema.REGION_IDS[r.region] and r.sequence == "T2 TSE 1.5T"
            assert r.scan not in ids and r.patient not in ids and r.slice_spacing == 3.0
            np.testing.assert_allclose(r.source_spacing, (1.0, 1.0, 1.0), atol=1e-3)
    # The schema's own tf.data reader accepts the shards.
    arrays = schema.load_split(str(out), "train")
    assert arrays.images.shape[1:] == (64, 64, 9) and len(arrays) == len(records["train"])
    for name in ("thoracic", "lumbar"):
        png = (out / "previews" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "previews" / "cervical.png").exists()


@pytest.mark.slow  # real data
@pytest.mark.real_data
def test_real_crops_centre_between_their_two_bodies():
    """Crop centres from the unit loop (units.py), checked against body centres computed here from the masks (nibabel + numpy)."""
    cfg = load_config(None).preprocess
    tasks = plan_tasks(f"{REAL}/scans.csv", cfg, salt="t")
    for task in tasks:
        mask = nib.load(task.mask)
        labels = np.asarray(mask.dataobj)
        ijk = np.argwhere(labels)
        values = labels[tuple(ijk.T)]
        centres = {schema.CODE_LEVELS[int(c)]: nib.affines.apply_affine(mask.affine, ijk[values == c].mean(0))
                   for c in np.unique(values)}
        result = process_scan(task, cfg)
        assert sorted(rec.level_name for rec, _ in result.records) == UNITS6
        for rec, g in result.records:
            upper, lower = (centres[n] for n in rec.level_name.split("/"))
            seg = lower - upper
            t = float((g.centre - upper) @ seg / (seg @ seg))
            off_axis = np.linalg.norm(g.centre - (upper + t * seg))
            assert 0.45 < t < 0.55 and off_axis < 0.5, (rec.level_name, t, off_axis)
            assert float(g.axis @ seg / np.linalg.norm(seg)) > 0.999  # rows run from the upper to the lower body
            assert 0.9 < g.height_mm / np.linalg.norm(seg) < 2.0
            mid = g.world_points(64, 64)[len(g.slice_offsets_mm) // 2].reshape(-1, 3).mean(0)
            np.testing.assert_allclose(mid, g.centre, atol=1e-6)


# ----------------------------------------------------------------------------------------- bad input

@pytest.fixture(scope="session")
def bad_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    image, mask, affine = make_scan()
    img, msk = save_nifti(d / "img.nii.gz", image, affine), save_nifti(d / "msk.nii.gz", mask, affine)
    raw = open(img, "rb").read()
    (d / "cut.nii.gz").write_bytes(raw[: len(raw) // 3])
    nan = image.copy()
    nan[5, 5, 5] = np.nan
    no_l4 = np.where(mask == schema.LEVEL_CODES["L4"], 0, mask).astype(np.uint8)
    # One image per patient: one image under two patients is itself a dead letter (test_input_integrity).
    own = {i: save_nifti(d / f"img{i}.nii.gz", make_scan(seed=i)[0], affine) for i in (2, 3, 8, 9)}
    rows = [
        dict(scan_id="SCAN-GOOD-01", patient_id="ANA-1", image=img, vertebra_mask=msk),  # 4 units
        dict(scan_id="SCAN-GOOD-02", patient_id="ANA-2", image=own[2], vertebra_mask=msk),  # 4 units
        dict(scan_id="SCAN-GOOD-03", patient_id="ANA-3", image=own[3], vertebra_mask=msk),  # 4 units
        dict(scan_id="SCAN-MISSING-04", patient_id="BOB-4", image=str(d / "absent.nii.gz"), vertebra_mask=msk),
        dict(scan_id="SCAN-CORRUPT-05", patient_id="BOB-5", image=str(d / "cut.nii.gz"), vertebra_mask=msk),
        dict(scan_id="SCAN-FOURD-06", patient_id="BOB-6", image=save_nifti(d / "4d.nii.gz", np.stack([image] * 2, -1), affine),
             vertebra_mask=msk),
        dict(scan_id="SCAN-NAN-07", patient_id="BOB-7", image=save_nifti(d / "nan.nii.gz", nan, affine), vertebra_mask=msk),
        dict(scan_id="SCAN-SHAPE-08", patient_id="BOB-8", image=own[8],
             vertebra_mask=save_nifti(d / "m2.nii.gz", mask[:, :, 10:], affine)),
        dict(scan_id="SCAN-GAP-09", patient_id="CAL-9", image=own[9], levels="L1 L2 L3 L4 L5",  # 2 written, 2 rejected
             vertebra_mask=save_nifti(d / "m3.nii.gz", no_l4, affine)),
    ]
    manifest = write_manifest(d / "scans.csv", rows)
    out = d / "out"
    (d / "salt.txt").write_text("pepper\n")
    cfg = load_config(None, ["preprocess.direct_running_mode='multi_processing'", "preprocess.direct_num_workers=2",
                             "preprocess.shards_per_split=2", f"preprocess.salt_file='{d / 'salt.txt'}'"])
    result = component.SPEC.run(cfg, {}, out, options={"manifest": manifest})
    return out, result, rows


@pytest.mark.slow  # Beam's multi-process DirectRunner
def test_bad_inputs_are_dead_lettered_and_the_job_finishes(bad_run):
    out, result, rows = bad_run
    # The salt file's salt is the one used (never a random one when a salt is given).
    assert result["properties"]["salt_source"] == "file"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["scans_in"] == 9 == stats["scans_ok"] + stats["scans_failed"]
    assert stats["scans_failed"] == 5
    assert stats["vus_written"] == 14 and stats["vus_rejected"] == 2
    assert stats["vus_found"] == stats["vus_written"] + stats["vus_rejected"]
    dead = [json.loads(line) for line in (out / "dead_letters.jsonl").read_text().splitlines()]
    by_row = {d["row"]: d for d in dead if not d["unit"]}
    assert sorted(by_row) == [4, 5, 6, 7, 8]
    assert by_row[4]["stage"] == "read_image" and "not found" in by_row[4]["reason"]
    assert by_row[4]["scan"] == pseudonym("pepper", "scan", "SCAN-MISSING-04")
    assert by_row[5]["stage"] == "read_image" and "cannot read" in by_row[5]["reason"]
    assert "3-D" in by_row[6]["reason"] and by_row[7]["stage"] == "image_values"
    assert by_row[8]["stage"] == "mask_shape"
    assert sorted((d["row"], d["unit"], d["stage"]) for d in dead if d["unit"]) == [
        (9, "L3/L4", "missing_level"), (9, "L4/L5", "missing_level")]
    text = (out / "dead_letters.jsonl").read_text()
    for r in rows:  # pseudonyms and row numbers only: no raw ids, no file names
        assert r["scan_id"] not in text and r["patient_id"] not in text
    assert not re.search(r"absent|cut\.nii|4d\.nii|nan\.nii", text)
    assert all(re.fullmatch(r"[0-9a-f]{20}", d["scan"]) for d in dead)
    records = _records(out)
    assert sum(len(v) for v in records.values()) == 14 == sum(result["properties"]["splits"].values())
    for s in schema.SPLITS:  # shards_per_split = 2 (empty shards are fine)
        assert [os.path.basename(f) for f in schema.shard_files(str(out), s)] == [
            "data-00000-of-00002.tfrecord.gz", "data-00001-of-00002.tfrecord.gz"]


def test_missing_manifest_column_fails_before_any_work(tmp_path):
    manifest = write_manifest(tmp_path / "scans.csv", [{"scan_id": "a", "patient_id": "b", "image": "x.nii"}],
                              columns=("scan_id", "patient_id", "image", "levels"))
    with pytest.raises(ManifestError, match="missing column 'vertebra_mask'"):
        component.SPEC.run(load_config(None), {}, tmp_path / "out", options={"manifest": manifest})
    assert not any((tmp_path / "out").glob("Split-*")) and not (tmp_path / "out" / "artifact.json").exists()


# ----------------------------------------------------------------------------------------- identities

def test_dicom_series_leaves_no_identity_in_any_output(tmp_path):
    image, mask, affine = make_scan()
    stored, stored_affine = to_layout(image, affine, NON_RAS)  # a sagittal acquisition
    smask, _ = to_layout(mask, affine, NON_RAS)
    series = save_dicom_series(tmp_path / "series", stored, stored_affine)
    manifest = write_manifest(tmp_path / "scans.csv", [dict(
        scan_id=IDENTITY["AccessionNumber"], patient_id=IDENTITY["PatientID"], sequence="T2", image=series,
        vertebra_mask=save_nifti(tmp_path / "mask.nii.gz", smask, stored_affine))])
    out = tmp_path / "out"
    result = component.SPEC.run(load_config(None), {}, out, options={"manifest": manifest})
    assert result["counts"]["vus_written"] == 4 and result["counts"]["scans_failed"] == 0
    text, binary = text_and_binary(out)
    needles = list(IDENTITY.values()) + ["Doe", "Jane", "19610423", "PAT-8841X", "Example Spine"]
    for needle in needles:
        for encoded in (needle.encode(), needle.encode("utf-16-le")):
            assert encoded not in text, needle
            if len(encoded) >= LONG_NEEDLE:
                assert encoded not in binary, needle
    # The check read real content: records' string features (the pseudonymous patient id among them), previews.
    assert len(text) > 2_000 and len(binary) > 10_000
    assert schema.PATIENT.encode() in text  # the records' string features were read


# ----------------------------------------------------------------------------------------- runners

@pytest.mark.slow  # real data
@pytest.mark.real_data
def test_dataflow_graph_builds_with_project_packaging_without_running():
    cfg = load_config(None).preprocess
    args = ["--runner", "DataflowRunner", "--project", "my-project-123", "--region", "europe-west4",
            "--temp_location", "gs://my-bucket/tmp"]
    p, described = run.build_job(load_config(None), f"{REAL}/scans.csv", "gs://my-bucket/out", args)
    assert described["scans"] == 17 and described["image_shape"] == [64, 64, 9]
    opts = p.options.get_all_options()
    assert opts["runner"] == "DataflowRunner"
    assert opts["setup_file"] == str(beam_pipeline.PROJECT_ROOT / "pyproject.toml")
    labels = {t.unique_name for t in p.to_runner_api().components.transforms.values()}
    for label in ("ExtractUnits", "WriteSplits/Write-train", "WriteReports/WriteStats", "WritePreviews"):
        assert label in labels
    # An explicit package choice is kept; DirectRunner knobs come from config.
    opts = beam_pipeline.pipeline_options(cfg, args + ["--sdk_location", "/tmp/beam.tar.gz"]).get_all_options()
    assert opts["setup_file"] is None and opts["sdk_location"] == "/tmp/beam.tar.gz"
    cfg2 = load_config(None, ["preprocess.direct_running_mode='multi_processing'",
                              "preprocess.direct_num_workers=3"]).preprocess
    opts = beam_pipeline.pipeline_options(cfg2, []).get_all_options()
    assert (opts["direct_running_mode"], opts["direct_num_workers"]) == ("multi_processing", 3)
    opts = beam_pipeline.pipeline_options(cfg2, ["--direct_num_workers=5"]).get_all_options()
    assert opts["direct_num_workers"] == 5


def test_cli_passes_config_overrides_and_beam_options(tmp_path, capsys):
    from vugan.pipeline.cli import main

    image, mask, affine = make_scan()
    manifest = write_manifest(tmp_path / "scans.csv", [dict(
        scan_id="s1", patient_id="p1", image=save_nifti(tmp_path / "i.nii.gz", image, affine),
        vertebra_mask=save_nifti(tmp_path / "m.nii.gz", mask, affine))])
    out = tmp_path / "out"
    rc = main(["preprocess", "--manifest", manifest, "--out", str(out), "--set", "preprocess.slices=3",
               "--set", "preprocess.conditioning='level'", "--direct_running_mode", "multi_threading"])
    assert rc == 0
    recs = [r for s in schema.SPLITS for r in schema.iter_records(schema.shard_files(str(out), s))]
    assert len(recs) == 4 and {r.image.shape for r in recs} == {(64, 64, 3)}
    assert sorted(r.class_id for r in recs) == [schema.DISC_UNITS.index(u) for u in
                                                ("L1/L2", "L2/L3", "L3/L4", "L4/L5")]
    bad = write_manifest(tmp_path / "bad.csv", [{"scan_id": "a", "patient_id": "b"}],
                         columns=("scan_id", "patient_id", "vertebra_mask"))
    assert main(["preprocess", "--manifest", bad, "--out", str(tmp_path / "o2")]) == 2
    assert "missing column 'image'" in capsys.readouterr().err
