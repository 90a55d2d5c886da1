"""Geometry is never guessed, burned-in text is refused, and preprocess/config inputs get exact messages (issue 24).

Each case once became wrong crops with exit 0 or a misleading message: a NIfTI with no orientation (nibabel's
scale-only fallback), a qform that disagrees with the sform, a negative scale slope (inverted contrast), a centroid
json listing one level twice, a manifest with two columns of one name, DICOM with burned-in annotation. Now each is a
dead letter naming the row, the column and what to do (counted so the inputs add up) or a one-line error naming the
file and the field. All inputs here are real files written with nibabel, pydicom and SimpleITK.
"""
from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from vugan.components import schema
from vugan.components.preprocess import readers
from vugan.components.preprocess.manifest import ManifestError, plan
from vugan.components.preprocess.spec import PreprocessConfig
from vugan.components.preprocess.units import process_scan
from vugan.pipeline.config import ConfigError, load_config
from support.scans import NON_RAS, make_scan, save_dicom_series, save_itk, save_nifti, task, to_layout, write_manifest


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """The synthetic lumbar spine stored sagittally (a non-RAS layout, so a wrong orientation shows), a centroid
    json in stored-array indices, the mask, and the clean crops read from a NIfTI with its orientation."""
    d = tmp_path_factory.mktemp("geometry")
    image, mask, affine = make_scan()
    stored, stored_affine = to_layout(image, affine, NON_RAS)
    smask, _ = to_layout(mask, affine, NON_RAS)
    entries = [{"direction": ["P", "I", "R"]}]
    for code in (20, 21, 22, 23, 24):
        ijk = np.argwhere(smask == code).mean(axis=0)
        entries.append({"label": code, "X": ijk[0], "Y": ijk[1], "Z": ijk[2]})
    (d / "centroids.json").write_text(json.dumps(entries))
    stored16 = np.rint(stored).astype(np.int16)  # integer voxels: the scale slope then applies to them
    clean_path = save_nifti(d / "clean.nii", stored16, stored_affine)
    mask_path = save_nifti(d / "mask.nii.gz", smask, stored_affine)
    clean = process_scan(task(clean_path, centroids=d / "centroids.json"), PreprocessConfig())
    assert clean.ok and len(clean.records) == 4 and not clean.dead_letters
    return d, stored16, smask, stored_affine, mask_path, _crops(clean)


def _crops(result):
    return {r.level_name: r.image for r, _ in result.records}


def _only_dead_letter(result):
    assert not result.ok and not result.records and len(result.dead_letters) == 1, result.dead_letters
    return result.dead_letters[0]


def _save_codes(path, array, affine, *, qform=None, qcode=0, sform=None, scode=2):
    """A NIfTI whose qform and sform (and their codes) are set one by one, as scanners' converters write them."""
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.set_sform(affine if sform is None else sform, code=scode)
    img.set_qform(affine if qform is None else qform, code=qcode)
    nib.save(img, str(path))
    header = nib.load(str(path)).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (qcode, scode)
    return str(path)


def _rotation(degrees, axis=0):
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(4)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


# ----------------------------------------------------------------------------------------- NIfTI orientation

def test_a_nifti_without_orientation_is_a_dead_letter_for_the_image_and_for_the_mask(scan, tmp_path):
    d, stored, smask, affine, mask_path, clean = scan
    bare = _save_codes(tmp_path / "bare.nii.gz", stored, affine, qcode=0, scode=0)
    r = process_scan(task(bare, centroids=d / "centroids.json", row=4), PreprocessConfig())
    dead = _only_dead_letter(r)  # before: 4 units cut along the wrong axes, no dead letter
    assert dead["stage"] == "orientation" and dead["unit"] == ""
    assert "manifest row 4, column 'image'" in dead["reason"]
    assert "no orientation: qform_code and sform_code are both 0" in dead["reason"]
    assert "orientation (e.g. from the DICOM)" in dead["reason"]
    # The mask is checked the same way (its own column named), even when its scale-only grid would pass.
    bare_mask = _save_codes(tmp_path / "bare_mask.nii.gz", smask, affine, qcode=0, scode=0)
    r = process_scan(task(d / "clean.nii", bare_mask, row=6), PreprocessConfig())
    dead = _only_dead_letter(r)
    assert dead["stage"] == "orientation" and "manifest row 6, column 'vertebra_mask'" in dead["reason"]
    # Either code alone is an orientation: the qform only (sform code 0) reads exactly like the clean file.
    qform_only = _save_codes(tmp_path / "qform_only.nii.gz", stored, affine, qcode=1, scode=0)
    r = process_scan(task(qform_only, centroids=d / "centroids.json"), PreprocessConfig())
    assert r.ok and sorted(_crops(r)) == sorted(clean)
    for name, crop in _crops(r).items():
        np.testing.assert_allclose(crop, clean[name], atol=1e-5)


