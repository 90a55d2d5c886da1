"""Training throughput: vugan's trainer vs a plain tutorial-style reference loop, same model, same run.

The reference loop is what one writes from the TensorFlow DCGAN tutorial: numpy arrays -> from_tensor_slices
-> shuffle -> batch (no prefetch, no caching), and a @tf.function GradientTape step that calls D separately
on the real and on the fake batch, then G and D again for the generator (3 D and 2 G forwards, the reference
study's per-batch sequence), no XLA. The trainer runs its real code path (TFRecords -> tf.data, strategy,
distributed step, EMA off, logging every chunk). Prints images/s for each (median of the chunks after the
first, which includes tracing) and the ratio.

    .venv/bin/python bench/train.py --width 32 --size 64 --slices 9 --batch 32 --steps 60
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def reference_loop(g, d, images, labels, *, batch, noise_dim, num_classes, steps, chunk):
    import keras
    import tensorflow as tf

    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    g_opt, d_opt = keras.optimizers.Adam(1e-4, beta_1=0.5), keras.optimizers.Adam(1e-4, beta_1=0.5)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(1000).batch(batch, drop_remainder=True).repeat()

    @tf.function
    def train_step(real, y):
        z = tf.random.normal([batch, noise_dim])
        fake_y = tf.random.uniform([batch], 0, num_classes, tf.int32)
        fake = g([z, fake_y], training=True)
        with tf.GradientTape() as tape:
            r_rf, r_cls = d(real, training=True)
            f_rf, f_cls = d(fake, training=True)
            d_loss = (bce(tf.ones_like(r_rf), r_rf) + bce(tf.zeros_like(f_rf), f_rf)
                      + ce(y, r_cls) + ce(fake_y, f_cls))
        d_opt.apply_gradients(zip(tape.gradient(d_loss, d.trainable_variables), d.trainable_variables))
        z = tf.random.normal([batch, noise_dim])
        with tf.GradientTape() as tape:
            f_rf, f_cls = d(g([z, fake_y], training=True), training=True)
            g_loss = bce(tf.ones_like(f_rf), f_rf) + ce(fake_y, f_cls)
        g_opt.apply_gradients(zip(tape.gradient(g_loss, g.trainable_variables), g.trainable_variables))
        return d_loss, g_loss

    rates, it = [], iter(ds)
    for _ in range(steps // chunk):
        t = time.perf_counter()
        for _ in range(chunk):
            real, y = next(it)
            out = train_step(real, y)
        float(out[0])  # wait for the last step
        rates.append(chunk * batch / (time.perf_counter() - t))
    return rates


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--slices", type=int, default=9)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=60, help="steps per loop, measured in chunks of --chunk")
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--units", type=int, default=64, help="training units per class in the fixture")
    p.add_argument("--xla", action="store_true", help="also time the trainer with trainer.xla = true")
    args = p.parse_args(argv)

    import keras
    import numpy as np

    from components.trainer import core
    from components.trainer.callbacks import read_stats
    from components.trainer.data import inspect_examples
    from components.trainer.run import make_strategy
    from fixtures_examples import make_examples_artifact
    from models import acgan
    from pipeline.config import load_config

    shape = (args.size, args.size, args.slices)
    tmp = Path(tempfile.mkdtemp(prefix="vugan-bench-"))
    root = make_examples_artifact(tmp / "examples", n_per_class=args.units, shape=shape)
    info = inspect_examples(root)
    print(f"model s={args.width}, {shape}, batch {args.batch}, {info.num_train} units; "
          f"{args.steps} steps per loop in chunks of {args.chunk}")

    results = {}
    for xla in ([False, True] if args.xla else [False]):
        cfg = load_config(None, [f"trainer.width={args.width}", f"trainer.batch_size={args.batch}",
                                 f"trainer.steps={args.steps}", f"trainer.log_every={args.chunk}",
                                 f"trainer.image_every={10**6}", f"trainer.checkpoint_every={10**6}",
                                 f"trainer.xla={str(xla).lower()}"]).trainer
        out = tmp / f"trainer-xla{int(xla)}"
        out.mkdir()
        strategy = make_strategy(1)
        with strategy.scope():
            gan = core.build_gan(cfg, info, global_batch=args.batch)
        core.train(strategy, gan, info, cfg, out, log=lambda m: None)
        rates = [r["images_per_s"] for r in read_stats(out / "stats.jsonl")][1:]
        results[f"trainer{' (xla)' if xla else ''}"] = rates

    from components import schema
    arrays = schema.load_split(str(root), "train")
    arch = acgan.ArchConfig(image_shape=shape, num_classes=3, width=args.width)
    keras.utils.set_random_seed(0)
    g, d = acgan.build_generator(arch), acgan.build_discriminator(arch)
    results["reference loop"] = reference_loop(
        g, d, arrays.images, arrays.class_ids, batch=args.batch, noise_dim=100, num_classes=3, steps=args.steps,
        chunk=args.chunk)[1:]

    med = {k: statistics.median(v) for k, v in results.items()}
    for k, v in results.items():
        print(f"{k:16s} {med[k]:8.1f} images/s  (chunks: {', '.join(f'{x:.1f}' for x in v)})")
    for k in med:
        if k != "reference loop":
            print(f"ratio {k} / reference loop = {med[k] / med['reference loop']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
