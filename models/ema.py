"""Exponential moving average of the generator's weights (used for sampling and export).

Averaging G over the last few hundred steps smooths the oscillation of adversarial training (Yazici et al.
2019, arXiv:1806.04498; StyleGAN's G_ema). Early on the average would be dominated by the random
initialisation, so the decay ramps up as min(decay, (1 + t) / (10 + t)), like tf.train.ExponentialMovingAverage
with num_updates.
"""
from __future__ import annotations

import keras
from keras import ops


def decay_for(decay: float, half_life_kimg: float, global_batch: int) -> float:
    """The EMA decay per step: ``decay`` as given, or (half_life_kimg > 0) the one whose weight halves every
    half_life_kimg thousand images, 0.5 ** (batch / (1000 half_life_kimg)) (StyleGAN2-ADA's ema_kimg), so the
    averaging horizon is set in images and does not change with the batch size."""
    if half_life_kimg <= 0:
        return decay
    return 0.5 ** (global_batch / (1000.0 * half_life_kimg))


def effective_decay(decay: float, step):
    """Works on Python numbers and on tensors (inside the compiled step)."""
    step = ops.cast(step, "float32")
    return ops.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema_model: keras.Model, model: keras.Model, decay) -> None:
    """ema <- decay * ema + (1 - decay) * current for trainable weights; non-trainable ones (BN stats) copied."""
    trainable = {id(v) for v in model.trainable_weights}
    for e, v in zip(ema_model.weights, model.weights):  # clone_model keeps the weight order
        e.assign(decay * e.value + (1.0 - decay) * v.value if id(v) in trainable else v.value)


def clone_for_ema(model: keras.Model) -> keras.Model:
    ema = keras.models.clone_model(model)
    ema.set_weights(model.get_weights())
    return ema
