"""The generator as a TensorFlow SavedModel with two explicit serving signatures, and its self-check.

``serving_default(class_ids int64 [N], noise float32 [N, Z]) -> {"images": float32 [N, H, W, K] in [-1, 1],
"class_names": string [N]}`` is the raw generator; ``generate(class_ids int64 [N], seed int64 []) ->
{"images": uint8 [N, H, W, K], "class_names": string [N]}`` draws the noise itself (stateless, so a seed gives
the same images on every server) and returns display-ready 8-bit images. The class names travel as the asset
``assets/class_names.txt`` (one per line, line i = class id i) and are read through a lookup table built on that
asset, so the file is load-bearing rather than decorative.

Both signatures check every request inside the graph with ``tf.debugging`` asserts (InvalidArgumentError, HTTP
400 from TF Serving), so TF Serving, ``saved_model_cli`` and Python get the same refusals: at most ``max_batch``
class ids (a unit costs about 0.2 MB of output: an unbounded request could ask for any amount of memory); class ids
in range, checked as int64 before the cast to the generator's int32 (an int32 input would let a client's cast
turn 2**32 + 1 into 1 unnoticed); finite noise (NaN noise gives NaN images). Each message names the rule.
The module keeps the generator's variables as its own attribute: the TF1 loader used by ``saved_model_cli run``
and TF Serving only finds variables reachable that way (see shared/docs/stack-notes.md).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

CLASS_NAMES_ASSET = "class_names.txt"
SIGNATURES = ("serving_default", "generate")
# Units per request (exporter.max_batch): about 0.2 MB of output each at the default 64 x 64 x 3 float32 shape plus
# the generator's activations, so 1024 stay within a few hundred MB; a million would ask for ~200 GB.
DEFAULT_MAX_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class ExportInfo:
    """What the exporter wrote and what the reload check saw; stored as ``export_info.json``."""

    saved_model: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    noise_dim: int
    signatures: dict
    check: dict


def build_module(generator, class_names: Sequence[str], noise_dim: int, image_shape: Sequence[int],
                 asset_path: str, max_batch: int = DEFAULT_MAX_BATCH):
    """Wrap a Keras generator ``([noise, class_ids]) -> images`` in a ``tf.Module`` with the two signatures."""
    import tensorflow as tf

    num_classes = len(class_names)
    h, w, k = (int(x) for x in image_shape)
    range_msg = (f"class_ids must be integers in [0, {num_classes - 1}] "
                 f"({num_classes} classes: {', '.join(class_names)})")
    batch_msg = (f"at most {max_batch} class ids per request (exporter.max_batch); split the request into "
                 f"smaller ones")
    noise_msg = "noise must be finite (no NaN or infinity); draw it from a standard normal"

    class GeneratorModule(tf.Module):
        def __init__(self):
            super().__init__(name="vugan_generator")
            # The module owns the generator's underlying tf.Variables directly and reaches the Keras model only
            # through a closure: with the Keras model as an attribute, the TF1 loader (saved_model_cli run,
            # TF Serving) fails with "Could not find variable", as Keras 3 variables wrap the real ones.
            self.generator_variables = [v.value if hasattr(v, "value") else v for v in generator.variables]
            self.class_names_asset = tf.saved_model.Asset(asset_path)
            init = tf.lookup.TextFileInitializer(
                self.class_names_asset, key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
                value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE)
            self.class_table = tf.lookup.StaticHashTable(init, default_value="")

        def _checked(self, class_ids):
            """The batch bound, then the range on the int64 ids as sent; only then the cast to int32."""
            size = tf.debugging.assert_less_equal(tf.size(class_ids), max_batch, message=batch_msg)
            with tf.control_dependencies([size]):
                checks = [
                    tf.debugging.assert_greater_equal(class_ids, tf.constant(0, tf.int64), message=range_msg),
                    tf.debugging.assert_less(class_ids, tf.constant(num_classes, tf.int64), message=range_msg),
                ]
            with tf.control_dependencies(checks):
                return tf.cast(class_ids, tf.int32)

        def _images(self, class_ids, noise):
            images = generator([noise, class_ids], training=False)
            return tf.ensure_shape(tf.cast(images, tf.float32), [None, h, w, k])

        def _names(self, class_ids):
            return self.class_table.lookup(tf.cast(class_ids, tf.int64))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="class_ids"),
                                      tf.TensorSpec([None, noise_dim], tf.float32, name="noise")])
        def serving_default(self, class_ids, noise):
            class_ids = self._checked(class_ids)
            rows = tf.debugging.assert_equal(tf.shape(noise)[0], tf.shape(class_ids)[0],
                                             message="noise must have one row per class id ([N, noise_dim] and [N])")
            with tf.control_dependencies([rows]):
                noise = tf.debugging.assert_all_finite(noise, message=noise_msg)
            return {"images": self._images(class_ids, noise), "class_names": self._names(class_ids)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="class_ids"),
                                      tf.TensorSpec([], tf.int64, name="seed")])
        def generate(self, class_ids, seed):
            class_ids = self._checked(class_ids)
            # Stateless: the same (seed, class_ids) gives the same images in any process or server.
            noise = tf.random.stateless_normal([tf.shape(class_ids)[0], noise_dim],
                                               seed=tf.stack([seed, tf.constant(0, tf.int64)]))
            images = self._images(class_ids, noise)
            # [-1, 1] -> [0, 255], rounded rather than truncated so that mid-grey maps to 128 both ways.
            pixels = tf.cast(tf.round(tf.clip_by_value((images + 1.0) * 127.5, 0.0, 255.0)), tf.uint8)
            return {"images": pixels, "class_names": self._names(class_ids)}

    return GeneratorModule()


def export_generator(generator, class_names: Sequence[str], noise_dim: int, image_shape: Sequence[int],
                     saved_model_dir: str | Path, max_batch: int | None = None) -> Path:
    """Write the SavedModel to ``saved_model_dir`` (which must not exist yet); return its path."""
    import tensorflow as tf

    saved_model_dir = Path(saved_model_dir)
    if saved_model_dir.exists():
        raise FileExistsError(f"{saved_model_dir} exists; remove it or export to a new folder")
    if any("\n" in n or not n for n in class_names):
        raise ValueError(f"class names must be non-empty single lines, got {list(class_names)!r}")
    with tempfile.TemporaryDirectory() as tmp:
        # The asset is copied into saved_model/assets/ by tf.saved_model.save; the temp file can go afterwards.
        asset = os.path.join(tmp, CLASS_NAMES_ASSET)
        Path(asset).write_text("\n".join(class_names) + "\n")
        module = build_module(generator, class_names, noise_dim, image_shape, asset,
                              max_batch=DEFAULT_MAX_BATCH if max_batch is None else max_batch)
        tf.saved_model.save(module, str(saved_model_dir),
                            signatures={"serving_default": module.serving_default, "generate": module.generate})
    return saved_model_dir


def read_class_names(saved_model_dir: str | Path) -> list[str]:
    """The class names from the SavedModel's asset (no TensorFlow needed)."""
    text = (Path(saved_model_dir) / "assets" / CLASS_NAMES_ASSET).read_text()
    return [line for line in text.splitlines() if line]


