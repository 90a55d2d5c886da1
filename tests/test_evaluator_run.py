"""`evaluate` end to end (SPEC.run, as `vugan evaluate` calls it) on a tiny Examples artifact and a real, untrained
ac-GAN bundle, with an InceptionV3 weights file this test writes itself; then the HTML report is opened in
headless Chromium and checked to render with all its images decoded.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from support.examples import make_examples_artifact
from vugan.pipeline.artifacts import read_artifact
from vugan.pipeline.config import load_config
from support.model_artifacts import make_model_artifact
from support.paths import ROOT

FAST = ["evaluator.min_synthetic=45", "evaluator.classifier_epochs=3", "evaluator.msssim_pairs=20",
        "evaluator.swd_projections=32", "evaluator.prdc_k=3", "evaluator.inception_input_size=75",
        "privacy.bootstrap=20", "privacy.pbb_steps=3", "privacy.pbb_restarts=1", "privacy.pbb_max_patients=2",
        "privacy.ct_min_cell=2", "privacy.ct_cells=2"]


# slow tier: the evaluate component end to end (a model, a real evaluation, the report in a browser)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    import keras

    tmp = tmp_path_factory.mktemp("evaluate")
    examples = make_examples_artifact(tmp / "examples", n_per_class=12, shape=(16, 16, 3), holdout_per_class=6)
    model = make_model_artifact(tmp / "model")
    # ImageNet weights cannot be downloaded here: save a randomly initialised InceptionV3 of the same
    # architecture, which exercises the real loading, checksum and feature path.
    weights = tmp / "inception_notop.weights.h5"
    keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                   input_shape=(75, 75, 3)).save_weights(weights)
    config = load_config(ROOT / "configs" / "tiny.toml", FAST + [f'evaluator.inception_weights="{weights}"'])
    from vugan.components.evaluator.component import SPEC

    out = tmp / "evaluation"
    manifest = SPEC.run(config, {"examples": examples, "model": model}, out)
    return out, manifest, weights


def test_evaluate_writes_the_contracted_artifact(evaluation):
    out, manifest, weights = evaluation
    assert read_artifact(out, None)["type"] == "Evaluation"
    for name in ("metrics.json", "verdict.json", "report.html", "config.toml", "figures/grids.png",
                 "figures/fd_ratio.png", "figures/ms_ssim.png", "figures/utility.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    verdict = json.loads((out / "verdict.json").read_text())
    assert set(verdict) == {"passed", "privacy_outcome", "headline", "reasons", "forced", "release"}
    assert verdict["forced"] is False
    # The release chain: the judged candidate is what synthesize would publish ([synthesize] of tiny.toml).
    release = verdict["release"]
    assert release["model_fingerprint"] == read_artifact(out.parent / "model")["fingerprint"]
    assert release["generator"] == "EMA" and release["judged_units"] == metrics["privacy"]["candidates"][
        "synthetic_units"] == manifest["counts"]["candidate"]
    from vugan.components.synthesize.release import candidate_digest

    assert release["candidate_sha256"] == candidate_digest(out / "candidate")
    assert "never the members" in metrics["privacy"]["encoder"]
    assert manifest["properties"]["verdict"] == verdict == metrics["verdict"]
    # Synthetic draw: at least min_synthetic, training prior (12 per class in train -> 15 each), seed recorded.
    assert metrics["counts"]["synthetic"] == 45
    assert metrics["counts"]["synthetic_per_class"] == {"cervical": 15, "thoracic": 15, "lumbar": 15}
    assert metrics["synthetic"]["seed"] == 0 and metrics["synthetic"]["generator"] == "EMA"
    # Inception ran from the local file, its checksum recorded; the domain encoder beside it under its own name.
    inc = metrics["fidelity"]["embeddings"]["inception"]
    import hashlib

    assert inc["provenance"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert inc["distance_name"] == "FD-InceptionV3" and "not the standard FID network" in inc["description"]
    assert metrics["fidelity"]["embeddings"]["domain"]["distance_name"] == "FD-domain"
    # The headline space is the shipped vu-encoder, named with version and sha256 in metrics, artifact and report.
    from vugan.components.evaluator.features import vu_encoder

    sha = vu_encoder.read_card()["sha256"]
    vu = metrics["fidelity"]["embeddings"]["vu"]
    assert vu["distance_name"] == "FD-VU" and vu["provenance"]["sha256"] == sha
    assert metrics["fidelity"]["fid_ratio"] == vu["against_holdout"]["overall"]["fd_ratio"]  # the gate: vs holdout
    assert metrics["fidelity"]["fid_ratio_encoder"] == {"name": "vu-encoder-v1", "version": "v1", "sha256": sha}
    assert manifest["properties"]["fidelity_encoder"]["sha256"] == sha
    assert "vu-encoder-v1" in (out / "report.html").read_text() and sha in (out / "report.html").read_text()
    assert "domain_encoder" in metrics["timings"] and "privacy_encoder" not in metrics["timings"]  # trained once
    for emb in ("vu", "inception", "domain"):
        o = metrics["fidelity"]["embeddings"][emb]["overall"]
        assert o["fd"] > 0 and o["fd_baseline"] > 0 and o["fd_ratio"] == pytest.approx(o["fd"] / o["fd_baseline"])
    # An untrained generator makes noise: far from real data, and the gate must not pass it.
    assert metrics["fidelity"]["fid_ratio"] > 1.5
    assert verdict["passed"] is False
    assert "privacy" in metrics and metrics["privacy"]["enabled"] is True
    assert metrics["config"]["evaluator"]["min_synthetic"] == 45
    stages = {"generate", "utility_classifiers", "embed_inception", "fidelity_domain", "privacy"}
    assert stages <= set(metrics["timings"])
    # The headline the datasheet and the run summary show is chosen here, by the evaluator.
    headline = metrics["headline"]
    assert headline["fidelity.fid_ratio"] == metrics["fidelity"]["fid_ratio"]
    assert headline["utility.tstr_balanced_accuracy"] == metrics["utility"]["tstr_balanced_accuracy"]


def test_metrics_json_breaks_fd_down_per_feature_and_the_parts_add_up_to_fd(evaluation):
    """Issue 22: which features carry FD-VU (and every other space's FD) against holdout, overall and per class;
    the mean and covariance terms add up to the FD metrics.json reports, and the report shows the split."""
    out, _, _ = evaluation
    metrics = json.loads((out / "metrics.json").read_text())
    for key, space in metrics["fidelity"]["embeddings"].items():
        against = space["against_holdout"]
        for name, o in [("overall", against["overall"]), *against["per_class"].items()]:
            b = o["fd_breakdown"]
            assert b["mean_term"] + b["covariance_term"] == pytest.approx(o["fd"], rel=1e-6), (key, name)
            assert b["mean_share"] + b["covariance_share"] == pytest.approx(1.0)
            shares = [f["share"] for f in b["top_features"]]
            assert len(shares) == 10 and shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-9
        assert "fd_breakdown" not in space["overall"]  # against TRAIN: the ratio the gate does not read
    vu = metrics["fidelity"]["embeddings"]["vu"]["against_holdout"]["overall"]["fd_breakdown"]
    assert [g["group"] for g in vu["groups"]] == ["appearance (texture + intensity)", "structure (pooled conv)"]
    assert sum(g["share"] for g in vu["groups"]) == pytest.approx(1.0)
    assert all(f["feature"].startswith(("appearance axis", "structure axis")) for f in vu["top_features"])
    report = (out / "report.html").read_text()
    assert "Which features carry the distance" in report and vu["top_features"][0]["feature"] in report


def test_real_split_features_go_through_the_cache_and_equal_fresh_ones(evaluation):
    """The fixed embedders' real-split features are cached (conftest points XDG_CACHE_HOME at a test folder); the
    domain encoder, trained in this run, never is; what the cache holds is what the embedder computes afresh."""
    from vugan.components.evaluator.features import cache
    from vugan.components.evaluator.features.embeddings import vu_embedder
    from vugan.components.evaluator.run import load_inputs

    out, _, _ = evaluation
    timings = json.loads((out / "metrics.json").read_text())["timings"]
    for emb in ("vu", "inception", "radiomics"):
        assert set(timings[f"embed_{emb}"]["real_feature_cache"].values()) <= {"stored", "hit"}, emb
    assert timings["embed_domain"]["real_feature_cache"] == {"train": "off", "holdout": "off"}
    train = load_inputs(out.parent / "examples")[1]["train"]  # as the evaluator reads it (content order)
    feats, status = cache.cached_features(vu_embedder(), train.images, cache.resolve_folder("auto"))
    assert status == "hit" and np.array_equal(feats, vu_embedder()(train.images))


def test_without_inception_weights_fid_is_reported_skipped(tmp_path):
    from vugan.components.evaluator.run import inception_or_skip

    config = load_config(ROOT / "configs" / "tiny.toml")
    embedder, reason = inception_or_skip(config.evaluator)
    assert embedder is None and "inception_weights is empty" in reason
    with pytest.raises(FileNotFoundError, match="inception_weights"):
        inception_or_skip(config.replace("evaluator", inception_weights=str(tmp_path / "missing.h5")).evaluator)


def test_report_renders_in_headless_chromium_with_decoded_images(evaluation, tmp_path):
    out, _, _ = evaluation
    html = (out / "report.html").read_text()
    n_imgs = len(re.findall(r'<img [^>]*src="data:image/png;base64,', html))
    assert n_imgs >= 5 and "Release gate FAILED" in html and "src=\"http" not in html
    # Probe page: the report plus a script that records, after load, how many images decoded (naturalWidth > 0).
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", "<script>window.addEventListener('load',()=>{const d=[...document."
                                  "images].filter(i=>i.complete&&i.naturalWidth>0).length;document.body."
                                  "setAttribute('data-decoded',String(d));});</script></body>"))
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(common + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    decoded = re.search(r'data-decoded="(\d+)"', dom.stdout)
    assert decoded, dom.stderr[-2000:]
    assert int(decoded.group(1)) == n_imgs
    shot = tmp_path / "report_screenshot.png"  # kept under pytest's basetemp for a human to look at
    subprocess.run(common + [f"--screenshot={shot}", "--window-size=1280,4000", (out / "report.html").as_uri()],
                   capture_output=True, text=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert img.shape[:2] == (4000, 1280)
    assert img.std() > 20  # not blank
    # The red FAIL banner is near the top (first 600 px): many pixels close to its background colour #fdecea.
    top = img[:600]
    assert (np.abs(top - [253, 236, 234]).sum(-1) < 12).sum() > 10000


def test_a_missing_privacy_evaluator_is_a_clear_error_not_a_skip(monkeypatch):
    import sys

    from vugan.components.evaluator.run import _import_privacy

    monkeypatch.setitem(sys.modules, "vugan.components.evaluator.privacy.attacks", None)  # what a failed import leaves behind
    with pytest.raises(RuntimeError, match="privacy evaluator .* could not be imported"):
        _import_privacy()


def test_metrics_json_is_strict_json():
    from vugan.components.evaluator.results import jsonable

    out = jsonable({"a": np.float32(1.5), "b": float("nan"), "c": np.arange(2), "d": (np.int64(3), np.inf)})
    assert json.dumps(out, allow_nan=False) == '{"a": 1.5, "b": null, "c": [0, 1], "d": [3, null]}'
