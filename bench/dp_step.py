"""Per-step cost of the DP discriminator gradient (vectorised per-example) against an ordinary batch gradient.

A small DCGAN-like ac-GAN discriminator (4 strided 3x3 convs of width 16-32-64-128, LeakyReLU, real/fake and class
heads) on 32x32x3 inputs, batch 32. Times one compiled (tf.function) gradient computation, median of repeated runs.
Run: `.venv/bin/python bench/dp_step.py [--batch 32] [--repeats 30]`.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)
tf_env.configure()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from vugan.components.trainer.dp import per_example as dp  # noqa: E402

NUM_CLASSES = 5


def build_discriminator(width: int = 16, size: int = 32, channels: int = 3) -> keras.Model:
    x = inputs = keras.Input((size, size, channels))
    for i in range(4):
        x = keras.layers.Conv2D(width * 2**i, 3, strides=2, padding="same")(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, [keras.layers.Dense(1)(x), keras.layers.Dense(NUM_CLASSES)(x)])


def real_loss(model):
    """Per-example ac-GAN real-data loss: non-saturating real term + auxiliary class term."""
    def loss(batch):
        images, labels = batch
        realfake, cls = model(images, training=True)
        gan = tf.nn.sigmoid_cross_entropy_with_logits(tf.ones_like(realfake), realfake)[:, 0]
        return gan + tf.nn.sparse_softmax_cross_entropy_with_logits(labels, cls)
    return loss


def median_seconds(fn, repeats: int) -> float:
    fn()  # trace + warm up
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        tf.nest.map_structure(lambda t: t.numpy(), out)  # wait for the result
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    model = build_discriminator()
    variables = model.trainable_variables
    images = tf.random.normal([args.batch, 32, 32, 3])
    labels = tf.random.uniform([args.batch], 0, NUM_CLASSES, tf.int32)
    loss = real_loss(model)

    @tf.function
    def batch_grad():
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(loss((images, labels)))
        return tape.gradient(value, variables)

    def dp_step(method):
        return tf.function(lambda: dp.dp_gradients(loss, variables, (images, labels), clip_norm=1.0,
                                                   noise_multiplier=1.1, normalizer=args.batch,
                                                   method=method).grads)

    base = median_seconds(batch_grad, args.repeats)
    print(f"discriminator params: {model.count_params()}, batch {args.batch}, 32x32x3, "
          f"{tf.config.threading.get_inter_op_parallelism_threads() or 'default'} inter-op threads, "
          f"devices: {[d.device_type for d in tf.config.list_logical_devices()]}")
    print(f"ordinary batch gradient: median {base * 1e3:.2f} ms")
    for method in dp.PER_EXAMPLE_METHODS:
        t = median_seconds(dp_step(method), args.repeats)
        print(f"DP gradient ({method}): median {t * 1e3:.2f} ms, ratio {t / base:.2f}x")


if __name__ == "__main__":
    main()
