"""Synthesize on a real (untrained) ac-GAN: the release gate, the record schema, the NIfTI geometry, the
datasheet, and reproducibility for a seed."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from support.model_artifacts import CLASS_NAMES, IMAGE_SHAPE, make_evaluation_artifact, make_model_artifact


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_artifact(tmp_path_factory.mktemp("synth") / "train", ema=True)


def _config(**changes):
    from vugan.pipeline.config import load_config

    def toml(v):
        return str(v).lower() if isinstance(v, bool) else v

    return load_config(None, [f"synthesize.{k}={toml(v)}" for k, v in changes.items()])


METRICS = {"fidelity": {"fid": 12.5, "per_class": {"cervical": {"fid": 20.0}}},
           "privacy": {"mia_auc": 0.52, "note": "text is ignored"}, "passed_fraction": True}


@pytest.fixture(scope="module")
def released(model_dir, tmp_path_factory):
    from vugan.components.synthesize.component import SPEC

    root = tmp_path_factory.mktemp("released")
    config = _config(units_per_class=5, shards=2, preview_units=4)
    evaluation = make_evaluation_artifact(root / "evaluate", passed=True, metrics=METRICS, model_dir=model_dir,
                                          config=config)
    manifest = SPEC.run(config, {"model": model_dir,
                                                                                 "evaluation": evaluation},
                        root / "synthesize")
    return root / "synthesize", manifest


def test_records_follow_the_real_schema(released):
    from vugan.components import schema

    out, manifest = released
    assert manifest["type"] == "SyntheticDataset" and manifest["counts"]["units"] == 15
    release = manifest["properties"]["release"]
    assert {k: release[k] for k in ("passed", "forced", "reasons")} == {"passed": True, "forced": False, "reasons": []}
    assert release["filter"]["enabled"] is False and len(release["candidate_sha256"]) == 64
    files = schema.shard_files(str(out), "synthetic")
    assert len(files) == 2
    records = list(schema.iter_records(files))
    assert len(records) == 15
    assert all(r.synthetic and r.image.shape == IMAGE_SHAPE and r.image.dtype == np.float32 for r in records)
    assert all(-1.0 <= r.image.min() <= r.image.max() <= 1.0 for r in records)
    assert sorted(np.bincount([r.class_id for r in records]).tolist()) == [5, 5, 5]
    assert {r.region for r in records} == set(CLASS_NAMES)
    assert all(r.region == CLASS_NAMES[r.class_id] for r in records)
    assert len({r.patient for r in records}) == 15  # one pseudo-patient per independent draw
    # The trainer's tf.data parser reads them unchanged.
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").map(schema.parse_fn(IMAGE_SHAPE))
    assert sum(1 for _ in ds) == 15


def test_nifti_manifest_previews(released):
    import nibabel as nib

    out, _ = released
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert len(rows) == 15 and {r["class_name"] for r in rows} == set(CLASS_NAMES)
    img = nib.load(out / rows[0]["nifti"])
    assert img.shape == IMAGE_SHAPE
    # 1 mm voxels (no crop pixel size known, no Examples lineage here), origin at the crop centre.
    assert np.allclose(np.abs(img.affine[:3, :3]).sum(axis=0), 1.0)
    centre = img.affine @ np.array([(IMAGE_SHAPE[0] - 1) / 2, (IMAGE_SHAPE[1] - 1) / 2, (IMAGE_SHAPE[2] - 1) / 2, 1])
    assert np.allclose(centre[:3], 0.0)
    assert nib.aff2axcodes(img.affine) == ("I", "P", "R")
    from vugan.components import schema

    first = next(schema.iter_records([str(out / rows[0]["tfrecord"])]))
    np.testing.assert_array_equal(np.asarray(img.dataobj), first.image)  # the same unit in both formats
    for name in CLASS_NAMES:
        assert (out / "previews" / f"{name}.png").stat().st_size > 100


def test_datasheet(released, model_dir):
    out, manifest = released
    text = (out / "datasheet.md").read_text()
    from vugan.pipeline.artifacts import read_artifact

    assert read_artifact(model_dir)["fingerprint"] in text
    assert "**Passed.**" in text and "Intended use" in text and "Limitations" in text
    assert "fidelity.fid | 12.5" in text and "privacy.mia_auc | 0.52" in text
    assert "passed_fraction" not in text  # a boolean is not a metric
    for name in CLASS_NAMES:
        assert f"| {name} | 5 |" in text
        assert str(manifest["properties"]["seeds"][name][0]) in text


def test_failed_verdict_refused_without_writing(model_dir, tmp_path):
    from vugan.components.synthesize.release import ReleaseRefused
    from vugan.components.synthesize.component import SPEC

    config = _config(units_per_class=2)
    evaluation = make_evaluation_artifact(tmp_path / "evaluate", passed=False, reasons=["mia_auc 0.81 > 0.6"],
                                          model_dir=model_dir, config=config)
    with pytest.raises(ReleaseRefused, match="mia_auc 0.81 > 0.6.*--force-release"):
        SPEC.run(config, {"model": model_dir, "evaluation": evaluation}, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # refused before anything is written


def test_forced_release_is_recorded(model_dir, tmp_path):
    from vugan.components.synthesize.component import SPEC

    config = _config(units_per_class=2, write_nifti=False)
    evaluation = make_evaluation_artifact(tmp_path / "evaluate", passed=False, reasons=["fid 300 > 100"],
                                          metrics="{not json", model_dir=model_dir, config=config)
    manifest = SPEC.run(config, {"model": model_dir, "evaluation": evaluation}, tmp_path / "out",
                        options={"force_release": True})
    release = manifest["properties"]["release"]
    assert release["forced"] is True and release["passed"] is False and release["reasons"] == ["fid 300 > 100"]
    assert release["forced_by"] and release["forced_at"].startswith("20")
    text = (tmp_path / "out" / "datasheet.md").read_text()
    assert "FAILED, released by override" in text and release["forced_by"] in text and "fid 300 > 100" in text
    assert "metrics.json missing or unreadable" in text
    assert not (tmp_path / "out" / "nifti").exists()


def test_missing_verdict_counts_as_failed(tmp_path):
    from vugan.components.synthesize import release

    verdict = release.read_verdict(tmp_path)
    assert not verdict.passed and not verdict.found
    with pytest.raises(release.ReleaseRefused):
        release.release_decision(verdict, force=False)
    (tmp_path / "verdict.json").write_text(json.dumps({"passed": "yes", "reasons": "fid too high"}))
    assert release.read_verdict(tmp_path) == release.Verdict(False, "", ("fid too high",), found=True)
    (tmp_path / "verdict.json").write_text("[true]")  # JSON, but not a verdict
    assert not release.read_verdict(tmp_path).found and release.verdict_word(tmp_path) == "unreadable"


def test_same_seed_same_units_other_seed_differs(model_dir, tmp_path):
    from vugan.components import schema
    from vugan.components.synthesize.component import SPEC

    images = {}
    for name, seed, batch in (("a", 7, 256), ("b", 7, 1), ("c", 8, 256)):
        config = _config(units_per_class=3, seed=seed, batch_size=batch, write_nifti=False)
        evaluation = make_evaluation_artifact(tmp_path / f"evaluate-{name}", passed=True, model_dir=model_dir,
                                              config=config)
        SPEC.run(config, {"model": model_dir, "evaluation": evaluation}, tmp_path / name)
        images[name] = np.stack([r.image for r in schema.iter_records(schema.shard_files(str(tmp_path / name),
                                                                                          "synthetic"))])
    np.testing.assert_allclose(images["a"], images["b"], atol=1e-6)  # batch size does not change the draw
    assert not np.allclose(images["a"], images["c"])


def test_rerun_clears_previous_outputs(model_dir, tmp_path):
    from vugan.components.synthesize.component import SPEC

    out = tmp_path / "out"
    for n, shards in ((4, 3), (1, 1)):
        config = _config(units_per_class=n, shards=shards)
        evaluation = make_evaluation_artifact(tmp_path / f"evaluate-{n}", passed=True, model_dir=model_dir,
                                              config=config)
        SPEC.run(config, {"model": model_dir, "evaluation": evaluation}, out)
    assert len(list((out / "Split-synthetic").iterdir())) == 1
    assert len(list((out / "nifti").iterdir())) == 3


def test_level_conditioning_records():
    from vugan.components import schema
    from vugan.components.synthesize import core

    names = schema.class_names("level", "disc")
    rec = core.unit_record(np.zeros(IMAGE_SHAPE, np.float32), names.index("L4/L5"), names, "level", "syn-x",
                           core.Geometry(pixel_mm=None, slice_mm=3.0))
    assert (rec.level_name, rec.upper_code, rec.lower_code, rec.region) == ("L4/L5", 23, 24, "lumbar")
    assert rec.slice_spacing == 3.0
    assert np.allclose(np.diag(np.abs(core.Geometry(None, 3.0).affine(IMAGE_SHAPE)[:3, :3][::-1])), [1, 1, 3])


def test_headline_metrics_prefers_known_paths():
    from vugan.components.synthesize.release import headline_metrics

    metrics = {"counts": {"train": 5}, "fidelity": {"fid_ratio": 2.0, "pixel": {"kid": 0.1}},
               "privacy": {"strongest": {"unit": {"auc": 0.55, "n_members": 8}}, "passed": True}}
    assert headline_metrics(metrics) == {"fidelity.fid_ratio": 2.0, "privacy.strongest.unit.auc": 0.55}
    assert headline_metrics({"headline": {"fid": 1, "ok": True}, "fidelity": {"fid_ratio": 2.0}}) == {"fid": 1.0}
    assert headline_metrics({"counts": {"train": 5}}) == {"counts.train": 5.0}  # nothing looks like a headline


def test_refuses_an_evaluation_of_another_model_or_variant(model_dir, tmp_path):
    """What is released is what was judged: a verdict on another model, generator variant, seed, count or filter,
    or a candidate changed after the verdict, is refused naming the link, even with --force-release."""
    from vugan.components.synthesize.release import ReleaseMismatch
    from vugan.components.synthesize.component import SPEC

    config = _config(units_per_class=2, write_nifti=False)
    evaluation = make_evaluation_artifact(tmp_path / "evaluate", passed=True, model_dir=model_dir, config=config)
    other_model = make_model_artifact(tmp_path / "other-train", ema=True, seed=1)
    cases = [({"model": other_model}, config, "model fingerprint"),
             ({}, _config(units_per_class=2, write_nifti=False, use_ema=False), "generator variant"),
             ({}, _config(units_per_class=2, write_nifti=False, seed=99), "seed"),
             ({}, _config(units_per_class=3, write_nifti=False), "count"),
             ({}, _config(units_per_class=2, write_nifti=False, release_filter=True), "release filter")]
    for i, (inputs, cfg, link) in enumerate(cases):
        out = tmp_path / f"out{i}"
        with pytest.raises(ReleaseMismatch, match=f"judged another set: {link}"):
            SPEC.run(cfg, {"model": model_dir, "evaluation": evaluation, **inputs}, out,
                     options={"force_release": True})
        assert sorted(p.name for p in out.iterdir()) == []  # refused before anything is written
    # A candidate altered after the verdict (one unit's pixels replaced).
    import dataclasses
    import os

    from vugan.components import schema

    cand = evaluation / "candidate"
    records = list(schema.iter_records(schema.shard_files(str(cand), "synthetic")))
    records[0] = dataclasses.replace(records[0], image=np.zeros_like(records[0].image))
    for f in schema.shard_files(str(cand), "synthetic"):
        os.remove(f)
    schema.write_shards((schema.encode(r) for r in records), schema.split_dir(str(cand), "synthetic"), num_shards=1)
    # The evaluation's own digests catch it first, naming the file (pipeline.artifacts.verify_artifact).
    from vugan.pipeline.artifacts import ArtifactError

    with pytest.raises(ArtifactError, match=r"candidate/Split-synthetic/.*rerun evaluate"):
        SPEC.run(config, {"model": model_dir, "evaluation": evaluation}, tmp_path / "out-late")
    # A verdict without a release chain (an older evaluator) is refused too.
    bare = make_evaluation_artifact(tmp_path / "bare", passed=True)
    with pytest.raises(ReleaseMismatch, match="records no judged release candidate"):
        SPEC.run(config, {"model": model_dir, "evaluation": bare}, tmp_path / "out-bare")


def test_release_filter_drops_what_the_evaluation_dropped(model_dir, tmp_path):
    from vugan.components import schema
    from vugan.components.synthesize.component import SPEC

    config = _config(units_per_class=3, write_nifti=False, release_filter=True)
    dropped = ["syn-cervical-000001"]
    evaluation = make_evaluation_artifact(tmp_path / "evaluate", passed=True, model_dir=model_dir, config=config,
                                          dropped=dropped)
    manifest = SPEC.run(config, {"model": model_dir, "evaluation": evaluation}, tmp_path / "out")
    ids = [r.patient for r in schema.iter_records(schema.shard_files(str(tmp_path / "out"), "synthetic"))]
    assert len(ids) == 8 and dropped[0] not in ids
    assert manifest["properties"]["release"]["filter"]["dropped_units"] == 1
    assert "1 near-copies of training units dropped" in (tmp_path / "out" / "datasheet.md").read_text()
