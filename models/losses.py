"""ac-GAN losses: pure functions of logits and labels, one number per call, averaged over the GLOBAL batch.

Each wraps the tensorflow-gan implementation with ``reduction=NONE`` and then divides the summed per-example
losses by the global batch size (``tf.nn.compute_average_loss``). Under ``MirroredStrategy`` every replica sees
only its share of the batch and the replicas' gradients are summed, so dividing by the *global* batch makes
both the gradients and the logged values independent of the number of replicas (a per-replica mean would be
N times too large once summed).

The class (auxiliary) losses are softmax cross-entropy ON LOGITS by default. The reference implementation (pGAN,
``train_region.py``) fed softmax *probabilities* to ``nn.NLLLoss``, which optimises -w_c * p_c rather than
-w_c * log p_c; :func:`class_loss` offers that quirk (``kind="nll_softmax"``) only so that configs/reference.toml
can reproduce the study exactly, together with the study's normalisation of a weighted loss by the sum of the
batch's weights (``nn.NLLLoss(weight=w)`` with reduction "mean").
"""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from vugan.models.tfgan_compat import NO_REDUCTION, tfgan


class GANLoss(NamedTuple):
    """The two players' total losses for one step."""

    generator: tf.Tensor
    discriminator: tf.Tensor


def _global_mean(per_example: tf.Tensor, global_batch_size: int) -> tf.Tensor:
    return tf.nn.compute_average_loss(tf.reshape(per_example, [-1]), global_batch_size=global_batch_size)


def _example_weights(labels: tf.Tensor, class_weights) -> tf.Tensor | float:
    if class_weights is None:
        return 1.0
    return tf.gather(tf.constant(class_weights, tf.float32), labels)


def modified_discriminator_loss(real_logits, fake_logits, *, global_batch_size: int,
                                real_label_smoothing: float = 0.0) -> tf.Tensor:
    """-log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))) (Goodfellow et al. 2014, arXiv:1406.2661).

    Args:
      real_logits, fake_logits: real/fake logits [N, 1] (or [N]).
      real_label_smoothing: one-sided label smoothing (Salimans et al. 2016, arXiv:1606.03498): the real target
        becomes ``1 - real_label_smoothing``; fake targets stay 0.
    """
    per_example = tfgan.losses.wargs.modified_discriminator_loss(
        tf.cast(real_logits, tf.float32), tf.cast(fake_logits, tf.float32),
        # tf.compat.v1 sigmoid smoothing maps a target t to t(1-s) + s/2, so s = 2 * smoothing gives 1 - smoothing.
        label_smoothing=2.0 * real_label_smoothing, loss_collection=None, reduction=NO_REDUCTION)
    return _global_mean(per_example, global_batch_size)


def modified_generator_loss(fake_logits, *, global_batch_size: int) -> tf.Tensor:
    """Non-saturating generator loss -log sigmoid(D(G(z))) (Goodfellow et al. 2014, arXiv:1406.2661)."""
    per_example = tfgan.losses.wargs.modified_generator_loss(
        tf.cast(fake_logits, tf.float32), loss_collection=None, reduction=NO_REDUCTION)
    return _global_mean(per_example, global_batch_size)


def acgan_discriminator_loss(real_cls_logits, fake_cls_logits, labels, *, num_classes: int,
                             global_batch_size: int, class_weights=None) -> tf.Tensor:
    """Class cross-entropy of D on real AND generated images (Odena et al. 2017, arXiv:1610.09585).

    Args:
      real_cls_logits, fake_cls_logits: class logits [N, C] of D on the real batch and on G(z, labels).
      labels: int class ids [N], shared by the real batch and the generated batch (G was conditioned on them).
      class_weights: optional per-class weights [C] (e.g. inverse training frequency); each example's loss is
        multiplied by the weight of its class.
    """
    weights = _example_weights(labels, class_weights)
    per_example = tfgan.losses.wargs.acgan_discriminator_loss(
        tf.cast(real_cls_logits, tf.float32), tf.cast(fake_cls_logits, tf.float32),
        tf.one_hot(labels, num_classes), real_weights=weights, generated_weights=weights,
        loss_collection=None, reduction=NO_REDUCTION)
    return _global_mean(per_example, global_batch_size)


