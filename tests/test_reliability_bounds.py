"""No small file can take the machine: sizes and kinds are checked before anything is read or allocated.

Each bomb here is a real file (NIfTI written with nibabel and gzip, DICOM written with pydicom and zlib, FIFOs made
with mkfifo) read by the preprocess functions in a real subprocess that runs under an address-space cap
(``RLIMIT_AS``, 1 GiB: the old code needed 1.3 to 7.1 GB for these files) and a timeout (the old code read a FIFO
forever). The subprocess imports the preprocess modules only, never TensorFlow, whose import alone reserves more
virtual memory than the cap. Each case ends as a dead letter (or a one-line error) with a reason saying what to do,
and quickly.
"""
from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

from support.scans import NON_RAS, make_scan, save_dicom_series, save_nifti, to_layout, write_manifest

CAP_BYTES = 1 << 30  # the address-space cap of the reading subprocess
GIB = 1 << 30

# Imported before the cap is set: the libraries' own address space is not what the cap measures.
_PRELUDE = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, nibabel, nibabel.nifti1, pydicom, pydicom.filereader, scipy.ndimage, SimpleITK
    from vugan.components.preprocess import readers
    from vugan.components.preprocess.manifest import ManifestError, ScanTask, plan
    from vugan.components.preprocess.spec import PreprocessConfig
    from vugan.components.preprocess.units import process_scan
    assert "tensorflow" not in sys.modules, "the capped reader must not import TensorFlow"
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    args = json.loads(sys.argv[1])

    def task(image, mask="", row=1, centroids=""):
        return ScanTask(row=row, scan="scan-pseudo", patient="patient-pseudo", split="train", image=image,
                        mask=mask, centroids=centroids)

    def result(r):
        return {{"ok": r.ok, "records": sorted(u.level_name for u, _ in r.records), "notes": r.notes,
                 "dead": r.dead_letters}}
""")


def run_capped(body: str, args: dict, timeout: float = 120) -> dict:
    """Run ``body`` (which prints one JSON line last) in a subprocess under the cap; fail, never hang."""
    script = _PRELUDE.format(cap=CAP_BYTES) + textwrap.dedent(body)
    try:
        proc = subprocess.run([sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the reading did not finish within {timeout:.0f} s (it reads forever or too long)")
    assert proc.returncode == 0, f"the capped reader failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def spine(tmp_path_factory):
    """A clean synthetic lumbar scan (image and mask NIfTI) and the units it gives."""
    d = tmp_path_factory.mktemp("spine")
    image, mask, affine = make_scan()
    return d, image, mask, affine, save_nifti(d / "image.nii.gz", image, affine), \
        save_nifti(d / "mask.nii.gz", mask, affine)


CLEAN_UNITS = ["L1/L2", "L2/L3", "L3/L4", "L4/L5"]


# ----------------------------------------------------------------------------------------- NIfTI extension

def save_nifti_with_extension(path, image, affine, extension_bytes: int, honest_offset: bool = True) -> str:
    """A .nii.gz whose header carries one extension (ecode 6, a comment) of ``extension_bytes`` zero bytes,
    streamed through gzip so the test never holds it in memory. ``honest_offset=False`` puts ``vox_offset`` just
    past a 16-byte extension, so only the extension's own size field says how much nibabel will read."""
    assert extension_bytes % 16 == 0
    hdr = nib.Nifti1Image(image.astype(np.float32), affine).header.copy()
    hdr["vox_offset"] = 352 + (extension_bytes if honest_offset else 16)
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(hdr.binaryblock)
        fh.write(b"\x01\0\0\0")  # "extensions follow"
        fh.write(struct.pack("<ii", extension_bytes, 6))
        left, zeros = extension_bytes - 8, bytes(1 << 24)
        while left:
            n = min(left, len(zeros))
            fh.write(zeros[:n])
            left -= n
        fh.write(np.asarray(image, dtype="<f4").tobytes(order="F"))
    return str(path)


