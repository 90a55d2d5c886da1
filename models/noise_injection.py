"""Per-pixel noise inputs for the generator (trainer.g_noise_inputs; StyleGAN, Karras et al. 2019, arXiv:1812.04948).

Why it was tried: on the demo cohort 98% of the old recipe's FD-VU sits in the encoder's appearance axes, with
Laplacian and gradient energies next after the black overshoot, and the largest FRD share is the Laplacian edge
variance (issue 22, docs/training.md). Real units carry scanner noise and trabecular texture, i.i.d.-like at the
pixel scale, which a generator making every pixel a smooth function of a 100-d code draws badly. StyleGAN's answer:
add one Gaussian map per example to a block's features, scaled by a learned per-channel strength that starts at 0
(so the layer changes nothing until training finds texture useful). Measured since: the synthetic units have MORE
high-pass energy than real ones (streaks), and with pooled mode seeking the strengths stay near 0; with per-pixel
mode seeking G turns the noise up to buy distance. Off in every shipped config.

Determinism: vugan's generator contract is "the same noise vector gives the same image", in the bundle, the
SavedModel and every batch split. So the map is not drawn from a stateful generator: each example's map is a
stateless draw seeded by the bits of the first two entries of its own noise vector z (plus the layer's index), a
function of that example alone.
"""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="vugan")
class NoiseInjection(keras.layers.Layer):
    """``[x, z] -> x + strength * n``, n ~ N(0, 1) one map [H, W, 1] per example seeded by z's bits, strength
    one learned value per channel, initialised to 0."""

    def __init__(self, stream: int, **kwargs):
        super().__init__(**kwargs)
        self.stream = int(stream)

    def build(self, input_shape):
        self.strength = self.add_weight(shape=(int(input_shape[0][-1]),), initializer="zeros", name="strength")

    def call(self, inputs):
        x, z = inputs
        seeds = example_seeds(z, self.stream)
        height, width = x.shape[1], x.shape[2]
        maps = tf.map_fn(lambda s: tf.random.stateless_normal([height, width, 1], seed=s), seeds,
                         fn_output_signature=tf.float32)
        return x + ops.cast(maps, x.dtype) * ops.cast(self.strength, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "stream": self.stream}


def example_seeds(z, stream: int):
    """[N, 2] int32 seeds: the bit patterns of z[:, 0] and z[:, 1], the second offset by ``stream`` (one stream per
    layer, so two layers never add the same map)."""
    bits = tf.bitcast(tf.cast(z[:, :2], tf.float32), tf.int32)
    return tf.stack([bits[:, 0], bits[:, 1] + tf.constant(stream * 7919, tf.int32)], axis=1)
