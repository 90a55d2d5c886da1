"""Euclidean distances between large unit sets, computed in row blocks and reduced on the fly (pure numpy).

A full 10,000 x 10,000 distance matrix is only 400 MB, but the flattened 9x64x64 inputs and the float64 temporaries
of a naive computation are not; so each block is ||a||^2 + ||b||^2 - 2 a.b^T in float32 (one BLAS call) and only what
the attacks need is kept: per-row minimum and its index, per-row median, and the k globally smallest distances with
their rows (from which the density attack's radius and per-row counts follow exactly in a single pass).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np


def flatten(x: np.ndarray) -> np.ndarray:
    """[N, ...] -> contiguous float32 [N, D]."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)


def distance_blocks(a: np.ndarray, b: np.ndarray, block_rows: int = 1024) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (row slice of a, float32 [rows, len(b)] Euclidean distances) block by block.

    Float32 cancellation makes ||a||^2 + ||b||^2 - 2ab slightly negative for (near-)identical rows; it is clipped at
    0, so distances below about 1e-3 x ||a|| are not resolved (irrelevant for the attacks, which rank).
    """
    a, b = flatten(a), flatten(b)
    bb = np.einsum("ij,ij->i", b, b)
    for start in range(0, len(a), block_rows):
        blk = a[start:start + block_rows]
        d2 = blk @ b.T
        d2 *= -2.0
        d2 += np.einsum("ij,ij->i", blk, blk)[:, None]
        d2 += bb[None, :]
        np.maximum(d2, 0.0, out=d2)
        yield slice(start, start + len(blk)), np.sqrt(d2, out=d2)


@dataclasses.dataclass(frozen=True)
class QueryDistances:
    """Per-query summaries of the distances to a reference set."""

    nearest: np.ndarray  # [N] distance to the closest reference row
    nearest_index: np.ndarray  # [N] index of that row
    median: np.ndarray  # [N] median distance to all reference rows (nan when not asked for)
    count_within: np.ndarray  # [N] references within `radius` (0 when not asked for)
    radius: float  # the density radius actually used (nan when not asked for)


def query_distances(queries: np.ndarray, refs: np.ndarray, *, block_rows: int = 1024, median: bool = False,
                    density_quantile: float | None = None) -> QueryDistances:
    """Nearest reference per query, optionally the median distance and the density count.

    Args:
      density_quantile: q in (0, 1): the radius r is the k-th smallest of all N x M query-reference distances with
        k = ceil(q N M), and count_within[i] = #{j : d(i, j) <= r}. Memory is O(k) (the k smallest values so far and
        their rows), so q = 1% of 10^4 x 10^4 pairs keeps 10^6 values.
    """
    n, m = len(queries), len(refs)
    nearest, nearest_index = np.empty(n, np.float32), np.empty(n, np.int64)
    med = np.full(n, np.nan, np.float32)
    k = None if density_quantile is None else max(1, int(np.ceil(density_quantile * n * m)))
    kept_d, kept_row = np.empty(0, np.float32), np.empty(0, np.int64)
    for rows, d in distance_blocks(queries, refs, block_rows):
        idx = np.argmin(d, axis=1)
        nearest_index[rows] = idx
        nearest[rows] = d[np.arange(len(d)), idx]
        if median:
            med[rows] = np.median(d, axis=1)
        if k is not None:
            flat = d.ravel()
            take = min(k, flat.size)
            part = np.argpartition(flat, take - 1)[:take] if take < flat.size else np.arange(flat.size)
            kept_d = np.concatenate([kept_d, flat[part]])
            kept_row = np.concatenate([kept_row, part // m + rows.start])
            if len(kept_d) > k:
                sel = np.argpartition(kept_d, k - 1)[:k]
                kept_d, kept_row = kept_d[sel], kept_row[sel]
    if k is None:
        return QueryDistances(nearest, nearest_index, med, np.zeros(n, np.int64), float("nan"))
    radius = float(kept_d.max())
    # Distances equal to the radius outside the kept set (exact ties) are not counted; with float data ties are rare.
    counts = np.bincount(kept_row, minlength=n).astype(np.int64)
    return QueryDistances(nearest, nearest_index, med, counts, radius)


def nearest_in_subsets(queries: np.ndarray, refs: np.ndarray, subsets: list[np.ndarray],
                       block_rows: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each query to its nearest reference within each index subset of refs, and that reference.

    One pass over the distance blocks serves every subset (used for equal-size subsampling of the larger set).
    Returns: (distances [len(subsets), N] float32, indices into refs [len(subsets), N]).
    """
    dist = np.empty((len(subsets), len(queries)), np.float32)
    index = np.empty((len(subsets), len(queries)), np.int64)
    subsets = [np.asarray(s, np.int64) for s in subsets]
    for rows, d in distance_blocks(queries, refs, block_rows):
        for s, idx in enumerate(subsets):
            sub = d[:, idx]
            j = np.argmin(sub, axis=1)
            index[s, rows] = idx[j]
            dist[s, rows] = sub[np.arange(len(sub)), j]
    return dist, index
