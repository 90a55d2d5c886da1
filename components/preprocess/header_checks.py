"""Refusals of volumes whose geometry or intensities a reader would otherwise have to guess (issue 24).

The readers (``readers.py``) call these small checks on the headers they already hold, before any voxel is used:

* **NIfTI orientation.** ``qform_code`` and ``sform_code`` both 0 mean the file gives no orientation; nibabel
  then falls back to a scale-only affine and every unit is cut along the wrong axes. A qform and an sform that
  disagree leave it open which one is true. Both are refused; a disagreement within float rounding passes.
* **Intensity scaling.** A negative NIfTI ``scl_slope`` (or a DICOM ``RescaleSlope`` or MetaImage
  ``ElementToIntensityFunctionSlope`` of zero or below) inverts or erases the contrast. NIfTI's ``scl_slope = 0``
  is "no scaling" by the standard (nibabel reads it so) and is kept.
* **Burned-in annotation.** DICOM ``BurnedInAnnotation = YES`` says text (names, dates) is drawn into the pixels;
  such a series is refused unless ``preprocess.accept_burned_in`` is set, and counted either way.
* **Detached data files.** An ITK header (``.mhd``, ``.nhdr``, or a ``.mha``/``.nrrd`` with a detached file) whose
  data file is an absolute path or leaves the header's folder would read any file on the machine as voxels.

Each check returns None or a :data:`Refusal` (stage, reason); the reader raises it as ``readers.HeaderRefusal``,
whose ``stage`` becomes the dead letter's stage (this module imports no reader, so it stays free of import
circles). Messages never repeat a header value other than geometry and the codes that decide it.
"""
from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

# A qform and an sform whose grid corners lie within preprocess.grid_tolerance_mm (the mask/image rule) and whose
# axes lie within this angle are one orientation. The corner distance is the precise bound (an affine's largest
# displacement over the grid is at a corner); the angle only matters for small grids. 0.5 degrees is thousands of
# times the float32 rounding of the stored quaternion (about 1e-5 degrees) and far below a real disagreement.
MAX_QFORM_SFORM_DEGREES = 0.5
# A float label within this of a whole number is that label (float32 stores labels up to 2**24 exactly).
LABEL_ROUNDING = 1e-3
# Floats at and above 2**53 cannot tell neighbouring integers apart: no label map holds such values.
LARGEST_FLOAT_LABEL = 2.0 ** 53
FLOAT32_MAX = float(np.finfo(np.float32).max)


Refusal = tuple  # (stage, reason): why a volume is refused; the stage names the kind of dead letter


@dataclasses.dataclass(frozen=True)
class ReadPolicy:
    """What the readers accept (from ``PreprocessConfig``); the defaults are the safe choices."""

    grid_tolerance_mm: float = 0.5
    accept_burned_in: bool = False


# --------------------------------------------------------------------------------------------- NIfTI

def check_nifti(img, policy: ReadPolicy) -> Refusal | None:
    """Refuse a NIfTI with no orientation, a qform/sform disagreement, or a negative scale slope."""
    header = img.header
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode == 0 and scode == 0:
        return ("orientation", "no orientation: qform_code and sform_code are both 0, so the voxel axes "
                               "have no direction in the patient; write the scan with its orientation "
                               "(e.g. from the DICOM) instead of a bare array, for example by "
                               "converting the DICOM again with dcm2niix")
    if qcode > 0 and scode > 0:
        degrees, mm = orientation_disagreement(header.get_qform(), header.get_sform(), img.shape[:3])
        if degrees > MAX_QFORM_SFORM_DEGREES or mm > policy.grid_tolerance_mm:
            return ("orientation", (
                f"qform (code {qcode}) and sform (code {scode}) disagree: their axes are {degrees:.1f} degrees "
                f"apart and the grid corners up to {mm:.1f} mm (tolerance {MAX_QFORM_SFORM_DEGREES:g} degrees and "
                f"preprocess.grid_tolerance_mm = {policy.grid_tolerance_mm:g} mm), so which one is true cannot be "
                f"told; rewrite the file with one orientation (e.g. convert it again from the DICOM)"))
    # nibabel reads scl_slope 0 (and NaN) as "no scaling", as the standard says, and gives 1 then.
    slope = float(getattr(img.dataobj, "slope", 1.0))
    if slope < 0:
        return ("intensity_scaling", "scl_slope is negative, which inverts the contrast; re-export "
                                     "the scan without negative intensity scaling")
    return None


