"""Synthetic scans for the preprocess tests: a straight lumbar spine of box-shaped bodies in a canonical RAS volume,
which can be written in any array layout and format (NIfTI, DICOM series with identifying tags, MHA/NRRD), plus
manifests and single-scan tasks for them."""
from __future__ import annotations

import csv
import os

import nibabel as nib
import nibabel.orientations as nio
import numpy as np

from vugan.components import schema
from vugan.components.preprocess import readers
from vugan.components.preprocess.manifest import ScanTask


def make_scan(levels=("L1", "L2", "L3", "L4", "L5"), shape=(40, 72, 180), top_mm=20.0, seed=0):
    """(image float32, mask uint8, affine) in canonical RAS, 1 mm voxels: box bodies 22 mm tall, 10 mm discs."""
    rng = np.random.default_rng(seed)
    image = 20.0 + rng.normal(0, 2.0, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    image[:, 14:20, :] = 300.0  # a bright CSF column, posterior of the bodies
    for i, level in enumerate(levels):
        zc = shape[2] - 1 - top_mm - 32.0 * i  # superior is +z: bodies run down the volume
        z0, z1 = int(round(zc - 11)), int(round(zc + 11))
        zs = slice(max(z0, 0), min(max(z1, 0), shape[2]))
        mask[8:32, 24:50, zs] = schema.LEVEL_CODES[level]
        body = image[8:32, 24:50, zs]
        body[...] = 120.0 + 10 * i + rng.normal(0, 3.0, body.shape)
        image[8:32, 24:50, max(z0 - 10, 0):max(z0, 0)] = 220.0  # the disc below each body
    affine = np.array([[1, 0, 0, -20], [0, 1, 0, -24], [0, 0, 1, -90], [0, 0, 0, 1]], float)
    return image.astype(np.float32), mask, affine


def to_layout(array, affine, ornt):
    """The same volume stored in another array layout (``ornt`` as in nibabel): (array, affine)."""
    ornt = np.asarray(ornt, float)
    return nio.apply_orientation(array, ornt), affine @ nio.inv_ornt_aff(ornt, array.shape)


NON_RAS = [[2, 1], [0, -1], [1, -1]]  # R->axis 2, A->axis 0 flipped, S->axis 1 flipped: a "PIR" sagittal layout


def save_nifti(path, array, affine):
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return str(path)


def save_itk(path, array, affine):
    import SimpleITK as sitk

    lps = readers.LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    sitk.WriteImage(img, str(path))
    return str(path)


IDENTITY = {"PatientName": "Doe^Jane", "PatientID": "PAT-8841X", "PatientBirthDate": "19610423",
            "InstitutionName": "St Example Spine Clinic", "AccessionNumber": "ACC-55512"}


def save_dicom_series(folder, array, affine, identity=IDENTITY, *, series=None, skip=(), image_type=None,
                      file_name=lambda k: f"im{(k * 7919) % 1000:04d}"):
    """One uint16 slice per file along array axis 2, geometry from ``affine`` (RAS), identifying tags set;
    returns the folder. ``series``: the SeriesInstanceUID (default: a new one).

    ``skip`` leaves out slice indices (a gap); ``image_type`` sets ImageType (e.g. a localiser); ``file_name``
    names slice k's file (by default in shuffled order: the reader must sort by position, not by file name).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    os.makedirs(folder, exist_ok=True)
    lps = readers.LPS_TO_RAS @ affine
    sp = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / sp[0], lps[:3, 1] / sp[1]
    data = np.clip(np.asarray(array), 0, 65535).astype(np.uint16)
    series = series or generate_uid()
    for k in range(data.shape[2]):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "MR", series, k + 1
        for tag, value in identity.items():
            setattr(ds, tag, value)
        if image_type:
            ds.ImageType = list(image_type)
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in lps[:3, 3] + k * lps[:3, 2]]
        ds.PixelSpacing = [f"{sp[1]:.6f}", f"{sp[0]:.6f}"]  # (between rows, between columns)
        ds.SliceThickness = f"{sp[2]:.6f}"
        pixels = data[:, :, k].T  # rows follow array axis 1, columns array axis 0
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds.save_as(os.path.join(folder, f"{file_name(k)}.dcm"), enforce_file_format=True)
    return str(folder)


def write_manifest(path, rows, columns=("scan_id", "patient_id", "sequence", "image", "vertebra_mask",
                                        "centroids", "levels")):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})
    return str(path)


def task(image, mask="", centroids="", levels=(), row=1):
    return ScanTask(row=row, scan="scan-pseudo", patient="patient-pseudo", split="train", image=str(image),
                    mask=str(mask), centroids=str(centroids), levels=tuple(levels))
