"""Attacks that query the trained model itself (models.bundle contract), as opposed to the released images.

* Partial black-box, GAN-Leaks (Chen, Yu, Zhang & Fritz, CCS 2020): the attacker can call the generator; for a query
  x it finds min_z ||G(z, c) - x||^2 by Adam on z (several random starts, all queries of a batch optimised together in
  one tf.function). A member tends to be reconstructed better. Score = -reconstruction MSE.
  Simplifications, stated in the report: plain L2 (no LPIPS term), no z-norm regulariser, no reference-model
  calibration.
* White-box, LOGAN (Hayes, Melis, Danezis & De Cristofaro, PETS 2019): the discriminator's real/fake logit on the
  query (an overfitted discriminator calls its training images "real" more confidently), and, for this ac-GAN, the
  auxiliary head's softmax probability of the query's true class.
"""
from __future__ import annotations

import time

import numpy as np


def _make_reconstructor(generator, steps: int, lr: float):
    import tensorflow as tf

    b1, b2, eps = 0.9, 0.999, 1e-8

    @tf.function(reduce_retracing=True)
    def reconstruct(z0, x, c):
        # Hand-written Adam over a tensor z so that every restart starts from fresh moments without variables.
        def loss_fn(z):
            rec = generator([z, c], training=False)
            return tf.reduce_mean(tf.square(tf.cast(rec, tf.float32) - x), axis=[1, 2, 3])

        z, m, v = z0, tf.zeros_like(z0), tf.zeros_like(z0)
        for t in tf.range(1, steps + 1):
            with tf.GradientTape() as tape:
                tape.watch(z)
                per_query = loss_fn(z)
                total = tf.reduce_sum(per_query)  # queries are independent: the sum keeps their gradients apart
            g = tape.gradient(total, z)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * tf.square(g)
            tf_ = tf.cast(t, tf.float32)
            mhat, vhat = m / (1 - b1 ** tf_), v / (1 - b2 ** tf_)
            z = z - lr * mhat / (tf.sqrt(vhat) + eps)
        return loss_fn(z)

    return reconstruct


def reconstruction_errors(generator, noise_dim: int, n_classes: int, images: np.ndarray, class_ids: np.ndarray, *,
                          steps: int, restarts: int, lr: float, batch: int, class_mode: str,
                          seed: int) -> tuple[np.ndarray, float]:
    """Best reconstruction MSE per query over restarts (and over classes when class_mode == "best").

    Args:
      generator: callable([noise [B, noise_dim], class_ids int32 [B]]) -> images [B, H, W, K].
      class_mode: "query" conditions on the query's own class, "best" tries every class.
    Returns: (errors [N] float64, seconds per query).
    """
    import tensorflow as tf

    if class_mode not in ("query", "best"):
        raise ValueError(f"class_mode {class_mode!r}: allowed values are 'query', 'best'")
    reconstruct = _make_reconstructor(generator, steps, lr)
    rng = np.random.default_rng(seed)
    n = len(images)
    best = np.full(n, np.inf)
    start = time.perf_counter()
    for lo in range(0, n, batch):
        x = np.asarray(images[lo:lo + batch], np.float32)
        b = len(x)
        pad = batch - b if n > batch else 0  # pad the last batch so the tf.function keeps one shape
        xp = np.concatenate([x, np.repeat(x[:1], pad, 0)]) if pad else x
        classes = [np.asarray(class_ids[lo:lo + batch], np.int32)] if class_mode == "query" else \
            [np.full(b, c, np.int32) for c in range(n_classes)]
        for c in classes:
            cp = np.concatenate([c, np.repeat(c[:1], pad)]) if pad else c
            for _ in range(restarts):
                z0 = rng.standard_normal((len(xp), noise_dim)).astype(np.float32)
                err = reconstruct(tf.constant(z0), tf.constant(xp), tf.constant(cp)).numpy()[:b]
                best[lo:lo + b] = np.minimum(best[lo:lo + b], err)
    return best, (time.perf_counter() - start) / max(n, 1)


def discriminator_scores(discriminator, images: np.ndarray, class_ids: np.ndarray,
                         batch: int = 256) -> tuple[np.ndarray, np.ndarray, float]:
    """(real/fake logit [N], softmax probability of the true class [N], seconds per query)."""
    import tensorflow as tf

    from vugan.models.acgan import conditional_logits

    start = time.perf_counter()
    logits, probs = [], []
    for lo in range(0, len(images), batch):
        # The logit D was trained with: conditional on the query's class when D has a projection term.
        rf, cls = conditional_logits(
            discriminator(tf.constant(np.asarray(images[lo:lo + batch], np.float32)), training=False),
            np.asarray(class_ids[lo:lo + batch], np.int32))
        p = tf.nn.softmax(tf.cast(cls, tf.float32), axis=-1).numpy()
        logits.append(np.asarray(rf, np.float64).reshape(-1))
        probs.append(p[np.arange(len(p)), np.asarray(class_ids[lo:lo + batch])])
    return np.concatenate(logits), np.concatenate(probs).astype(np.float64), \
        (time.perf_counter() - start) / max(len(images), 1)
