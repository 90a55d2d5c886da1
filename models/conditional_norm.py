"""Class-conditional BatchNorm for the generator (trainer.g_conditional_norm).

The ac-GAN's generator sees its class only as a one-hot beside the noise at the 1x1 input, so by the last block
the class has to survive every convolution. Conditional BatchNorm (de Vries et al. 2017, arXiv:1707.00683; the
generator of Miyato & Koyama 2018, arXiv:1802.05637, and BigGAN) gives every normalisation its own per-class gain
and bias: the class re-enters at each block's scale and shift.
"""
from __future__ import annotations

import keras
from keras import ops

GAIN_STD = 0.02  # the same N(1, 0.02) start as the generator's plain BatchNorm gamma


@keras.saving.register_keras_serializable(package="vugan")
class ConditionalBatchNorm(keras.layers.BatchNormalization):
    """BatchNorm without its own gamma/beta, then ``x * gain[c] + bias[c]`` with one learned row per class.

    Called on ``[x, class_ids]`` (class_ids int [N]). The gain and bias tables are an embedding of the class,
    ``class_gain`` [num_classes, C] and ``class_bias`` [num_classes, C]. The batch statistics and the moving
    averages are the parent's, so training/inference behaviour, mixed precision and distribution handling are
    exactly those of keras.layers.BatchNormalization.
    """

    def __init__(self, num_classes: int, **kwargs):
        # Saved configs carry center/scale; the layer's own gamma/beta are replaced by the class tables.
        kwargs.pop("center", None)
        kwargs.pop("scale", None)
        super().__init__(center=False, scale=False, **kwargs)
        self.num_classes = int(num_classes)

    def build(self, input_shape):
        x_shape = input_shape[0]
        super().build(x_shape)
        self.input_spec = None  # the parent's spec describes x alone; this layer takes [x, class_ids]
        channels = (int(x_shape[self.axis]),)
        self.class_gain = self.add_weight(shape=(self.num_classes, *channels), name="class_gain",
                                          initializer=keras.initializers.RandomNormal(1.0, GAIN_STD))
        self.class_bias = self.add_weight(shape=(self.num_classes, *channels), name="class_bias",
                                          initializer="zeros")

    def call(self, inputs, training=None):
        x, class_ids = inputs
        normalized = super().call(x, training=training)
        # A one-hot matmul rather than a gather: the tables' gradients stay dense tensors (a gather's are
        # IndexedSlices), as every other gradient the trainer reduces across replicas, clips or averages.
        one_hot = ops.one_hot(ops.cast(ops.reshape(class_ids, (-1,)), "int32"), self.num_classes)
        # [N, C] -> [N, 1, 1, C]: one gain and bias per example, broadcast over its positions.
        spatial = (1,) * (len(x.shape) - 2)
        gain = ops.reshape(ops.matmul(one_hot, self.class_gain), (-1, *spatial, self.class_gain.shape[-1]))
        bias = ops.reshape(ops.matmul(one_hot, self.class_bias), (-1, *spatial, self.class_bias.shape[-1]))
        return normalized * ops.cast(gain, normalized.dtype) + ops.cast(bias, normalized.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
