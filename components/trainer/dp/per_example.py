"""DP-SGD gradients for the discriminator's real-data loss: per-example (or per-patient) clipping plus Gaussian noise.

Real images reach a gradient in exactly one place in the ac-GAN: the discriminator's loss on the real batch (GAN real
term + auxiliary class term). Making that gradient differentially private makes the discriminator's weights private,
and the generator, which only ever sees the discriminator, is then private by post-processing. The recipe is DP-SGD
(Abadi et al. 2016, "Deep Learning with Differential Privacy"): compute every example's gradient, clip each privacy
unit's gradient to L2 norm C, sum, add N(0, (sigma * C)^2) once to the sum, and divide by a CONSTANT (the expected
batch size, never the realised one, which would itself depend on the data set).

Per-example gradients are vectorised (`tf.vectorized_map` over a one-example gradient, or a pfor Jacobian); there is no
Python loop over examples, so everything here runs inside `tf.function` and in a `MirroredStrategy` replica context.
Under a strategy each replica returns its share (local clipped sum / global normaliser); the Keras optimizer's
cross-replica SUM then gives the global DP gradient, and noise is added by replica 0 only, so it is added exactly once
whatever the replicas' seeds are. See docs/dp.md for the integration into the trainer.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import tensorflow as tf

PER_EXAMPLE_METHODS = ("vmap", "jacobian")


class DPGradient(NamedTuple):
    """Result of one DP aggregation.

    grads: this replica's share of the private gradient, one tensor per variable (sum over replicas = DP gradient).
    unit_norms: [num_units] L2 norms of the privacy units' gradients BEFORE clipping (0 for empty/padded units).
      They are computed from real data without noise: use them for diagnostics only (e.g. how often clipping binds);
      anything logged from them is outside the privacy guarantee.
    """

    grads: list
    unit_norms: tf.Tensor


def per_example_gradients(
    per_example_loss_fn: Callable[[Any], tf.Tensor],
    variables: Sequence[tf.Variable],
    inputs: Any,
    method: str = "vmap",
) -> list:
    """Gradients of each example's loss with respect to `variables`, vectorised over the batch.

    Args:
      per_example_loss_fn: maps a batch (same nested structure as `inputs`, leading dim b) to losses [b], where
        loss i depends on example i only. With method "vmap" it is called on one-example batches (b = 1).
      variables: the variables to differentiate (e.g. `discriminator.trainable_variables`).
      inputs: tensor or nested structure of tensors with a common leading batch dimension B.
      method: "vmap" (default, faster for convs) runs the model once per example under `tf.vectorized_map`, so
        each example really is alone; "jacobian" runs the batch forward once and takes a pfor Jacobian of the [B]
        losses, correct only if the model does not mix examples. Either way, no BatchNorm in the discriminator:
        its moving statistics would be un-noised real-data state.

    Returns:
      A list with one tensor [B, *variable.shape] per variable (zeros for a variable the loss does not use).

    Raises:
      ValueError: unknown method.
    """
    if method == "vmap":
        def one_example(example):
            batch_of_one = tf.nest.map_structure(lambda t: tf.expand_dims(t, 0), example)
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(per_example_loss_fn(batch_of_one))
            return _zeros_for_none(tape.gradient(loss, variables), variables, [], loss.dtype)

        return list(tf.vectorized_map(one_example, inputs))
    if method == "jacobian":
        with tf.GradientTape() as tape:
            losses = per_example_loss_fn(inputs)
        jac = tape.jacobian(losses, variables, experimental_use_pfor=True)
        return _zeros_for_none(jac, variables, [tf.shape(losses)[0]], losses.dtype)
    raise ValueError(f"method must be one of {PER_EXAMPLE_METHODS}, got {method!r}")


def _zeros_for_none(grads, variables, lead_shape, dtype) -> list:
    # A variable the loss does not use (e.g. a head) gets None. UnconnectedGradients.ZERO would do this, but it
    # fails on Keras 3 variables (their dtype is a string), so fill in the zeros here.
    return [tf.zeros(tf.concat([lead_shape, tf.shape(v)], 0), dtype) if g is None else g
            for g, v in zip(grads, variables)]


def global_norms(grads: Sequence[tf.Tensor]) -> tf.Tensor:
    """L2 norm of each row's gradient taken over ALL variables jointly: [B, ...] tensors -> [B]."""
    squares = [tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1) for g in grads]
    return tf.sqrt(tf.add_n(squares))