def test_a_nifti_with_a_huge_header_extension_is_refused_before_nibabel_parses_it(spine, tmp_path):
    d, image, mask, affine, _, mask_path = spine
    bomb = save_nifti_with_extension(tmp_path / "bomb.nii.gz", image, affine, GIB)
    assert os.path.getsize(bomb) < 8 << 20  # a few MB on disk
    # The same extension behind a small vox_offset: nibabel still reads the extension's declared size whole.
    hidden = save_nifti_with_extension(tmp_path / "hidden.nii.gz", image, affine, GIB, honest_offset=False)
    small = save_nifti_with_extension(tmp_path / "small.nii.gz", image, affine, 64 << 10)
    out = run_capped("""
        out = {}
        for name in ("bomb", "hidden", "small"):
            t = time.time()
            out[name] = result(process_scan(task(args[name], args["mask"], row=7), PreprocessConfig()))
            out[name]["seconds"] = time.time() - t
        print(json.dumps(out))
    """, {"bomb": bomb, "hidden": hidden, "small": small, "mask": mask_path})
    # An ordinary extension (64 KiB) is read as before: the bound refuses only what no scanner writes.
    assert out["small"]["ok"] and out["small"]["records"] == CLEAN_UNITS
    for name in ("bomb", "hidden"):
        assert not out[name]["ok"] and len(out[name]["dead"]) == 1 and out[name]["seconds"] < 20
        dead = out[name]["dead"][0]
        assert dead["stage"] == "read_image" and dead["reason"].startswith("manifest row 7, column 'image'")
        assert "header extension" in dead["reason"] and "16 MiB" in dead["reason"]
        assert "MemoryError" not in dead["reason"] and name not in dead["reason"]  # no file name


# ----------------------------------------------------------------------------------------- deflated DICOM

def deflate_with_private_element(src, dst, private_bytes: int) -> None:
    """Rewrite one slice in the Deflated Explicit VR Little Endian transfer syntax with a private OB element of
    ``private_bytes`` zeros before the pixels, compressed as a stream (a few MB on disk)."""
    import zlib

    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(src)
    pixels = ds.PixelData
    del ds.PixelData
    meta = ds.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(dst, "wb") as fh:
        fh.write(head.getvalue())
        fh.write(deflate.compress(body.getvalue()))
        fh.write(deflate.compress(struct.pack("<HH2sH", 0x0029, 0x0010, b"LO", 10) + b"VUGAN TEST"))
        fh.write(deflate.compress(struct.pack("<HH2sHI", 0x0029, 0x1000, b"OB", 0, private_bytes)))
        left, zeros = private_bytes, bytes(1 << 24)
        while left:
            n = min(left, len(zeros))
            fh.write(deflate.compress(zeros[:n]))
            left -= n
        fh.write(deflate.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, len(pixels)) + pixels))
        fh.write(deflate.flush())


def test_a_deflated_dicom_with_a_huge_private_element_is_refused_without_inflating_it(tmp_path):
    image, mask, affine = make_scan()
    stored, stored_affine = to_layout(image, affine, NON_RAS)  # 40 sagittal slices
    smask, _ = to_layout(mask, affine, NON_RAS)
    folder = save_dicom_series(tmp_path / "series", stored, stored_affine, file_name=lambda k: f"im{k:04d}")
    mask_path = save_nifti(tmp_path / "mask.nii.gz", smask, stored_affine)
    clean = folder + "-clean"
    os.rename(folder, clean)
    os.makedirs(folder)
    for name in os.listdir(clean):
        os.link(os.path.join(clean, name), os.path.join(folder, name))
    bomb = os.path.join(folder, "im0020.dcm")
    os.unlink(bomb)
    deflate_with_private_element(os.path.join(clean, "im0020.dcm"), bomb, GIB)
    assert os.path.getsize(bomb) < 4 << 20
    out = run_capped("""
        t = time.time()
        bomb = result(process_scan(task(args["bomb"], args["mask"], row=3), PreprocessConfig()))
        bomb["seconds"] = time.time() - t
        print(json.dumps({"bomb": bomb, "clean": result(process_scan(task(args["clean"], args["mask"]),
                                                                     PreprocessConfig()))}))
    """, {"bomb": folder, "clean": clean, "mask": mask_path})
    # The same series without the bomb reads as before (only geometry tags are kept from each header).
    assert out["clean"]["ok"] and len(out["clean"]["records"]) == 4
    bomb = out["bomb"]
    assert not bomb["ok"] and len(bomb["dead"]) == 1 and bomb["seconds"] < 20
    reason = bomb["dead"][0]["reason"]
    assert bomb["dead"][0]["stage"] == "read_image" and reason.startswith("manifest row 3, column 'image'")
    assert "inflates to more than" in reason and "Deflated" in reason and "gap" not in reason
    assert "im0020" not in reason


# ----------------------------------------------------------------------------------------- label values

