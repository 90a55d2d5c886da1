"""The phantom cohort: synthetic sagittal spine MRI (C1..S1) with vertebral-body masks, in the layout of
``/work/shared/data/spine-mri-real``, so every test and the demo run on data with known answers.

Output folder (``generate_cohort(out_dir, cfg)``)::

    images/<scan>.nii.gz        image, int16 (or uint8), sagittal slices, anisotropic voxels
    labels/<scan>_vert.nii.gz   uint8, one label per vertebral body, VerSe codes (C1..C7 = 1..7, T1..T12 = 8..19,
                                L1..L5 = 20..24, S1 = 26; components.schema.LEVEL_CODES)
    centroids/<scan>_ctd.json   VerSe-style centroid list (below)
    scans.csv                   scan_id, patient_id, sequence, image, vertebra_mask, centroids, levels, source,
                                license; paths relative to the csv's folder; levels = space-separated level names
                                present in the mask, cranial first ("C1 C2 ... L5 S1")
    preview.png                 mid-sagittal slices of several patients + one 9-slice unit per region

Centroid JSON convention (what ``preprocess`` reads)::

    [{"direction": ["R", "A", "S"]},                 # nibabel.aff2axcodes(affine) of the stored arrays
     {"label": 20, "X": 10.52, "Y": 81.37, "Z": 240.06},
     ...]

``X``, ``Y``, ``Z`` are the centre of mass of that label's voxels in VOXEL INDICES along array axes 0, 1, 2 of
the stored image/mask (floats, 0-based), not millimetres and not the axis letters' world directions; world
coordinates are ``affine @ [X, Y, Z, 1]``. Entries are sorted by label; only labels present in the mask appear.

Conventions: the world frame is RAS (x to the patient's right, y anterior, z superior) with 3 mm left-right
slices and 1.1-1.3 mm in-plane voxels (coarser when a scan would exceed ``max_voxels``). Most scans are stored RAS (array axes = R, A, S); a configurable share is
stored in another layout (``other_layouts``, e.g. LPS or PIR) with an affine that says so. A body is labelled only
when it lies wholly inside the field of view in the sagittal plane (a body cut by the FOV edge stays in the image,
unlabelled). C1 has no body: its label is the anterior arch; C2's label includes the dens; S1 is the first sacral
segment (S2..S5 are drawn, never labelled). ``scan_id`` is ``<patient_id>_<sequence>``, sequence "T1" or "T2"
(one scan per patient).
Patient ids look like real ones (``PH-0007``) so that leak tests have something to look for. Every patient draws
from ``numpy.random.default_rng((seed, index))``: the cohort is identical for a seed, patient by patient.
"""
from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from vugan.components.phantom.anatomy import NAMES, Anatomy, sample_anatomy
from vugan.components.phantom.render import Plane, bias_and_noise, intensities, paint_slice
from vugan.components.phantom.spec import PhantomConfig
from vugan.components.schema import CODE_LEVELS

CSV_COLUMNS = ("scan_id", "patient_id", "sequence", "image", "vertebra_mask", "centroids", "levels", "source",
               "license")
SOURCE = "vugan phantom (synthetic, generated)"
LICENSE = "CC0-1.0 (synthetic)"
FOV_KINDS = ("cervicothoracic", "thoracic", "thoracolumbar", "lumbar")
_IDX = {n: i for i, n in enumerate(NAMES)}


def patient_id(index: int) -> str:
    return f"PH-{index + 1:04d}"


def plan_fov(an: Anatomy, rng: np.random.Generator, partial_fraction: float) -> tuple[str, float, float]:
    """Field of view along s: (kind, s_start, s_end). Partial kinds cover one or two regions."""
    m = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    top, bot = an.top, an.bottom
    kind = "full" if rng.random() >= partial_fraction else FOV_KINDS[rng.integers(len(FOV_KINDS))]
    if kind == "full":
        return kind, top[0] - m(15, 30), bot[_IDX["S1"]] + m(25, 50)
    if kind == "cervicothoracic":
        return kind, top[0] - m(15, 30), bot[_IDX[f"T{rng.integers(3, 8)}"]] + m(8, 20)
    if kind == "thoracic":
        first = ("C6", "C7", "T1")[rng.integers(3)]
        return kind, top[_IDX[first]] - m(8, 20), bot[_IDX[("T12", "L1")[rng.integers(2)]]] + m(8, 20)
    if kind == "thoracolumbar":
        return kind, top[_IDX[f"T{rng.integers(6, 10)}"]] - m(8, 20), bot[_IDX["S1"]] + m(20, 40)
    return kind, top[_IDX[f"T{rng.integers(10, 13)}"]] - m(8, 20), bot[_IDX["S1"]] + m(20, 40)


