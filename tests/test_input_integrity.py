"""Every input is what it claims to be: DICOM series, duplicates, world geometry, label shape, finite numbers.

Each case here once turned into wrong training data with exit code 0 (or into a traceback); now each is a dead
letter naming the row, the column and what to do, or is left out with a count, and the good part of the same
input still comes through unchanged.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from vugan.components import schema
from vugan.components.preprocess import component, readers
from vugan.components.preprocess.manifest import ManifestError, ScanTask, content_digests, file_digest, plan
from vugan.components.preprocess.scan_reading import max_voxels
from vugan.components.preprocess.units import process_scan
from vugan.components.preprocess.spec import PreprocessConfig
from vugan.pipeline.config import load_config
from support.scans import NON_RAS, make_scan, save_dicom_series, save_nifti, task, to_layout, write_manifest


def save_series(folder, array, affine, *, series=None, skip=(), image_type=None, prefix="im"):
    """One uint16 slice per file along array axis 2 (geometry from the RAS ``affine``); returns the series UID.

    ``skip`` leaves out slice indices (a gap); ``image_type`` sets ImageType (e.g. a localiser). Files are named
    ``<prefix><k>.dcm`` so that several series can share a folder.
    """
    from pydicom.uid import generate_uid

    series = series or generate_uid()
    save_dicom_series(folder, array, affine, series=series, skip=skip, image_type=image_type,
                      file_name=lambda k: f"{prefix}{k:04d}")
    return series


@pytest.fixture(scope="module")
def sagittal(tmp_path_factory):
    """A sagittal DICOM series of the synthetic lumbar spine, its mask (NIfTI), and its clean crops."""
    d = tmp_path_factory.mktemp("sagittal")
    image, mask, affine = make_scan()
    stored, stored_affine = to_layout(image, affine, NON_RAS)  # 40 sagittal slices along array axis 2
    smask, _ = to_layout(mask, affine, NON_RAS)
    save_series(d / "clean", stored, stored_affine)
    mask_path = save_nifti(d / "mask.nii.gz", smask, stored_affine)
    clean = process_scan(task(d / "clean", mask_path), PreprocessConfig())
    assert clean.ok and len(clean.records) == 4 and not clean.dead_letters
    # Centroids (stored-array indices) without a mask: no grid-shape check can catch a wrong volume then.
    entries = [{"direction": ["P", "I", "R"]}]
    for code in (20, 21, 22, 23, 24):
        ijk = np.argwhere(smask == code).mean(axis=0)
        entries.append({"label": code, "X": ijk[0], "Y": ijk[1], "Z": ijk[2]})
    (d / "centroids.json").write_text(json.dumps(entries))
    return d, stored, stored_affine, mask_path, {r.level_name: r.image for r, _ in clean.records}


def _crops(result):
    return {r.level_name: r.image for r, _ in result.records}


def _stages(result):
    return sorted((d["unit"], d["stage"]) for d in result.dead_letters)


# ----------------------------------------------------------------------------------------- DICOM

def test_a_folder_of_two_series_is_a_dead_letter_unless_the_manifest_names_one(sagittal, tmp_path):
    d, stored, affine, mask, clean = sagittal
    folder = tmp_path / "mixed"
    first = save_series(folder, stored, affine, prefix="a")
    save_series(folder, stored * 0.5 + 10, affine, prefix="b")  # a second series on the same grid
    r = process_scan(task(folder, centroids=d / "centroids.json", row=3), PreprocessConfig())
    assert not r.ok and _stages(r) == [("", "read_image")] and not r.records
    reason = r.dead_letters[0]["reason"]
    assert "row 3" in reason and "2 series" in reason and "series_uid" in reason
    assert first not in reason  # a UID is a header value: never written
    # The manifest column series_uid picks one: the crops are those of that series alone.
    picked = process_scan(ScanTask(row=3, scan="s", patient="p", split="train", image=str(folder),
                                   mask=mask, series_uid=first), PreprocessConfig())
    assert picked.ok and sorted(_crops(picked)) == sorted(clean)
    for name, crop in _crops(picked).items():
        np.testing.assert_array_equal(crop, clean[name])


def test_two_series_of_one_folder_named_by_series_uid_are_two_scans_not_duplicates(tmp_path):
    """What the two-series error asks for (one row per series_uid) must not be taken for a scan listed twice."""
    image, _, affine = make_scan()
    first = save_series(tmp_path / "study", image, affine, prefix="a")
    second = save_series(tmp_path / "study", image * 0.5 + 10, affine, prefix="b")
    columns = ("scan_id", "patient_id", "image", "centroids", "series_uid")
    rows = [{"scan_id": "S1", "patient_id": "P1", "image": "study", "centroids": "c.json", "series_uid": first},
            {"scan_id": "S2", "patient_id": "P1", "image": "study", "centroids": "c.json", "series_uid": second},
            {"scan_id": "S3", "patient_id": "P1", "image": "study", "centroids": "c.json", "series_uid": second}]
    planned = plan(write_manifest(tmp_path / "scans.csv", rows, columns), PreprocessConfig(), "salt")
    assert sorted(t.series_uid for t in planned.tasks) == sorted([first, second])
    # The same folder AND series twice is still one scan listed twice.
    assert planned.counts["rows_duplicate_dropped"] == 1 and not planned.dead_letters


def test_a_localiser_in_the_folder_is_left_out_and_counted(sagittal, tmp_path):
    d, stored, affine, mask, clean = sagittal
    folder = tmp_path / "with_localiser"
    shutil.copytree(d / "clean", folder)
    # A 3-slice axial localiser: the volume resliced so that its slices are axial (normal along S).
    axial, axial_affine = to_layout(stored, affine, [[0, 1], [2, 1], [1, 1]])
    save_series(folder, axial[:, :, 80:83], axial_affine @ _shift(80, axis=2),
                image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), prefix="loc")
    r = process_scan(task(folder, mask), PreprocessConfig())
    assert r.ok and not r.dead_letters and r.notes == {"dicom_localiser_slices_excluded": 3}
    for name, crop in _crops(r).items():
        np.testing.assert_array_equal(crop, clean[name])
    # The same axial slices inside the series itself (no ImageType): another orientation, also left out.
    folder2 = tmp_path / "embedded"
    shutil.copytree(d / "clean", folder2)
    import pydicom
    uid = str(pydicom.dcmread(next(iter(sorted(folder2.iterdir())))).SeriesInstanceUID)
    save_series(folder2, axial[:, :, 80:83], axial_affine @ _shift(80, axis=2), series=uid, prefix="emb")
    r = process_scan(task(folder2, mask), PreprocessConfig())
    assert r.ok and r.notes == {"dicom_other_orientation_slices_excluded": 3}
    for name, crop in _crops(r).items():
        np.testing.assert_array_equal(crop, clean[name])


def _shift(k, axis):
    m = np.eye(4)
    m[axis, 3] = k
    return m


def test_a_gap_in_the_slice_positions_is_a_dead_letter_naming_them(sagittal, tmp_path):
    d, stored, affine, mask, clean = sagittal
    folder = tmp_path / "gap"
    save_series(folder, stored, affine, skip=(17, 18, 19))
    r = process_scan(task(folder, centroids=d / "centroids.json", row=5), PreprocessConfig())
    assert not r.ok and _stages(r) == [("", "read_image")] and not r.records
    reason = r.dead_letters[0]["reason"]
    assert "3 slice(s) missing" in reason and "row 5" in reason
    # The positions named are those of the left-out slices (mm along the slice normal).
    lps = readers.LPS_TO_RAS @ affine
    normal = np.cross(lps[:3, 0] / np.linalg.norm(lps[:3, 0]), lps[:3, 1] / np.linalg.norm(lps[:3, 1]))
    for k in (17, 18, 19):
        assert f"{(lps[:3, 3] + k * lps[:3, 2]) @ normal:.2f}" in reason


def test_a_single_dicom_file_is_refused_clearly(sagittal):
    d, *_ = sagittal
    one = sorted((d / "clean").iterdir())[0]
    r = process_scan(task(one, sagittal[3]), PreprocessConfig())
    assert not r.ok and "one slice, not a volume" in r.dead_letters[0]["reason"]
    assert "NotADirectoryError" not in r.dead_letters[0]["reason"]


# ----------------------------------------------------------------------------------------- geometry

def test_a_mask_shifted_in_world_space_is_a_dead_letter(tmp_path):
    image, mask, affine = make_scan()
    img = save_nifti(tmp_path / "img.nii.gz", image, affine)
    shifted = affine.copy()
    shifted[2, 3] += 60.0  # same grid shape, 60 mm further up
    r = process_scan(task(img, save_nifti(tmp_path / "m.nii.gz", mask, shifted), row=2), PreprocessConfig())
    assert not r.ok and _stages(r) == [("", "mask_grid")] and not r.records
    assert "60.0 mm" in r.dead_letters[0]["reason"] and "row 2" in r.dead_letters[0]["reason"]
    # The same mask stored in another array layout but on the same world grid is accepted.
    smask, saff = to_layout(mask, affine, NON_RAS)
    r = process_scan(task(img, save_nifti(tmp_path / "m2.nii.gz", smask, saff)), PreprocessConfig())
    assert r.ok and len(r.records) == 4


def test_a_label_painted_in_two_places_rejects_that_level_and_specks_are_left_out(tmp_path):
    image, mask, affine = make_scan()
    img = save_nifti(tmp_path / "img.nii.gz", image, affine)
    clean = process_scan(task(img, save_nifti(tmp_path / "m.nii.gz", mask, affine)), PreprocessConfig())
    blob = mask.copy()
    blob[2:8, 60:70, 5:25] = schema.LEVEL_CODES["L3"]  # 1200 voxels far below the spine: ~10% of L3
    r = process_scan(task(img, save_nifti(tmp_path / "b.nii.gz", blob, affine)), PreprocessConfig())
    assert sorted(_crops(r)) == ["L1/L2", "L4/L5"]
    assert _stages(r) == [("L2/L3", "bad_label"), ("L3/L4", "bad_label")]
    assert "L3 (code 22) is in 2 separate parts" in next(d["reason"] for d in r.dead_letters)
    # A speck of a few voxels is left out of the centre: crops identical to the clean mask's.
    speck = mask.copy()
    speck[2:4, 60:62, 5:7] = schema.LEVEL_CODES["L3"]
    r = process_scan(task(img, save_nifti(tmp_path / "s.nii.gz", speck, affine)), PreprocessConfig())
    assert not r.dead_letters
    for name, crop in _crops(r).items():
        np.testing.assert_array_equal(crop, _crops(clean)[name])


def test_unknown_and_transitional_codes_are_counted_and_l6_splits_no_unit(tmp_path):
    image, mask, affine = make_scan(levels=("L2", "L3", "L4", "L5", "S1"))
    odd = mask.copy()
    odd[odd == schema.LEVEL_CODES["S1"]] = 25  # what we called S1 is an L6: the real S1 lies below the FOV
    odd[2:8, 2:8, 2:8] = 99  # a code VerSe does not define
    img = save_nifti(tmp_path / "img.nii.gz", image, affine)
    r = process_scan(task(img, save_nifti(tmp_path / "m.nii.gz", odd, affine)), PreprocessConfig())
    assert r.ok and sorted(_crops(r)) == ["L2/L3", "L3/L4", "L4/L5"]
    assert r.notes == {"transitional_L6": 1, "unknown_label_99": 1}
    # With an S1 below the L6 the L5/S1 unit would join two non-neighbours: a dead letter, not a crop.
    image2, mask2, _ = make_scan(levels=("L3", "L4", "L5", "S1", "L1"))
    mask2[mask2 == schema.LEVEL_CODES["S1"]] = 25
    mask2[mask2 == schema.LEVEL_CODES["L1"]] = schema.LEVEL_CODES["S1"]
    r = process_scan(task(save_nifti(tmp_path / "i2.nii.gz", image2, affine),
                          save_nifti(tmp_path / "m2.nii.gz", mask2, affine)), PreprocessConfig())
    assert ("L5/S1", "transitional_vertebra") in _stages(r) and "L5/S1" not in _crops(r)
    assert r.units_found == len(r.records) + len(r.dead_letters)


# ----------------------------------------------------------------------------------------- numbers

def test_a_nan_centroid_rejects_its_units_and_writes_no_blank_crop(tmp_path):
    image, mask, affine = make_scan()
    img = save_nifti(tmp_path / "img.nii.gz", image, affine)
    entries = [{"direction": ["R", "A", "S"]}]
    for code in (20, 21, 22, 23, 24):
        ijk = np.argwhere(mask == code).mean(axis=0)
        entries.append({"label": code, "X": ijk[0], "Y": ijk[1], "Z": ijk[2]})
    entries[3]["X"] = float("nan")  # L3
    cj = tmp_path / "c.json"
    cj.write_text(json.dumps(entries))  # json writes NaN, and Python's json reads it back
    r = process_scan(task(img, centroids=cj, row=4), PreprocessConfig())
    assert sorted(_crops(r)) == ["L1/L2", "L4/L5"]
    assert _stages(r) == [("L2/L3", "bad_label"), ("L3/L4", "bad_label")]
    assert "non-finite" in r.dead_letters[0]["reason"] and "row 4" in r.dead_letters[0]["reason"]
    for crop in _crops(r).values():  # no blank (all -1) unit
        assert crop.std() > 0.05


def test_a_complex_image_is_refused_not_truncated(tmp_path):
    image, mask, affine = make_scan()
    cimg = save_nifti(tmp_path / "c.nii.gz", image.astype(np.complex64) * (1 + 1j), affine)
    r = process_scan(task(cimg, save_nifti(tmp_path / "m.nii.gz", mask, affine)), PreprocessConfig())
    assert not r.ok and "complex" in r.dead_letters[0]["reason"]


def test_the_voxel_limit_is_read_from_the_header_before_the_data(tmp_path):
    import nibabel as nib

    # A header claiming 2000^3 voxels over a tiny file: refused from the header, before any voxel is read.
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2000, 2000, 2000))
    hdr.set_data_dtype(np.uint8)
    big = tmp_path / "big.nii"
    big.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 100)
    r = process_scan(task(big, big), PreprocessConfig(max_voxels=10_000_000))
    assert not r.ok and "8,000,000,000 voxels" in r.dead_letters[0]["reason"]
    assert "max_voxels = 10,000,000" in r.dead_letters[0]["reason"]
    # The default is sized to this machine: physical memory / 64 bytes.
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert max_voxels(PreprocessConfig()) == pages // 64
    image, mask, affine = make_scan()
    small = PreprocessConfig(max_voxels=int(image.size) - 1)
    r = process_scan(task(save_nifti(tmp_path / "i.nii.gz", image, affine),
                          save_nifti(tmp_path / "m.nii.gz", mask, affine)), small)
    assert not r.ok and "above preprocess.max_voxels" in r.dead_letters[0]["reason"]


# ----------------------------------------------------------------------------------------- manifest

@pytest.fixture(scope="module")
def duplicates_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("dups")
    image, mask, affine = make_scan()
    img = save_nifti(d / "img.nii.gz", image, affine)
    msk = save_nifti(d / "mask.nii.gz", mask, affine)
    shutil.copy(img, d / "copy.nii.gz")  # the same bytes under another name
    other = [save_nifti(d / f"o{i}.nii.gz", make_scan(seed=i)[0], affine) for i in range(1, 5)]
    rows = [
        dict(scan_id="S1", patient_id="P1", image=img, vertebra_mask=msk),              # 1: same scan_id as 2
        dict(scan_id="S1", patient_id="P2", image=other[0], vertebra_mask=msk),         # 2: across patients
        dict(scan_id="S3", patient_id="P3", image=other[1], vertebra_mask=msk),         # 3: same path as 4
        dict(scan_id="S4", patient_id="P4", image=other[1], vertebra_mask=msk),         # 4
        dict(scan_id="S5", patient_id="P5", image=str(d / "copy.nii.gz"), vertebra_mask=msk),  # 5: bytes of 1
        dict(scan_id="S6", patient_id="P6", image=other[2], vertebra_mask=msk),         # 6: kept
        dict(scan_id="S6", patient_id="P6", image=other[2], vertebra_mask=msk),         # 7: same patient: dropped
        dict(scan_id="", patient_id="P8", image=other[3], vertebra_mask=msk),           # 8: empty id
        dict(scan_id="S9", patient_id="", image=other[3], vertebra_mask=msk),           # 9: empty id
        dict(scan_id="S10", patient_id="P10", image=other[3], vertebra_mask=msk),       # 10: kept
    ]
    manifest = write_manifest(d / "scans.csv", rows)
    out = d / "out"
    result = component.SPEC.run(load_config(None), {}, out, options={"manifest": manifest})
    return out, result


def test_duplicates_across_patients_are_dead_letters_and_inputs_add_up(duplicates_run):
    out, result = duplicates_run
    stats = json.loads((out / "stats.json").read_text())
    dead = [json.loads(line) for line in (out / "dead_letters.jsonl").read_text().splitlines()]
    by_row = {d["row"]: d for d in dead if not d["unit"]}
    assert sorted(r for r, d in by_row.items() if d["stage"] == "duplicate") == [1, 2, 3, 4, 5]
    assert sorted(r for r, d in by_row.items() if d["stage"] == "manifest") == [8, 9]
    assert "scan_id" in by_row[2]["reason"] and "image path" in by_row[4]["reason"]
    assert "image content" in by_row[5]["reason"]
    assert "'scan_id' is empty" in by_row[8]["reason"] and "'patient_id' is empty" in by_row[9]["reason"]
    # 10 rows = 2 scans processed + 7 rejected + 1 duplicate of one patient dropped.
    assert (stats["manifest_rows"], stats["scans_in"], stats["rows_rejected"], stats["rows_duplicate_dropped"]) \
        == (10, 2, 7, 1)
    assert stats["manifest_rows"] == stats["scans_in"] + stats["rows_rejected"] + stats["rows_duplicate_dropped"]
    assert result["counts"]["vus_written"] == 8 and stats["vus_written"] == 8
    # No crop appears twice anywhere, let alone in two splits.
    images = [r.image.tobytes() for s in schema.SPLITS for r in schema.iter_records(schema.shard_files(str(out), s))]
    assert len(images) == 8 == len(set(images))
    text = (out / "dead_letters.jsonl").read_text()
    for raw in ("S1", "P2", "S10"):  # pseudonyms only: no raw id, no file name
        assert f'"{raw}"' not in text and f" {raw} " not in text
    assert "copy.nii" not in text and "o1.nii" not in text


def test_a_header_only_manifest_is_an_error_before_any_work(tmp_path):
    manifest = write_manifest(tmp_path / "scans.csv", [])
    with pytest.raises(ManifestError, match="a header but no rows"):
        component.SPEC.run(load_config(None), {}, tmp_path / "out", options={"manifest": manifest})
    assert not (tmp_path / "out" / "artifact.json").exists()


def test_manifest_faults_are_manifest_errors_not_tracebacks(tmp_path):
    cfg = PreprocessConfig()
    with pytest.raises(ManifestError, match="is a folder"):
        plan(str(tmp_path), cfg, "s")
    huge = tmp_path / "huge.csv"
    huge.write_text("scan_id,patient_id,image,vertebra_mask\nS1,P1," + "x" * 200_000 + ",m.nii.gz\n")
    with pytest.raises(ManifestError, match=r"line \d+: not valid CSV"):
        plan(str(huge), cfg, "s")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("scan_id,patient_id,image,vertebra_mask\nS1,Jos\xe9,i.nii,m.nii\n".encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        plan(str(latin), cfg, "s")
    extra = tmp_path / "extra.csv"
    extra.write_text("scan_id,patient_id,image,vertebra_mask\nS1,P1,i.nii,m.nii,oops\n")
    with pytest.raises(ManifestError, match="more fields than the header"):
        plan(str(extra), cfg, "s")
    only_bad = write_manifest(tmp_path / "bad.csv", [dict(scan_id="", patient_id="P", image="i.nii")])
    with pytest.raises(ManifestError, match="none of its 1 rows is usable"):
        plan(only_bad, cfg, "s")


def test_two_slices_at_one_position_are_a_dead_letter(sagittal, tmp_path):
    d, stored, affine, mask, clean = sagittal
    folder = tmp_path / "doubled"
    uid = save_series(folder, stored, affine, prefix="a")
    save_series(folder, stored[:, :, :5], affine, series=uid, prefix="echo2-")  # a second echo, same series
    r = process_scan(task(folder, centroids=d / "centroids.json"), PreprocessConfig())
    assert not r.ok and "same position" in r.dead_letters[0]["reason"] and not r.records


def test_an_implausibly_small_label_rejects_its_units(tmp_path):
    image, mask, affine = make_scan()
    img = save_nifti(tmp_path / "img.nii.gz", image, affine)
    tiny = mask.copy()
    tiny[tiny == schema.LEVEL_CODES["L5"]] = 0
    tiny[20, 30, 40] = schema.LEVEL_CODES["L5"]  # one voxel, 0.001 ml
    r = process_scan(task(img, save_nifti(tmp_path / "m.nii.gz", tiny, affine)), PreprocessConfig())
    assert _stages(r) == [("L4/L5", "bad_label")] and "0.00 ml, outside the plausible 0.1 to 300 ml" in \
        r.dead_letters[0]["reason"]
    assert sorted(_crops(r)) == ["L1/L2", "L2/L3", "L3/L4"]


def test_unknown_level_names_are_counted_and_free_text_is_not_echoed(tmp_path):
    image, mask, affine = make_scan()
    r = process_scan(ScanTask(
        row=1, scan="s", patient="p", split="train", image=save_nifti(tmp_path / "i.nii.gz", image, affine),
        mask=save_nifti(tmp_path / "m.nii.gz", mask, affine), levels=("L1", "L2"),
        unknown_levels=("L6", "Jane Doe")), PreprocessConfig())
    assert r.ok and len(r.records) == 4
    assert r.notes == {"unknown_level_name_L6": 1, "unknown_level_text": 1}
    manifest = write_manifest(tmp_path / "scans.csv", [dict(scan_id="a", patient_id="b", image="i.nii.gz",
                                                            vertebra_mask="m.nii.gz", levels="L1 L2 L6 X")])
    planned = plan(manifest, PreprocessConfig(), "salt")
    assert planned.tasks[0].levels == ("L1", "L2") and planned.tasks[0].unknown_levels == ("L6", "X")


def test_content_check_reads_only_images_that_share_a_size(tmp_path, monkeypatch):
    """Byte-identical images must share a size, so only those are read: a cohort of distinct sizes is never
    streamed on the driver (on Dataflow, from GCS) before Beam starts; same-size different bytes stay distinct."""
    a = tmp_path / "a.nii"
    a.write_bytes(b"x" * 100)
    (tmp_path / "a_copy.nii").write_bytes(b"x" * 100)  # a copy: same size, same bytes
    (tmp_path / "b.nii").write_bytes(b"y" * 100)  # same size, other bytes
    (tmp_path / "c.nii").write_bytes(b"z" * 77)  # a size of its own
    dicom = tmp_path / "series"
    dicom.mkdir()
    for i in range(3):
        (dicom / f"{i}.dcm").write_bytes(bytes([i]) * 50)
    read = []
    monkeypatch.setattr("vugan.components.preprocess.manifest.file_digest",
                        lambda p: read.append(os.path.basename(p)) or file_digest(p))
    paths = [str(tmp_path / n) for n in ("a.nii", "a_copy.nii", "b.nii", "c.nii", "missing.nii")] + [str(dicom)]
    digests = content_digests(paths)
    assert sorted(read) == ["a.nii", "a_copy.nii", "b.nii"]  # c, the folder and the missing file: never read
    norm = {os.path.basename(p): os.path.normpath(p) for p in paths}
    assert digests[norm["a.nii"]] == digests[norm["a_copy.nii"]] != digests[norm["b.nii"]]
    assert set(digests) == {norm["a.nii"], norm["a_copy.nii"], norm["b.nii"]}