def test_a_mask_voxel_labelled_150_million_is_counted_as_an_unknown_code_without_a_per_label_allocation(spine,
                                                                                                       tmp_path):
    d, image, mask, affine, image_path, _ = spine
    bomb = mask.astype(np.int32)
    bomb[1, 1, 1] = 150_000_000
    bomb_path = save_nifti(tmp_path / "mask.nii.gz", bomb, affine)
    assert os.path.getsize(bomb_path) < 64 << 10  # a few KB (the same mask without the voxel: as big)
    out = run_capped("""
        t = time.time()
        r = result(process_scan(task(args["image"], args["mask"]), PreprocessConfig()))
        r["seconds"] = time.time() - t
        print(json.dumps(r))
    """, {"image": image_path, "mask": bomb_path})
    # The unknown code is counted as every unknown code is (docs/reliability.md, "Unknown codes"); the units of
    # the real labels come through.
    assert out["ok"] and out["records"] == CLEAN_UNITS and not out["dead"], out["dead"]
    assert out["notes"] == {"unknown_label_150000000": 1} and out["seconds"] < 20


# ----------------------------------------------------------------------------------------- duplicate groups

def test_ten_thousand_rows_of_one_file_under_ten_thousand_patients_give_linear_dead_letters_fast(spine, tmp_path):
    d, image, mask, affine, image_path, mask_path = spine
    shared = save_nifti(tmp_path / "shared.nii.gz", image[:20], affine)
    rows = [dict(scan_id="S0", patient_id="P0", image=image_path, vertebra_mask=mask_path)]
    rows += [dict(scan_id=f"S{i}", patient_id=f"P{i}", image=shared, vertebra_mask=mask_path)
             for i in range(1, 10_001)]
    manifest = write_manifest(tmp_path / "scans.csv", rows)
    out = run_capped("""
        t = time.time()
        p = plan(args["manifest"], PreprocessConfig(), "salt")
        seconds = time.time() - t
        print(json.dumps({"seconds": seconds, "tasks": [t.row for t in p.tasks], "counts": p.counts,
                          "bytes": sum(len(json.dumps(d)) for d in p.dead_letters),
                          "stages": sorted({d["stage"] for d in p.dead_letters}),
                          "rows": sorted(d["row"] for d in p.dead_letters),
                          "first": p.dead_letters[0]["reason"], "last": p.dead_letters[-1]["reason"]}))
    """, {"manifest": manifest}, timeout=240)
    assert out["tasks"] == [1] and out["stages"] == ["duplicate"]
    assert out["rows"] == list(range(2, 10_002))  # every row of the group is one dead letter: inputs add up
    c = out["counts"]
    assert c["manifest_rows"] == 10_001 == len(out["tasks"]) + c["rows_rejected"] + c["rows_duplicate_dropped"]
    assert out["bytes"] < 10_000 * 800, f"{out['bytes']:,} bytes of dead letters for 10,000 rows"
    assert out["seconds"] < 10
    # Each letter names the group once (its first row and its size), not every member.
    for reason in (out["first"], out["last"]):
        assert "10,000 rows" in reason and "10,000 different patient_ids" in reason and "group of row 2" in reason
        assert "9999" not in reason and "9,999" not in reason.replace("9,999 more", "")


