"""vu-encoder: the project's fixed, versioned VU feature network, run in exact integer arithmetic.

Why integer arithmetic: the headline fidelity numbers (FD-VU, KD-VU, PRDC) must be identical for identical
inputs on any machine and any thread count. Floating-point convolutions are not: BLAS and oneDNN split their sums
differently by core count and CPU, and the last bits differ. Here every tensor between the input and the pooled
features holds INTEGERS stored in float64, and every sum of products stays far below 2**53 (checked when the
weights load), so each sum is exact whatever order a BLAS library adds it in. The only non-integer steps are
single IEEE operations on exact values (a multiply by a constant, a division, a square root), which are correctly
rounded and so the same on every IEEE machine; the output lies on a fixed grid (1/64 of a feature's real-data
standard deviation). Result: bit-identical features, by construction, not by luck of the scheduler.

The network (trained once by tools/train_vu_encoder.py; weights in models/vu_encoder/):
  input   any crop [n, H, W, K] in [-1, 1] -> resampled to the fixed input spec (INPUT_SPEC) by separable
          linear interpolation on an integer grid, quantised to 255 levels;
  normal  each unit standardised to zero mean and unit standard deviation (z-score, 1/32 grid): the network sees
          structure and texture, not the scanner's contrast, which varies far more between real patients and
          sequences than any artefact does and would otherwise dominate every distance;
  stages  STAGE_CHANNELS convolutions, 3x3, stride 2, one pixel of zero padding, ReLU (64 -> 32 -> 16 -> 8 -> 4);
  pooled  per stage and channel the spatial mean and standard deviation (texture energy at four scales);
  texture a fixed derivative filter bank on the standardised unit at three pyramid levels (2x2 box sums):
          mean |d/dy|, mean |d/dx| and mean |Laplacian| per level, and mean |d/dslice|: 10 texture energies;
  intens  the unit's intensity mean, std, 5/50/95 % quantiles and shares of voxels at either end of the window (7);
  output  [texture energies and intensity features together, WHITENED on real data (17); the pooled conv features
          standardised and projected on the training data's first principal axes, whitened (structure dims)]. Whitening gives every direction of real variation unit variance, so an
          artefact counts in every direction it moves a unit, not only along the few directions in which real
          patients differ most (contrast, size): blur, checkerboards and missing bodies move units far along
          directions in which real units hardly vary at all.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vugan.components.evaluator.features.checksum import sha256_file

NAME = "vu-encoder"
VERSION = "v1"
INPUT_SPEC = {"height": 64, "width": 64, "slices": 9, "value_range": [-1.0, 1.0], "input_levels": 127}
STAGE_CHANNELS = (24, 48, 64, 96)
ACTIVATION_MAX = 4095  # activations are integers in [0, 4095] (12 bits)
WEIGHT_MAX = 2047  # weights are integers in [-2047, 2047] (12 bits)
FEATURE_GRID = 64  # output features are multiples of 1/64
NORM_GRID = 32  # the standardised input is a multiple of 1/32 of the unit's standard deviation, clipped at +-127
EXACT_LIMIT = 2.0 ** 53  # float64 holds every integer below this exactly

MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "vu_encoder"
WEIGHTS_FILE = MODEL_DIR / f"{NAME}-{VERSION}.npz"
CARD_FILE = MODEL_DIR / f"{NAME}-{VERSION}.json"


class EncoderWeightsError(ValueError):
    """The encoder's weights file is missing, altered or not the version its card describes."""


# ----------------------------------------------------------------------------------------------- input

def _axis_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation taps (half-pixel centres, edge clamped): out[j] = (w0 x[i0] + w1 x[i1]) / 256 with
    integer weights w0 + w1 = 256, so interpolating integers gives integers (times 256), exactly."""
    if n_in == n_out:
        idx = np.arange(n_out)
        return idx, idx, np.full(n_out, 256, np.int64)
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w0 = np.rint((1.0 - (pos - i0)) * 256).astype(np.int64)
    return i0, i1, w0


def _resample_axis(q: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Integer array along ``axis`` -> ``n_out`` samples, result scaled by 256 (exact integers)."""
    i0, i1, w0 = _axis_taps(q.shape[axis], n_out)
    shape = [1] * q.ndim
    shape[axis] = n_out
    w0 = w0.reshape(shape).astype(np.float64)
    return np.take(q, i0, axis=axis) * w0 + np.take(q, i1, axis=axis) * (256.0 - w0)


