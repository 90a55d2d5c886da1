"""Preprocess manifest and unit loop: splits, manifest checks, volume readers (NIfTI/DICOM/MHA/NRRD), reorientation, bad input.

The synthetic scans (a straight lumbar spine of box-shaped bodies, in any layout and format) come from
tests/support/scans.py, which the other preprocess tests share.
"""
from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from vugan.components import schema
from vugan.components.preprocess import readers
from vugan.components.preprocess.manifest import (ManifestError, ScanTask, assign_splits, plan_tasks, read_manifest,
                                                  split_counts)
from vugan.components.preprocess.units import process_scan
from vugan.components.preprocess.spec import PreprocessConfig

from support.paths import REAL_DATA
from support.scans import NON_RAS, make_scan, save_dicom_series, save_itk, save_nifti, task, to_layout, write_manifest

REAL = str(REAL_DATA)


# ----------------------------------------------------------------------------------------- splits

def test_split_counts_exact_and_every_split_nonempty():
    assert split_counts(17, (0.6, 0.2, 0.2)) == [10, 4, 3]
    assert split_counts(20, (0.6, 0.2, 0.2)) == [12, 4, 4]
    assert split_counts(3, (0.9, 0.05, 0.05)) == [1, 1, 1]  # small cohort: one patient each
    assert split_counts(2, (0.9, 0.05, 0.05)) == [2, 0, 0]  # too few patients: no forced split
    assert split_counts(5, (1.0, 0.0, 0.0)) == [5, 0, 0]


def test_split_assignment_deterministic_by_patient():
    patients = [f"p{i}" for i in range(40)] * 2  # two scans each
    a = assign_splits(patients, (0.6, 0.2, 0.2), seed=3)
    b = assign_splits(list(reversed(patients)), (0.6, 0.2, 0.2), seed=3)
    c = assign_splits(patients, (0.6, 0.2, 0.2), seed=4)
    assert a == b  # input order does not matter
    assert a != c  # the seed does
    assert sorted(a) == sorted(set(patients))  # one split per patient
    assert [list(a.values()).count(s) for s in schema.SPLITS] == [24, 8, 8]


def test_plan_tasks_pseudonymises_and_keeps_patients_together(tmp_path):
    rows = [{"scan_id": f"s{i}", "patient_id": f"P{i // 2}", "image": f"images/s{i}.nii.gz",
             "vertebra_mask": f"/abs/m{i}.nii.gz"} for i in range(12)]
    manifest = write_manifest(tmp_path / "scans.csv", rows)
    tasks = plan_tasks(manifest, PreprocessConfig(), salt="pepper")
    by_patient = {}
    for t, r in zip(tasks, rows):
        by_patient.setdefault(t.patient, set()).add(t.split)
        assert r["patient_id"] not in t.patient and r["scan_id"] not in t.scan
        assert t.image == os.path.join(str(tmp_path), r["image"]) and t.mask == r["vertebra_mask"]
    assert all(len(s) == 1 for s in by_patient.values()) and len(by_patient) == 6
    again = plan_tasks(manifest, PreprocessConfig(), salt="pepper")
    other = plan_tasks(manifest, PreprocessConfig(), salt="salt")
    assert [t.patient for t in again] == [t.patient for t in tasks]
    assert [t.patient for t in other] != [t.patient for t in tasks]


@pytest.mark.parametrize("drop,named", [("image", "image"), ("patient_id", "patient_id"),
                                        ("scan_id", "scan_id"), ("masks", "vertebra_mask")])
def test_manifest_missing_column_is_named(tmp_path, drop, named):
    columns = ["scan_id", "patient_id", "image", "vertebra_mask", "centroids"]
    columns = [c for c in columns if c != drop and not (drop == "masks" and c in ("vertebra_mask", "centroids"))]
    manifest = write_manifest(tmp_path / "scans.csv", [{"scan_id": "a", "patient_id": "b", "image": "c"}], columns)
    with pytest.raises(ManifestError, match=f"missing column '{named}'"):
        read_manifest(manifest)


# ----------------------------------------------------------------------------------------- readers

def _check_canonical(vol, image, affine):
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(vol.array, np.float32), image)