def acgan_generator_loss(fake_cls_logits, labels, *, num_classes: int, global_batch_size: int,
                         class_weights=None) -> tf.Tensor:
    """Class cross-entropy of D on generated images, minimised by G (Odena et al. 2017, arXiv:1610.09585)."""
    per_example = tfgan.losses.wargs.acgan_generator_loss(
        tf.cast(fake_cls_logits, tf.float32), tf.one_hot(labels, num_classes),
        weights=_example_weights(labels, class_weights), loss_collection=None, reduction=NO_REDUCTION)
    return _global_mean(per_example, global_batch_size)


def inverse_frequency_weights(class_counts) -> list[float]:
    """w_c = N / (C * n_c): 1 for every class when balanced; the prior-weighted mean weight is always 1."""
    counts = [float(c) for c in class_counts]
    total, n = sum(counts), sum(1 for c in counts if c > 0)
    # A class absent from the training data (trainer.allow_missing_classes) is never a label: weight 0.
    return [total / (n * c) if c > 0 else 0.0 for c in counts]


# ---------------------------------------------------------------------------------------------------------------
# Per-example halves of the discriminator's loss, for DP-SGD (components/trainer/dp clips the real half per example).
# sum_i real_i + sum_i fake_i, divided by the global batch, equals modified_discriminator_loss +
# aux_weight * acgan_discriminator_loss when the fakes carry the real batch's labels (tested in test_trainer_dp.py).


def discriminator_real_terms(real_logits, real_cls_logits, labels, *, label_smoothing: float = 0.0,
                             class_weights=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-example (adversarial, class) loss terms of D on REAL images, [N] each, not averaged.

    Adversarial: -log sigmoid(D(x)) against the one-sided smoothed target 1 - label_smoothing; class: the
    (class-weighted) softmax cross-entropy of the true label.
    """
    logits = tf.reshape(tf.cast(real_logits, tf.float32), [-1])
    adv = tf.nn.sigmoid_cross_entropy_with_logits(tf.fill(tf.shape(logits), 1.0 - label_smoothing), logits)
    cls = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(real_cls_logits, tf.float32))
    return adv, cls * _example_weights(labels, class_weights)


def discriminator_fake_terms(fake_logits, fake_cls_logits, labels, *, class_weights=None
                             ) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-example (adversarial, class) loss terms of D on GENERATED images: -log(1 - sigmoid(D(G(z)))) and the
    class cross-entropy of the label G was conditioned on; [N] each, not averaged."""
    logits = tf.reshape(tf.cast(fake_logits, tf.float32), [-1])
    adv = tf.nn.sigmoid_cross_entropy_with_logits(tf.zeros_like(logits), logits)
    cls = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(fake_cls_logits, tf.float32))
    return adv, cls * _example_weights(labels, class_weights)


# ---------------------------------------------------------------------------------------------------------------
# The auxiliary class loss with the reference study's options (one half: real OR generated images).

CLASS_LOSSES = ("cross_entropy", "nll_softmax")
CLASS_NORMALIZATIONS = ("batch", "weight_sum")


