"""Cache of REAL-split features, keyed by the units' content and the embedder's identity.

Why: the real train and holdout splits are embedded again in every evaluation of every candidate model on the same
data (the release filter, an ablation, a model comparison), and with Inception or the VU encoder that is most of the
evaluation's time. A cached entry is used only when the units are byte-for-byte the ones it was computed from (a
sha256 of their pixels, shape and dtype: the content fingerprint, which also changes when the Examples artifact is
rebuilt) AND the embedder is the same (its ``cache_identity``: weights sha256, version, input mapping); a learned
per-run embedder (the domain encoder) has no identity and is never cached. Synthetic units are never cached.

What is stored: one ``.npy`` of float32 features per (embedder, split content) under ``evaluator.feature_cache``
(default ``$XDG_CACHE_HOME/vugan/features`` or ``~/.cache/vugan/features``). Features of real patients' units stay
private data: the folder lives on the machine that holds the scans, holds no identifiers, and should be deleted with
them. An unreadable or mismatched entry is recomputed and rewritten, never trusted.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

FORMAT = "vugan-feature-cache-1"  # bump when what a cached file means changes


def resolve_folder(setting: str) -> Path | None:
    """evaluator.feature_cache -> a folder, or None when caching is off ("" or "off")."""
    setting = (setting or "").strip()
    if setting in ("", "off"):
        return None
    if setting == "auto":
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "vugan" / "features"
    return Path(setting).expanduser()


def content_digest(images: np.ndarray) -> str:
    """sha256 over the array's dtype, shape and bytes: equal digests mean identical units."""
    array = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def entry_path(folder: Path, embedder_key: str, identity: str, digest: str) -> Path:
    key = hashlib.sha256(f"{FORMAT}|{identity}|{digest}".encode()).hexdigest()[:40]
    return folder / f"{embedder_key}-{key}.npy"


def cached_features(embedder, images: np.ndarray, folder: Path | None, log: Callable[[str], None] = print,
                    digest: str | None = None) -> tuple[np.ndarray, str]:
    """Features of ``images`` from the cache when a valid entry exists, else computed (and stored).

    Args:
      digest: content_digest(images) when the caller already has it (one split, several embedders: hash it once).
    Returns:
      (features [n, D] float32, status) with status "hit", "stored", or "off" (no folder, or an embedder without
      a cache identity).
    """
    identity = getattr(embedder, "cache_identity", "")
    if folder is None or not identity:
        return embedder(images), "off"
    path = entry_path(folder, embedder.key, identity, digest or content_digest(images))
    if path.exists():
        try:
            feats = np.load(path, allow_pickle=False)
            if feats.dtype == np.float32 and feats.ndim == 2 and len(feats) == len(images):
                return feats, "hit"
            log(f"feature cache: {path} holds {feats.dtype} {feats.shape}, not {len(images)} float32 rows; "
                f"recomputing")
        except (OSError, ValueError) as err:
            log(f"feature cache: {path} is unreadable ({err}); recomputing")
    feats = np.asarray(embedder(images), np.float32)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:  # np.save on a handle: no ".npy" appended to the temp name
            np.save(fh, feats, allow_pickle=False)
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError as err:
        log(f"feature cache: could not write {path} ({err}); evaluation continues uncached")
        return feats, "off"
    return feats, "stored"