@pytest.mark.parametrize("fmt", ["nifti", "dicom", "mha", "nrrd"])
def test_reader_round_trip_from_non_ras_layout(tmp_path, fmt):
    image, _, affine = make_scan(shape=(20, 24, 40), top_mm=5, levels=("L1",))
    image = np.round(image).astype(np.float32)  # integer values survive every format exactly
    # An oblique-free but rotated and shifted geometry, stored in a sagittal (PIR) layout.
    affine = affine @ np.diag([0.8, 0.9, 1.5, 1.0])
    stored, stored_affine = to_layout(image, affine, NON_RAS)
    assert nib.aff2axcodes(stored_affine) == ("P", "I", "R")
    path = {"nifti": lambda: save_nifti(tmp_path / "v.nii.gz", stored, stored_affine),
            "dicom": lambda: save_dicom_series(tmp_path / "series", stored, stored_affine),
            "mha": lambda: save_itk(tmp_path / "v.mha", stored, stored_affine),
            "nrrd": lambda: save_itk(tmp_path / "v.nrrd", stored, stored_affine)}[fmt]()
    vol = readers.read_volume(path)
    _check_canonical(vol, image, affine)
    np.testing.assert_allclose(vol.source_affine, stored_affine, atol=1e-4)


def test_oblique_nifti_keeps_its_rotation(tmp_path):
    image, _, affine = make_scan(shape=(16, 16, 16), levels=())
    theta = np.deg2rad(20)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    vol = readers.read_volume(save_nifti(tmp_path / "o.nii.gz", image, rot @ affine))
    np.testing.assert_allclose(vol.affine, rot @ affine, atol=1e-6)  # closest canonical: no flip needed
    np.testing.assert_array_equal(vol.array, image)


# ----------------------------------------------------------------------------------------- crops

def _crops(result):
    return {rec.level_name: rec.image for rec, _ in result.records}


@pytest.mark.slow  # real data
@pytest.mark.real_data
def test_non_ras_copy_of_real_scan_gives_the_same_crops(tmp_path):
    img = nib.load(f"{REAL}/images/vb2-02.nii.gz")
    msk = nib.load(f"{REAL}/labels/vb2-02_vert.nii.gz")
    cfg = PreprocessConfig()
    ref = process_scan(task(f"{REAL}/images/vb2-02.nii.gz", f"{REAL}/labels/vb2-02_vert.nii.gz"), cfg)
    # Store both volumes in another layout (RAS-ordered axes, reversed S), once as NIfTI, once as MHA.
    ornt = [[0, 1], [1, 1], [2, -1]]
    arr, aff = to_layout(np.asarray(img.dataobj), img.affine, ornt)
    marr, maff = to_layout(np.asarray(msk.dataobj), msk.affine, ornt)
    assert nib.aff2axcodes(aff) != nib.aff2axcodes(img.affine)
    copy_nii = process_scan(task(save_nifti(tmp_path / "c.nii.gz", arr, aff),
                                 save_nifti(tmp_path / "m.nii.gz", marr, maff)), cfg)
    copy_mha = process_scan(task(save_itk(tmp_path / "c.mha", arr, aff),
                                 save_itk(tmp_path / "m.mha", marr.astype(np.uint8), maff)), cfg)
    want = _crops(ref)
    assert sorted(want) == ["L1/L2", "L2/L3", "L3/L4", "L4/L5", "T11/T12", "T12/L1"]
    for other in (copy_nii, copy_mha):
        got = _crops(other)
        assert sorted(got) == sorted(want)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=2e-3, err_msg=name)


