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
    n = len(images)
    flat = images.reshape(n, -1)
    ranks = np.argsort(np.argsort(flat, axis=1, kind="stable"), axis=1).astype(np.float32)
    return (ranks / max(flat.shape[1] - 1, 1)).reshape(images.shape)


def invariant_features(images: np.ndarray, freqs: int = DEFAULT_FREQS, chunk: int = 2048) -> np.ndarray:
    """[N, H, W, K] units -> [N, D] float32 rows, D = ceil(K / 2) x freqs x freqs."""
    x = np.asarray(images, np.float32)
    if x.ndim != 4:
        raise ValueError(f"invariant_features needs units [N, H, W, K]; got shape {x.shape}")
    n, h, w, k = x.shape
    f = max(1, min(freqs, h, w // 2 + 1))
    out = []
    for lo in range(0, n, chunk):
        r = _rank_within_unit(x[lo:lo + chunk])
        r = r - r.mean(axis=(1, 2), keepdims=True)  # the DC term carries no identity after ranking
        mag = np.abs(np.fft.fft2(r, axes=(1, 2)))  # [n, H, W, K]
        cols = np.r_[0, (w - np.arange(1, f)) % w]  # -k2 for k2 = 0..f-1
        sym = 0.5 * (mag[:, :f, :f, :] + mag[:, :f, cols, :])
        pairs = [sym[..., j] + sym[..., k - 1 - j] if j != k - 1 - j else sym[..., j] for j in range((k + 1) // 2)]
        out.append(np.stack(pairs, -1).reshape(len(r), -1))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, f * f * ((k + 1) // 2)), np.float32)
