"""Rasterise one phantom patient into a sagittal MRI volume and a vertebral-body label volume (RAS layout).

Every voxel of a sagittal plane is mapped once to the spine's curve frame (``s`` along the centre line, ``d``
along its anterior normal; see ``anatomy.py``); each slice then only compares those two maps with per-level
sizes that shrink with the slice's left-right distance from the midline, which is what makes parasagittal slices
differ (bodies narrow, pedicles and facet columns appear, the canal and cord vanish). Tissues are painted as
class ids, turned into intensities by a T1- or T2-like table, textured, blurred a little (partial volume), and
given a smooth multiplicative bias field and Rician noise.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from vugan.components.phantom.anatomy import CODES, REGION, Anatomy

AIR, FAT, MUSCLE, CORTEX, MARROW, ANNULUS, NUCLEUS, CSF, CORD, PMARROW, VISCERA, LUNG, VESSEL, BRAIN, BOWEL = range(15)
# Relative intensity per class (x1000 on disk). T1: fat and marrow bright, CSF dark, discs intermediate;
# T2 (fast spin echo): CSF and the disc nucleus bright, fat still fairly bright, marrow intermediate.
_T1 = np.array([0, 900, 330, 50, 640, 300, 380, 120, 470, 560, 390, 25, 60, 460, 360], np.float32)
_T2 = np.array([0, 700, 230, 40, 440, 170, 860, 960, 430, 380, 460, 25, 70, 540, 520], np.float32)
# Fine (trabecular/speckle) and coarse (muscle fibre) texture amplitude per class.
_FINE = np.array([0, .05, .08, .10, .10, .08, .08, .04, .06, .10, .06, .10, .08, .05, .12], np.float32)
_COARSE_F = np.array([0, .04, .10, 0, .06, .03, .04, .02, .02, .04, 0, 0, .05, 0, 0], np.float32)


def _rrect(a, b, ha, hb, r):
    """Signed distance to an axis-aligned rectangle of half sizes (ha, hb) with corner radius r (negative inside)."""
    r = np.minimum(r, np.minimum(ha, hb))
    qa, qb = np.abs(a) - ha + r, np.abs(b) - hb + r
    return np.hypot(np.maximum(qa, 0), np.maximum(qb, 0)) + np.minimum(np.maximum(qa, qb), 0) - r


def _capsule(a, b, a0, b0, da, db, length):
    """Distance to the segment from (a0, b0) along unit (da, db) over ``length``."""
    t = np.clip((a - a0) * da + (b - b0) * db, 0, length)
    return np.hypot(a - a0 - t * da, b - b0 - t * db)


class Plane:
    """Curve-frame maps of one sagittal plane, the slice-independent tissues, and index sets for the rest.

    ``s`` and ``d`` are smooth, so they are computed on a 4x coarser grid (nearest curve point by k-d tree) and
    interpolated bilinearly; per-slice work then touches only the index sets that depend on left-right position.
    """

    def __init__(self, an: Anatomy, ys: np.ndarray, zs: np.ndarray):
        self.shape = (len(ys), len(zs))
        s, d = self._curve_frame(an, ys, zs)
        self.s, self.d = s, d
        c = an.centre
        interp = lambda arr: np.interp(s, c, arr).astype(np.float32)  # noqa: E731  no steps at level borders
        k = np.clip(np.searchsorted(0.5 * (an.bottom[:-1] + an.top[1:]), s), 0, len(c) - 1)
        j = np.clip(np.searchsorted(c, s) - 1, 0, len(c) - 2)
        dep, canal = interp(an.dep), interp(an.canal)
        skin_post = interp(an.skin_post) - 0.8 * np.clip(-s, 0, None)  # the occiput bulges backwards
        ant_cp = np.where(REGION == "C", 52.0, np.where(REGION == "T", 260.0,
                                                        np.where(REGION == "L", an.ant_depth, 140.0)))
        ant_cp[7:9] = (105.0, 190.0)  # neck -> chest: the skin steps forward over T1-T2 (jugular notch)
        skin_ant = dep / 2 + interp(ant_cp)
        post_wall = -dep / 2
        front = d - dep / 2
        self.post_wall, self.front, self.dep = post_wall, front, dep
        self.canal_back = post_wall - 1.5 - canal
        inside = (d > skin_post) & (d < skin_ant)
        self.base = self._base(an, s, d, k, front, inside, skin_post, skin_ant, interp(an.fat_post))
        # Index sets of the x-dependent parts.
        reg = REGION[k]
        upper_airway = ((reg == "C") | (k <= 9)) & inside
        lo = np.where(reg == "C", 3 + 1.2 * k, 12.0)
        self.airway = np.flatnonzero(upper_airway & (front > lo) & (front < lo + 15 + 0.3 * k))
        self.lung = np.flatnonzero((reg == "T") & (k <= 16) & (front > 10) & inside
                                   & (self.base != VISCERA))
        self.ventral = np.flatnonzero(inside & (front > -dep) & (front < 36) & (k >= 8))
        head = s < an.top[0] - 2
        up = np.clip(an.top[0] - s, 0, None)
        self.clivus = np.flatnonzero(head & (d > -6 + 0.5 * up) & (d < 10 + 0.9 * up))
        spine = np.flatnonzero((d > self.canal_back - 2) & (d < dep / 2 + 4) & (s > an.top[0] - 40))
        self.spine = spine
        self.sp = dict(s=s[spine], d=d[spine], k=k[spine], j=j[spine], u=(s - c[k])[spine],
                       v=(s - 0.5 * (an.bottom[j] + an.top[j + 1]))[spine], dep=dep[spine], canal=canal[spine],
                       canal_w=interp(an.canal_w)[spine], cord=interp(an.cord)[spine],
                       post_wall=post_wall[spine], canal_back=self.canal_back[spine])
        self.windows = [self._window(an, i) for i in range(len(c))]

    @staticmethod
    def _curve_frame(an: Anatomy, ys: np.ndarray, zs: np.ndarray, stride: int = 4):
        from scipy.ndimage import map_coordinates

        cy, cz = ys[::stride], zs[::stride]
        cy = np.append(cy, cy[-1] + stride * (ys[1] - ys[0]))
        cz = np.append(cz, cz[-1] + stride * (zs[1] - zs[0]))
        yy, zz = np.meshgrid(cy, cz, indexing="ij")
        pts = np.stack([yy.ravel(), zz.ravel()], axis=1)
        _, idx = cKDTree(an.curve_p).query(pts)
        rel = pts - an.curve_p[idx]
        s = (an.curve_s[idx] + np.einsum("ij,ij->i", rel, an.curve_t[idx])).reshape(yy.shape)
        d = np.einsum("ij,ij->i", rel, an.curve_n[idx]).reshape(yy.shape)
        gi, gj = np.meshgrid(np.arange(len(ys)) / stride, np.arange(len(zs)) / stride, indexing="ij")
        coords = np.stack([gi.ravel(), gj.ravel()])
        return (map_coordinates(s, coords, order=1).astype(np.float32),
                map_coordinates(d, coords, order=1).astype(np.float32))

    @staticmethod
    def _base(an, s, d, k, front, inside, skin_post, skin_ant, fat_post) -> np.ndarray:
        """Tissues that do not change across the few centimetres of left-right coverage."""
        cls = np.full(s.shape, AIR, np.uint8)
        cls[inside] = MUSCLE
        cls[inside & ((d < skin_post + fat_post) | (d > skin_ant - 6))] = FAT
        reg = REGION[k]
        c = an.centre
        chest = inside & (s > c[7]) & (s < c[20]) & (front > 6)
        cls[chest & (s < c[11]) & (front < 16 + 20 * np.clip((s - c[9]) / (c[11] - c[9]), 0, 1))] = FAT  # mediastinum
        cls[chest & (s < c[11]) & (front >= 16 + 20 * np.clip((s - c[9]) / (c[11] - c[9]), 0, 1))] = LUNG
        # Heart: an ellipse in front of T5-T9; liver under a domed diaphragm down to about L2.
        heart = ((s - c[13]) / (0.5 * (c[16] - c[10]))) ** 2 + ((front - 75) / 62) ** 2 < 1
        cls[chest & heart & (front > 14)] = VISCERA
        dome = c[16] + 0.5 * (c[17] - c[16]) - 30 * np.exp(-((front - 70) / 60) ** 2)
        belly = inside & (front > 2) & (s > dome) & ((reg == "T") | (reg == "L") | (reg == "S"))
        cls[belly & (front < 28)] = FAT
        cls[belly & (front >= 28) & (d < skin_ant - 16)] = VISCERA
        gut = s > c[21] + 12 * np.sin(front / 17.0 + an.ant_depth)
        cls[belly & (front >= 28) & (d < skin_ant - 16) & gut] = BOWEL
        cls[belly & (d >= skin_ant - 16) & (d < skin_ant - 6)] = MUSCLE  # abdominal wall
        # Skull base: cerebellum behind the canal, occipital bone around it.
        head = s < an.top[0] - 2
        up = np.clip(an.top[0] - s, 0, None)
        canal_back = -an.dep[1] / 2 - 1.5 - an.canal[0]
        occ = canal_back - 4 - 0.9 * np.clip(up - 4, 0, None)
        cls[head & (d < canal_back) & (d > occ)] = BRAIN
        cls[head & (d <= occ) & (d > occ - 6)] = PMARROW
        return cls

    def _window(self, an: Anatomy, i: int) -> dict:
        """Posterior-element geometry of vertebra i, evaluated once on the pixels near it."""
        h, c = an.h[i], an.centre[i]
        d_cp = -an.dep[i] / 2 - 1.5 - an.canal[i]
        ang = np.radians(an.sp_ang[i])
        reach = an.sp_len[i] + an.sp_r[i] + 6
        sel = np.flatnonzero((self.s > an.top[i] - 8) & (self.s < an.bottom[i] + reach)
                             & (self.d > d_cp - reach) & (self.d < -an.dep[i] / 2 + 4))
        s, d = self.s[sel], self.d[sel]
        root_s, root_d = c + 0.15 * h, d_cp - 3.0
        return dict(
            sel=sel, i=i,
            lamina=_rrect(s - (c + 0.25 * h), d - (d_cp - 3.0), 0.42 * h, 3.0, 2.0),
            spine=_capsule(s, d, root_s, root_d, np.sin(ang), -np.cos(ang), an.sp_len[i]) - an.sp_r[i],
            pillar=_rrect(s - (c + 0.3 * h), d - (d_cp + 1.0), 0.5 * h, 6.0, 3.5),
            pedicle=(s > an.top[i] + 1) & (s < c + 0.15 * h) & (d > d_cp) & (d < -an.dep[i] / 2),
            foramen=(s >= c + 0.15 * h) & (s < an.bottom[i] + an.disc[i] + 1) & (d > d_cp) & (d < -an.dep[i] / 2),
            root=np.hypot(s - (c + 0.45 * h), d - (-an.dep[i] / 2 - 0.45 * an.canal[i])) - 2.4,
        )


def paint_slice(an: Anatomy, pl: Plane, x: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue classes, body labels and a brightness gain (nucleus, marrow) of the slice at world x (flat arrays)."""
    xr = abs(x - an.midline_x)
    xs = x - an.midline_x  # signed: the aorta lies left of the midline (negative x in RAS)
    cls = pl.base.copy()
    lab = np.zeros(cls.shape, np.uint8)
    gain = np.ones(cls.shape, np.float32)
    if xr < 9:
        cls[pl.airway] = AIR
    if xr > 24:
        cls[pl.lung] = LUNG
    if xr < 14:
        cls[pl.clivus] = MARROW
    # Great vessels and psoas in front of / beside the bodies.
    v = pl.ventral
    front, k = pl.front[v], np.clip(np.searchsorted(0.5 * (an.bottom[:-1] + an.top[1:]), pl.s[v]), 0, 28)
    sub = cls[v]
    thor = REGION[k] == "T"
    sub[(k <= 22) & (np.hypot(xs + np.where(thor, 16, 11), front - 13) < 11)] = VESSEL  # aorta
    sub[(REGION[k] == "L") & (k <= 22) & (np.hypot(xs - 17, front - 12) < 10)] = VESSEL  # vena cava
    if xr > 21:
        sub[(k >= 19) & (front > -pl.dep[v]) & (front < 14)] = MUSCLE  # psoas
    cls[v] = sub
    # Spinal canal (CSF), posterior longitudinal ligament, epidural fat, cord / cauda equina.
    p, idx = pl.sp, pl.spine
    s, d, k = p["s"], p["d"], p["k"]
    reg = REGION[k]
    sub = cls[idx]
    cw = p["canal_w"]
    ell = np.sqrt(np.clip(1 - (xr / cw) ** 2, 0, None))
    canal = (xr < cw) & (d < p["post_wall"] - 1.5) & (d > p["post_wall"] - 1.5 - p["canal"] * (0.35 + 0.65 * ell))
    sub[canal] = CSF
    sub[(xr < cw) & (d >= p["post_wall"] - 1.5) & (d < p["post_wall"] + 0.3) & (s > an.top[1])] = CORTEX
    sub[canal & (d < p["canal_back"] + np.where(reg == "C", 1.0, 3.0) + 2 * (1 - ell))] = FAT
    cc = p["post_wall"] - 1.5 - 0.5 * p["canal"]
    cord = p["cord"] > 0.3
    sub[cord & (((d - cc) / np.maximum(p["cord"], 1e-3)) ** 2 + (xr / (1.4 * p["cord"] + 1e-3)) ** 2 < 1)] = CORD
    if xr < 6:  # cauda equina: a few nerve roots as thin strands in the lumbar sac
        for off in (0.25, 0.5, 0.72):
            sub[(~cord) & (s > an.top[19]) & canal & (abs(xr - 3 * off) < 1.5)
                & (np.abs(d - (p["post_wall"] - 1.5 - off * p["canal"])) < 0.7)] = MUSCLE
    cls[idx] = sub
    # Posterior elements of each vertebra (laminae, spinous process, facet column, pedicles, foramina).
    for win in pl.windows:
        i, sel = win["i"], win["sel"]
        cw_i = an.canal_w[i]
        wsub = cls[sel]
        if cw_i - 1 < xr < cw_i + 7 and i > 0:
            wsub[win["foramen"]] = FAT
            wsub[win["foramen"] & (win["root"] < 0)] = MUSCLE
        bone = np.full(sel.shape, np.inf, np.float32)
        if xr < cw_i + 4:
            bone = np.minimum(bone, win["lamina"])
        if xr < an.sp_w[i]:
            bone = np.minimum(bone, win["spine"])
        if cw_i - 3 < xr < cw_i + 9:
            bone = np.minimum(bone, win["pillar"])
        if cw_i - 1 < xr < cw_i + 6 and i > 0:
            bone = np.where(win["pedicle"], np.minimum(bone, -2.0), bone)
        wsub[bone < 0] = CORTEX
        wsub[bone < -1.2] = PMARROW
        cls[sel] = wsub
    sub, lsub, gsub = cls[idx], lab[idx], gain[idx]
    # Discs: annulus with a small bulge, nucleus ellipse; the sacral remnants are thin annulus lines.
    j = p["j"]
    dj = 0.5 * (an.dep[j] + an.dep[j + 1])
    wj = 0.5 * (an.w[j] + an.w[j + 1])
    gh = 0.5 * (an.top[j + 1] - an.bottom[j])
    near = np.flatnonzero((j > 0) & (xr < wj * 1.04) & (np.abs(p["v"]) < gh + 1.5))
    if near.size:
        dj, wj, gh, jn, dn, vn = dj[near], wj[near], gh[near], j[near], d[near], p["v"][near]
        xf = np.sqrt(np.clip(1 - (xr / (wj * 1.04)) ** 2, 0, None))
        ant = -dj / 2 + (dj + 1.5) * xf
        cup = 0.035 * (an.h[jn] + an.h[jn + 1])  # the endplates are concave: the disc fills the cups
        disc = _rrect(vn, dn - 0.5 * (ant - dj / 2), gh + 1.0 + cup, 0.5 * (ant + dj / 2), 2.5) < 0
        nuc = disc & (jn < 24) & ((vn / (0.7 * gh + 0.8 * cup)) ** 2 + ((dn + 0.05 * dj) / (0.34 * dj)) ** 2
                                  + (xr / (0.65 * wj)) ** 2 < 1)
        tmp = sub[near]
        tmp[disc] = ANNULUS
        tmp[nuc] = NUCLEUS
        sub[near] = tmp
        # T2 brightness of each nucleus, with the thin dark intranuclear cleft of adult discs.
        gsub[near[nuc]] = an.nucleus[jn[nuc]] * np.where((np.abs(vn[nuc]) < 0.5) & (gh[nuc] > 3), 0.6, 1.0)
    # Bodies: marrow inside a cortical rim, narrowing off the midline (anterior wall recedes, height shrinks).
    near = np.flatnonzero((k > 0) & (xr < 0.99 * an.w[k]) & (np.abs(p["u"]) < 0.5 * an.h[k] + 1))
    if near.size:
        kn, dn = k[near], d[near]
        w = an.w[kn]
        xb = np.sqrt(np.clip(1 - (xr / w) ** 2, 0, None))
        half_d = 0.5 * an.dep[kn] * xb
        hh = 0.5 * an.h[kn] * (1 - 0.12 * (xr / w) ** 2)
        q = np.clip((dn + an.dep[kn] / 2 - half_d) / np.maximum(half_d, 1e-3), -1, 1)
        u_cup = np.abs(p["u"][near]) + 0.07 * an.h[kn] * (1 - q ** 2)  # concave endplates
        hh = hh * (1 - an.wedge[kn] * (q + 1) / 2)  # thoracic bodies are lower in front (kyphosis), L5 higher
        sd = _rrect(u_cup, dn - (-an.dep[kn] / 2 + half_d), hh, half_d, np.where(REGION[kn] == "C", 1.8, 3.0))
        body = (xb > 0.15) & (sd < 0)
        marrow = body & (sd < -1.3)
        tmp = sub[near]
        tmp[body] = CORTEX
        tmp[marrow] = MARROW
        if xr < 3:  # basivertebral vein: a fatty/venous notch behind the middle of thoracic and lumbar bodies
            tmp[marrow & (kn >= 7) & ((p["u"][near] / 2.5) ** 2 + ((dn + an.dep[kn] / 2 - 2.0) / 3.5) ** 2 < 1)] = FAT
        sub[near] = tmp
        lsub[near[body]] = CODES[kn[body]]
        gsub[near[marrow]] = an.marrow[kn[marrow]]
    # C2's dens rises behind C1's anterior arch; C1 is labelled by its arch (it has no body).
    c2_back = -an.dep[1] / 2
    if xr < 5.5:
        dens = _rrect(s - 0.5 * (an.top[0] + an.top[1]), d - (c2_back + 6), 0.5 * (an.top[1] - an.top[0]) + 1.5,
                      5.0, 3.0) < 0
        sub[dens] = MARROW
        lsub[dens] = CODES[1]
    arch_sd = _rrect(s - an.centre[0], d - (c2_back + 12 + 0.5 * an.dep[0]), 0.5 * an.h[0], 0.5 * an.dep[0], 3.0)
    if xr < an.w[0] * 0.8:
        sub[arch_sd < 0] = CORTEX
        sub[arch_sd < -1.2] = MARROW
        lsub[arch_sd < 0] = CODES[0]
    elif xr < an.w[0] + 9:  # lateral masses of the atlas
        sub[(np.abs(s - an.centre[0]) < 0.5 * an.h[0] + 2) & (d > c2_back - 4) & (d < c2_back + 14)] = PMARROW
    cls[idx], lab[idx], gain[idx] = sub, lsub, gsub
    return cls, lab, gain