def test_crop_orientation_rows_caudal_columns_posterior(tmp_path):
    image, mask, affine = make_scan()
    cfg = PreprocessConfig(slices=3)
    res = process_scan(task(save_nifti(tmp_path / "i.nii.gz", image, affine),
                            save_nifti(tmp_path / "m.nii.gz", mask, affine)), cfg)
    crop = _crops(res)["L2/L3"][:, :, 1]
    # The disc (bright, 220) lies in the middle rows; the CSF column (300) is at the posterior (right) edge.
    h, w = crop.shape
    middle = crop[h // 2 - 2: h // 2 + 2, w // 4: w // 2].mean()
    body = crop[h // 5: h // 3, w // 4: w // 2].mean()
    assert middle > body + 0.2
    assert crop[:, -w // 8:].max() > 0.9 and crop[:, : w // 8].max() < 0.0
    # Rows run cranial -> caudal: the upper body (L2, darker) is above the lower one (L3, 10 units brighter).
    assert crop[2: h // 4, w // 4: w // 2].mean() < crop[-h // 4: -2, w // 4: w // 2].mean()


# ----------------------------------------------------------------------------------------- bad input

def _dead_stages(result):
    return [(d["unit"], d["stage"]) for d in result.dead_letters]


def test_bad_inputs_become_dead_letters(tmp_path):
    image, mask, affine = make_scan()
    cfg = PreprocessConfig()
    good_img = save_nifti(tmp_path / "img.nii.gz", image, affine)
    good_mask = save_nifti(tmp_path / "mask.nii.gz", mask, affine)
    # missing file
    r = process_scan(task(tmp_path / "nope.nii.gz", good_mask, row=7), cfg)
    assert not r.ok and _dead_stages(r) == [("", "read_image")] and "row 7" in r.dead_letters[0]["reason"]
    assert "nope" not in r.dead_letters[0]["reason"]  # the path (may hold ids) is not repeated
    # corrupt gzip: the first half of a valid file
    data = open(good_img, "rb").read()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    r = process_scan(task(tmp_path / "cut.nii.gz", good_mask), cfg)
    assert not r.ok and _dead_stages(r) == [("", "read_image")] and "cannot read" in r.dead_letters[0]["reason"]
    # not gzip at all
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti header"))
    assert not process_scan(task(tmp_path / "junk.nii.gz", good_mask), cfg).ok
    # non-3-D images
    for arr, name in ((image[:, :, 0], "2d"), (np.stack([image, image], -1), "4d")):
        r = process_scan(task(save_nifti(tmp_path / f"{name}.nii.gz", arr, affine), good_mask), cfg)
        assert not r.ok and "3-D" in r.dead_letters[0]["reason"], name
    # NaN and empty volumes
    nan = image.copy()
    nan[3, 3, 3] = np.nan
    r = process_scan(task(save_nifti(tmp_path / "nan.nii.gz", nan, affine), good_mask), cfg)
    assert not r.ok and _dead_stages(r) == [("", "image_values")]
    r = process_scan(task(save_nifti(tmp_path / "zero.nii.gz", np.zeros_like(image), affine), good_mask), cfg)
    assert not r.ok and _dead_stages(r) == [("", "image_values")]
    # mask on another grid
    r = process_scan(task(good_img, save_nifti(tmp_path / "small.nii.gz", mask[:, :, :100], affine)), cfg)
    assert not r.ok and _dead_stages(r) == [("", "mask_shape")]


def test_missing_level_and_crop_outside_reject_units_only(tmp_path):
    image, mask, affine = make_scan()
    cfg = PreprocessConfig()
    img = save_nifti(tmp_path / "img.nii.gz", image, affine)
    no_l4 = mask.copy()
    no_l4[no_l4 == schema.LEVEL_CODES["L4"]] = 0
    r = process_scan(task(img, save_nifti(tmp_path / "m.nii.gz", no_l4, affine),
                          levels=("L1", "L2", "L3", "L4", "L5")), cfg)
    assert r.ok and sorted(_crops(r)) == ["L1/L2", "L2/L3"]
    assert sorted(_dead_stages(r)) == [("L3/L4", "missing_level"), ("L4/L5", "missing_level")]
    assert "L4 (code 23)" in r.dead_letters[0]["reason"]
    assert r.units_found == len(r.records) + len(r.dead_letters)
    # The same gap named by a centroid json instead of the manifest levels.
    cj = tmp_path / "c.json"
    cj.write_text('[{"direction": ["R", "A", "S"]}, {"label": 23, "X": 20, "Y": 37, "Z": 60}]')
    r = process_scan(task(img, tmp_path / "m.nii.gz", centroids=cj), cfg)
    assert sorted(_dead_stages(r)) == [("L3/L4", "missing_level"), ("L4/L5", "missing_level")]
    # Without anything naming L4 the gap is still seen: L3 and L5 are labelled, so the body between is expected.
    r = process_scan(task(img, tmp_path / "m.nii.gz"), cfg)
    assert sorted(_crops(r)) == ["L1/L2", "L2/L3"]
    assert sorted(_dead_stages(r)) == [("L3/L4", "missing_level"), ("L4/L5", "missing_level")]
    # A top body cut by the field of view: with a wide margin its unit's crop leaves the volume.
    image2, mask2, _ = make_scan(top_mm=2.0)
    r = process_scan(task(save_nifti(tmp_path / "i2.nii.gz", image2, affine),
                          save_nifti(tmp_path / "m2.nii.gz", mask2, affine)), PreprocessConfig(margin=0.5, width_scale=0.8))
    assert _dead_stages(r) == [("L1/L2", "crop_outside")] and len(r.records) == 3


def test_centroid_json_matches_mask_centres(tmp_path):
    image, mask, affine = make_scan()
    stored, stored_aff = to_layout(image, affine, NON_RAS)
    smask, _ = to_layout(mask, affine, NON_RAS)
    entries = [{"direction": list(nib.aff2axcodes(stored_aff))}]
    for code in (20, 21, 22, 23, 24):
        ijk = np.argwhere(smask == code).mean(axis=0)  # indices along the stored array axes
        entries.append({"label": code, "X": ijk[0], "Y": ijk[1], "Z": ijk[2]})
    import json
    (tmp_path / "c.json").write_text(json.dumps(entries))
    img = save_nifti(tmp_path / "i.nii.gz", stored, stored_aff)
    from_json = process_scan(task(img, centroids=tmp_path / "c.json"), PreprocessConfig())
    from_mask = process_scan(task(img, save_nifti(tmp_path / "m.nii.gz", smask, stored_aff)),
                             PreprocessConfig(normalise_on="volume"))
    assert sorted(_crops(from_json)) == ["L1/L2", "L2/L3", "L3/L4", "L4/L5"]
    for name, crop in _crops(from_mask).items():
        np.testing.assert_allclose(_crops(from_json)[name], crop, atol=1e-4)


def test_vertebra_units_centre_on_bodies(tmp_path):
    image, mask, affine = make_scan()
    cfg = PreprocessConfig(unit="vertebra", conditioning="level")
    r = process_scan(task(save_nifti(tmp_path / "i.nii.gz", image, affine),
                          save_nifti(tmp_path / "m.nii.gz", mask, affine)), cfg)
    assert [rec.level_name for rec, _ in r.records] == ["L1", "L2", "L3", "L4", "L5"]
    for rec, g in r.records:
        assert rec.class_id == schema.VERTEBRA_UNITS.index(rec.level_name) and rec.lower_code == rec.upper_code
        centre = affine[:3, :3] @ np.argwhere(mask == rec.upper_code).mean(axis=0) + affine[:3, 3]
        np.testing.assert_allclose(g.centre, centre, atol=0.6)


def test_oblique_scan_gives_the_same_crops_as_the_straight_one(tmp_path):
    """Rotating the whole scan (affine only, 20 degrees about left-right) rotates the bodies with it; crops cut in
    the unit's own frame must not change."""
    image, mask, affine = make_scan()
    theta = np.deg2rad(20)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    cfg = PreprocessConfig()
    straight = process_scan(task(save_nifti(tmp_path / "i.nii.gz", image, affine),
                                 save_nifti(tmp_path / "m.nii.gz", mask, affine)), cfg)
    oblique = process_scan(task(save_nifti(tmp_path / "io.nii.gz", image, rot @ affine),
                                save_nifti(tmp_path / "mo.nii.gz", mask, rot @ affine)), cfg)
    assert sorted(_crops(straight)) == ["L1/L2", "L2/L3", "L3/L4", "L4/L5"]
    for (rec_s, g_s), (rec_o, g_o) in zip(straight.records, oblique.records):
        np.testing.assert_allclose(g_o.axis, rot[:3, :3] @ g_s.axis, atol=1e-6)
        np.testing.assert_allclose(rec_o.image, rec_s.image, atol=1e-3)


def test_non_square_crops_and_slice_count_follow_config(tmp_path):
    image, mask, affine = make_scan()
    cfg = PreprocessConfig(image_size=(48, 32), slices=5, slice_spacing_mm=2.0, margin=0.25)
    r = process_scan(task(save_nifti(tmp_path / "i.nii.gz", image, affine),
                          save_nifti(tmp_path / "m.nii.gz", mask, affine)), cfg)
    for rec, g in r.records:
        assert rec.image.shape == (48, 32, 5) and rec.slice_spacing == 2.0
        assert g.slice_offsets_mm == (-4.0, -2.0, 0.0, 2.0, 4.0)
        length = np.linalg.norm(g.lower_centre - g.upper_centre)
        assert g.height_mm == pytest.approx(1.5 * length)
        assert g.width_mm == pytest.approx(g.height_mm * cfg.width_scale * 32 / 48)
