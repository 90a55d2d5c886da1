"""The phantom cohort: layout, determinism, anatomy, field of view, orientation and the CLI.

One 20-patient cohort (the size the pipeline tests use) is generated once per session and timed; the other tests
read it back from disk the way ``preprocess`` will.
"""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vugan.components.phantom.core import CSV_COLUMNS, generate_cohort, render_patient
from vugan.components.schema import LEVEL_CODES, LEVEL_ORDER, region_of_level
from vugan.pipeline.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
N = 20


def _cfg(**changes):
    return load_config(None, [f"phantom.{k}={json.dumps(v)}" for k, v in changes.items()]).phantom


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    started, cpu = time.time(), time.process_time()
    counts = generate_cohort(out, _cfg(patients=N, seed=0, preview_patients=3))
    seconds, cpu = time.time() - started, time.process_time() - cpu
    print(f"\nphantom: {N} patients in {seconds:.1f} s wall, {cpu:.1f} s CPU ({cpu / N:.2f} s CPU per scan)")
    rows = list(csv.DictReader(open(out / "scans.csv")))
    return out, counts, rows


def _load(out: Path, row: dict):
    img = nib.load(out / row["image"])
    lab = np.asarray(nib.load(out / row["vertebra_mask"]).dataobj)
    ctd = json.loads((out / row["centroids"]).read_text())
    return img, lab, ctd


def test_layout_and_csv(cohort):
    out, counts, rows = cohort
    assert (out / "preview.png").stat().st_size > 10_000
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == N and counts["scans"] == N and counts["patients"] == N
    assert all(re.fullmatch(r"PH-\d{4}", r["patient_id"]) for r in rows)
    assert len({r["scan_id"] for r in rows}) == N
    for r in rows:
        for col in ("image", "vertebra_mask", "centroids"):
            assert not Path(r[col]).is_absolute() and (out / r[col]).exists(), (r["scan_id"], col)
        assert r["sequence"] in ("T1", "T2")
    assert counts["vertebrae"] == sum(len(r["levels"].split()) for r in rows)
    assert set(counts["by_sequence"]) == {"T1", "T2"}


def test_levels_masks_and_centroids_agree(cohort):
    out, _, rows = cohort
    for r in rows:
        img, lab, ctd = _load(out, r)
        assert img.get_data_dtype() == np.int16 and lab.dtype == np.uint8
        assert img.shape == lab.shape and np.prod(img.shape) <= 3_000_000
        levels = r["levels"].split()
        assert levels == [n for n in LEVEL_ORDER if n in levels], "levels listed cranial first"
        codes = {LEVEL_CODES[n] for n in levels}
        assert codes == set(np.unique(lab)) - {0}, r["scan_id"]
        assert ctd[0] == {"direction": list(nib.aff2axcodes(img.affine))}
        assert [c["label"] for c in ctd[1:]] == sorted(codes)
        # Independent centre of mass per label: voxel index sums by bincount over the labelled voxels.
        where = np.nonzero(lab)
        values = lab[where]
        count = np.bincount(values, minlength=27)
        mean = np.stack([np.bincount(values, w, minlength=27) for w in where], axis=1) / np.maximum(count, 1)[:, None]
        for c in ctd[1:]:
            ijk = tuple(int(round(c[a])) for a in "XYZ")
            assert lab[ijk] == c["label"], (r["scan_id"], c)  # the centroid lies inside its own body
            np.testing.assert_allclose(mean[c["label"]], [c["X"], c["Y"], c["Z"]], atol=0.01)


def test_anisotropic_sagittal_voxels(cohort):
    out, _, rows = cohort
    for r in rows[:6]:
        img = nib.load(out / r["image"])
        zooms = np.array(img.header.get_zooms())
        lr_axis = [ax for ax, code in enumerate(nib.aff2axcodes(img.affine)) if code in "LR"][0]
        assert zooms[lr_axis] == pytest.approx(3.0)
        inplane = np.delete(zooms, lr_axis)
        assert np.all((inplane >= 1.0) & (inplane <= 1.45)), zooms


def test_body_volume_grows_cervical_thoracic_lumbar(cohort):
    out, _, rows = cohort
    volumes = {"cervical": [], "thoracic": [], "lumbar": []}
    for r in rows:
        img, lab, _ = _load(out, r)
        voxel_ml = float(np.prod(img.header.get_zooms())) / 1000.0
        sizes = np.bincount(lab.ravel(), minlength=27)
        for name in r["levels"].split():
            if name not in ("C1", "S1"):  # the atlas arch and the sacrum are not bodies of their region's kind
                volumes[region_of_level(name)].append(sizes[LEVEL_CODES[name]] * voxel_ml)
    c, t, l = (np.mean(volumes[k]) for k in ("cervical", "thoracic", "lumbar"))
    assert 1.0 < c < t < l < 60.0, (c, t, l)


