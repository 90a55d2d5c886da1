"""The exporter on a real (untrained) ac-GAN generator: the SavedModel reloads in a fresh process, both
signatures give the Keras generator's images, bad class ids fail with the range message, and the TF1 loader
(`saved_model_cli show` / `run`, what TF Serving uses) serves it."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from support.model_artifacts import CLASS_NAMES, IMAGE_SHAPE, NOISE_DIM, make_model_artifact
from support.paths import BIN
from support.pipeline_runs import last_json, run_python


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from vugan.components.exporter.component import SPEC
    from vugan.pipeline.config import load_config

    root = tmp_path_factory.mktemp("export")
    model = make_model_artifact(root / "train", ema=True)
    manifest = SPEC.run(load_config(None), {"model": model}, root / "export")
    return root, manifest


def test_manifest_and_asset(exported):
    root, manifest = exported
    assert manifest["type"] == "PushedModel"
    assert manifest["properties"]["signatures"] == ["serving_default", "generate"]
    assert manifest["properties"]["ema"] is True
    assert manifest["inputs"]["model"]["type"] == "Model"
    sm = root / "export" / "saved_model"
    assert (sm / "saved_model.pb").exists()
    assert (sm / "assets" / "class_names.txt").read_text().splitlines() == list(CLASS_NAMES)
    info = json.loads((root / "export" / "export_info.json").read_text())
    # The reload check ran before the manifest was written and saw what we expect.
    assert info["check"]["generate"] == {"shape": [2, *IMAGE_SHAPE], "dtype": "uint8", "deterministic": True}
    assert info["check"]["rejects_bad_class"] is True


_FRESH = r"""
import json, sys
import numpy as np
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
noise = np.load(sys.argv[2]); ids = np.array([0, 1, 2, 2], np.int64)
sd = m.signatures["serving_default"](class_ids=tf.constant(ids), noise=tf.constant(noise))
np.save(sys.argv[3], sd["images"].numpy())
g = m.signatures["generate"](class_ids=tf.constant(ids), seed=tf.constant(5, tf.int64))
g_again = m.signatures["generate"](class_ids=tf.constant(ids), seed=tf.constant(5, tf.int64))
g_other = m.signatures["generate"](class_ids=tf.constant(ids), seed=tf.constant(6, tf.int64))
# generate = serving_default on stateless noise, mapped to 8 bits: check the two signatures agree.
z = tf.random.stateless_normal([4, noise.shape[1]], seed=tf.constant([5, 0], tf.int64))
ref = m.signatures["serving_default"](class_ids=tf.constant(ids), noise=z)["images"].numpy()
ref8 = np.round(np.clip((ref + 1) * 127.5, 0, 255)).astype(np.uint8)
errors = {}
for bad in ([3], [-1], [0, 7]):
    try:
        m.signatures["generate"](class_ids=tf.constant(bad, tf.int64), seed=tf.constant(0, tf.int64))
        errors[str(bad)] = "no error"
    except tf.errors.InvalidArgumentError as exc:
        errors[str(bad)] = exc.message
out = {"sd_dtype": sd["images"].dtype.name, "names": [s.decode() for s in sd["class_names"].numpy()],
       "g_dtype": g["images"].dtype.name, "g_shape": g["images"].shape.as_list(),
       "deterministic": bool(np.array_equal(g["images"].numpy(), g_again["images"].numpy())),
       "seed_matters": bool(not np.array_equal(g["images"].numpy(), g_other["images"].numpy())),
       "max_diff_8bit": int(np.abs(g["images"].numpy().astype(int) - ref8.astype(int)).max()),
       "errors": errors, "keras_in_process": "keras.src.models" in sys.modules}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow  # a fresh Python process loads TensorFlow and the model
def test_fresh_process_matches_keras_generator(exported, tmp_path):
    from vugan.models.bundle import load_model_bundle

    root, _ = exported
    noise = np.random.default_rng(0).standard_normal((4, NOISE_DIM)).astype(np.float32)
    np.save(tmp_path / "noise.npy", noise)
    proc = run_python(_FRESH, str(root / "export" / "saved_model"), str(tmp_path / "noise.npy"),
                      str(tmp_path / "sd.npy"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = last_json(proc.stdout, "RESULT")
    bundle = load_model_bundle(root / "train", ema=True)  # the exporter exported the EMA generator
    want = np.asarray(bundle.generator([noise, np.array([0, 1, 2, 2], np.int32)], training=False))
    got = np.load(tmp_path / "sd.npy")
    assert got.shape == (4, *IMAGE_SHAPE) and out["sd_dtype"] == "float32"
    np.testing.assert_allclose(got, want, atol=1e-5)
    raw = load_model_bundle(root / "train", ema=False)
    assert not np.allclose(got, np.asarray(raw.generator([noise, np.array([0, 1, 2, 2], np.int32)])), atol=1e-5)
    assert out["names"] == ["cervical", "thoracic", "lumbar", "lumbar"]
    assert out["g_dtype"] == "uint8" and out["g_shape"] == [4, *IMAGE_SHAPE]
    assert out["deterministic"] and out["seed_matters"]
    assert out["max_diff_8bit"] == 0
    for bad, message in out["errors"].items():
        assert "class_ids must be integers in [0, 2]" in message, (bad, message)


@pytest.mark.slow  # saved_model_cli processes
def test_saved_model_cli_show_and_run(exported, tmp_path):
    root, _ = exported
    sm = str(root / "export" / "saved_model")
    show = subprocess.run([str(BIN / "saved_model_cli"), "show", "--dir", sm, "--all"], capture_output=True,
                          text=True, timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    text = show.stdout
    assert "signature_def['serving_default']" in text and "signature_def['generate']" in text
    assert "DT_UINT8" in text and f"(-1, {NOISE_DIM})" in text and "DT_INT64" in text

    np.save(tmp_path / "ids.npy", np.array([0, 2], np.int32))
    np.save(tmp_path / "seed.npy", np.array(3, np.int64))
    np.save(tmp_path / "bad.npy", np.array([0, 3], np.int32))
    run = subprocess.run([str(BIN / "saved_model_cli"), "run", "--dir", sm, "--tag_set", "serve",
                          "--signature_def", "generate", "--inputs",
                          f"class_ids={tmp_path / 'ids.npy'};seed={tmp_path / 'seed.npy'}",
                          "--outdir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    images = np.load(tmp_path / "out" / "images.npy")
    assert images.dtype == np.uint8 and images.shape == (2, *IMAGE_SHAPE)
    assert [s.decode() for s in np.load(tmp_path / "out" / "class_names.npy", allow_pickle=True)] == \
        ["cervical", "lumbar"]

    bad = subprocess.run([str(BIN / "saved_model_cli"), "run", "--dir", sm, "--tag_set", "serve",
                          "--signature_def", "generate", "--inputs",
                          f"class_ids={tmp_path / 'bad.npy'};seed={tmp_path / 'seed.npy'}"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert "class_ids must be integers in [0, 2] (3 classes: cervical, thoracic, lumbar)" in bad.stderr


def test_export_refuses_existing_folder_and_bad_names(tmp_path):
    from vugan.components.exporter import core

    (tmp_path / "sm").mkdir()
    with pytest.raises(FileExistsError):
        core.export_generator(None, CLASS_NAMES, NOISE_DIM, IMAGE_SHAPE, tmp_path / "sm")
    with pytest.raises(ValueError, match="single lines"):
        core.export_generator(None, ("a", "b\nc"), NOISE_DIM, IMAGE_SHAPE, tmp_path / "new")
