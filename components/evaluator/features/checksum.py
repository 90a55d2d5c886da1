"""The sha256 of a weights file: what a feature network's identity is checked and cached by.

Its own module because both feature extractors that load weights need it (``embeddings.py`` for InceptionV3,
``vu_encoder.py`` against its card) and ``embeddings.py`` builds on ``vu_encoder.py``: kept in either, it would
make the two import each other.
"""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the file's bytes, read in 1 MiB blocks so a large weights file is never held whole."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