def render_patient(index: int, cfg: PhantomConfig) -> dict:
    """Draw and rasterise one patient. Returns RAS arrays, affine and metadata (nothing written)."""
    rng = np.random.default_rng((cfg.seed, index))
    an = sample_anatomy(rng)
    kind, s0, s1 = plan_fov(an, rng, cfg.partial_fov_fraction)
    sequence = "T2" if rng.random() < cfg.t2_fraction else "T1"
    inside = (an.curve_s >= s0) & (an.curve_s <= s1)
    cy, cz = an.curve_p[inside, 0], an.curve_p[inside, 1]
    y_lo, y_hi = cy.min() - rng.uniform(90, 105), cy.max() + rng.uniform(95, 115)
    z_lo, z_hi = cz.min(), cz.max()
    nx, sx = cfg.slices, cfg.slice_spacing_mm
    sp = float(rng.uniform(*cfg.inplane_spacing_mm))
    need = nx * (y_hi - y_lo) * (z_hi - z_lo) / sp ** 2
    if need > cfg.max_voxels:  # coarser in-plane voxels rather than a huge scan
        sp *= float(np.sqrt(need / cfg.max_voxels)) * 1.001
    ny, nz = int((y_hi - y_lo) / sp), int((z_hi - z_lo) / sp)
    xs = (np.arange(nx) - (nx - 1) / 2) * sx
    ys, zs = y_lo + np.arange(ny) * sp, z_lo + np.arange(nz) * sp
    plane = Plane(an, ys, zs)
    cls = np.empty((nx, ny, nz), np.uint8)
    lab = np.empty((nx, ny, nz), np.uint8)
    gain = np.empty((nx, ny, nz), np.float32)
    for i, x in enumerate(xs):
        c, lb, g = paint_slice(an, plane, x)
        cls[i], lab[i], gain[i] = c.reshape(ny, nz), lb.reshape(ny, nz), g.reshape(ny, nz)
    img = bias_and_noise(intensities(cls, gain, sequence, rng), ys, zs, cfg.bias, cfg.noise, rng)
    if cfg.dtype == "uint8":
        img = np.clip(img * (255.0 / 1300.0), 0, 255).astype(np.uint8)  # headroom for bright fat
    else:
        img = np.clip(img, 0, 32767).astype(np.int16)
    _drop_cut_bodies(lab)
    offset = rng.uniform(-40, 40, 3)  # scanner origin somewhere near the patient, as in real headers
    affine = np.diag([sx, sp, sp, 1.0])
    affine[:3, 3] = np.array([xs[0], ys[0], zs[0]]) + offset
    layout = "RAS"
    if rng.random() < cfg.reorient_fraction and cfg.other_layouts:
        layout = cfg.other_layouts[rng.integers(len(cfg.other_layouts))]
    return dict(image=img, labels=lab, affine=affine, layout=layout, sequence=sequence, fov=kind,
                midline_index=int(round((an.midline_x - xs[0]) / sx)), spacing=(sx, sp, sp))


def _drop_cut_bodies(lab: np.ndarray) -> None:
    """Unlabel bodies that touch the in-plane border of the volume: they are only partly in the field of view."""
    # (Bodies reaching the outermost sagittal slices stay: the midline, where units are cut, is complete.)
    border = np.concatenate([lab[:, 0].ravel(), lab[:, -1].ravel(), lab[:, :, 0].ravel(), lab[:, :, -1].ravel()])
    for code in np.unique(border):
        if code:
            lab[lab == code] = 0


