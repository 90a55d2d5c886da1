"""Serving throughput: the exported SavedModel against the in-memory Keras generator of the same run.

  .venv/bin/python bench/serve.py --run runs/00001-demo [--batches 1 64 256] [--repeats 5] [--out bench.json]

For each batch size, images/s of ``serving_default`` (class ids + noise, the path TF Serving takes) and of
``generate`` (noise drawn in-graph, uint8 out) on the reloaded SavedModel, and of the Keras generator called
eagerly as ``models.bundle.generate`` does; each number is the median of ``--repeats`` timed repeats after one
warm-up call. ``overhead`` = Keras images/s / SavedModel images/s (above 1: the SavedModel is slower);
``overhead_vs_tf_function`` compares with the same Keras model traced by ``tf.function`` in this process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)
tf_env.configure()


def _timed(fn, batch: int, repeats: int) -> float:
    """Median images/s over ``repeats``; each repeat makes enough calls to cover ~128 images (at least 3)."""
    calls = max(3, 128 // batch)
    fn()  # warm-up: tracing, first allocation
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rates.append(calls * batch / (time.perf_counter() - start))
    return statistics.median(rates)


def bench(run_dir: Path, batches, repeats: int, use_ema: bool = True) -> dict:
    import numpy as np
    import tensorflow as tf

    from vugan.models.bundle import load_model_bundle

    bundle = load_model_bundle(run_dir / "train", ema=use_ema)
    loaded = tf.saved_model.load(str(run_dir / "export" / "saved_model"))
    serving, generate = loaded.signatures["serving_default"], loaded.signatures["generate"]
    # The same Keras model traced into a graph in this process: separates "graph vs eager" from "SavedModel".
    compiled = tf.function(lambda noise, ids: bundle.generator([noise, ids], training=False))
    rng = np.random.default_rng(0)
    results = []
    for batch in batches:
        ids = rng.integers(0, len(bundle.class_names), batch).astype(np.int32)
        noise = rng.standard_normal((batch, bundle.noise_dim)).astype(np.float32)
        t_ids, t_noise, t_seed = tf.constant(ids), tf.constant(noise), tf.constant(1, tf.int64)
        t_ids64 = tf.constant(ids, tf.int64)  # the signatures take int64 ids (range-checked before their cast)
        keras_ips = _timed(lambda: np.asarray(bundle.generator([noise, ids], training=False)), batch, repeats)
        graph_ips = _timed(lambda: compiled(t_noise, t_ids).numpy(), batch, repeats)
        sd_ips = _timed(lambda: serving(class_ids=t_ids64, noise=t_noise)["images"].numpy(), batch, repeats)
        gen_ips = _timed(lambda: generate(class_ids=t_ids64, seed=t_seed)["images"].numpy(), batch, repeats)
        row = {"batch": batch, "keras_images_per_s": round(keras_ips, 1),
               "keras_tf_function_images_per_s": round(graph_ips, 1),
               "serving_default_images_per_s": round(sd_ips, 1), "generate_images_per_s": round(gen_ips, 1),
               "overhead_serving_default": round(keras_ips / sd_ips, 3),
               "overhead_generate": round(keras_ips / gen_ips, 3),
               "overhead_vs_tf_function": round(graph_ips / sd_ips, 3)}
        print(json.dumps(row), flush=True)
        results.append(row)
    return {"run": str(run_dir), "image_shape": list(bundle.image_shape), "classes": len(bundle.class_names),
            "repeats": repeats, "devices": [d.name for d in tf.config.list_logical_devices()],
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "tensorflow": tf.__version__,
            "results": results}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a run folder with train/ and export/")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-ema", action="store_true", help="compare with the raw generator (if exported so)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    for sub in ("train", "export/saved_model"):
        if not (args.run / sub).exists():
            parser.error(f"{args.run / sub} does not exist; run `vugan run` (or `vugan export --run`) first")
    report = bench(args.run, args.batches, args.repeats, use_ema=not args.no_ema)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