def test_partial_fields_of_view(cohort):
    out, counts, rows = cohort
    partial = [r for r in rows if len(r["levels"].split()) < 25]
    assert counts["by_fov"].get("full", 0) < N and len(partial) >= 4
    assert any("C3" in r["levels"] and "L3" not in r["levels"] for r in partial)  # cervico-thoracic kinds
    assert any("L3" in r["levels"] and "C3" not in r["levels"] for r in partial)  # lumbar kinds
    for r in partial:  # contiguous runs of levels: the FOV cuts the spine, it does not skip bodies
        idx = [LEVEL_ORDER.index(n) for n in r["levels"].split()]
        assert idx == list(range(idx[0], idx[0] + len(idx))), r["levels"]


def test_non_ras_layouts_map_to_the_same_anatomy(cohort):
    out, counts, rows = cohort
    layouts = set()
    for r in rows:
        img, _, ctd = _load(out, r)
        layouts.add("".join(ctd[0]["direction"]))
        world = {c["label"]: (img.affine @ [c["X"], c["Y"], c["Z"], 1.0])[:3] for c in ctd[1:]}
        z = [world[c][2] for c in sorted(world)]
        assert np.all(np.diff(z) < 0), (r["scan_id"], "bodies must descend in world S-I order")
        if 2 in world and 26 in world:
            assert world[26][2] < world[2][2] - 300  # S1 lies far inferior to C2
    assert "RAS" in layouts and len(layouts) >= 2, layouts
    assert sum(v for k, v in counts["by_layout"].items() if k != "RAS") >= 1


def test_same_seed_identical_other_seed_different(cohort, tmp_path):
    out, _, rows = cohort
    again = tmp_path / "again"
    generate_cohort(again, _cfg(patients=2, seed=0, preview_patients=0))
    rows2 = list(csv.DictReader(open(again / "scans.csv")))
    assert rows2 == rows[:2]
    for r in rows2:
        for col in ("image", "vertebra_mask", "centroids"):
            assert (again / r[col]).read_bytes() == (out / r[col]).read_bytes(), (r["scan_id"], col)
    other = render_patient(0, _cfg(seed=1))
    first = render_patient(0, _cfg(seed=0))
    assert other["image"].shape != first["image"].shape or not np.array_equal(other["image"], first["image"])


def test_parasagittal_slices_differ_and_contrast_follows_sequence(cohort):
    scan = render_patient(3, _cfg(seed=0, partial_fov_fraction=0.0))
    lab, img, mid = scan["labels"], scan["image"].astype(float), scan["midline_index"]
    per_slice = (lab > 0).sum(axis=(1, 2))
    assert per_slice[mid] > 2 * per_slice[mid + 5] > 0  # bodies narrow off the midline
    assert not np.array_equal(img[mid], img[mid + 3])
    t1 = render_patient(0, _cfg(seed=0, t2_fraction=0.0, partial_fov_fraction=0.0, noise=0.0))
    t2 = render_patient(0, _cfg(seed=0, t2_fraction=1.0, partial_fov_fraction=0.0, noise=0.0))
    for scan_, marrow_brighter in ((t1, True), (t2, False)):
        lab, img, m = scan_["labels"], scan_["image"].astype(float), scan_["midline_index"]
        bodies = np.median(img[m][lab[m] > 0])
        discs = []  # median of the unlabelled voxels between two lumbar bodies, on the column through the upper one
        for upper, lower in (("L1", "L2"), ("L2", "L3"), ("L3", "L4"), ("L4", "L5")):
            a, b = (np.argwhere(lab[m] == LEVEL_CODES[n]).mean(axis=0).round().astype(int) for n in (upper, lower))
            gap = [z for z in range(min(a[1], b[1]), max(a[1], b[1])) if lab[m, a[0], z] == 0]
            discs.append(np.median(img[m, a[0], gap]))
        if marrow_brighter:
            assert max(discs) < bodies, (bodies, discs)  # T1: marrow brighter than every disc
        else:
            assert max(discs) > bodies, (bodies, discs)  # T2: a healthy nucleus outshines marrow


def test_config_rejects_bad_layout():
    with pytest.raises(ConfigError, match="other_layouts"):
        _cfg(other_layouts=["RAX"])


def test_cli_writes_artifact(tmp_path):
    out = tmp_path / "cohort"
    proc = subprocess.run([sys.executable, "-m", "vugan.pipeline.cli", "phantom", "--out", str(out), "--patients", "2",
                           "--seed", "5", "--set", "phantom.preview_patients=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((out / "artifact.json").read_text())
    assert manifest["type"] == "PhantomCohort" and manifest["counts"]["scans"] == 2
    assert manifest["counts"]["vertebrae"] == sum(manifest["counts"]["by_level"].values()) > 0
    assert "seed = 5" in (out / "config.toml").read_text()
    assert len(list((out / "images").glob("PH-*.nii.gz"))) == 2