def test_a_qform_that_disagrees_with_the_sform_is_a_dead_letter_and_float_rounding_passes(scan, tmp_path):
    d, stored, smask, affine, mask_path, clean = scan
    turned = _rotation(30.0) @ affine  # the qform turned 30 degrees against the sform
    bad = _save_codes(tmp_path / "disagree.nii.gz", stored, affine, qform=turned, qcode=1, scode=2)
    r = process_scan(task(bad, centroids=d / "centroids.json", row=2), PreprocessConfig())
    dead = _only_dead_letter(r)  # before: the sform silently won
    assert dead["stage"] == "orientation" and "manifest row 2, column 'image'" in dead["reason"]
    reason = dead["reason"]
    assert "qform (code 1)" in reason and "sform (code 2)" in reason and "30.0 degrees" in reason
    assert "preprocess.grid_tolerance_mm" in reason
    # The qform is stored as a float32 quaternion: the same oblique orientation written into both only differs by
    # rounding, and must read as the sform alone does.
    oblique = _rotation(17.0, axis=1) @ affine
    both = _save_codes(tmp_path / "both.nii.gz", stored, oblique, qcode=1, scode=1)
    header = nib.load(both).header
    assert not np.array_equal(header.get_qform(), header.get_sform())  # a real rounding difference
    only_sform = _save_codes(tmp_path / "sform.nii.gz", stored, oblique, qcode=0, scode=1)
    a = process_scan(task(both, centroids=d / "centroids.json"), PreprocessConfig())
    b = process_scan(task(only_sform, centroids=d / "centroids.json"), PreprocessConfig())
    assert a.ok and b.ok and not a.dead_letters and sorted(_crops(a)) == sorted(_crops(b))
    for name, crop in _crops(a).items():
        np.testing.assert_array_equal(crop, _crops(b)[name])


# ----------------------------------------------------------------------------------------- scale slopes

def _patch_nifti_slope(path, slope, inter=0.0):
    """Write scl_slope/scl_inter into an uncompressed NIfTI-1 header (bytes 112 to 119), as a converter would."""
    with open(path, "r+b") as fh:
        fh.seek(112)
        fh.write(np.array([slope, inter], "<f4").tobytes())


def test_a_negative_nifti_scale_slope_is_a_dead_letter_and_slope_zero_means_no_scaling(scan, tmp_path):
    d, stored, smask, affine, mask_path, clean = scan
    paths = {}
    for name, slope in (("one", 1.0), ("zero", 0.0), ("negative", -1.0)):
        paths[name] = str(tmp_path / f"{name}.nii")
        shutil.copy(d / "clean.nii", paths[name])
        _patch_nifti_slope(paths[name], slope)
    assert nib.load(paths["negative"]).dataobj.slope == -1.0  # nibabel would invert the contrast
    r = process_scan(task(paths["negative"], centroids=d / "centroids.json", row=3), PreprocessConfig())
    dead = _only_dead_letter(r)  # before: 4 units of inverted contrast, no dead letter
    assert dead["stage"] == "intensity_scaling" and "manifest row 3, column 'image'" in dead["reason"]
    assert "scl_slope" in dead["reason"] and "negative" in dead["reason"]
    # scl_slope = 0 means "no scaling" in the NIfTI standard (nibabel reads it so): identical to slope 1.
    one = process_scan(task(paths["one"], centroids=d / "centroids.json"), PreprocessConfig())
    zero = process_scan(task(paths["zero"], centroids=d / "centroids.json"), PreprocessConfig())
    assert one.ok and zero.ok and sorted(_crops(one)) == sorted(_crops(zero)) == sorted(clean)
    for name, crop in _crops(zero).items():
        np.testing.assert_array_equal(crop, _crops(one)[name])
    np.testing.assert_array_equal(readers.read_volume(paths["zero"]).array, readers.read_volume(paths["one"]).array)


def _edit_series(folder, **tags):
    import pydicom

    for f in sorted(os.listdir(folder)):
        ds = pydicom.dcmread(os.path.join(folder, f))
        for tag, value in tags.items():
            setattr(ds, tag, value)
        ds.save_as(os.path.join(folder, f), enforce_file_format=True)