def class_loss(cls_logits, labels, *, global_batch_size: int, class_weights=None, kind: str = "cross_entropy",
               normalization: str = "batch") -> tf.Tensor:
    """Weighted class loss of one batch half, a share of the global value (summing replicas gives it).

    kind: "cross_entropy" (-log p_y, on logits) or "nll_softmax" (-p_y: pGAN's NLLLoss applied to probabilities).
    normalization: "batch" divides sum_i w_i l_i by the global batch size; "weight_sum" by the sum of the
    GLOBAL batch's weights sum_i w_i (PyTorch ``NLLLoss(weight=w)``; all replicas' weights are summed).
    """
    logits = tf.cast(cls_logits, tf.float32)
    if kind == "cross_entropy":
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    elif kind == "nll_softmax":
        per_example = -tf.gather(tf.nn.softmax(logits), labels, batch_dims=1)
    else:
        raise ValueError(f"class loss {kind!r}: use one of {CLASS_LOSSES}")
    weights = tf.ones_like(per_example) * _example_weights(labels, class_weights)
    total = tf.reduce_sum(weights * per_example)
    if normalization == "batch":
        return total / global_batch_size
    if normalization != "weight_sum":
        raise ValueError(f"class loss normalization {normalization!r}: use one of {CLASS_NORMALIZATIONS}")
    weight_sum = tf.reduce_sum(weights)
    context = tf.distribute.get_replica_context()
    if context is not None:  # replica context (also the default strategy's): the global batch's weight sum
        weight_sum = context.all_reduce(tf.distribute.ReduceOp.SUM, weight_sum)
    return total / tf.maximum(weight_sum, 1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Hinge loss and R1 (options for small data: docs/training.md).


def hinge_discriminator_loss(real_logits, fake_logits, *, global_batch_size: int) -> tf.Tensor:
    """max(0, 1 - D(x)) + max(0, 1 + D(G(z))) (Lim & Ye 2017, arXiv:1705.02894; Miyato et al. 2018)."""
    real = tf.nn.relu(1.0 - tf.reshape(tf.cast(real_logits, tf.float32), [-1]))
    fake = tf.nn.relu(1.0 + tf.reshape(tf.cast(fake_logits, tf.float32), [-1]))
    return _global_mean(real + fake, global_batch_size)


def hinge_generator_loss(fake_logits, *, global_batch_size: int) -> tf.Tensor:
    """-D(G(z))."""
    return _global_mean(-tf.cast(fake_logits, tf.float32), global_batch_size)


def r1_penalty(real_input_grads, *, gamma: float, global_batch_size: int) -> tf.Tensor:
    """gamma / 2 * ||grad_x D(x)||^2 on real inputs (Mescheder et al. 2018, arXiv:1801.04406)."""
    g = tf.cast(real_input_grads, tf.float32)
    per_example = tf.reduce_sum(tf.square(g), axis=tf.range(1, tf.rank(g)))
    return 0.5 * gamma * _global_mean(per_example, global_batch_size)


def mode_seeking_loss(images, noise, labels, *, global_batch_size: int, eps: float = 1e-5,
                      pool: int = 1) -> tf.Tensor:
    """Mode seeking (Mao et al. 2019, MSGAN, arXiv:1903.05628), minimised by G: 1 / (d_I / d_z + eps) per pair of
    the batch with the SAME class, d_I = mean |G(z1) - G(z2)|, d_z = mean |z1 - z2|. G then pays for mapping two
    noise vectors of one class to nearly one image (collapse). Pairs are row i and row i + n/2 of this replica's
    batch; pairs of different classes add 0. The sum over pairs is divided by the global number of pairs
    (global_batch_size / 2), so replicas' values add up as the other losses do.

    With ``pool`` > 1 the images are compared after pool x pool average pooling: the term then pays for different
    layouts (bodies, disc, canal) and no longer for pixel-scale differences, which a generator can buy with noise or
    streaks that make it no more diverse anatomically (issue 22).
    """
    x = tf.cast(images, tf.float32)
    if pool > 1:
        x = tf.nn.avg_pool2d(x, pool, pool, "VALID")
    half = tf.shape(x)[0] // 2
    d_img = tf.reduce_mean(tf.abs(x[:half] - x[half:2 * half]), axis=tf.range(1, tf.rank(x)))
    z = tf.cast(noise, tf.float32)
    d_z = tf.reduce_mean(tf.abs(z[:half] - z[half:2 * half]), axis=-1)
    same = tf.cast(tf.equal(labels[:half], labels[half:2 * half]), tf.float32)
    per_pair = same / (d_img / d_z + eps)
    return tf.reduce_sum(per_pair) / (global_batch_size / 2)
