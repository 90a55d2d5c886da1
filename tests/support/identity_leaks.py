"""Every byte of a folder of outputs where a patient's identity could have been written, for the tests that look
for identifiers in preprocess outputs (test_preprocess_beam.py) and in a whole run (test_run_identity.py)."""
from __future__ import annotations

import gzip
from pathlib import Path

from vugan.components import schema

# A chance match of this many bytes in binary data has probability ~ size / 2**48: looked for everywhere.
LONG_NEEDLE = 6


def png_text_chunks(data: bytes) -> list[bytes]:
    """Every PNG chunk except the compressed pixels (IDAT): where metadata (tEXt, iTXt, zTXt, eXIf) would be."""
    chunks, at = [], 8
    while at + 8 <= len(data):
        length, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        if kind != b"IDAT":
            chunks.append(kind + data[at + 8:at + 8 + length])
        at += 12 + length
    return chunks


def record_strings(path: Path) -> list[bytes]:
    """Feature names and string values of every tf.train.Example, except the image's raw float32 bytes."""
    import tensorflow as tf

    out = []
    for raw in tf.data.TFRecordDataset(str(path), compression_type="GZIP").as_numpy_iterator():
        for key, feature in tf.train.Example.FromString(raw).features.feature.items():
            out.append(key.encode())
            if key != schema.IMAGE:
                out.extend(feature.bytes_list.value)
    return out


def text_and_binary(folder: Path) -> tuple[bytes, bytes]:
    """(text, binary) of every output file. Text is wherever a header value could be written: file names, whole
    text files, PNG chunks other than pixels, TFRecord feature names and string values. Binary is all raw bytes
    plus decompressed payloads. Short names are looked for in the text only: in compressed pixels a 3-byte "Doe"
    turns up by chance (it once did, inside a preview PNG's IDAT)."""
    text, binary = [], []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        text.append(str(p.relative_to(folder)).encode())
        binary.append(data)
        if p.suffix == ".png":
            text.extend(png_text_chunks(data))
        elif p.name.endswith(".tfrecord.gz"):
            binary.append(gzip.decompress(data))
            text.extend(record_strings(p))
        elif p.name.endswith(".gz"):
            binary.append(gzip.decompress(data))
            text.append(binary[-1])
        else:
            text.append(data)
    return b"\n".join(text), b"\n".join(binary)