@pytest.mark.parametrize("slope", ["-1", "0"])
def test_a_dicom_rescale_slope_of_zero_or_below_is_a_dead_letter(scan, tmp_path, slope):
    d, stored, smask, affine, mask_path, clean = scan
    folder = save_dicom_series(tmp_path / "series", stored, affine)
    _edit_series(folder, RescaleSlope=slope, RescaleIntercept="0")
    r = process_scan(task(folder, mask_path, row=7), PreprocessConfig())
    dead = _only_dead_letter(r)
    assert dead["stage"] == "intensity_scaling" and "manifest row 7, column 'image'" in dead["reason"]
    assert "RescaleSlope" in dead["reason"] and "re-export" in dead["reason"]


# ----------------------------------------------------------------------------------------- centroids and manifest

def test_a_centroid_json_listing_one_level_twice_rejects_the_units_of_that_level(scan, tmp_path):
    d, stored, smask, affine, mask_path, clean = scan
    entries = json.loads((d / "centroids.json").read_text())
    l3 = next(e for e in entries if e.get("label") == 22)
    # L3 again, 8 mm further down the spine (stored axis 1 runs inferior): before, this last entry won silently
    # and L2/L3 and L3/L4 were written, both cut in the wrong place.
    entries.append({**l3, "Y": l3["Y"] + 8.0})
    (tmp_path / "twice.json").write_text(json.dumps(entries))
    r = process_scan(task(d / "clean.nii", centroids=tmp_path / "twice.json", row=9), PreprocessConfig())
    assert r.ok
    assert sorted((x["unit"], x["stage"]) for x in r.dead_letters) == [("L2/L3", "bad_label"), ("L3/L4", "bad_label")]
    for dead in r.dead_letters:
        assert "manifest row 9, column 'centroids'" in dead["reason"] and "L3" in dead["reason"]
        assert "2 times" in dead["reason"]
    # The units that do not use L3 are kept, exactly as from the clean json; the inputs add up.
    assert sorted(_crops(r)) == ["L1/L2", "L4/L5"] and r.units_found == 4
    for name, crop in _crops(r).items():
        np.testing.assert_array_equal(crop, clean[name])


