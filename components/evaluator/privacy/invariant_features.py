"""Features of a unit that do not change under the identity-keeping changes of identity_transforms.py.

A generator that memorised a patient may give the patient's units back shifted, mirrored, with the slice order
reversed or under another intensity window (COPY_DISGUISES). A distance in pixel space then sees a stranger. These
features are (nearly) the same for a unit and any such change of it, so a distance attack in their space scores the
memorised patient as a member whatever the disguise:
  * intensities replaced by their rank within the unit: any monotone increasing remap leaves the ranks unchanged;
  * per slice, the magnitude of the 2-D Fourier transform: a shift moves the phase only (exactly for a circular
    shift; the repeated border of identity_transforms.shifted changes a few per cent), and averaging the
    magnitudes at (k1, k2) and (k1, -k2) makes it blind to in-plane flips (|F(-k)| = |F(k)| for a real image);
  * slices k and K - 1 - k summed: blind to reversing the slice order.
Only the lowest `freqs` x `freqs` frequencies are kept (the anatomy; the rest is mostly noise). Pure numpy.
"""
from __future__ import annotations

import numpy as np

DEFAULT_FREQS = 8


def _rank_within_unit(images: np.ndarray) -> np.ndarray:
    """Ranks in [0, 1]. The values clipped at a unit's minimum or maximum (a saturated background, a window's
    ends) are where ties sit in practice: they share their mid-rank, so a clip does not scramble them by position;
    other ties are rare in float data and keep their order of position (a full mid-rank costs four times more)."""
    n = len(images)
    flat = images.reshape(n, -1)
    p = flat.shape[1]
    ranks = np.empty((n, p), np.float32)
    np.put_along_axis(ranks, np.argsort(flat, axis=1), np.arange(p, dtype=np.float32)[None, :], axis=1)
    for end, at_end in ((0, flat == flat.min(1, keepdims=True)), (p - 1, flat == flat.max(1, keepdims=True))):
        count = at_end.sum(1, keepdims=True)
        mid = np.abs(end - 0.5 * (count - 1)) if end else 0.5 * (count - 1)
        ranks = np.where(at_end, np.broadcast_to(mid, (n, p)), ranks)
    return (ranks / max(p - 1, 1)).astype(np.float32).reshape(images.shape)


def _low_dft(size: int, freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin rows of the DFT at the given frequencies: only the few kept are computed, not the whole FFT."""
    angle = 2 * np.pi * np.outer(freqs, np.arange(size)) / size
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


def invariant_features(images: np.ndarray, freqs: int = DEFAULT_FREQS, chunk: int = 2048) -> np.ndarray:
    """[N, H, W, K] units -> [N, D] float32 rows, D = ceil(K / 2) x freqs x freqs."""
    x = np.asarray(images, np.float32)
    if x.ndim != 4:
        raise ValueError(f"invariant_features needs units [N, H, W, K]; got shape {x.shape}")
    n, h, w, k = x.shape
    f = max(1, min(freqs, h, w // 2 + 1))
    cy, sy = _low_dft(h, np.arange(f))
    cx, sx = _low_dft(w, np.arange(-(f - 1), f))  # k2 = -(f-1) .. f-1, so that (k1, k2) and (k1, -k2) can be paired
    out = []
    for lo in range(0, n, chunk):
        r = np.moveaxis(_rank_within_unit(x[lo:lo + chunk]), -1, 1)  # [n, K, H, W]
        r = r - r.mean(axis=(2, 3), keepdims=True)  # the DC term carries no identity after ranking
        a, b = cy @ r, sy @ r  # [n, K, f, W]: the DFT along rows (real and minus imaginary part)
        re, im = a @ cx.T - b @ sx.T, a @ sx.T + b @ cx.T  # [n, K, f, 2f-1]
        mag = np.sqrt(re ** 2 + im ** 2)
        sym = 0.5 * (mag[..., f - 1:] + mag[..., f - 1::-1])  # [n, K, f, f]: k2 >= 0 paired with -k2
        pairs = [sym[:, j] + sym[:, k - 1 - j] if j != k - 1 - j else sym[:, j] for j in range((k + 1) // 2)]
        out.append(np.stack(pairs, 1).reshape(len(r), -1))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, f * f * ((k + 1) // 2)), np.float32)