def clip_rows(grads: Sequence[tf.Tensor], clip_norm: float) -> tuple[list, tf.Tensor]:
    """Scales each row (one privacy unit's gradient across all variables) to L2 norm at most `clip_norm`.

    Args:
      grads: one tensor [U, *shape] per variable; row u is unit u's gradient.
      clip_norm: C > 0.

    Returns:
      (clipped grads, norms [U] before clipping). Row u is multiplied by C / max(norm_u, C): unchanged when already
      within the ball, and a zero row stays zero (no 0/0).
    """
    norms = global_norms(grads)
    clip = tf.cast(clip_norm, norms.dtype)
    factors = clip / tf.maximum(norms, clip)
    clipped = [g * tf.reshape(factors, [-1] + [1] * (len(g.shape) - 1)) for g in grads]
    return clipped, norms


def sum_by_group(grads: Sequence[tf.Tensor], group_index: tf.Tensor, num_groups: int) -> list:
    """Sums per-example gradient rows by privacy group (e.g. patient): [B, ...] -> [num_groups, ...].

    `group_index` [B] holds each example's group in 0..num_groups-1 (a batch-local patient index). A fixed
    `num_groups` (e.g. the batch capacity) keeps shapes static; groups with no example give zero rows, which clipping
    leaves at zero and so contribute nothing.
    """
    group_index = tf.cast(group_index, tf.int32)
    return [tf.math.unsorted_segment_sum(g, group_index, num_groups) for g in grads]


def gaussian_noise(like: Sequence[tf.Tensor], stddev: tf.Tensor, seed: tf.Tensor | None = None) -> list:
    """Independent N(0, stddev^2) noise shaped like each tensor in `like`.

    With `seed` (int [2]) the noise is stateless and reproducible (each variable gets its own folded-in seed); the
    privacy argument then needs the seed to be secret, like any key. Without it, TensorFlow's stateful RNG is used.
    """
    noises = []
    for i, t in enumerate(like):
        if seed is None:
            n = tf.random.normal(tf.shape(t), dtype=t.dtype)
        else:
            var_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), i)
            n = tf.random.stateless_normal(tf.shape(t), seed=var_seed, dtype=t.dtype)
        noises.append(n * tf.cast(stddev, t.dtype))
    return noises