def test_a_manifest_with_two_columns_of_one_name_is_an_error_naming_line_1(tmp_path, capsys):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    bad = tmp_path / "scans.csv"
    bad.write_text("scan_id,patient_id,image,centroids,patient_id\n"
                   "S1,P1,a.nii.gz,c.json,P2\nS2,P2,a2.nii.gz,c.json,P1\n")
    with pytest.raises(ManifestError) as err:  # before: the last column won, one patient in train and holdout
        plan(str(bad), PreprocessConfig(), "salt")
    message = str(err.value)
    assert str(bad) in message and "line 1" in message and "'patient_id'" in message and "\n" not in message
    # Through the CLI: exit 2, one line, before any work (nothing written).
    from vugan.pipeline.cli import main

    assert main(["preprocess", "--manifest", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "line 1" in capsys.readouterr().err
    assert not (tmp_path / "out" / "artifact.json").exists() and not any((tmp_path / "out").glob("Split-*"))


def test_paths_in_the_manifest_are_used_exactly_as_written(scan, tmp_path):
    d, stored, smask, affine, mask_path, clean = scan
    shutil.copy(d / "clean.nii", tmp_path / "img.nii")
    shutil.copy(d / "centroids.json", tmp_path / "c.json")
    shutil.copy(d / "clean.nii", tmp_path / "spaced.nii ")  # a file whose name really ends in a space
    columns = ("scan_id", "patient_id", "image", "centroids")
    manifest = write_manifest(tmp_path / "scans.csv", [
        {"scan_id": "S1", "patient_id": "P1", "image": "img.nii ", "centroids": "c.json"},
        {"scan_id": "S2", "patient_id": "P2", "image": "spaced.nii ", "centroids": "c.json"},
        {"scan_id": "S3", "patient_id": "P3", "image": "img.nii", "centroids": " c.json"}], columns)
    planned = plan(manifest, PreprocessConfig(), "salt")
    # Row 1: the file as written does not exist; without the space it does. Before: stripped silently.
    assert sorted(x["row"] for x in planned.dead_letters) == [1, 3]
    by_row = {x["row"]: x["reason"] for x in planned.dead_letters}
    assert "column 'image'" in by_row[1] and "space" in by_row[1] and "img.nii" not in by_row[1]
    assert "column 'centroids'" in by_row[3] and "space" in by_row[3]
    # Row 2: the path as written (with its space) is the file used.
    (kept,) = planned.tasks
    assert kept.row == 2 and kept.image == str(tmp_path / "spaced.nii ")
    assert planned.counts["manifest_rows"] == len(planned.tasks) + planned.counts["rows_rejected"]


def test_a_manifest_that_is_not_utf8_text_says_so_instead_of_missing_column(tmp_path):
    text = "scan_id,patient_id,image,centroids\nS1,P1,a.nii.gz,c.json\n"
    cases = {"utf16_no_bom.csv": text.encode("utf-16-le"), "utf16_bom.csv": text.encode("utf-16"),
             "double_bom.csv": b"\xef\xbb\xbf\xef\xbb\xbf" + text.encode()}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ManifestError) as err:
            plan(str(tmp_path / name), PreprocessConfig(), "salt")
        message = str(err.value)
        assert "missing column" not in message and "save it as UTF-8" in message, name
        assert str(tmp_path / name) in message
    for name in ("utf16_no_bom.csv", "utf16_bom.csv"):
        with pytest.raises(ManifestError, match=r"not UTF-8 text \(UTF-16\?\)"):
            plan(str(tmp_path / name), PreprocessConfig(), "salt")
    # One BOM (what spreadsheets write) is still read.
    (tmp_path / "one_bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "a.nii.gz").write_bytes(b"")
    assert len(plan(str(tmp_path / "one_bom.csv"), PreprocessConfig(), "salt").tasks) == 1


# ----------------------------------------------------------------------------------------- burned-in annotation

@pytest.fixture(scope="module")
def burned_in(scan, tmp_path_factory):
    """A manifest of two scans: a DICOM series flagged BurnedInAnnotation = YES and a clean NIfTI."""
    d, stored, smask, affine, mask_path, clean = scan
    root = tmp_path_factory.mktemp("burned")
    folder = save_dicom_series(root / "series", stored, affine)
    _edit_series(folder, BurnedInAnnotation="YES")
    manifest = write_manifest(root / "scans.csv", [
        dict(scan_id="S1", patient_id="P1", image=folder, vertebra_mask=mask_path),
        dict(scan_id="S2", patient_id="P2", image=str(d / "clean.nii"), vertebra_mask=mask_path)])
    return root, folder, manifest


def test_burned_in_annotation_is_a_dead_letter_unless_accepted(scan, burned_in):
    d, stored, smask, affine, mask_path, clean = scan
    root, folder, manifest = burned_in
    r = process_scan(task(folder, mask_path, row=1), PreprocessConfig())
    dead = _only_dead_letter(r)  # before: read, glyphs and all
    assert dead["stage"] == "burned_in_annotation" and "manifest row 1, column 'image'" in dead["reason"]
    assert "preprocess.accept_burned_in" in dead["reason"]
    assert r.notes == {"burned_in_annotation_refused": 1}
    accepted = process_scan(task(folder, mask_path), PreprocessConfig(accept_burned_in=True))
    assert accepted.ok and not accepted.dead_letters and len(accepted.records) == 4
    assert accepted.notes == {"burned_in_annotation_accepted": 1}


def test_burned_in_scans_are_counted_and_accepting_them_is_recorded_in_the_artifact_and_the_datasheet(burned_in):
    from vugan.components.preprocess import component
    from vugan.components.synthesize.component import SPEC as SYNTHESIZE
    from support.model_artifacts import make_evaluation_artifact, make_model_artifact

    root, folder, manifest = burned_in
    refused = component.SPEC.run(load_config(None), {}, root / "refused", options={"manifest": manifest})
    counts = refused["counts"]
    assert (counts["scans_ok"], counts["scans_failed"]) == (1, 1)
    stats = json.loads((root / "refused" / "stats.json").read_text())
    assert stats["notes"]["burned_in_annotation_refused"] == 1
    dead = [json.loads(line) for line in (root / "refused" / "dead_letters.jsonl").read_text().splitlines()]
    assert [x["stage"] for x in dead] == ["burned_in_annotation"]
    assert refused["properties"]["burned_in_annotation"] == {"accepted": False, "scans": 0}

    run = root / "run"
    config = load_config(None, ["preprocess.accept_burned_in=true", "synthesize.units_per_class=2",
                                "synthesize.write_nifti=false", "synthesize.preview_units=1"])
    accepted = component.SPEC.run(config, {}, run / "preprocess", options={"manifest": manifest})
    assert accepted["counts"]["scans_ok"] == 2
    assert accepted["properties"]["burned_in_annotation"] == {"accepted": True, "scans": 1}
    # A model "trained" on it (the run folder's sibling preprocess/ is its Examples), then the released set.
    model = make_model_artifact(run / "train")
    evaluation = make_evaluation_artifact(run / "evaluate", passed=True, model_dir=model, config=config)
    SYNTHESIZE.run(config, {"model": model, "evaluation": evaluation}, run / "synthesize")
    sheet = (run / "synthesize" / "datasheet.md").read_text()
    assert "preprocess.accept_burned_in = true" in sheet and "burned-in" in sheet.lower()


# ----------------------------------------------------------------------------------------- exact messages

def _enhanced_multiframe(path, frames=3, size=8):
    """One enhanced MR file: NumberOfFrames > 1, the per-frame geometry in functional groups, none at top level."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "MR", generate_uid()
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames, size, size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = ["1", "1"], "1"
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(frames):
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = ["0", "0", str(k)]
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = np.arange(frames * size * size, dtype=np.uint16).tobytes()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    assert int(pydicom.dcmread(path).NumberOfFrames) == frames


def test_an_enhanced_multiframe_dicom_folder_is_told_to_convert_to_nifti(scan, tmp_path):
    d = scan[0]
    _enhanced_multiframe(str(tmp_path / "enhanced" / "IM0001.dcm"))
    for image in (tmp_path / "enhanced", tmp_path / "enhanced" / "IM0001.dcm"):
        dead = _only_dead_letter(process_scan(task(image, centroids=d / "centroids.json"), PreprocessConfig()))
        assert "multi-frame" in dead["reason"] and "convert it to NIfTI" in dead["reason"], image
        assert "no DICOM slice with ImagePositionPatient" not in dead["reason"]
    # Beside a series of single slices (an enhanced localiser, say) a multi-frame file is left out and counted.
    d, stored, smask, affine, mask_path, clean = scan
    folder = save_dicom_series(tmp_path / "series", stored, affine)
    _enhanced_multiframe(os.path.join(folder, "zz_enhanced.dcm"))
    r = process_scan(task(folder, centroids=d / "centroids.json"), PreprocessConfig())
    assert r.ok and not r.dead_letters and r.notes == {"dicom_multiframe_files_excluded": 1}
    for name, crop in _crops(r).items():
        np.testing.assert_allclose(crop, clean[name], atol=1e-5)


def test_finite_values_beyond_float32_are_called_out_of_range_not_nan(scan, tmp_path):
    d, stored, smask, affine, mask_path, clean = scan
    big = stored.astype(np.float64)
    big[5, 5, 5] = 1e39  # finite in float64, infinite once cast to float32
    path = save_nifti(tmp_path / "big.nii.gz", big, affine)
    dead = _only_dead_letter(process_scan(task(path, centroids=d / "centroids.json", row=2), PreprocessConfig()))
    assert dead["stage"] == "image_values" and "manifest row 2, column 'image'" in dead["reason"]
    assert "float32 range" in dead["reason"] and "NaN" not in dead["reason"]


def test_a_huge_mask_value_is_not_called_negative(scan, tmp_path):
    d, stored, smask, affine, mask_path, clean = scan
    mask = smask.astype(np.float32)
    mask[0, 0, 0] = 1e20
    path = save_nifti(tmp_path / "mask.nii.gz", mask, affine)
    dead = _only_dead_letter(process_scan(task(d / "clean.nii", path, row=3), PreprocessConfig()))
    assert dead["stage"] == "mask_values" and "manifest row 3" in dead["reason"]
    assert "negative" not in dead["reason"] and "VerSe code" in dead["reason"]


def test_a_float_label_map_is_one_not_an_integer_label_map_dead_letter(scan, tmp_path):
    from scipy import ndimage

    d, stored, smask, affine, mask_path, clean = scan
    smooth = ndimage.uniform_filter(smask.astype(np.float32), size=3)  # a mask resampled with interpolation
    path = save_nifti(tmp_path / "interpolated.nii.gz", smooth, affine)
    r = process_scan(task(d / "clean.nii", path, row=5), PreprocessConfig())
    dead = _only_dead_letter(r)  # before: one "separate parts" letter per unit
    assert dead["stage"] == "mask_values" and "not an integer label map" in dead["reason"]
    # A float mask holding whole numbers (as many tools save labels) is still a label map.
    whole = save_nifti(tmp_path / "float_whole.nii.gz", smask.astype(np.float32), affine)
    r = process_scan(task(d / "clean.nii", whole), PreprocessConfig())
    assert r.ok and len(r.records) == 4 and not r.dead_letters


def _mhd(folder, name, data_file, *, extra=""):
    """A MetaImage header of an 8x8x8 uchar volume whose ElementDataFile is ``data_file``."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as fh:
        fh.write("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                 "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\nElementSpacing = 1 1 1\nDimSize = 8 8 8\n"
                 f"{extra}ElementType = MET_UCHAR\nElementDataFile = {data_file}\n")
    return path


def test_an_mhd_whose_data_file_leaves_its_folder_is_refused(scan, tmp_path):
    d, *_ = scan
    rng = np.random.default_rng(0).integers(0, 255, 512, dtype=np.uint8).tobytes()
    (tmp_path / "x.raw").write_bytes(rng)
    (tmp_path / "hdr").mkdir()
    (tmp_path / "hdr" / "beside.raw").write_bytes(rng)
    beside = readers.read_volume(_mhd(tmp_path / "hdr", "ok.mhd", "beside.raw"))
    assert beside.array.shape == (8, 8, 8)  # the data file beside the header is read as before
    for target in ("/etc/passwd", "../x.raw", str(tmp_path / "x.raw")):
        path = _mhd(tmp_path / "hdr", "bad.mhd", target)
        with pytest.raises(readers.VolumeError, match="beside the header"):  # before: read as voxels
            readers.read_volume(path)
        dead = _only_dead_letter(process_scan(task(path, centroids=d / "centroids.json", row=8), PreprocessConfig()))
        assert "manifest row 8, column 'image'" in dead["reason"] and "beside the header" in dead["reason"]
        assert "passwd" not in dead["reason"] and "x.raw" not in dead["reason"]
    # A MetaImage intensity slope of zero or below inverts or erases the contrast: refused like DICOM's.
    sloped = _mhd(tmp_path / "hdr", "sloped.mhd", "beside.raw", extra="ElementToIntensityFunctionSlope = -1\n")
    with pytest.raises(readers.VolumeError, match="ElementToIntensityFunctionSlope"):
        readers.read_volume(sloped)


@pytest.mark.parametrize("value", ["0", "0.0", "1e-400", "-1e-4"])
def test_a_learning_rate_of_zero_is_refused_naming_the_key(value, tmp_path):
    for key in ("trainer.lr_g", "trainer.lr_d"):
        with pytest.raises(ConfigError, match=rf"^{key}: .*greater than 0"):  # before: accepted (1e-400 reads 0.0)
            load_config(None, [f"{key}={value}"])
    toml = tmp_path / "c.toml"
    toml.write_text(f"[trainer]\nlr_g = {value}\n")
    with pytest.raises(ConfigError, match=r"^trainer.lr_g: "):
        load_config(toml)
    assert load_config(None, ["trainer.lr_g=1e-6"]).trainer.lr_g == 1e-6


@pytest.mark.parametrize("key", ["trainer.beta1", "trainer.beta2", "trainer.ema_decay"])
def test_adam_betas_and_the_ema_decay_of_one_are_refused(key):
    # 1 - beta^t = 0 divides Adam's bias correction by zero; an EMA decay of 1 never moves off the random start.
    with pytest.raises(ConfigError, match=rf"^{key}: .*below 1"):
        load_config(None, [f"{key}=1.0"])
    load_config(None, [f"{key}=0.0"])  # 0 is allowed (no momentum / no averaging)


def test_a_toml_config_with_a_utf8_bom_is_read(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[trainer]\nsteps = 3\n")  # Notepad's "UTF-8 with BOM"
    assert load_config(path).trainer.steps == 3
    latin = tmp_path / "latin.toml"
    latin.write_bytes("[run]\nname = \"J\xf6rg\"\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text.*save it as UTF-8"):
        load_config(latin)


def test_a_toml_config_with_a_utf8_bom_is_read_when_a_run_folder_is_reused(tmp_path):
    """`vugan run --run DIR --config FILE` merges FILE into the run's saved config: that read takes a BOM too."""
    from vugan.pipeline.config import write_resolved
    from vugan.pipeline.runner import resolve_run_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_resolved(load_config(), run_dir)
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[trainer]\nsteps = 3\n")
    assert resolve_run_config(run_dir, path).trainer.steps == 3