@pytest.mark.slow  # a whole `vugan preprocess` job (Beam, TensorFlow) in a subprocess, ~20 s
def test_the_preprocess_job_over_ten_thousand_duplicate_rows_finishes_with_linear_dead_letters(spine, tmp_path):
    from support.pipeline_runs import vugan

    d, image, mask, affine, image_path, mask_path = spine
    shared = save_nifti(tmp_path / "shared.nii.gz", image[:20], affine)
    rows = [dict(scan_id="S0", patient_id="P0", image=image_path, vertebra_mask=mask_path)]
    rows += [dict(scan_id=f"S{i}", patient_id=f"P{i}", image=shared, vertebra_mask=mask_path)
             for i in range(1, 10_001)]
    manifest = write_manifest(tmp_path / "scans.csv", rows)
    try:  # the old code wrote 591 MB of dead letters and had not finished after 240 s
        proc = vugan("preprocess", "--manifest", manifest, "--out", str(tmp_path / "out"), timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("vugan preprocess over 10,000 duplicate rows did not finish within 180 s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert (stats["manifest_rows"], stats["scans_in"], stats["rows_rejected"]) == (10_001, 1, 10_000)
    assert stats["vus_written"] == 4
    letters = (tmp_path / "out" / "dead_letters.jsonl").read_bytes()
    assert letters.count(b"\n") == 10_000 and len(letters) < 10_000 * 800


# ----------------------------------------------------------------------------------------- FIFOs

def test_fifos_and_links_to_dev_zero_are_dead_letters_before_any_read(spine, tmp_path):
    d, image, mask, affine, image_path, mask_path = spine
    os.mkfifo(tmp_path / "a.nii.gz")
    os.mkfifo(tmp_path / "b.nii.gz")
    os.symlink("/dev/zero", tmp_path / "z1.nii")
    os.symlink("/dev/zero", tmp_path / "z2.nii")
    rows = [dict(scan_id="S0", patient_id="P0", image=image_path, vertebra_mask=mask_path)]
    rows += [dict(scan_id=f"S{i}", patient_id=f"P{i}", image=str(tmp_path / name), vertebra_mask=mask_path)
             for i, name in enumerate(("a.nii.gz", "b.nii.gz", "z1.nii", "z2.nii"), start=1)]
    manifest = write_manifest(tmp_path / "scans.csv", rows)
    out = run_capped("""
        p = plan(args["manifest"], PreprocessConfig(), "salt")
        print(json.dumps({"tasks": [t.row for t in p.tasks], "counts": p.counts, "dead": p.dead_letters}))
    """, {"manifest": manifest}, timeout=30)
    assert out["tasks"] == [1]
    assert sorted(d["row"] for d in out["dead"]) == [2, 3, 4, 5]
    c = out["counts"]
    assert c["manifest_rows"] == 5 == len(out["tasks"]) + c["rows_rejected"] + c["rows_duplicate_dropped"]
    for dead in out["dead"]:
        assert dead["stage"] == "not_regular_file"
        assert "column 'image'" in dead["reason"] and "not a regular file" in dead["reason"]
        assert ".nii" not in dead["reason"]  # no file name


def test_a_fifo_mask_centroids_manifest_or_dicom_folder_member_is_refused_without_reading_it(spine, tmp_path):
    d, image, mask, affine, image_path, mask_path = spine
    os.mkfifo(tmp_path / "mask.nii.gz")
    os.mkfifo(tmp_path / "centroids.json")
    os.mkfifo(tmp_path / "scans.csv")
    stored, stored_affine = to_layout(image, affine, NON_RAS)
    smask, _ = to_layout(mask, affine, NON_RAS)
    folder = save_dicom_series(tmp_path / "series", stored, stored_affine)
    os.mkfifo(os.path.join(folder, "im9999.dcm"))  # a pipe among the slices
    sagittal_mask = save_nifti(tmp_path / "smask.nii.gz", smask, stored_affine)
    out = run_capped("""
        fifo_mask = result(process_scan(task(args["image"], args["fifo_mask"], row=2), PreprocessConfig()))
        fifo_json = result(process_scan(task(args["image"], row=4, centroids=args["fifo_json"]),
                                        PreprocessConfig()))
        member = result(process_scan(task(args["folder"], args["smask"], row=5), PreprocessConfig()))
        try:
            plan(args["fifo_manifest"], PreprocessConfig(), "salt")
            manifest = "read"
        except ManifestError as exc:
            manifest = str(exc)
        print(json.dumps({"fifo_mask": fifo_mask, "fifo_json": fifo_json, "member": member, "manifest": manifest}))
    """, {"image": image_path, "fifo_mask": str(tmp_path / "mask.nii.gz"),
          "fifo_json": str(tmp_path / "centroids.json"), "folder": folder,
          "smask": sagittal_mask, "fifo_manifest": str(tmp_path / "scans.csv")}, timeout=30)
    dead = out["fifo_mask"]["dead"]
    assert not out["fifo_mask"]["ok"] and len(dead) == 1 and dead[0]["stage"] == "read_vertebra_mask"
    assert "column 'vertebra_mask'" in dead[0]["reason"] and "not a regular file" in dead[0]["reason"]
    dead = out["fifo_json"]["dead"]
    assert not out["fifo_json"]["ok"] and len(dead) == 1 and dead[0]["stage"] == "read_centroids"
    assert dead[0]["reason"] == ("manifest row 4, column 'centroids': not a regular file (a pipe, device or socket, "
                                 "or a link to one); give the file itself")
    dead = out["member"]["dead"]
    assert not out["member"]["ok"] and len(dead) == 1 and dead[0]["stage"] == "read_image"
    assert "not a regular file" in dead[0]["reason"] and "im9999" not in dead[0]["reason"]
    assert "not a regular file" in out["manifest"] and out["manifest"].count("\n") == 0