def orientation_disagreement(a: np.ndarray, b: np.ndarray, shape) -> tuple[float, float]:
    """(largest angle in degrees between corresponding axes, largest distance in mm between grid corners)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ua = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)
    ub = b[:3, :3] / np.linalg.norm(b[:3, :3], axis=0)
    degrees = float(np.degrees(np.arccos(np.clip((ua * ub).sum(axis=0), -1.0, 1.0))).max())
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)],
                       dtype=np.float64)
    pa = corners @ a[:3, :3].T + a[:3, 3]
    pb = corners @ b[:3, :3].T + b[:3, 3]
    return degrees, float(np.linalg.norm(pa - pb, axis=1).max())


# --------------------------------------------------------------------------------------------- DICOM

def dicom_frames(ds) -> int:
    try:
        return int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


MULTIFRAME = ("the DICOM holds a multi-frame (enhanced) image, which is not supported; convert it to NIfTI "
              "(e.g. with dcm2niix) and list the .nii.gz")


def check_dicom_series(datasets, policy: ReadPolicy, notes: dict) -> Refusal | None:
    """Refuse a series with a RescaleSlope of zero or below, or flagged BurnedInAnnotation = YES (unless
    accepted); the burned-in flag is counted in ``notes`` either way."""
    for ds in datasets:
        if "RescaleSlope" in ds:
            try:
                slope = float(ds.RescaleSlope)
            except (TypeError, ValueError):
                slope = float("nan")
            if not slope > 0:  # also NaN
                return ("intensity_scaling", "a slice's RescaleSlope is zero, negative or not a number, "
                                             "which erases or inverts the contrast; re-export the "
                                             "series with its true intensities")
    if not any(str(getattr(ds, "BurnedInAnnotation", "")).strip().upper() == "YES" for ds in datasets):
        return None
    if policy.accept_burned_in:
        notes["burned_in_annotation_accepted"] = notes.get("burned_in_annotation_accepted", 0) + 1
        return None
    notes["burned_in_annotation_refused"] = notes.get("burned_in_annotation_refused", 0) + 1
    return ("burned_in_annotation", (
        "the DICOM series is flagged BurnedInAnnotation = YES: text drawn into the pixels (names, dates) would reach "
        "the training crops; use a series without burned-in text, or set preprocess.accept_burned_in = true after "
        "checking the pixels (the datasheet then says so)"))


# --------------------------------------------------------------------------------------------- ITK headers

HEADER_BYTES = 1 << 16  # a MetaImage or NRRD header is a few hundred bytes; never read more than this of one


def check_itk_header(path: str) -> Refusal | None:
    """Refuse a MetaImage/NRRD header whose data file lies outside its folder, or a MetaImage intensity slope of
    zero or below. Attached data (``LOCAL``, a plain ``.nrrd``) needs nothing."""
    fields = _header_fields(path)
    data_file = fields.get("elementdatafile") or fields.get("data file") or fields.get("datafile") or ""
    if data_file and data_file.upper() != "LOCAL" and not _beside(data_file):
        return ("data_file", "the header names a data file outside its own folder (an absolute path, "
                             "one through '..', or a LIST of files); the data file must sit beside the "
                             "header: move it there and name it without a folder, or write one .mha")
    slope = fields.get("elementtointensityfunctionslope")
    if slope is not None:
        try:
            value = float(slope.split()[0])
        except (ValueError, IndexError):
            value = float("nan")
        if not value > 0:
            return ("intensity_scaling", "ElementToIntensityFunctionSlope is zero, negative or not a "
                                         "number, which erases or inverts the contrast; re-export the "
                                         "image with its true intensities")
    return None


def _header_fields(path: str) -> dict:
    """Lower-cased key -> value of a MetaImage (``key = value``) or NRRD (``key: value``) header."""
    with open(path, "rb") as fh:
        head = fh.read(HEADER_BYTES)
    fields = {}
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").strip()
        if not line and path.lower().endswith((".nrrd", ".nhdr")):
            break  # the NRRD header ends at its first blank line; the data follow
        match = re.match(r"^([A-Za-z][A-Za-z ]*?)\s*(=|:=|:)\s*(.*)$", line)
        if match:
            fields.setdefault(match.group(1).strip().lower(), match.group(3).strip())
        if line.lower().startswith("elementdatafile"):
            break  # MetaImage: always the last field; binary data may follow
    return fields


def _beside(name: str) -> bool:
    """Whether a header's data file name stays inside the header's folder (a printf pattern: its first word)."""
    if name.upper().startswith("LIST"):
        return False
    if "%" in name:
        name = name.split()[0]
    if os.path.isabs(name) or name.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", name):
        return False
    return ".." not in os.path.normpath(name).replace("\\", "/").split("/")


# --------------------------------------------------------------------------------------------- voxel values

def image_range_problem(array: np.ndarray) -> str | None:
    """Why an image's finite values cannot become the float32 the crops use, or None."""
    if array.dtype.kind != "f" or array.dtype.itemsize <= 4:
        return None
    if not array.size:
        return None
    # fmax/fmin skip NaN and copy nothing (the volume may be large); NaN and inf are left to the NaN/inf check.
    hi, lo = float(np.fmax.reduce(array, axis=None)), float(np.fmin.reduce(array, axis=None))
    if FLOAT32_MAX < hi < np.inf or -np.inf < lo < -FLOAT32_MAX:
        return ("the volume holds finite values beyond the float32 range (magnitude above 3.4e38), which would "
                "become infinite; rescale the intensities and re-export")
    return None


def label_map_problem(labels: np.ndarray) -> str | None:
    """Why a (finite) vertebra mask is no integer label map, or None. Checked before the labels become integers:
    a fractional value rounds to some other level, and a huge one wraps around to a negative integer."""
    wraps = labels.dtype.kind == "u" and labels.dtype.itemsize == 8  # uint64 above 2**63 wraps to negative int64
    if wraps and labels.size and labels.max() > np.iinfo(np.int64).max:
        return "the vertebra_mask holds label values beyond any VerSe code (1 to 28); re-export it as a label map"
    if labels.dtype.kind != "f":
        return None
    if not labels.size:
        return None
    if max(float(labels.max()), -float(labels.min())) >= LARGEST_FLOAT_LABEL:
        return ("the vertebra_mask holds label values beyond any VerSe code (1 to 28), too large for a float to "
                "store as a whole number; re-export it as an integer label map")
    off = np.rint(labels)  # one float copy of the mask, worked on in place
    off -= labels
    np.abs(off, out=off)
    if off.max() > LABEL_ROUNDING:
        return ("the vertebra_mask is not an integer label map: it holds fractional values, as an interpolated or "
                "probability mask does; resample it with nearest-neighbour interpolation and save whole-number "
                "VerSe codes (1 to 28)")
    return None
