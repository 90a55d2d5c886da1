"""Volume readers: NIfTI (nibabel), DICOM series folders (pydicom) and MHA/NRRD (SimpleITK).

Every reader returns a :class:`Volume` already reoriented to the closest canonical RAS layout (array axes point
Right, Anterior, Superior), with the RAS affine that maps voxel indices of *that* array to world millimetres.
Only geometry is taken from headers: no DICOM attribute other than the geometry tags is ever read into memory
that leaves this module, so identities cannot leak downstream.

Remote paths (``gs://``) are copied to a local temporary file through ``tf.io.gfile`` first because nibabel,
pydicom and SimpleITK only open local files.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile

import numpy as np

# LPS (DICOM/ITK world) <-> RAS (NIfTI world): flip the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class VolumeError(ValueError):
    """A volume that cannot be used; the message says what is wrong (never a header value)."""


@dataclasses.dataclass(frozen=True)
class Volume:
    array: np.ndarray  # 3-D, canonical (closest RAS) axis order
    affine: np.ndarray  # 4x4, voxel index -> RAS world mm
    source_affine: np.ndarray  # the affine of the array as stored in the file (centroid json indices use it)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))


def volume_format(path: str) -> str:
    low = path.lower().rstrip("/")
    if low.endswith((".nii", ".nii.gz")):
        return "nifti"
    if low.endswith((".mha", ".mhd", ".nrrd", ".nhdr")):
        return "itk"
    if low.endswith((".dcm",)) or _is_dir(path):
        return "dicom"
    raise VolumeError(f"unknown volume format (expected .nii, .nii.gz, .mha, .nrrd or a DICOM folder)")


def read_volume(path: str) -> Volume:
    """Read any supported volume and reorient it to canonical RAS. Raises VolumeError or OSError."""
    fmt = volume_format(path)
    with _local_copy(path) as local:
        if fmt == "nifti":
            array, affine = _read_nifti(local)
        elif fmt == "itk":
            array, affine = _read_itk(local)
        else:
            array, affine = _read_dicom_series(local)
    return canonical(array, affine)


def canonical(array: np.ndarray, affine: np.ndarray) -> Volume:
    """Flip/transpose the array so its axes are closest to R, A, S; the affine follows (oblique parts stay)."""
    import nibabel.orientations as nio

    array = np.asarray(array)
    if array.ndim == 4 and array.shape[3] == 1:  # a singleton 4th axis is still a 3-D image
        array = array[..., 0]
    if array.ndim != 3:
        raise VolumeError(f"image is {array.ndim}-D with shape {array.shape}; a 3-D volume is required")
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise VolumeError("the affine (voxel-to-world geometry) is singular or not finite")
    ornt = nio.io_orientation(affine)
    out = nio.apply_orientation(array, ornt)
    new_affine = affine @ nio.inv_ornt_aff(ornt, array.shape)
    return Volume(np.ascontiguousarray(out), new_affine, np.asarray(affine, dtype=np.float64))


# --------------------------------------------------------------------------------------------- formats

def _read_nifti(path: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(path)
    # asanyarray(dataobj) keeps integer masks integer and applies scl_slope/inter for images.
    return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def _read_itk(path: str) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    img = sitk.ReadImage(path)
    if img.GetDimension() != 3:
        raise VolumeError(f"image is {img.GetDimension()}-D; a 3-D volume is required")
    # GetArrayFromImage is indexed [z, y, x]; transpose so array axis i follows ITK index i.
    array = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(img.GetSpacing())[None, :]
    lps[:3, 3] = img.GetOrigin()
    return array, LPS_TO_RAS @ lps


def _read_dicom_series(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """One series per folder; slices ordered by their position along the slice normal.

    Geometry: ImageOrientationPatient gives the row (x) and column (y) direction cosines, PixelSpacing the
    distances between rows and between columns, and the step between sorted ImagePositionPatient values the
    slice vector (this also handles gaps and negative spacing). The affine is built in LPS then flipped to RAS.
    """
    import pydicom

    files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)))
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except Exception:  # a non-DICOM file in the folder (e.g. DICOMDIR notes): skip it
            continue
        if "PixelData" not in ds or "ImagePositionPatient" not in ds:
            continue
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        spacing = [float(v) for v in ds.PixelSpacing]
        slices.append((iop, ipp, spacing, ds.pixel_array))
    if not slices:
        raise VolumeError("no DICOM slice with pixel data and ImagePositionPatient in the series folder")
    iop, _, spacing, _ = slices[0]
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda s: float(s[1] @ normal))
    positions = np.array([s[1] for s in slices])
    if len(slices) > 1:
        step = (positions[-1] - positions[0]) / (len(slices) - 1)
    else:
        step = normal * 1.0  # single slice: unit thickness along the normal
    # pixel_array is [rows, cols]; column index moves along row_dir, row index along col_dir.
    array = np.stack([s[3].T for s in slices], axis=-1)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]  # PixelSpacing = (between rows, between columns)
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return array, LPS_TO_RAS @ lps


# --------------------------------------------------------------------------------------------- files

def _is_dir(path: str) -> bool:
    if path.startswith("gs://"):
        import tensorflow as tf
        return tf.io.gfile.isdir(path)
    return os.path.isdir(path)


def exists(path: str) -> bool:
    if "://" in path:
        import tensorflow as tf
        return tf.io.gfile.exists(path)
    return os.path.exists(path)


@contextlib.contextmanager
def _local_copy(path: str):
    """Yield a local path for ``path``; remote files/folders are copied into a temporary folder first."""
    if "://" not in path:
        yield path
        return
    import tensorflow as tf

    tmp = tempfile.mkdtemp(prefix="vugan-read-")
    try:
        name = os.path.basename(path.rstrip("/"))
        local = os.path.join(tmp, name)
        if tf.io.gfile.isdir(path):
            os.makedirs(local)
            for child in tf.io.gfile.listdir(path):
                if not child.endswith("/"):
                    tf.io.gfile.copy(path.rstrip("/") + "/" + child, os.path.join(local, child))
        else:
            tf.io.gfile.copy(path, local)
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
