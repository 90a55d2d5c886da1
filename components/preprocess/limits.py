"""Bounds checked before a file is read or a buffer allocated, so that no small file can take the machine.

The voxel limit (``readers.check_voxels``) bounds the image; these bound what comes before and beside it:

* the kind of file: only regular files (and folders of them) are read; a FIFO or a device (also through a
  symlink) would block or stream forever;
* a NIfTI header's extensions, walked from the first bytes (a bounded prefix of a .nii.gz) before nibabel,
  which reads each extension whole into memory, sees them;
* a DICOM file in the Deflated transfer syntax, inflated as a stream with a cap before pydicom, which inflates
  the whole file into memory, reads it; and of each slice header only the tags the reader uses are kept;
* a mask's label values, split into the VerSe range before anything allocates per label value.

Each check returns why a file is refused ('' when it is not): a message that names no file and no header value,
only the bound and what to do. The readers raise it as their ``VolumeError``; this module imports none of them,
so that they can import it.
"""
from __future__ import annotations

import gzip
import os
import stat
import struct
import zlib

import numpy as np

# NIfTI extensions hold a few KB to a few MB in practice (AFNI XML, dcm2niix's JSON or DICOM text, a CIFTI map):
# 16 MiB is far above any of them and far below what harms a worker, which holds two copies while nibabel parses.
MAX_NIFTI_EXTENSION_BYTES = 16 << 20
# A deflated DICOM slice inflates to its header plus its pixels: 4096 x 4096 x 32 bit is 64 MiB, beyond any MR
# slice. Each slice is inflated once to check and once to read, one slice at a time.
MAX_DICOM_INFLATED_BYTES = 64 << 20
# The tags the DICOM reader and its checks use; every other element is skipped unread (``specific_tags``), so
# a slice header in memory is a few hundred bytes whatever the file holds. Readers that need a new tag add it here.
DICOM_HEADER_TAGS = (
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns",
    "NumberOfFrames", "ImageType", "SeriesInstanceUID", "SOPClassUID", "Modality", "SamplesPerPixel",
    "PhotometricInterpretation", "BitsAllocated", "BitsStored", "PixelRepresentation", "RescaleSlope",
    "RescaleIntercept", "BurnedInAnnotation",
)
# Mask codes above this are no VerSe level (1 to 28); only this many distinct ones are named in the notes.
HIGHEST_VERSE_CODE = 28
MAX_UNKNOWN_CODES_NAMED = 32

_MIB = 1 << 20


# --------------------------------------------------------------------------------------------- file kinds

def irregular_reason(path: str) -> str:
    """Why ``path`` must not be read ('' when it may): not a regular file, or a folder holding such an entry.

    ``os.stat`` follows symlinks, so a link to ``/dev/zero`` is seen as the device it is. A missing path gives ''
    (the reader reports it by row and column); remote paths are objects, never pipes, and give ''. Subfolders
    of a folder are left alone, as the DICOM reader leaves them.
    """
    if "://" in path:
        return ""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISREG(mode):
        return ""
    if not stat.S_ISDIR(mode):
        return "not a regular file (a pipe, device or socket, or a link to one); give the file itself"
    odd = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    member = os.stat(entry.path).st_mode
                except OSError:  # a dangling link: not read by anyone, as before
                    continue
                odd += not (stat.S_ISREG(member) or stat.S_ISDIR(member))
    except OSError:  # an unreadable folder: the reader reports it by row and column
        return ""
    if odd:
        return (f"the folder holds {odd} entr{'y' if odd == 1 else 'ies'} that {'is' if odd == 1 else 'are'} not a "
                f"regular file (a pipe, device or socket, or a link to one); remove them from the folder")
    return ""


# --------------------------------------------------------------------------------------------- NIfTI

def nifti_header_problem(path: str, max_extension_bytes: int = MAX_NIFTI_EXTENSION_BYTES) -> str:
    """Why a single-file NIfTI is refused for its header extensions ('' when it is not), found by walking them as
    nibabel will, without keeping them.

    nibabel reads extensions from the end of the header while fewer than ``vox_offset`` bytes are consumed, and
    reads each one whole (``esize`` bytes, an int32 the file chooses). Here each ``esize`` is checked before its
    bytes are skipped, so at most ``max_extension_bytes`` are ever decompressed. A ``vox_offset`` beyond the
    header and that bound is refused too: it would make nibabel read (or a .nii.gz decompress) that far.
    Files too short or not NIfTI give '': nibabel gives its own error for those. No header value is echoed.
    """
    bound = f"{max_extension_bytes / _MIB:g} MiB"
    redo = "re-save the image without its header extensions (e.g. nibabel: img.header.extensions.clear())"
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(544)
        layout = _nifti_layout(head)
        if layout is None:
            return ""
        endian, header_size, vox_offset = layout
        if not np.isfinite(vox_offset):
            return ""  # nibabel refuses or ignores it; nothing is read on its account
        if vox_offset > header_size + 4 + max_extension_bytes:
            return (f"the NIfTI header puts the voxels more than {bound} past its end (the bound on header "
                    f"extensions); {redo}")
        flag = head[header_size:header_size + 4]
        if len(flag) < 4 or flag[0] == 0:
            return ""
        fh.seek(header_size + 4)
        room, total = int(vox_offset) - header_size - 4, 0
        while room >= 16:  # nibabel's loop condition
            pair = fh.read(8)
            if len(pair) < 8:
                return ""  # truncated: nibabel reports it
            esize = struct.unpack(endian + "i", pair[:4])[0]
            if esize < 16:  # nibabel would read(esize - 8): to the end of the file for esize < 8
                return f"a NIfTI header extension declares fewer than 16 bytes: the header is damaged; {redo}"
            total += esize
            if total > max_extension_bytes:
                return (f"the NIfTI header extensions hold more than {bound} (the bound; no scanner header needs "
                        f"that much); {redo}")
            _skip(fh, esize - 8)
            room -= esize
    return ""


