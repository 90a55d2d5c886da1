"""Bounds checked before a file is read or a buffer allocated, so that no small file can take the machine.

The voxel limit (``readers.check_voxels``) bounds the image; these bound what comes before and beside it:

* the kind of file: only regular files (and folders of them) are read; a FIFO or a device (also through a
  symlink) would block or stream forever;
* a NIfTI header's extensions, walked from the first bytes (a bounded prefix of a .nii.gz) before nibabel,
  which reads each extension whole into memory, sees them;
* a DICOM file in the Deflated transfer syntax, inflated as a stream with a cap before pydicom, which inflates
  the whole file into memory, reads it; and of each slice header only the tags the reader uses are kept;
* a mask's label values, split into the VerSe range before anything allocates per label value.

Every refusal is a :class:`~vugan.components.preprocess.readers.VolumeError` whose message names no file and
no header value, only the bound and what to do.
"""
from __future__ import annotations

import gzip
import os
import stat
import struct
import zlib

import numpy as np

from vugan.components.preprocess.readers import VolumeError

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
        return "not a regular file (a pipe, device or socket, or a link to one); give the image file itself"
    odd = 0
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                member = os.stat(entry.path).st_mode
            except OSError:  # a dangling link: not read by anyone, as before
                continue
            odd += not (stat.S_ISREG(member) or stat.S_ISDIR(member))
    if odd:
        return (f"the folder holds {odd} entr{'y' if odd == 1 else 'ies'} that {'is' if odd == 1 else 'are'} not a "
                f"regular file (a pipe, device or socket, or a link to one); remove them from the folder")
    return ""


def check_regular(path: str) -> None:
    reason = irregular_reason(path)
    if reason:
        raise VolumeError(reason)


# --------------------------------------------------------------------------------------------- NIfTI

def check_nifti_header(path: str, max_extension_bytes: int = MAX_NIFTI_EXTENSION_BYTES) -> None:
    """Walk a single-file NIfTI's header extensions as nibabel will, without keeping them; refuse oversized ones.

    nibabel reads extensions from the end of the header while fewer than ``vox_offset`` bytes are consumed, and
    reads each one whole (``esize`` bytes, an int32 the file chooses). Here each ``esize`` is checked before its
    bytes are skipped, so at most ``max_extension_bytes`` are ever decompressed. A ``vox_offset`` beyond the
    header and that bound is refused too: it would make nibabel read (or a .nii.gz decompress) that far.
    Files too short or not NIfTI pass through: nibabel gives its own error for those.
    """
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(544)
        layout = _nifti_layout(head)
        if layout is None:
            return
        endian, header_size, vox_offset = layout
        if not np.isfinite(vox_offset):
            return  # nibabel refuses or ignores it; nothing is read on its account
        if vox_offset > header_size + 4 + max_extension_bytes:
            raise VolumeError(f"the NIfTI header puts the voxels {vox_offset:,.0f} bytes into the file, past "
                              f"{max_extension_bytes // _MIB} MiB of header extensions (the bound); re-save the "
                              f"image without its header extensions (e.g. nibabel, or fslmaths in out)")
        flag = head[header_size:header_size + 4]
        if len(flag) < 4 or flag[0] == 0:
            return
        fh.seek(header_size + 4)
        room, total = int(vox_offset) - header_size - 4, 0
        while room >= 16:  # nibabel's loop condition
            pair = fh.read(8)
            if len(pair) < 8:
                return  # truncated: nibabel reports it
            esize = struct.unpack(endian + "i", pair[:4])[0]
            if esize < 16:  # nibabel would read(esize - 8): to the end of the file for esize < 8
                raise VolumeError(f"a NIfTI header extension declares {esize} bytes (at least 16 are needed); "
                                  f"the header is damaged: re-save the image without its extensions")
            total += esize
            if total > max_extension_bytes:
                raise VolumeError(f"the NIfTI header extensions hold more than {max_extension_bytes // _MIB} MiB "
                                  f"(a header extension of {esize:,} bytes); no scanner header needs that much: "
                                  f"re-save the image without its header extensions")
            _skip(fh, esize - 8)
            room -= esize


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
    """The slice header of one DICOM file with only :data:`DICOM_HEADER_TAGS` read (pixels are not read).

    A file in the Deflated transfer syntax is first inflated as a stream up to :data:`MAX_DICOM_INFLATED_BYTES`,
    because pydicom inflates the whole rest of the file into memory before reading a single tag. Raises
    VolumeError for a file over that bound; other errors (a file that is not DICOM) are pydicom's.
    """
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    meta = pydicom.filereader.read_file_meta_info(path)
    if getattr(meta, "TransferSyntaxUID", None) == DeflatedExplicitVRLittleEndian:
        check_inflated_size(path, _meta_end(path))
    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(DICOM_HEADER_TAGS))


def check_inflated_size(path: str, start: int, max_bytes: int = MAX_DICOM_INFLATED_BYTES) -> None:
    """Inflate the raw deflate stream from byte ``start`` in blocks, keeping none; refuse it past ``max_bytes``."""
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        pending = b""
        while True:
            if not pending:
                pending = fh.read(64 << 10)
                if not pending:
                    return
            # max_length bounds each output block; the unconsumed input waits for the next turn.
            total += len(inflate.decompress(pending, _MIB))
            pending = inflate.unconsumed_tail
            if total > max_bytes:
                raise VolumeError(f"a DICOM file of the series inflates to more than {max_bytes // _MIB} MiB "
                                  f"(Deflated transfer syntax; no slice needs that much, a large private element "
                                  f"does); re-export the series uncompressed or without private elements")
            if inflate.eof:
                return


def _meta_end(path: str) -> int:
    """Byte offset where the dataset starts: after the preamble, 'DICM' and the file meta group (group 2)."""
    with open(path, "rb") as fh:
        fh.seek(128 + 4)
        element = fh.read(12)  # (0002,0000) UL: the group's length
        if len(element) < 12 or element[:4] != b"\x02\x00\x00\x00":
            raise VolumeError("a DICOM file of the series has no file meta group length; re-export the series")
        return 128 + 4 + 12 + struct.unpack("<I", element[8:12])[0]


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
