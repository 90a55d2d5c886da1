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

from vugan.components.preprocess import limits

# LPS (DICOM/ITK world) <-> RAS (NIfTI world): flip the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class VolumeError(ValueError):
    """A volume that cannot be used; the message says what is wrong (never a header value)."""


class HeaderRefusal(VolumeError):
    """A volume refused for what its header says (``header_checks``); ``stage`` names the kind of dead letter."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage


def _refuse(refusal) -> None:
    """Raise a check's refusal, if any: ``header_checks`` gives (stage, reason), a HeaderRefusal with its own
    dead-letter stage; ``limits`` gives a reason ('' when the file may be read), a plain VolumeError."""
    if not refusal:
        return
    if isinstance(refusal, str):
        raise VolumeError(refusal)
    raise HeaderRefusal(*refusal)


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
    if low.endswith((".dcm",)) or is_dir(path):
        return "dicom"
    raise VolumeError(f"unknown volume format (expected .nii, .nii.gz, .mha, .nrrd or a DICOM folder)")


def read_volume(path: str, *, series_uid: str = "", max_voxels: int = 0, notes: dict | None = None,
                policy=None) -> Volume:
    """Read any supported volume and reorient it to canonical RAS. Raises VolumeError or OSError.

    ``max_voxels`` (0: no limit) is checked against the header's grid size before any voxel is read, so an
    oversized file is refused instead of exhausting memory. ``notes`` collects counts of what was left out
    (DICOM localiser slices, slices of another orientation); ``series_uid`` picks one series of a DICOM folder.
    ``policy`` (a ``header_checks.ReadPolicy``; default: its safe defaults) sets what the header checks accept;
    their refusals are raised as :class:`HeaderRefusal` (a VolumeError naming its dead-letter stage).
    """
    from vugan.components.preprocess.header_checks import ReadPolicy

    policy = policy or ReadPolicy()
    fmt = volume_format(path)
    with _local_copy(path) as local:
        _refuse(limits.irregular_reason(local))  # a FIFO or a device would block or stream forever
        if fmt == "nifti":
            array, affine = _read_nifti(local, max_voxels, policy)
        elif fmt == "itk":
            array, affine = _read_itk(local, max_voxels)
        else:
            array, affine = _read_dicom(local, series_uid, max_voxels, notes, policy)
    if np.iscomplexobj(array):
        raise VolumeError("the image holds complex values; export the magnitude image")
    return canonical(array, affine)


def check_voxels(count: int, max_voxels: int) -> None:
    if max_voxels and count > max_voxels:
        raise VolumeError(f"the volume has {count:,} voxels, above preprocess.max_voxels = {max_voxels:,}; crop or "
                          f"downsample the scan, or raise the limit if this machine has the memory "
                          f"(about 20 bytes per voxel)")


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

def _read_nifti(path: str, max_voxels: int = 0, policy=None) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    from vugan.components.preprocess.header_checks import ReadPolicy, check_nifti

    _refuse(limits.nifti_header_problem(path))  # nibabel reads every header extension whole: bound them first
    img = nib.load(path)  # reads the header only; the voxels load below
    check_voxels(int(np.prod(img.shape, dtype=np.int64)), max_voxels)
    _refuse(check_nifti(img, policy or ReadPolicy()))  # never guess an orientation or invert a contrast
    if img.get_data_dtype().kind == "c":
        raise VolumeError("the image holds complex values; export the magnitude image")
    # asanyarray(dataobj) keeps integer masks integer and applies scl_slope/inter for images.
    return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=np.float64)


def _read_itk(path: str, max_voxels: int = 0) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    from vugan.components.preprocess.header_checks import check_itk_header

    _refuse(check_itk_header(path))  # a data file outside the header's folder, or a contrast-inverting slope
    info = sitk.ImageFileReader()
    info.SetFileName(path)
    info.ReadImageInformation()  # the header only
    check_voxels(int(np.prod(info.GetSize(), dtype=np.int64)) * max(1, info.GetNumberOfComponents()), max_voxels)
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


def _read_dicom(path: str, series_uid: str = "", max_voxels: int = 0,
                notes: dict | None = None, policy=None) -> tuple[np.ndarray, np.ndarray]:
    """A DICOM series: a folder of slices, or one file (a single slice is not a volume and is rejected).

    Slices are grouped by SeriesInstanceUID: a folder holding several series is refused (the manifest column
    ``series_uid`` picks one). Localisers (ImageType LOCALIZER/SCOUT) and slices of another orientation than the
    series' majority are left out and counted in ``notes``, and so are multi-frame (enhanced) files beside single
    slices (a folder of only multi-frame files is refused: "convert it to NIfTI"). ``header_checks`` refuses a
    RescaleSlope of 0 or below and, unless ``policy`` accepts it, BurnedInAnnotation = YES. The remaining slices
    must be evenly spaced along the slice normal: a gap or a doubled position is refused, naming the positions,
    because stacking them as if evenly spaced would stretch the anatomy.

    Geometry: ImageOrientationPatient gives the row (x) and column (y) direction cosines, PixelSpacing the
    distances between rows and between columns, and the step between sorted ImagePositionPatient values the
    slice vector. The affine is built in LPS then flipped to RAS.
    """
    import pydicom

    from vugan.components.preprocess import header_checks

    notes = notes if notes is not None else {}
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if not f.startswith(".") and os.path.isfile(os.path.join(path, f)))
    else:
        files = [path]
    headers, multiframe = [], 0
    for f in files:
        try:
            ds, problem = limits.dicom_header(f)  # only the geometry tags; a deflated file inflated with a cap
        except Exception:  # a non-DICOM file in the folder (e.g. DICOMDIR notes): skip it
            continue
        _refuse(problem)
        if header_checks.dicom_frames(ds) > 1:  # enhanced multi-frame: geometry per frame, not one slice
            multiframe += 1
            continue
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds or "PixelSpacing" not in ds:
            continue
        headers.append((f, ds))
    if not headers:
        raise VolumeError(header_checks.MULTIFRAME if multiframe else
                          "no DICOM slice with ImagePositionPatient, ImageOrientationPatient and PixelSpacing")
    if multiframe:  # beside a series of single slices (e.g. an enhanced localiser): left out and counted
        notes["dicom_multiframe_files_excluded"] = notes.get("dicom_multiframe_files_excluded", 0) + multiframe
    if len(files) == 1:
        raise VolumeError("a single DICOM file is one slice, not a volume; give the folder of the whole series")
    kept = []
    for f, ds in headers:
        image_type = [str(v).upper() for v in (getattr(ds, "ImageType", None) or [])]
        if any(t in ("LOCALIZER", "SCOUT") for t in image_type):
            notes["dicom_localiser_slices_excluded"] = notes.get("dicom_localiser_slices_excluded", 0) + 1
            continue
        kept.append((f, ds))
    if not kept:
        raise VolumeError("the DICOM folder holds only localiser slices")
    by_series: dict[str, list] = {}
    for f, ds in kept:
        by_series.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append((f, ds))
    if series_uid:
        if series_uid not in by_series:
            raise VolumeError(f"no slice of the series named in column 'series_uid' is in the folder "
                              f"({len(by_series)} other series found); check the UID")
        chosen = by_series[series_uid]
    elif len(by_series) > 1:
        described = "; ".join(f"series {i + 1}: {len(v)} slices, {_orientation_name(v[0][1])}"
                              for i, v in enumerate(sorted(by_series.values(), key=len, reverse=True)))
        raise VolumeError(f"the DICOM folder holds {len(by_series)} series ({described}); put one series per folder "
                          f"or name one in the manifest column 'series_uid'")
    else:
        chosen = next(iter(by_series.values()))
    _refuse(header_checks.check_dicom_series([ds for _, ds in chosen], policy or header_checks.ReadPolicy(),
                                                    notes))
    geoms = []
    for f, ds in chosen:
        values = [float(v) for v in ds.ImageOrientationPatient] + [float(v) for v in ds.ImagePositionPatient] + \
                 [float(v) for v in ds.PixelSpacing]
        if len(values) != 11 or not np.all(np.isfinite(values)):
            raise VolumeError("a slice's ImageOrientationPatient, ImagePositionPatient or PixelSpacing is "
                              "incomplete or not finite; re-export the series")
        geoms.append((f, np.array(values[:6]), np.array(values[6:9]), values[9:11]))
    # The majority orientation is the series; slices of another orientation (an embedded localiser) are dropped.
    groups: list[list] = []
    for g in geoms:
        for group in groups:
            if np.abs(group[0][1] - g[1]).max() < 1e-3:
                group.append(g)
                break
        else:
            groups.append([g])
    groups.sort(key=len, reverse=True)
    if len(groups) > 1:
        notes["dicom_other_orientation_slices_excluded"] = (notes.get("dicom_other_orientation_slices_excluded", 0)
                                                            + sum(len(g) for g in groups[1:]))
    slices = groups[0]
    if len(slices) < 2:
        raise VolumeError("the DICOM series has a single slice in its main orientation; a volume is required")
    iop = slices[0][1]
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda s: float(s[2] @ normal))
    spacing = slices[0][3]
    if any(abs(s[3][0] - spacing[0]) > 1e-3 or abs(s[3][1] - spacing[1]) > 1e-3 for s in slices):
        raise VolumeError("the slices of the DICOM series have different PixelSpacing; re-export the series")
    depth = np.array([float(s[2] @ normal) for s in slices])
    _check_even_spacing(depth)
    first = dict(chosen)[slices[0][0]]
    rows, cols = int(first.Rows), int(first.Columns)
    check_voxels(rows * cols * len(slices), max_voxels)
    planes = []
    header_of = dict(chosen)
    for f, *_ in slices:
        # Before decoding, from the slice's own header: not only the first slice's size bounds the decoder.
        _refuse(limits.slice_pixels_problem(header_of[f], rows, cols))
        pixels = pydicom.dcmread(f).pixel_array
        if pixels.ndim != 2 or pixels.shape != (rows, cols):
            raise VolumeError("the slices of the DICOM series differ in size (Rows/Columns) or hold several "
                              "frames; re-export the series")
        planes.append(pixels.T)  # pixel_array is [rows, cols]; column index moves along row_dir
    positions = np.array([s[2] for s in slices])
    step = (positions[-1] - positions[0]) / (len(slices) - 1)
    array = np.stack(planes, axis=-1)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]  # PixelSpacing = (between rows, between columns)
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return array, LPS_TO_RAS @ lps


def _check_even_spacing(depth: np.ndarray) -> None:
    """Refuse slice positions (mm along the normal, sorted) that are not one even step apart."""
    steps = np.diff(depth)
    if np.any(steps < 1e-3):
        at = depth[1:][steps < 1e-3]
        raise VolumeError(f"two DICOM slices lie at the same position ({', '.join(f'{p:.2f}' for p in at[:5])} mm "
                          f"along the slice normal): the folder mixes series or echoes; keep one series per folder")
    step = float(np.median(steps))
    tol = max(0.01 * step, 1e-3)
    if np.all(np.abs(steps - step) <= tol):
        return
    missing = []
    for before, gap in zip(depth[:-1], steps):
        n = int(round(gap / step)) - 1
        if n >= 1 and abs(gap - (n + 1) * step) <= tol:
            missing += [before + (k + 1) * step for k in range(n)]
        elif abs(gap - step) > tol:
            raise VolumeError(f"the DICOM slice positions are unevenly spaced (steps from {steps.min():.3f} to "
                              f"{steps.max():.3f} mm); re-export the series as one evenly spaced stack")
    raise VolumeError(f"the DICOM series has a gap: {len(missing)} slice(s) missing at "
                      f"{', '.join(f'{p:.2f}' for p in missing[:8])} mm along the slice normal (step {step:.3f} mm); "
                      f"re-export the complete series")


def _orientation_name(ds) -> str:
    """'sagittal', 'coronal', 'axial' or 'oblique' from the slice normal (geometry only, no header text)."""
    try:
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        normal = np.abs(np.cross(iop[:3], iop[3:]))
    except Exception:
        return "unknown orientation"
    axis = int(np.argmax(normal))
    if normal[axis] < 0.9:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


# --------------------------------------------------------------------------------------------- files

def is_dir(path: str) -> bool:
    if path.startswith("gs://"):
        import tensorflow as tf
        return tf.io.gfile.isdir(path)
    return os.path.isdir(path)


def exists(path: str) -> bool:
    if "://" in path:
        import tensorflow as tf
        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def read_text(path: str) -> str:
    """A text file (the manifest, a centroid json), local or remote."""
    if "://" in path:  # gs:// and friends: TensorFlow's file systems (imported only when needed)
        import tensorflow as tf
        with tf.io.gfile.GFile(path, "r") as fh:
            text = fh.read()
        return text[1:] if text.startswith("\ufeff") else text  # one BOM, as utf-8-sig drops it locally
    _refuse(limits.irregular_reason(path))  # a FIFO would block the read forever
    with open(path, encoding="utf-8-sig") as fh:  # -sig: spreadsheets often add a BOM
        return fh.read()


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
