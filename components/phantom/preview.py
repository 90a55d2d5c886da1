"""preview.png of a phantom cohort: mid-sagittal slices of several patients with body outlines (yellow), centroid
marks (red) and level names, and below them one 9-slice disc-centred unit per region (C4/C5, T6/T7, L3/L4) zoomed in.

Drawn with Pillow on numpy mosaics (matplotlib would cost more time than generating the scans).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from vugan.components.schema import CODE_LEVELS, LEVEL_CODES

UNITS = (("C4", "C5"), ("T6", "T7"), ("L3", "L4"))
MM_PER_PIXEL = 1.0  # display scale of the sagittal panels
TILE = 96  # unit slice tile size (pixels)


def collect(scan: dict, pid: str) -> dict:
    """Keep only what the preview needs from a rendered (RAS) scan: mid slice, 9 central slices, centroids."""
    img, lab = scan["image"], scan["labels"]
    mid = int(np.clip(scan["midline_index"], 4, img.shape[0] - 5))
    codes = [int(c) for c in np.unique(lab) if c]
    coms = dict(zip(codes, ndimage.center_of_mass(lab > 0, lab, codes)))
    return dict(pid=pid, fov=scan["fov"], sequence=scan["sequence"], layout=scan["layout"],
                mid=img[mid].astype(np.float32), mid_lab=lab[mid], stack=img[mid - 4:mid + 5].astype(np.float32),
                coms=coms, spacing=scan["spacing"])


def _gray(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, (1, 99.5))
    return (np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _to_display(a: np.ndarray) -> np.ndarray:
    """[y (anterior), z (superior)] array -> image rows top = superior, columns left = posterior."""
    return a.T[::-1]


def _panel(p: dict) -> Image.Image:
    sy, sz = p["spacing"][1], p["spacing"][2]
    ny, nz = p["mid"].shape
    size = (int(ny * sy / MM_PER_PIXEL), int(nz * sz / MM_PER_PIXEL))
    rgb = np.repeat(_gray(_to_display(p["mid"]))[..., None], 3, axis=2)
    lab = _to_display(p["mid_lab"])
    edge = (lab > 0) & ((ndimage.grey_erosion(lab, size=3) != lab) | (ndimage.grey_dilation(lab, size=3) != lab))
    rgb[edge] = (255, 220, 0)
    im = Image.fromarray(rgb).resize(size, Image.BILINEAR)
    draw = ImageDraw.Draw(im)
    for code, (_, cy, cz) in p["coms"].items():
        x, y = cy * sy / MM_PER_PIXEL, (nz - 1 - cz) * sz / MM_PER_PIXEL
        draw.line([(x - 3, y), (x + 3, y)], fill=(255, 40, 40))
        draw.line([(x, y - 3), (x, y + 3)], fill=(255, 40, 40))
        draw.text((x + 24, y - 5), CODE_LEVELS[code], fill=(0, 230, 230))
    return im


def _unit_row(full: dict, upper: str, lower: str) -> Image.Image:
    a, b = np.array(full["coms"][LEVEL_CODES[upper]]), np.array(full["coms"][LEVEL_CODES[lower]])
    centre = (a + b) / 2
    sy, sz = full["spacing"][1], full["spacing"][2]
    half = 0.85 * np.hypot((a[1] - b[1]) * sy, (a[2] - b[2]) * sz)  # mm: one unit plus margins
    y0, y1 = int(centre[1] - half / sy), int(centre[1] + half / sy)
    z0, z1 = int(centre[2] - half / sz), int(centre[2] + half / sz)
    crop = full["stack"][:, max(y0, 0):y1, max(z0, 0):z1]
    lo, hi = np.percentile(crop, (1, 99.5))
    row = Image.new("RGB", (9 * (TILE + 4), TILE + 14))
    for k in range(crop.shape[0]):
        tile = (np.clip((crop[k] - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
        row.paste(Image.fromarray(_to_display(tile)).resize((TILE, TILE), Image.BILINEAR), (k * (TILE + 4), 14))
    ImageDraw.Draw(row).text((2, 1), f"{upper}/{lower}: 9 sagittal slices, 3 mm apart", fill=(255, 255, 255))
    return row


def write_preview(patients: list[dict], full: dict | None, path: str | Path) -> Path:
    panels = [_panel(p) for p in patients]
    units = [u for u in UNITS if full is not None and all(LEVEL_CODES[l] in full["coms"] for l in u)]
    rows = [_unit_row(full, *u) for u in units]
    top_h = max((p.height for p in panels), default=0) + 16
    width = max(sum(p.width + 6 for p in panels), max((r.width for r in rows), default=0))
    canvas = Image.new("RGB", (width, top_h + sum(r.height + 6 for r in rows)))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for p, im in zip(patients, panels):
        canvas.paste(im, (x, 16))
        draw.text((x + 2, 2), f"{p['pid']} {p['sequence']} {p['fov']} [{p['layout']}]", fill=(255, 255, 255))
        x += im.width + 6
    y = top_h
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height + 6
    path = Path(path)
    canvas.save(path)
    return path
