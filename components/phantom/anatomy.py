"""Per-patient spine anatomy of the phantom: level sizes, discs, posterior elements and the sagittal curve.

Everything is in millimetres in a curve-aligned frame: ``s`` is arc length along the spine's body centre line,
growing caudally from the top of C1, and ``d`` the signed distance from that line along its normal, positive
anteriorly. The renderer (``render.py``) turns this description into voxels.

Base sizes follow adult averages (body height C ~14, T 16-25, L ~28 mm; AP depth C ~15, T 18-30, L ~34 mm;
discs thin in the neck and chest, ~10 mm in the lumbar spine); every patient scales and jitters them.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.ndimage import gaussian_filter1d

from vugan.components.schema import LEVEL_CODES

# Drawn segments: the 26 labelled levels C1..S1, then the fused sacral segments S2..S5 (drawn, never labelled).
NAMES = tuple(LEVEL_CODES) + ("S2", "S3", "S4", "S5")
CODES = np.array([LEVEL_CODES.get(n, 0) for n in NAMES])
N = len(NAMES)
REGION = np.array(["C"] * 7 + ["T"] * 12 + ["L"] * 5 + ["S"] * 5)
_T = np.linspace(0.0, 1.0, 12)


def _table() -> dict[str, np.ndarray]:
    """Base values per drawn segment (mm, degrees)."""
    c, t, l, s = slice(0, 7), slice(7, 19), slice(19, 24), slice(24, 29)
    z = lambda: np.zeros(N)  # noqa: E731
    h, dep, w, disc = z(), z(), z(), z()
    h[c] = [9, 16, 13.5, 13.5, 14, 14, 14.5]
    h[t] = 16 + 8.5 * _T
    h[l] = [26.5, 27.5, 28.5, 28.5, 27.5]
    h[s] = [27, 21, 16, 12, 9]
    dep[c] = [8, 15, 15, 15.5, 16, 16.5, 17]
    dep[t] = 18 + 12 * _T
    dep[l] = [32, 33, 34, 35, 35]
    dep[s] = [33, 25, 19, 14, 10]
    w[c] = [13, 8.5, 8.5, 9, 9.5, 10, 10.5]   # half width left-right
    w[t] = 11.5 + 5.5 * _T
    w[l] = [20, 21, 22, 23, 23.5]
    w[s] = [23, 20, 16, 12, 9]
    disc[c] = [0, 4.5, 4.5, 4.8, 5, 5, 4.8]   # disc *below* the segment
    disc[t] = 3.6 + 2.8 * _T
    disc[l] = [8.5, 9.5, 10.5, 11, 9.5]
    disc[s] = [1.5, 1.5, 1.5, 1.5, 0]
    canal = np.r_[[19, 16, 14, 14, 14, 14, 14], 13 + 0 * _T, [15, 15.5, 16, 15, 14], [10, 8, 6, 5, 4]]
    canal_w = np.r_[[14, 12, 12, 12, 12, 12, 12], 8.5 + 1.0 * _T, [10, 10.5, 11, 11.5, 12], [11, 9, 7, 5, 4]]
    cord = np.r_[[5.5, 5, 4.6, 4.6, 4.5, 4.4, 4.2], 3.8 + 0 * _T, [2.5, 0, 0, 0, 0], [0] * 5]  # AP half size
    cord[17:19] = [3.6, 3.2]
    sp_len = np.r_[[9, 22, 14, 15, 16, 18, 28], [30, 32, 36, 40, 42, 42, 42, 40, 38, 34, 30, 28],
                   [28, 28, 27, 25, 20], [10, 9, 8, 6, 4]]
    sp_ang = np.r_[[5, 15, 20, 20, 20, 18, 12], [25, 35, 45, 55, 60, 60, 60, 55, 50, 40, 30, 20],
                   [5, 5, 5, 8, 10], [40, 45, 50, 50, 50]]  # degrees below the horizontal
    sp_r = np.r_[[3.5, 5, 3, 3, 3, 3.2, 3.6], 3.6 + 0 * _T, [7, 7.5, 7.5, 7, 6], [4, 3.5, 3, 2.5, 2]]
    sp_w = np.r_[[4, 6, 3, 3, 3, 3.5, 4], 4 + 0 * _T, [5, 5, 5, 5, 5], [4, 4, 3, 3, 2]]
    return dict(h=h, dep=dep, w=w, disc=disc, canal=canal, canal_w=canal_w, cord=cord,
                sp_len=sp_len, sp_ang=sp_ang, sp_r=sp_r, sp_w=sp_w)


@dataclasses.dataclass
class Anatomy:
    """One patient's spine. Arrays are indexed by drawn segment (``NAMES``)."""

    h: np.ndarray          # body height along s
    dep: np.ndarray        # body AP depth
    w: np.ndarray          # body half width (left-right)
    disc: np.ndarray       # height of the disc below each segment
    canal: np.ndarray      # spinal canal AP depth
    canal_w: np.ndarray    # canal half width
    cord: np.ndarray       # cord AP half size (0 below the conus)
    sp_len: np.ndarray     # spinous process length
    sp_ang: np.ndarray     # spinous process slope below horizontal (deg)
    sp_r: np.ndarray       # spinous process half thickness (in the sagittal plane)
    sp_w: np.ndarray       # spinous process half width (left-right)
    wedge: np.ndarray      # relative loss of anterior body height (thoracic > 0, L5 < 0)
    nucleus: np.ndarray    # T2 brightness factor of each disc's nucleus (1 healthy, <0.6 desiccated)
    marrow: np.ndarray     # per-body marrow brightness factor
    top: np.ndarray        # s of each body's upper endplate
    bottom: np.ndarray     # s of each body's lower endplate
    skin_post: np.ndarray  # d of the posterior skin at each level (negative)
    fat_post: np.ndarray   # posterior subcutaneous fat thickness
    ant_depth: float       # abdomen depth in front of the lumbar bodies (thin patients show the belly wall)
    curve_s: np.ndarray    # samples of the centre line: arc length ...
    curve_p: np.ndarray    # ... position (y, z) in mm (RAS world, y anterior, z superior)
    curve_t: np.ndarray    # ... unit tangent pointing caudally
    curve_n: np.ndarray    # ... unit normal pointing anteriorly
    midline_x: float       # world x of the mid-sagittal plane

    @property
    def centre(self) -> np.ndarray:
        return 0.5 * (self.top + self.bottom)

    def point(self, s: float, d: float = 0.0) -> np.ndarray:
        """World (y, z) of the curve-frame point (s, d)."""
        i = int(np.clip(np.searchsorted(self.curve_s, s), 0, len(self.curve_s) - 1))
        return self.curve_p[i] + (s - self.curve_s[i]) * self.curve_t[i] + d * self.curve_n[i]


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient: global size, per-level jitter, disc health, fat, and the sagittal curve."""
    base = _table()
    size = rng.normal(1.0, 0.06)
    jit = lambda sd: rng.normal(1.0, sd, N)  # noqa: E731
    g = {k: v * size for k, v in base.items() if k not in ("sp_ang", "cord")}
    h = g["h"] * jit(0.04)
    dep = g["dep"] * jit(0.04)
    w = g["w"] * jit(0.03)
    disc = base["disc"] * size * rng.normal(1.0, 0.1) * jit(0.08)
    canal = g["canal"] * rng.normal(1.0, 0.07) * jit(0.03)
    canal_w = g["canal_w"] * rng.normal(1.0, 0.05)
    cord = base["cord"] * rng.normal(1.0, 0.06)
    if rng.random() < 0.5:  # conus ends at L1 or L1/L2
        cord[19] = 0.0
    # Desiccated discs become more likely caudally (degeneration); they lose height as well.
    p_degen = np.where(REGION == "L", 0.12 + 0.06 * np.arange(N) / N, 0.06)
    degen = rng.random(N) < p_degen
    nucleus = np.where(degen, rng.uniform(0.25, 0.55, N), rng.uniform(0.85, 1.05, N))
    disc = np.where(degen & (REGION != "S"), disc * 0.75, disc)
    marrow = rng.normal(1.0, 0.05, N) * rng.normal(1.0, 0.08)
    # Layout along s: C1 (its anterior arch) sits in front of C2's dens, so it has no disc below it.
    top, bottom = np.zeros(N), np.zeros(N)
    s = 0.0
    for i in range(N):
        top[i], bottom[i] = s, s + h[i]
        s = bottom[i] + disc[i]
    fat = rng.uniform(5, 28)
    skin_post = -np.r_[np.full(7, 58.0), np.full(12, 70.0), np.full(5, 80.0), np.full(5, 85.0)] * size \
        - fat * np.r_[np.full(7, 0.6), np.full(12, 0.8), np.ones(10)]
    curve_s, curve_p, curve_t, curve_n = _curve(rng, top, bottom)
    return Anatomy(h=h, dep=dep, w=w, disc=disc, canal=canal, canal_w=canal_w, cord=cord,
                   sp_len=g["sp_len"] * jit(0.08), sp_ang=base["sp_ang"] + rng.normal(0, 4, N),
                   sp_r=g["sp_r"], sp_w=g["sp_w"], wedge=_wedge(rng), nucleus=nucleus, marrow=marrow, top=top, bottom=bottom,
                   skin_post=skin_post, fat_post=fat * np.r_[np.full(7, 0.6), np.full(12, 0.8), np.ones(10)],
                   ant_depth=float(rng.uniform(110, 220)),
                   curve_s=curve_s, curve_p=curve_p, curve_t=curve_t, curve_n=curve_n,
                   midline_x=float(rng.uniform(-3.0, 3.0)))


def _wedge(rng: np.random.Generator) -> np.ndarray:
    wedge = np.zeros(N)
    wedge[7:19] = rng.uniform(0.03, 0.10) * np.sin(np.linspace(0.3, np.pi - 0.3, 12))  # most at mid-thoracic
    wedge[22:24] = (-0.04, -0.08)  # L4, L5 taller in front (lordosis)
    return wedge * rng.normal(1.0, 0.2, N)


def _curve(rng: np.random.Generator, top: np.ndarray, bottom: np.ndarray, step: float = 0.5, pad: float = 400.0):
    """Centre line with cervical lordosis, thoracic kyphosis, lumbar lordosis and sacral kyphosis.

    The tangent angle theta (0 = straight down, positive = heading anteriorly) changes at a constant rate within
    each region, smoothed over ~25 mm so the junctions have no kinks; the line extends straight beyond both ends so
    every voxel of the field of view has a nearest point on it.
    """
    lord_c, kyph, lord_l, sacral = (np.radians(rng.uniform(*r)) for r in ((8, 40), (25, 55), (40, 70), (40, 75)))
    s = np.arange(-pad, bottom[-1] + pad, step)
    kappa = np.zeros_like(s)
    spans = [(top[1], bottom[6], -lord_c), (top[7], bottom[18], kyph), (top[19], top[24], -lord_l),
             (top[24], bottom[-1], sacral)]
    for a, b, total in spans:
        kappa[(s >= a) & (s < b)] = total / (b - a)
    kappa = gaussian_filter1d(kappa, 25.0 / step)
    theta0 = 0.5 * lord_c + np.radians(rng.normal(0.0, 5.0))
    theta = theta0 + np.cumsum(kappa) * step
    theta -= np.interp(0.0, s, theta) - theta0
    t = np.stack([np.sin(theta), -np.cos(theta)], axis=1)
    n = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    p = np.cumsum(t, axis=0) * step
    p -= p[np.searchsorted(s, 0.0)]
    return s, p, t, n
