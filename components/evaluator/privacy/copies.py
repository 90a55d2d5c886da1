"""The copy test that sees through what does not change identity (issue 23, item 1).

A synthetic unit is a copy of a training patient when it matches one of that patient's units after any change that
keeps the patient: a shift of up to `privacy.copy_max_shift` voxels in the plane, the slice order reversed, a flip in
the plane (the 8 orientations of reversal x row flip x column flip, each with every shift), a monotone change of
intensities, or one slice of the patient pasted into another unit. How it sees through each:

  * monotone intensity remaps: every unit (and, for the slice match, every slice) is replaced by its voxels' RANKS
    within it (mid-ranks, from a 1024-bin histogram: linear in the voxels, no sort), which any increasing remap
    leaves as they are; measured against per-unit standardisation in docs/privacy.md (gamma 1.5 is missed there);
  * shifts, reversal, flips: the TRAINING units are searched in all their variants (8 orientations x (2s+1)^2 shifts,
    200 at s = 2) and a synthetic unit's distance is its smallest distance to any variant of any training unit; the
    variant matched is kept, so the verdict names the transform family ("shift (1, 0)", "slices reversed, ...");
  * single-slice pastes: each synthetic slice is matched against the training slices at the same position or the
    mirrored one, in every in-plane orientation and shift of up to `copy_slice_shift` voxels;
  * blur: the units are matched once more after an in-plane Gaussian blur of `copy_smooth_sigma` voxels on BOTH
    sides (level "smoothed"): a copy blurred by sigma b becomes one blurred by sqrt(1 + b^2) against its source
    blurred by 1, close again, while other patients' anatomy stays apart; its radius is calibrated on held-out
    patients under the same smoothing. Without it a copy blurred by sigma 0.7 was missed in about 1 draw in 4 on
    the phantom pool (docs/privacy.md).

Rows: rank-transformed, mean-pooled in the plane to at most 32x32 (a voxel of shift still moves the pooled image,
so the shifts are applied before pooling), then knn.Projection (fixed seed) to `copy_dims` / `copy_slice_dims`
columns; exact search with faiss, one variant block at a time (memory: one block of training variants).

The radius of each level is calibrated on FRESH patients under the same invariances: `copy_factor` x the
`copy_quantile` of the held-out units' (slices') smallest distance to any training variant. Its false-positive rate
PER PATIENT is measured out of sample, by cross-fitting: the radius of one half of the held-out patients is applied to
the other half, and the flagged patients of both halves are counted (Clopper-Pearson interval).
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy.stats import beta

from vugan.components.evaluator import knn

RANK_BINS = 1024
POOLED_SIZE = 32  # the plane is mean-pooled down to at most this many voxels a side before projecting


# ------------------------------------------------------------------------------------------------ features

def ranked(images: np.ndarray, axes: str = "unit") -> np.ndarray:
    """Each unit's (axes "unit") or each slice's (axes "slice") voxels replaced by their mid-rank in [-1, 1].

    Ranks from a histogram of RANK_BINS bins over [-1, 1] (the units' value range): a voxel's value is the share of
    its unit's voxels in lower bins plus half the share in its own bin. Any increasing remap keeps the order of the
    voxels, so the ranks are unchanged up to the bin width; ties (a clipped background) share one value."""
    x = np.asarray(images, np.float32)
    if axes == "slice":  # [N, H, W, K] -> [N*K, H, W, 1] slices as units of their own
        x = np.moveaxis(x, -1, 1).reshape(-1, x.shape[1], x.shape[2], 1)
    n = len(x)
    flat = x.reshape(n, -1)
    out = np.empty(flat.shape, np.float32)
    for s in range(0, n, 256):  # blocks: the int32 bins of a block, not of the whole set
        bins = np.clip((flat[s:s + 256] + 1.0) * (RANK_BINS / 2.0), 0, RANK_BINS - 1).astype(np.int32)
        m = len(bins)
        bins += (RANK_BINS * np.arange(m, dtype=np.int32))[:, None]
        counts = np.bincount(bins.ravel(), minlength=m * RANK_BINS).astype(np.float32)
        below = np.cumsum(counts.reshape(m, RANK_BINS), axis=1).ravel() - counts
        mid = (below + 0.5 * counts) * (2.0 / flat.shape[1]) - 1.0
        out[s:s + m] = mid[bins]
    return out.reshape(x.shape)


def pool_factor(h: int, w: int) -> int:
    return max(1, min(h, w) // POOLED_SIZE)


def pooled(x: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks of the plane (the plane cropped to a multiple of f)."""
    if f == 1:
        return x
    n, h, w, k = x.shape
    h2, w2 = h // f, w // f
    return x[:, :h2 * f, :w2 * f].reshape(n, h2, f, w2, f, k).mean(axis=(2, 4))


@dataclasses.dataclass(frozen=True)
class Variant:
    """One identity-keeping change: an orientation (reversal, row flip, column flip) and a shift (dy, dx)."""
    reversed: bool
    flip_rows: bool
    flip_cols: bool
    dy: int
    dx: int

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x [N, H, W, K]; the shift (border repeated, as identity_transforms.shifted) after the orientation."""
        return _shifted(_oriented(x, self.reversed, self.flip_rows, self.flip_cols), self.dy, self.dx)

    def describe(self) -> str:
        parts = [name for flag, name in ((self.reversed, "slices reversed"), (self.flip_rows, "flipped rows"),
                                         (self.flip_cols, "flipped columns")) if flag]
        if self.dy or self.dx:
            parts.append(f"shift ({self.dy}, {self.dx})")
        return ", ".join(parts) or "unshifted (an exact copy, or one with its intensities remapped)"


def _oriented(x, rev: bool, fr: bool, fc: bool):
    if rev:
        x = x[..., ::-1]
    if fr:
        x = x[:, ::-1]
    if fc:
        x = x[:, :, ::-1]
    return x


def _shifted(x, dy: int, dx: int) -> np.ndarray:
    """Shift in the plane with the border repeated, by slicing (no index arrays)."""
    x = np.asarray(x, np.float32)
    if not (dy or dx):
        return np.ascontiguousarray(x)
    out = np.empty(x.shape, np.float32)
    h, w = x.shape[1], x.shape[2]
    rs, rd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    cs, cd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[:, rd, cd] = x[:, rs, cs]
    if dy > 0:
        out[:, :dy, cd] = x[:, :1, cs]
    elif dy < 0:
        out[:, h + dy:, cd] = x[:, h - 1:, cs]
    if dx > 0:
        out[:, :, :dx] = out[:, :, dx:dx + 1]
    elif dx < 0:
        out[:, :, w + dx:] = out[:, :, w + dx - 1:w + dx]
    return out


def shifts(max_shift: int) -> list[tuple[int, int]]:
    """Every in-plane shift of at most max_shift voxels per axis, (0, 0) first."""
    return sorted(itertools.product(range(-max_shift, max_shift + 1), repeat=2), key=lambda s: (abs(s[0]) + abs(s[1]), s))


def orientations(with_reversal: bool) -> list[tuple[bool, bool, bool]]:
    return list(itertools.product((False, True) if with_reversal else (False,), (False, True), (False, True)))


def symmetrised(x: np.ndarray, with_reversal: bool) -> np.ndarray:
    """The mean of x over its orientations (the group of reversal, row flip and column flip).

    Why: the mean over a group is the same for g(y) as for y, whatever the group element g, so a flipped or reversed
    copy has the symmetrised rows of its source after the same shift, and only the shifts need searching (25
    variants instead of 200). The orientation of a match is recovered afterwards, on the few matched units only."""
    out = np.zeros(x.shape, np.float32)
    for o in orientations(with_reversal):
        out += _oriented(x, *o)
    return out / len(orientations(with_reversal))


class _Rows:
    """rank -> (shift) -> pool -> symmetrise and project in one matrix product, for one level (units or slices).

    The symmetrisation is linear and each orientation is a permutation (its own transpose), so
    symmetrised(z) @ P == z @ symmetrised(P): it is folded into the fixed projection matrix and costs nothing per
    unit. Pooling commutes with the orientations (the pooled plane is whole blocks)."""

    def __init__(self, shape: tuple, dims: int, with_reversal: bool):
        h, w, k = shape
        self.f = pool_factor(h, w)
        pooled_shape = (h // self.f, w // self.f, k)
        proj = knn.Projection(int(np.prod(pooled_shape)), dims)
        eye = proj.identity
        p = (np.eye(proj.in_dims, dtype=np.float32) if eye else proj.matrix).reshape(*pooled_shape, -1)
        p = symmetrised(np.moveaxis(p, -1, 0), with_reversal)  # each column as a unit [dims, h, w, k]
        self.matrix = np.ascontiguousarray(np.moveaxis(p, 0, -1).reshape(proj.in_dims, -1))

    def __call__(self, ranked_x: np.ndarray, shift: tuple[int, int] = (0, 0), chunk: int = 512) -> np.ndarray:
        out = [knn.flatten(pooled(_shifted(ranked_x[s:s + chunk], *shift), self.f)) @ self.matrix
               for s in range(0, len(ranked_x), chunk)]
        return np.concatenate(out) if out else np.zeros((0, self.matrix.shape[1]), np.float32)


def _nearest_over_shifts(train_ranked: np.ndarray, queries: list[np.ndarray], rows: _Rows, shift_list,
                         block_rows: int, train_groups=None, query_groups=None):
    """For each query set: (smallest distance to any shift of any training row, its training index, its shift
    index). With groups, a query meets only the training rows its group allows (slice positions). All shifted
    training rows are one faiss index (n_train x shifts rows of `dims` floats: 13 MB for 2,000 units)."""
    ref = np.stack([rows(train_ranked, sh) for sh in shift_list], 1)  # [N, S, dims]
    n, n_s = ref.shape[:2]
    q_rows = queries  # already rows (query_rows), so a large synthetic set can be streamed
    best = []
    for qi, q in enumerate(q_rows):
        b_d, b_i = np.full(len(q), np.inf, np.float32), np.zeros(len(q), np.int64)
        pairs = [(np.arange(n), None)] if train_groups is None else train_groups
        for t_sel, allowed in pairs:
            q_sel = np.arange(len(q)) if allowed is None else np.nonzero(np.isin(query_groups[qi], allowed))[0]
            if not len(q_sel) or not len(t_sel):
                continue
            d, i = knn.Index(ref[t_sel].reshape(len(t_sel) * n_s, -1), block_rows).search(q[q_sel], 1)
            b_d[q_sel], b_i[q_sel] = d[:, 0], t_sel[i[:, 0] // n_s] * n_s + i[:, 0] % n_s
        best.append((b_d, b_i // n_s, b_i % n_s))
    return best


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def _cross_fitted_false_positives(d: np.ndarray, patients: np.ndarray, quantile: float, factor: float,
                                  seed: int) -> tuple[int, int]:
    """(fresh patients flagged, fresh patients) when each half of the held-out patients is judged by the radius
    calibrated on the other half: the per-patient false-positive rate of the procedure, out of sample."""
    ids = np.unique(patients)
    if len(ids) < 2:
        return 0, 0
    perm = np.random.default_rng([seed, 23]).permutation(ids)
    halves = [set(perm[: len(ids) // 2]), set(perm[len(ids) // 2:])]
    flagged = 0
    for a, b in (halves, halves[::-1]):
        in_a = np.array([p in a for p in patients])
        r = factor * float(np.quantile(d[in_a], quantile))
        flagged += len(np.unique(patients[~in_a][d[~in_a] < r]))
    return flagged, len(ids)


def _level(train_ranked, hold_ranked, hold_patients, syn_rows, rows, shift_list, cfg, seed, groups=None):
    """Distances, radius, matches and cross-fitted false positives of one level (units or slices)."""
    tg, qg = (None, None) if groups is None else (groups[0], list(groups[1:]))
    (d_h, _, _), (d_s, i_s, s_s) = _nearest_over_shifts(train_ranked, [rows(hold_ranked), syn_rows], rows, shift_list,
                                                        cfg.block_rows, tg, qg)
    radius = cfg.copy_factor * float(np.quantile(d_h, cfg.copy_quantile))
    fp, n_fresh = _cross_fitted_false_positives(d_h, hold_patients, cfg.copy_quantile, cfg.copy_factor, seed)
    return {"radius": radius, "holdout_median": float(np.median(d_h)), "hit": d_s < radius, "distance": d_s,
            "train_index": i_s, "shift": s_s, "fresh_flagged": fp, "fresh_patients": n_fresh}


def _slice_groups(n_train: int, n_hold: int, n_syn: int, k: int):
    """Slice positions: a query slice at position j meets the training slices at j and at the mirrored position
    k-1-j (a pasted slice of a unit whose slice order was reversed); one group per such pair."""
    pos = lambda n: np.tile(np.arange(k), n)  # noqa: E731  (slices are laid out unit by unit, k each)
    t = pos(n_train)
    pairs = [np.array(sorted({j, k - 1 - j})) for j in range((k + 1) // 2)]
    return [(np.nonzero(np.isin(t, p))[0], p) for p in pairs], pos(n_hold), pos(n_syn)


def _named_transform(syn: np.ndarray, source: np.ndarray, max_shift: int, with_reversal: bool) -> str:
    """The orientation and shift that bring ``source`` (one ranked unit or slice) closest to ``syn``: the name the
    verdict gives a match (only run on matched units, so the 8 x 25 tries cost nothing)."""
    best, name = np.inf, ""
    for o in orientations(with_reversal):
        for sh in shifts(max_shift):
            d = float(np.sum((Variant(*o, *sh).apply(source[None])[0] - syn) ** 2))
            if d < best:
                best, name = d, Variant(*o, *sh).describe()
    return name


def _as_units(slices: np.ndarray, k: int) -> np.ndarray:
    """[N*K, H, W, 1] slices (unit by unit) back to [N, H, W, K] units."""
    return np.moveaxis(slices.reshape(-1, k, *slices.shape[1:3]), 1, -1)


def smoothed(images: np.ndarray, sigma: float) -> np.ndarray:
    """In-plane Gaussian blur of every slice (the border repeated), for the "smoothed" level."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(images, np.float32), (0, sigma, sigma, 0), mode="nearest")


def _levels(shape: tuple, cfg) -> dict:
    """The rows of each level: units (every orientation, shifts <= copy_max_shift), the same after smoothing (when
    copy_smooth_sigma > 0) and, for units of more than one slice, single slices (in-plane orientations, shifts <=
    copy_slice_shift)."""
    out = {"unit": _Rows(shape, cfg.copy_dims, True)}
    if cfg.copy_smooth_sigma > 0:
        out["smoothed"] = out["unit"]  # the same rows, fed with smoothed units
    if cfg.copy_slice_match and shape[-1] > 1:
        out["slice"] = _Rows((*shape[:2], 1), cfg.copy_slice_dims, False)
    return out


def query_rows(images: np.ndarray, cfg, chunk: int = 1024) -> dict:
    """The synthetic set's rows of each level, computed `chunk` units at a time (memory: one chunk of ranks), so a
    release can be streamed through them shard by shard (bench/privacy.py)."""
    images = np.asarray(images)
    levels, k = _levels(tuple(images.shape[1:]), cfg), images.shape[-1]
    parts: dict = {name: [] for name in levels}
    for s in range(0, len(images), chunk):
        sl = ranked(images[s:s + chunk], "slice")  # per-slice ranks serve the unit and slice levels (one pass)
        for name, rows in levels.items():
            if name == "smoothed":
                parts[name].append(rows(_as_units(ranked(smoothed(images[s:s + chunk], cfg.copy_smooth_sigma),
                                                          "slice"), k)))
            else:
                parts[name].append(rows(_as_units(sl, k) if name == "unit" else sl))
    return {name: np.concatenate(v) for name, v in parts.items()}


def transformed_copy_report(train_images: np.ndarray, train_patients: np.ndarray, hold_images: np.ndarray,
                            hold_patients: np.ndarray, syn_images: np.ndarray | None, *, cfg, seed: int,
                            syn_rows: dict | None = None, max_named: int = 200) -> tuple[dict, np.ndarray]:
    """The transform-invariant copy test: (metrics for metrics.json, mask of synthetic units that are copies).

    syn_rows: query_rows of the synthetic set, when the caller streamed them (then syn_images may be None, and a
    match is named by its shift only). No patient identifier is written: matches are listed by size and transform.
    """
    train_patients, hold_patients = np.asarray(train_patients).astype(str), np.asarray(hold_patients).astype(str)
    shape = tuple(np.asarray(train_images).shape[1:])
    k = shape[-1]
    rows_of = _levels(shape, cfg)
    syn_rows = syn_rows if syn_rows is not None else query_rows(syn_images, cfg)
    tr_sl, ho_sl = ranked(train_images, "slice"), ranked(hold_images, "slice")
    ranked_sets = {"unit": (_as_units(tr_sl, k), _as_units(ho_sl, k)), "slice": (tr_sl, ho_sl)}
    n_syn = len(syn_rows["unit"])
    levels = {"unit": _level(*ranked_sets["unit"], hold_patients, syn_rows["unit"], rows_of["unit"],
                             shifts(cfg.copy_max_shift), cfg, seed)}
    if "smoothed" in rows_of:
        ranked_sets["smoothed"] = tuple(_as_units(ranked(smoothed(x, cfg.copy_smooth_sigma), "slice"), k)
                                        for x in (train_images, hold_images))
        levels["smoothed"] = _level(*ranked_sets["smoothed"], hold_patients, syn_rows["smoothed"],
                                    rows_of["smoothed"], shifts(cfg.copy_max_shift), cfg, seed)
    if "slice" in rows_of:
        sl = _level(*ranked_sets["slice"], np.repeat(hold_patients, k), syn_rows["slice"], rows_of["slice"],
                    shifts(cfg.copy_slice_shift), cfg, seed, _slice_groups(len(train_images), len(hold_images), n_syn, k))
        j = np.argmin(sl["distance"].reshape(-1, k), axis=1)  # slice rows -> their unit: its closest slice
        sl["slice_row"] = np.arange(n_syn) * k + j
        for key in ("hit", "distance", "train_index", "shift"):
            per = sl[key].reshape(-1, k)
            sl[key] = per.any(1) if key == "hit" else per[np.arange(n_syn), j]
        levels["slice"] = sl
    mask = np.zeros(n_syn, bool)
    matches: dict[str, dict] = {}
    named = 0
    syn_sl = None
    for name, lv in levels.items():
        tr = ranked_sets[name][0]
        max_shift = cfg.copy_slice_shift if name == "slice" else cfg.copy_max_shift
        new_hits = np.nonzero(lv["hit"] & ~mask)[0]  # a unit matched whole is not counted again by a slice
        mask |= lv["hit"]
        for s in new_hits:
            t_row = int(lv["train_index"][s])
            m = matches.setdefault(train_patients[t_row // k if name == "slice" else t_row],
                                   {"units": 0, "transforms": {}})
            m["units"] += 1
            if syn_images is not None and named < max_named:  # orientation too: try them on this one unit
                named += 1
                x = np.asarray(syn_images)[s:s + 1]
                syn_sl = ranked(smoothed(x, cfg.copy_smooth_sigma) if name == "smoothed" else x, "slice")
                q = syn_sl[lv["slice_row"][s] - s * k] if name == "slice" else _as_units(syn_sl, k)[0]
                t = _named_transform(q, tr[t_row], max_shift, name != "slice")
            else:
                dy, dx = shifts(max_shift)[lv["shift"][s]]
                t = f"shift ({dy}, {dx}) up to orientation" if dy or dx else "unshifted, up to orientation"
            t += {"slice": " (one slice)", "smoothed": " (blurred: matched after smoothing)"}.get(name, "")
            m["transforms"][t] = m["transforms"].get(t, 0) + 1
    n_fresh = levels["unit"]["fresh_patients"]
    fp = min(sum(lv["fresh_flagged"] for lv in levels.values()), n_fresh)
    lo, hi = clopper_pearson(fp, n_fresh) if n_fresh else (None, None)
    metrics = {
        "rule": (f"a synthetic unit (or one of its slices) closer to a training unit (slice) in any orientation "
                 f"(slice reversal, row and column flips) and shift <= {cfg.copy_max_shift} voxels "
                 f"(<= {cfg.copy_slice_shift} for slices), voxels ranked within each slice"
                 + (f", also after an in-plane blur of sigma {cfg.copy_smooth_sigma:g}" if "smoothed" in levels else "")
                 + ", than "
                 f"{cfg.copy_factor:g} x the distance within which the nearest {100 * cfg.copy_quantile:g}% of "
                 "held-out units (slices) sit under the same search"),
        "copied_patients": len(matches), "train_patients": int(len(np.unique(train_patients))),
        "n_copies": int(mask.sum()), "n_synthetic": int(n_syn),
        "radius": {name: lv["radius"] for name, lv in levels.items()},
        "holdout_nearest_median": {name: lv["holdout_median"] for name, lv in levels.items()},
        "matches": [{"units": m["units"], "transforms": dict(sorted(m["transforms"].items(), key=lambda kv: -kv[1])[:3])}
                    for _, m in sorted(matches.items(), key=lambda kv: -kv[1]["units"])][:10],
        "false_positive_rate_per_patient": {"flagged": int(fp), "fresh_patients": int(n_fresh),
                                            "rate": fp / n_fresh if n_fresh else None, "ci95": [lo, hi],
                                            "how": "cross-fitted: each half of the held-out patients judged by the "
                                                   "radii calibrated on the other half"},
    }
    return metrics, mask