def reorient(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, layout: str):
    """Store RAS arrays in another axis layout (e.g. 'PIR'); the returned affine maps the new indices to the
    same world points, so nibabel.aff2axcodes(new_affine) == tuple(layout)."""
    if layout == "RAS":
        return image, labels, affine
    transform = ornt.ornt_transform(ornt.axcodes2ornt(("R", "A", "S")), ornt.axcodes2ornt(tuple(layout)))
    new_affine = affine @ ornt.inv_ornt_aff(transform, image.shape)
    return (np.ascontiguousarray(ornt.apply_orientation(image, transform)),
            np.ascontiguousarray(ornt.apply_orientation(labels, transform)), new_affine)


def centroids(labels: np.ndarray, affine: np.ndarray) -> list[dict]:
    """VerSe-style list: direction entry, then one {label, X, Y, Z} (voxel indices, axes 0/1/2) per label."""
    where = np.nonzero(labels)
    values = labels[where]
    count = np.bincount(values, minlength=256)
    sums = [np.bincount(values, weights=w, minlength=256) for w in where]
    out: list[dict] = [{"direction": list(nib.aff2axcodes(affine))}]
    for code in np.flatnonzero(count):
        out.append({"label": int(code), **{axis: round(float(sums[a][code] / count[code]), 3)
                                           for a, axis in enumerate("XYZ")}})
    return out


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, path)


def generate_cohort(out_dir: str | Path, cfg: PhantomConfig, log=lambda msg: None) -> dict:
    """Write the whole cohort (module docstring) into ``out_dir``; return counts.

    Returns:
      {"scans", "patients", "vertebrae", "by_level" {name: n}, "by_region", "by_sequence", "by_fov", "by_layout"}.
    """
    from vugan.components.phantom.preview import collect, write_preview

    out = Path(out_dir)
    for sub in ("images", "labels", "centroids"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows, by_level, tally, shown = [], Counter(), {k: Counter() for k in ("sequence", "fov", "layout")}, []
    started = time.time()
    for index in range(cfg.patients):
        scan = render_patient(index, cfg)
        pid = patient_id(index)
        scan_id = f"{pid}_{scan['sequence']}"
        if len(shown) < max(cfg.preview_patients, 1) or (scan["fov"] == "full" and not any(
                p["fov"] == "full" for p in shown)):
            shown.append(collect(scan, pid))
        image, labels, affine = reorient(scan["image"], scan["labels"], scan["affine"], scan["layout"])
        _save(image, affine, out / "images" / f"{scan_id}.nii.gz")
        _save(labels, affine, out / "labels" / f"{scan_id}_vert.nii.gz")
        ctd = centroids(labels, affine)
        (out / "centroids" / f"{scan_id}_ctd.json").write_text(
            "[\n" + ",\n".join(json.dumps(entry) for entry in ctd) + "\n]\n")  # one entry per line
        levels = [CODE_LEVELS[c["label"]] for c in ctd[1:]]
        by_level.update(levels)
        for key in tally:
            tally[key][scan[key]] += 1
        rows.append({"scan_id": scan_id, "patient_id": pid, "sequence": scan["sequence"],
                     "image": f"images/{scan_id}.nii.gz", "vertebra_mask": f"labels/{scan_id}_vert.nii.gz",
                     "centroids": f"centroids/{scan_id}_ctd.json", "levels": " ".join(levels),
                     "source": SOURCE, "license": LICENSE})
        log(f"phantom: {scan_id} {scan['fov']} {scan['layout']} {image.shape} {len(levels)} bodies")
    log(f"phantom: {len(rows)} scans in {time.time() - started:.1f} s")
    with open(out / "scans.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if cfg.preview_patients:
        write_preview(shown[:cfg.preview_patients], next((p for p in shown if p["fov"] == "full"), None),
                      out / "preview.png")
    region = Counter({"cervical": 0, "thoracic": 0, "lumbar": 0})
    for name, n in by_level.items():
        region[{"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "lumbar"}[name[0]]] += n
    return {"scans": len(rows), "patients": len({r["patient_id"] for r in rows}),
            "vertebrae": sum(by_level.values()),
            "by_level": {n: by_level[n] for n in CODE_LEVELS.values() if by_level[n]},
            "by_region": dict(region), **{f"by_{k}": dict(sorted(v.items())) for k, v in tally.items()}}