def _nifti_layout(head: bytes):
    """(byte order, header size, vox_offset) of a NIfTI-1 or NIfTI-2 header; None when it is neither."""
    if len(head) < 348:
        return None
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0]
        if size == 348:
            return endian, 348, float(struct.unpack(endian + "f", head[108:112])[0])
        if size == 540 and len(head) >= 540:
            return endian, 540, float(struct.unpack(endian + "q", head[168:176])[0])
    return None


def _skip(fh, n: int) -> None:
    """Move ``n`` bytes forward in blocks (a gzip stream's seek decompresses anyway; nothing is kept)."""
    while n > 0:
        got = len(fh.read(min(n, _MIB)))
        if not got:
            return
        n -= got


# --------------------------------------------------------------------------------------------- DICOM

def dicom_header(path: str):
    """(slice header with only :data:`DICOM_HEADER_TAGS` read, '') or (None, why the file is refused).

    A file in the Deflated transfer syntax is first inflated as a stream up to :data:`MAX_DICOM_INFLATED_BYTES`,
    because pydicom inflates the whole rest of the file into memory before reading a single tag. Pixels are never
    read here. A file that is not DICOM raises pydicom's error.
    """
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    with open(path, "rb") as fh:
        pydicom.filereader.read_preamble(fh, False)
        # pydicom's own group-2 reader; it stops at (and leaves the file at) the first dataset element.
        meta = pydicom.filereader._read_file_meta_info(fh)  # pylint: disable=protected-access
        start = fh.tell()
    if getattr(meta, "TransferSyntaxUID", None) == DeflatedExplicitVRLittleEndian:
        problem = inflated_size_problem(path, start)
        if problem:
            return None, problem
    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(DICOM_HEADER_TAGS)), ""


def inflated_size_problem(path: str, start: int, max_bytes: int = MAX_DICOM_INFLATED_BYTES) -> str:
    """Inflate the raw deflate stream from byte ``start`` in blocks, keeping none: why it is refused ('' if not)."""
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        pending = b""
        while True:
            if not pending:
                pending = fh.read(64 << 10)
                if not pending:
                    return ""
            # max_length bounds each output block; the unconsumed input waits for the next turn.
            total += len(inflate.decompress(pending, _MIB))
            pending = inflate.unconsumed_tail
            if total > max_bytes:
                return (f"a DICOM file of the series inflates to more than {max_bytes // _MIB} MiB (Deflated "
                        f"transfer syntax; no slice needs that much, a large private element does); re-export the "
                        f"series uncompressed or without private elements")
            if inflate.eof:
                return ""


def slice_pixels_problem(ds, rows: int, cols: int) -> str:
    """Why a slice is refused whose own header claims another size or several frames ('' when it matches),
    before its pixels are decoded.

    The voxel limit is computed from the first slice; a compressed (RLE, JPEG) slice claiming more rows, columns
    or frames would otherwise be decoded to that size from a small file before the shapes are compared.
    """
    try:
        same = (int(ds.Rows), int(ds.Columns)) == (rows, cols)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        same, frames = False, 1
    if not same or frames != 1:
        return ("the slices of the DICOM series differ in size (Rows/Columns) or hold several frames; "
                "re-export the series")
    return ""


# --------------------------------------------------------------------------------------------- labels

def split_label_codes(labels: np.ndarray, highest: int = HIGHEST_VERSE_CODE) -> tuple[np.ndarray, tuple]:
    """(labels with every code above ``highest`` set to 0, those codes): before ``find_objects`` & co.

    ``scipy.ndimage.find_objects`` allocates one entry per label value up to the largest one, so a single voxel
    labelled 150,000,000 asked for 7 GB. Codes above the VerSe range are no level, so they are taken out here and
    reported as unknown codes (at most :data:`MAX_UNKNOWN_CODES_NAMED`, smallest first); memory stays a few
    copies of the mask, whatever its values.
    """
    above = labels > highest
    if not above.any():
        return labels, ()
    codes = np.unique(labels[above])
    return np.where(above, 0, labels), tuple(int(c) for c in codes[:MAX_UNKNOWN_CODES_NAMED])