def is_noise_replica() -> tf.Tensor:
    """True on the replica that adds the DP noise: replica 0 in a strategy's replica context, True outside one."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:  # cross-replica context: there is one caller, so it adds the noise
        return tf.constant(True)
    return tf.equal(tf.cast(ctx.replica_id_in_sync_group, tf.int32), 0)


def dp_aggregate(
    per_example_grads: Sequence[tf.Tensor],
    *,
    clip_norm: float,
    noise_multiplier: float,
    normalizer: float,
    mask: tf.Tensor | None = None,
    group_index: tf.Tensor | None = None,
    num_groups: int | None = None,
    add_noise: bool | tf.Tensor = True,
    seed: tf.Tensor | None = None,
) -> DPGradient:
    """Clips, sums, noises and normalises per-example gradients (the DP-SGD aggregation step).

    DP gradient = (sum_u clip_C(g_u) + add_noise * N(0, (sigma*C)^2 I)) / normalizer, where the units u are examples
    (group_index None) or groups of examples, each group's gradient being the SUM of its examples' gradients before
    clipping (patient-level clipping: C then bounds a whole patient's contribution).

    Args:
      per_example_grads: one tensor [B, *variable.shape] per variable (see `per_example_gradients`).
      clip_norm: C, L2 bound on each unit's gradient (over all variables jointly).
      noise_multiplier: sigma; the noise std on the sum is sigma * C.
      normalizer: the constant the noisy sum is divided by: the GLOBAL expected number of examples per step
        (q * number of training examples, or the fixed global batch size). Never the realised batch size.
      mask: optional [B] with 1 for real rows and 0 for padding (Poisson batches padded to a fixed capacity);
        padded rows contribute nothing.
      group_index: optional [B] batch-local group (patient) of each example, in 0..num_groups-1.
      num_groups: number of group slots; defaults to B (enough for one group per example).
      add_noise: whether this caller adds the noise. Under MirroredStrategy pass `is_noise_replica()` so that noise
        is added once globally (replica 0); the others return only their clipped sums.
      seed: optional int [2] seed for stateless noise (see `gaussian_noise`); vary it every step.

    Returns:
      DPGradient(grads, unit_norms).
    """
    grads = list(per_example_grads)
    if mask is not None:
        grads = [g * tf.reshape(tf.cast(mask, g.dtype), [-1] + [1] * (len(g.shape) - 1)) for g in grads]
    if group_index is not None:
        grads = sum_by_group(grads, group_index, tf.shape(grads[0])[0] if num_groups is None else num_groups)
    clipped, norms = clip_rows(grads, clip_norm)
    summed = [tf.reduce_sum(g, axis=0) for g in clipped]
    scale = 1.0 / tf.cast(normalizer, summed[0].dtype)
    if isinstance(noise_multiplier, (int, float)) and noise_multiplier == 0:  # clipping only: draw no noise
        return DPGradient([s * scale for s in summed], norms)
    noise_on = tf.cast(add_noise, summed[0].dtype)
    noises = gaussian_noise(summed, tf.cast(noise_multiplier * clip_norm, summed[0].dtype), seed)
    return DPGradient([(s + noise_on * n) * scale for s, n in zip(summed, noises)], norms)


def dp_gradients(
    per_example_loss_fn: Callable[[Any], tf.Tensor],
    variables: Sequence[tf.Variable],
    inputs: Any,
    *,
    clip_norm: float,
    noise_multiplier: float,
    normalizer: float,
    mask: tf.Tensor | None = None,
    group_index: tf.Tensor | None = None,
    num_groups: int | None = None,
    seed: tf.Tensor | None = None,
    method: str = "vmap",
) -> DPGradient:
    """One call for the trainer: per-example gradients of the real-data loss, then `dp_aggregate`.

    Noise is added only where `is_noise_replica()` holds, so the same code is right on one device and under
    MirroredStrategy (whose optimizer SUMs replicas' gradients). Arguments are those of `per_example_gradients` and
    `dp_aggregate`.
    """
    grads = per_example_gradients(per_example_loss_fn, variables, inputs, method=method)
    return dp_aggregate(grads, clip_norm=clip_norm, noise_multiplier=noise_multiplier, normalizer=normalizer,
                        mask=mask, group_index=group_index, num_groups=num_groups,
                        add_noise=is_noise_replica(), seed=seed)


# ----------------------------------------------------------------------------------------------------------------
# Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private Learning with Adaptive
# Clipping"): the clip norm follows a target quantile of the units' gradient norms, estimated privately each step.


def noisy_unclipped_count(unit_norms: tf.Tensor, occupied: tf.Tensor, clip_norm, count_stddev,
                          add_noise: bool | tf.Tensor = True) -> tf.Tensor:
    """The paper's private count, centred: sum over present units of (1[norm_u <= C] - 1/2), plus N(0, stddev^2).

    Centring makes the sensitivity 1/2 under add/remove of one unit (a unit adds +1/2 or -1/2), so noise std
    ``count_stddev`` is a Gaussian mechanism with noise multiplier 2 * count_stddev. ``occupied`` [U] is 1 for real
    units (empty patient slots and padding are 0). Under MirroredStrategy pass ``is_noise_replica()``: the noise is
    added once, and the replicas' counts SUM to the global one.
    """
    occupied = tf.cast(occupied, tf.float32)
    below = tf.cast(unit_norms <= tf.cast(clip_norm, unit_norms.dtype), tf.float32)
    count = tf.reduce_sum((below - 0.5) * occupied)
    noise = tf.random.normal([], dtype=tf.float32) * tf.cast(count_stddev, tf.float32)
    return count + tf.cast(add_noise, tf.float32) * noise


def geometric_clip_update(clip_norm, noisy_centred_count, expected_units, target_quantile, learning_rate):
    """C <- C * exp(-lr * (b - gamma)), b = noisy_centred_count / expected_units + 1/2: the estimated fraction of
    units whose norm was within C (dividing by the EXPECTED number of units, a constant, as the paper does).
    b above the target quantile gamma shrinks C, below it grows C; geometric, so C stays positive."""
    fraction = noisy_centred_count / expected_units + 0.5
    return clip_norm * tf.exp(-learning_rate * (fraction - target_quantile))
