"""The one k-nearest-neighbour engine of every distance attack and memorisation check.

Two steps, both with bounded memory:
  * a FIXED projection: rows wider than `dims` (a 9x64x64 unit is 36,864 numbers) go through one Gaussian random
    projection to `dims` columns, drawn from a constant seed, so every run, the evaluator and `vugan audit` measure
    in the same space. Johnson-Lindenstrauss: at 256 columns a distance keeps its length to about 5% (one standard
    deviation), ranks of clearly different distances are kept, and copies (distance ~0) stay at ~0. Rows are
    projected `chunk` at a time, so a 100,000-unit set is never held as float32 pixels at once.
  * exact search in the projected space with faiss-cpu (`IndexFlatL2`: BLAS-blocked brute force, multithreaded,
    about 4x faster than the same search in numpy on this machine), queried `block_rows` at a time.

Distances returned are Euclidean (faiss gives squared L2; the square root is taken here).
"""
from __future__ import annotations

import dataclasses

import numpy as np

PROJECTION_SEED = 20260511  # fixed: the projection is part of the method, not of a run


def flatten(x: np.ndarray) -> np.ndarray:
    """[N, ...] -> contiguous float32 [N, D]."""
    x = np.asarray(x)
    return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Projection:
    """x [N, D] -> x P [N, dims] with P ~ N(0, 1/dims), or the identity when D <= dims (or dims == 0)."""

    in_dims: int
    dims: int = 256
    chunk: int = 4096

    @property
    def identity(self) -> bool:
        return self.dims == 0 or self.in_dims <= self.dims

    @property
    def matrix(self) -> np.ndarray:
        rng = np.random.default_rng([PROJECTION_SEED, self.in_dims, self.dims])
        return (rng.standard_normal((self.in_dims, self.dims), dtype=np.float32) / np.sqrt(self.dims)).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if self.identity:
            return flatten(x)
        p = self.matrix
        out = np.empty((n, self.dims), np.float32)
        for start in range(0, n, self.chunk):
            out[start:start + self.chunk] = flatten(x[start:start + self.chunk]) @ p
        return out

    def describe(self) -> str:
        return ("exact Euclidean distances" if self.identity else
                f"Euclidean distances after a fixed Gaussian random projection {self.in_dims} -> {self.dims}")


def project(x: np.ndarray, dims: int) -> np.ndarray:
    x = np.asarray(x)
    return Projection(int(np.prod(x.shape[1:])), dims)(x)


class Index:
    """Exact k-NN over `refs` (already projected rows)."""

    def __init__(self, refs: np.ndarray, block_rows: int = 4096):
        import faiss

        self.refs = flatten(refs)
        self.block_rows = block_rows
        self._index = faiss.IndexFlatL2(self.refs.shape[1])
        if len(self.refs):
            self._index.add(self.refs)

    def __len__(self) -> int:
        return len(self.refs)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(distances [N, k] float32, indices [N, k] int64) of the k nearest refs of each query, nearest first."""
        q = flatten(queries)
        k = min(k, len(self.refs))
        if k < 1:
            raise ValueError("k-NN search against an empty reference set")
        dist, idx = np.empty((len(q), k), np.float32), np.empty((len(q), k), np.int64)
        for start in range(0, len(q), self.block_rows):
            d2, i = self._index.search(q[start:start + self.block_rows], k)
            dist[start:start + len(d2)] = np.sqrt(np.maximum(d2, 0.0))
            idx[start:start + len(d2)] = i
        return dist, idx

    def count_within(self, queries: np.ndarray, radius: float) -> np.ndarray:
        """Number of refs within `radius` (inclusive) of each query; memory bounded by the block size."""
        q = flatten(queries)
        counts = np.zeros(len(q), np.int64)
        r2 = float(radius) ** 2
        for start in range(0, len(q), self.block_rows):
            lims, _, _ = self._index.range_search(q[start:start + self.block_rows], r2 * (1 + 1e-6) + 1e-12)
            counts[start:start + len(lims) - 1] = np.diff(lims)
        return counts


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Full [len(a), len(b)] Euclidean distance matrix (float32); only for small b (medians, quantiles)."""
    a, b = flatten(a), flatten(b)
    d2 = a @ b.T
    d2 *= -2.0
    d2 += np.einsum("ij,ij->i", a, a)[:, None]
    d2 += np.einsum("ij,ij->i", b, b)[None, :]
    return np.sqrt(np.maximum(d2, 0.0, out=d2), out=d2)