# Run in a fresh interpreter: a check in the exporting process could pass only because Python objects (the Keras
# model, its custom layers) are still in memory; TF Serving has none of them.
_CHECK_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
path, n_classes, noise_dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = tf.saved_model.load(path)
out = {"signatures": sorted(m.signatures.keys())}
ids = tf.constant([i % n_classes for i in range(2)], tf.int64)
noise = tf.random.stateless_normal([2, noise_dim], seed=[1, 2])
r = m.signatures["serving_default"](class_ids=ids, noise=noise)
g1 = m.signatures["generate"](class_ids=ids, seed=tf.constant(7, tf.int64))
g2 = m.signatures["generate"](class_ids=ids, seed=tf.constant(7, tf.int64))
out["serving_default"] = {"shape": r["images"].shape.as_list(), "dtype": r["images"].dtype.name,
                          "min": float(tf.reduce_min(r["images"])), "max": float(tf.reduce_max(r["images"])),
                          "class_names": [s.decode() for s in r["class_names"].numpy()]}
out["generate"] = {"shape": g1["images"].shape.as_list(), "dtype": g1["images"].dtype.name,
                   "deterministic": bool(np.array_equal(g1["images"].numpy(), g2["images"].numpy()))}
try:
    m.signatures["generate"](class_ids=tf.constant([n_classes], tf.int64), seed=tf.constant(0, tf.int64))
    out["rejects_bad_class"] = False
except tf.errors.InvalidArgumentError as exc:
    out["rejects_bad_class"] = "class_ids must be integers in" in str(exc)
print("VUGAN_CHECK " + json.dumps(out))
"""


def check_saved_model(saved_model_dir: str | Path, num_classes: int, noise_dim: int,
                      image_shape: Sequence[int], timeout: float = 600) -> dict:
    """Reload in a fresh process, call each signature on a 2-unit input; raise RuntimeError on any mismatch."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    proc = subprocess.run([sys.executable, "-c", _CHECK_SCRIPT, str(saved_model_dir), str(num_classes),
                           str(noise_dim)], capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("VUGAN_CHECK ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{saved_model_dir}: the exported SavedModel failed to reload and run in a fresh "
                           f"process:\n{proc.stderr[-3000:]}")
    check = json.loads(lines[-1][len("VUGAN_CHECK "):])
    want = [2, *[int(x) for x in image_shape]]
    problems = []
    if check["signatures"] != sorted(SIGNATURES):
        problems.append(f"signatures {check['signatures']}, expected {sorted(SIGNATURES)}")
    if check["serving_default"]["shape"] != want or check["serving_default"]["dtype"] != "float32":
        problems.append(f"serving_default gave {check['serving_default']}, expected float32 {want}")
    if not -1.0 <= check["serving_default"]["min"] <= check["serving_default"]["max"] <= 1.0:
        problems.append(f"serving_default images outside [-1, 1]: {check['serving_default']}")
    if check["generate"]["shape"] != want or check["generate"]["dtype"] != "uint8":
        problems.append(f"generate gave {check['generate']}, expected uint8 {want}")
    if not check["generate"]["deterministic"]:
        problems.append("generate is not deterministic for a fixed seed")
    if not check["rejects_bad_class"]:
        problems.append("an out-of-range class id was not rejected with the range message")
    if problems:
        raise RuntimeError(f"{saved_model_dir}: reload check failed: " + "; ".join(problems))
    return check


def describe_signatures(noise_dim: int, image_shape: Sequence[int]) -> dict:
    h, w, k = (int(x) for x in image_shape)
    return {
        "serving_default": {"inputs": {"class_ids": "int64 [N]", "noise": f"float32 [N, {noise_dim}]"},
                            "outputs": {"images": f"float32 [N, {h}, {w}, {k}] in [-1, 1]",
                                        "class_names": "string [N]"}},
        "generate": {"inputs": {"class_ids": "int64 [N]", "seed": "int64 []"},
                     "outputs": {"images": f"uint8 [N, {h}, {w}, {k}]", "class_names": "string [N]"}},
    }


def keras_reference(generator, class_ids: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The in-memory generator's output for the same inputs (tests and the serving benchmark compare to it)."""
    return np.asarray(generator([noise.astype(np.float32), class_ids.astype(np.int32)], training=False))