def _field2d(rng, shape, sigma) -> np.ndarray:
    f = gaussian_filter(rng.standard_normal(shape, np.float32), sigma, truncate=2.0)
    return f / (f.std() + 1e-6)


def intensities(cls: np.ndarray, gain: np.ndarray, sequence: str, rng: np.random.Generator) -> np.ndarray:
    """Class map [x, y, z] -> textured float32 intensities before bias and noise.

    Texture: white noise per class (trabecular speckle once the point-spread blur has acted), and coarse fields
    (muscle fibres stretched cranio-caudally, isotropic organ/bowel blobs) drawn as two 2-D fields mixed slice by
    slice, which costs a fraction of 3-D filtering.
    """
    table = (_T2 if sequence == "T2" else _T1) * rng.normal(1.0, 0.06, len(_T1)).astype(np.float32)
    img = table[cls]
    img *= np.where((cls == MARROW) | ((cls == NUCLEUS) & (sequence == "T2")), gain, np.float32(1.0))
    nx, ny, nz = cls.shape
    mix = np.linspace(0, np.pi / 2, nx, dtype=np.float32)[:, None, None]
    fibre = np.cos(mix) * _field2d(rng, (ny, nz), (1.0, 5.0)) + np.sin(mix) * _field2d(rng, (ny, nz), (1.0, 5.0))
    blob = np.cos(mix) * _field2d(rng, (ny, nz), 3.0) + np.sin(mix) * _field2d(rng, (ny, nz), 3.0)
    bowel = cls == BOWEL
    img[bowel] *= 0.75 + 0.35 * np.tanh(1.5 * blob[bowel])  # gas (dark), fluid and contents
    organ = (cls == VISCERA) | (cls == BRAIN) | (cls == LUNG) | (cls == MARROW) | (cls == PMARROW)
    img[organ] *= 1 + 0.10 * blob[organ]  # organ and marrow mottling
    img *= 1 + _COARSE_F[cls] * fibre
    img *= 1 + _FINE[cls] * rng.standard_normal(cls.shape, np.float32)
    return gaussian_filter(img, (0.35, 0.6, 0.6), truncate=2.0)


def bias_and_noise(img: np.ndarray, ys: np.ndarray, zs: np.ndarray, bias: float, noise: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative bias (posterior coil: darker anteriorly) and Rician noise."""
    yn = (ys - ys.mean()) / (np.ptp(ys) / 2 + 1e-6)
    zn = (zs - zs.mean()) / (np.ptp(zs) / 2 + 1e-6)
    c = rng.normal(0.0, 0.5, 5) * bias
    log_b = (-abs(c[0]) - 0.6 * bias) * yn[:, None] + c[1] * zn[None, :] + c[2] * yn[:, None] ** 2 \
        + c[3] * zn[None, :] ** 2 + c[4] * yn[:, None] * zn[None, :]
    img = img * np.exp(log_b - log_b.mean()).astype(np.float32)[None]
    sigma = noise * 1000.0
    n1 = rng.standard_normal(img.shape, np.float32) * sigma
    n2 = rng.standard_normal(img.shape, np.float32) * sigma
    return np.sqrt((img + n1) ** 2 + n2 ** 2)