def quantised_input(images: np.ndarray) -> np.ndarray:
    """[n, H, W, K] in [-1, 1] -> integers in [-127, 127], float64 [n, 64, 64, 9] (the fixed input spec).

    Crops of another size or slice count are resampled by linear interpolation (half-pixel centres) in H, W and
    the slice axis, on the integer grid, so the result is exact; a crop of the spec's size passes unchanged.
    """
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"{NAME}: expected images [n, H, W, K], got shape {x.shape}")
    levels = INPUT_SPEC["input_levels"]
    q = np.rint(np.clip(np.nan_to_num(x.astype(np.float64), nan=-1.0), -1.0, 1.0) * levels)
    target = (INPUT_SPEC["height"], INPUT_SPEC["width"], INPUT_SPEC["slices"])
    if q.shape[1:] == target:
        return q
    scale = 1.0
    for axis, n_out in zip((1, 2, 3), target):
        if q.shape[axis] != n_out:
            q = _resample_axis(q, axis, n_out)
            scale *= 256.0
    return np.rint(q / scale)  # scale is a power of two: the division is exact, rint is deterministic


def normalised_input(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantised units -> (z-scored integers in [-127, 127] on a 1/NORM_GRID grid, unit mean, unit std), the
    last two in input units ([-1, 1]). Integer sums are exact; every other step is one IEEE operation."""
    n_vox = q.shape[1] * q.shape[2] * q.shape[3]
    s = q.sum(axis=(1, 2, 3))
    sq = (q * q).sum(axis=(1, 2, 3))
    mean = s / n_vox
    std = np.sqrt(np.maximum(sq - s * s / n_vox, 0.0) / n_vox)
    safe = np.maximum(std, 1.0)[:, None, None, None]  # a constant unit (std < 1 level) stays all zeros
    z = np.clip(np.rint((q - mean[:, None, None, None]) / safe * NORM_GRID), -127, 127)
    levels = float(INPUT_SPEC["input_levels"])
    return z, mean / levels, std / levels


# ----------------------------------------------------------------------------------------------- network

def _patches(x: np.ndarray) -> np.ndarray:
    """[n, H, W, C] -> [n, H/2, W/2, 9 C]: 3x3 windows at stride 2 after one pixel of zero padding, ordered
    (row, column, channel) like a Keras kernel [3, 3, C, C'] reshaped to [9 C, C']."""
    n, h, w, c = x.shape
    p = np.zeros((n, h + 2, w + 2, c), x.dtype)
    p[:, 1:-1, 1:-1] = x
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    cols = [p[:, dy:dy + 2 * ho:2, dx:dx + 2 * wo:2] for dy in range(3) for dx in range(3)]
    return np.concatenate(cols, axis=-1)


class VuEncoder:
    """The integer network of one weights file; ``features(images)`` -> float64 [n, D] on the 1/64 grid."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict):
        self.meta = meta
        self.kernels = [arrays[f"kernel{i}"].astype(np.float64) for i in range(len(STAGE_CHANNELS))]
        self.biases = [arrays[f"bias{i}"].astype(np.float64) for i in range(len(STAGE_CHANNELS))]
        self.requant = [float(v) for v in arrays["requant"]]  # acc * requant -> next activation integers
        self.act_scale = [float(v) for v in arrays["act_scale"]]  # activation integers per float unit
        self.feat_mean = arrays["feat_mean"].astype(np.float64)
        self.feat_std = arrays["feat_std"].astype(np.float64)
        self.projection = arrays["projection"].astype(np.float64)  # integers, 1/1024 units
        self.texture_mean = arrays["texture_mean"].astype(np.float64)  # [APPEARANCE_DIM]: texture + intensity
        self.texture_std = arrays["texture_std"].astype(np.float64)
        self.texture_projection = arrays["texture_projection"].astype(np.float64)  # integers, 1/1024 units
        self.dim = int(self.texture_projection.shape[1]) + int(self.projection.shape[1])
        self._check_exact()

    def _check_exact(self) -> None:
        """Every sum of products must stay an exact float64 integer; refuse weights that could overflow it."""
        in_max = 127.0  # |normalised input| <= 127
        for i, (k, b) in enumerate(zip(self.kernels, self.biases)):
            if not (np.all(k == np.rint(k)) and np.all(b == np.rint(b))):
                raise EncoderWeightsError(f"{NAME}: stage {i} weights are not integers")
            bound = np.abs(k).sum(0).max() * in_max + np.abs(b).max()
            if bound >= EXACT_LIMIT:
                raise EncoderWeightsError(f"{NAME}: stage {i} sums could reach {bound:.3g} >= 2**53 (inexact)")
            in_max = float(ACTIVATION_MAX)
        zmax = 16 * FEATURE_GRID
        for proj in (self.projection, self.texture_projection):
            if not np.all(proj == np.rint(proj)) or np.abs(proj).sum(0).max() * zmax >= EXACT_LIMIT:
                raise EncoderWeightsError(f"{NAME}: a projection is not integer or its sums could be inexact")

    def stage_activations(self, q: np.ndarray) -> list[np.ndarray]:
        """Integer activations of every stage for quantised input ``q`` (see :func:`quantised_input`)."""
        acts, x = [], q
        for k, b, m in zip(self.kernels, self.biases, self.requant):
            cols = _patches(x)
            acc = cols.reshape(-1, cols.shape[-1]) @ k + b  # exact: integers, |sum| < 2**53
            x = np.clip(np.rint(np.maximum(acc, 0.0) * m), 0, ACTIVATION_MAX).reshape(cols.shape[:-1] + (k.shape[1],))
            acts.append(x)
        return acts

    def pooled(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(per stage and channel the spatial mean and std, in float-network units [n, 2 sum(C)],
        the unit's intensity mean and std [n, 2], texture energies and intensity features [n, APPEARANCE_DIM])."""
        q = quantised_input(images)
        z, mean, std = normalised_input(q)
        texture = np.concatenate([texture_energies(z), intensity_features(q, mean, std)], axis=1)
        out = []
        for a, scale in zip(self.stage_activations(z), self.act_scale):
            n_pos = a.shape[1] * a.shape[2]
            s = a.sum(axis=(1, 2))  # exact integer sums
            sq = (a * a).sum(axis=(1, 2))
            m = s / n_pos
            var = np.maximum(sq - s * s / n_pos, 0.0) / n_pos
            out += [m / scale, np.sqrt(var) / scale]
        return np.concatenate(out, axis=1), np.stack([mean, std], axis=1), texture

    def features(self, images: np.ndarray) -> np.ndarray:
        """[n, dim]: whitened texture + intensity features, whitened conv structure (module docstring)."""
        pooled, _, appearance = self.pooled(images)
        return np.concatenate([_project((appearance - self.texture_mean) / self.texture_std, self.texture_projection),
                               _project((pooled - self.feat_mean) / self.feat_std, self.projection)], axis=1)


    def feature_names(self) -> tuple[str, ...]:
        """One name per output feature. A whitened principal axis has no single meaning, so each appearance axis is
        named by the two raw appearance features that correlate with it most (the largest entries of its column of
        the whitening matrix: the raw features' correlation with axis j is proportional to that column); the conv
        structure axes mix pooled channels of four stages and are numbered only."""
        names = []
        for j in range(self.texture_projection.shape[1]):
            strongest = np.argsort(-np.abs(self.texture_projection[:, j]), kind="stable")[:2]
            names.append(f"appearance axis {j + 1} ({', '.join(APPEARANCE_NAMES[i] for i in strongest)})")
        return tuple(names) + tuple(f"structure axis {j + 1}" for j in range(self.projection.shape[1]))

    def feature_groups(self) -> tuple[tuple[str, int], ...]:
        """The two blocks of the output, in order (module docstring, "output")."""
        return (("appearance (texture + intensity)", int(self.texture_projection.shape[1])),
                ("structure (pooled conv)", int(self.projection.shape[1])))


def _project(z: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Standardised features on the 1/FEATURE_GRID grid times an integer projection (1/1024 units): exact."""
    zq = np.clip(np.rint(z * FEATURE_GRID), -16 * FEATURE_GRID, 16 * FEATURE_GRID)
    return np.rint(zq @ projection / 1024.0) / FEATURE_GRID  # exact integers / powers of two


TEXTURE_DIM = 10
INTENSITY_DIM = 7
APPEARANCE_DIM = TEXTURE_DIM + INTENSITY_DIM
# The raw appearance features in the order texture_energies and intensity_features return them.
TEXTURE_NAMES = tuple(f"|{op}| level {level}" for level in (1, 2, 3) for op in ("d/dy", "d/dx", "Laplacian")) + (
    "|d/dslice|",)
INTENSITY_NAMES = ("intensity mean", "intensity std", "intensity 5%", "intensity 50%", "intensity 95%",
                   "share at window floor", "share at window top")
APPEARANCE_NAMES = TEXTURE_NAMES + INTENSITY_NAMES


def intensity_features(q: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """[n, 7]: mean, std, the 5/50/95 % quantiles (exact order statistics of the integers) and the shares of
    voxels within 2 levels of either end of the [-1, 1] window, in input units."""
    flat = q.reshape(len(q), -1)
    n_vox = flat.shape[1]
    ranks = [int(round(p * (n_vox - 1))) for p in (0.05, 0.5, 0.95)]
    quantiles = np.partition(flat, ranks, axis=1)[:, ranks] / INPUT_SPEC["input_levels"]
    edge = INPUT_SPEC["input_levels"] - 2
    low, high = (flat <= -edge).sum(1) / n_vox, (flat >= edge).sum(1) / n_vox
    return np.column_stack([mean, std, quantiles, low, high])


def texture_energies(z: np.ndarray) -> np.ndarray:
    """[n, 10] mean absolute responses of fixed derivative filters on the standardised unit ``z`` (integers):
    per pyramid level (2x2 box sums, three levels) |d/dy|, |d/dx|, |4-neighbour Laplacian|, then |d/dslice|.
    All in units of the unit's standard deviation; integer sums (exact), one division each."""
    out, x, scale = [], z, 1.0
    for _ in range(3):
        gy = np.abs(np.diff(x, axis=1)).sum(axis=(1, 2, 3)) / (x[:, 1:].size / len(x))
        gx = np.abs(np.diff(x, axis=2)).sum(axis=(1, 2, 3)) / (x[:, :, 1:].size / len(x))
        lap = (4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:])
        la = np.abs(lap).sum(axis=(1, 2, 3)) / (lap[0].size)
        out += [gy / scale, gx / scale, la / scale]
        n, h, w, k = x.shape
        x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, k).sum(axis=(2, 4))
        scale *= 4.0  # box sums: values grow 4x per level (a power of two: the division is exact)
    gk = np.abs(np.diff(z, axis=3)).sum(axis=(1, 2, 3)) / (z[:, :, :, 1:].size / len(z))
    out.append(gk)
    return np.stack(out, axis=1) / NORM_GRID


# ----------------------------------------------------------------------------------------------- loading

def read_card(card_path: str | Path = CARD_FILE) -> dict:
    path = Path(card_path)
    if not path.is_file():
        raise EncoderWeightsError(f"{NAME}: model card {path} does not exist; it ships with the project "
                                  f"(models/vu_encoder/), restore it from the repository")
    return json.loads(path.read_text())


def load_encoder(weights_path: str | Path = WEIGHTS_FILE, card_path: str | Path = CARD_FILE) -> tuple[VuEncoder, dict]:
    """The encoder and its card, after checking the weights file's sha256 against the card.

    Raises:
      EncoderWeightsError: the file is missing or its sha256 differs from the card's (names the file).
    """
    path = Path(weights_path)
    card = read_card(card_path)
    if not path.is_file():
        raise EncoderWeightsError(f"{NAME}: weights file {path} does not exist; it ships with the project "
                                  f"(models/vu_encoder/), restore it from the repository")
    digest = sha256_file(path)
    if digest != card["sha256"]:
        raise EncoderWeightsError(
            f"{NAME}: weights file {path} has sha256 {digest}, but its card {Path(card_path)} says "
            f"{card['sha256']}: the file was altered or belongs to another version; restore both from the "
            f"repository (or retrain with tools/train_vu_encoder.py, which writes a new card)")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("meta")))
    return VuEncoder(arrays, meta), card
