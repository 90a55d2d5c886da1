"""The discriminator phase under DP-SGD (docs/dp.md), which the trainer injects into the ac-GAN in place of the
ordinary one: the real half's gradient is clipped per privacy unit and noised (per_example.py); the fake half,
which touches no real data, is not noised and (``clip_fake``) is clipped alike.

It follows ``gan_model.DiscriminatorPhase``: called as ``phase(gan, batch)`` in replica context, once per D phase,
then ``end_of_step(gan, scalars)`` once per training step in cross-replica context; ``checkpoint_state()`` names
its training state (the adaptive clip norm). It reads the networks, the optimizer, the loss options and the
helpers ``augment_images`` / ``rate`` from the gan it is handed, and keeps nothing of it.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import tensorflow as tf

from vugan.components.trainer.dp import per_example
from vugan.components.trainer.dp.spec import DPSettings
from vugan.models import losses


class FakeHalf(NamedTuple):
    """The D phase's fake terms under DP: D's gradient from them, the logits and the two loss terms."""

    grads: list
    logits: tf.Tensor
    cls_logits: tf.Tensor
    adv: tf.Tensor
    cls: tf.Tensor


class DPDiscriminatorPhase:
    """One DP-SGD step of the discriminator per call; ``settings`` is a ``DPSettings`` (a ``DPPlan`` is one).

    Build it inside ``strategy.scope()``: with adaptive clipping it owns the clip norm variable, read by every D
    phase and updated once per step.
    """

    def __init__(self, settings: DPSettings):
        self.settings = settings
        self.clip = (tf.Variable(float(settings.clip_norm), trainable=False, dtype=tf.float32, name="dp_clip_norm")
                     if settings.adaptive else None)

    def __call__(self, gan, batch) -> dict:
        """D phase under DP-SGD (docs/dp.md): the real half's gradient is clipped per privacy unit and noised
        (per_example.py); the fake half, which touches no real data, is not noised (and is clipped alike with
        ``clip_fake``).

        The fakes' classes are ``d_fake_labels``, drawn independently of the real batch: reusing the real labels
        (as the non-private step does) would pass them into D's fake class loss and G's input without clipping.
        The returned real-data scalars (real loss, d_real_acc, cls_acc_real) are un-noised diagnostics, outside
        the guarantee. ``mask`` (padded Poisson batches) and ``patient`` (batch-local patient index, for
        per-patient clipping) are optional batch entries.
        """
        dps = self.settings
        clip_norm = self.clip_norm()
        labels = batch["labels"]
        real = self.views(gan, batch["images"])  # augment outside the per-example map; [B, V, ...] with views
        mask = batch.get("mask")
        mask = tf.ones(tf.shape(labels), tf.float32) if mask is None else tf.cast(mask, tf.float32)
        fake_labels = batch["d_fake_labels"]
        fake = gan.generator([batch["z_d"], fake_labels], training=True)
        d_vars = gan.discriminator.trainable_variables
        fake_half = self.fake_half(gan, self.views(gan, tf.cast(fake, real.dtype)), fake_labels, d_vars)
        fake_logits, fake_cls_logits, f_adv, f_cls = (fake_half.logits, fake_half.cls_logits, fake_half.adv,
                                                      fake_half.cls)

        # Diagnostics on the real batch with the weights the gradient is taken at (training=False: no state moves).
        real_logits, real_cls_logits = gan.discriminator(self._first_view(real), training=False)
        r_adv, r_cls = losses.discriminator_real_terms(real_logits, real_cls_logits, labels,
                                                       label_smoothing=gan.label_smoothing,
                                                       class_weights=gan.class_weights)
        r_adv, r_cls = (tf.reduce_sum(t * mask) / dps.normalizer for t in (r_adv, r_cls))

        def real_loss_fn(b):  # per example, not averaged: dp divides the noisy sum by the constant normalizer
            images, y = b
            # training=False: D has no dropout and (under DP) no BatchNorm, so the only difference is that spectral
            # norm does not STORE its power-iteration vector here (the fake pass above advanced it once this step,
            # as in the ordinary step). Storing it inside vectorized_map fails under MirroredStrategy (merge_call).
            images, y = self._flatten_views(images, y)
            logits, cls_logits = gan.discriminator(images, training=False)
            adv, cls = losses.discriminator_real_terms(logits, cls_logits, y, label_smoothing=gan.label_smoothing,
                                                       class_weights=gan.class_weights)
            return self._mean_over_views(adv + gan.aux_weight * cls)

        real_dp = per_example.dp_gradients(real_loss_fn, d_vars, (real, labels), clip_norm=clip_norm,
                                           noise_multiplier=dps.noise_multiplier, normalizer=dps.normalizer, mask=mask,
                                           group_index=batch.get("patient") if dps.num_groups else None,
                                           num_groups=dps.num_groups, method=dps.method)
        # The optimizer SUMs replicas' gradients: each replica's share (noise on replica 0 only) adds up.
        gan.d_optimizer.apply_gradients(zip([r + f for r, f in zip(real_dp.grads, fake_half.grads)], d_vars))
        units = tf.cast(real_dp.unit_norms > 0, tf.float32)  # empty patient slots / padding have norm 0
        adaptive = {}
        if self.clip is not None:
            # Present units from the mask (not from norm > 0, an un-noised property of the data).
            group = batch.get("patient") if dps.num_groups else None
            occupied = (mask if group is None else
                        tf.math.unsorted_segment_max(mask, tf.cast(group, tf.int32), dps.num_groups) > 0)
            adaptive = {"dp_count_noisy": per_example.noisy_unclipped_count(
                real_dp.unit_norms, occupied, clip_norm, dps.count_stddev, per_example.is_noise_replica())}
        return {
            **adaptive,
            "d_loss": r_adv + f_adv + gan.aux_weight * (r_cls + f_cls), "d_adv_loss": r_adv + f_adv,
            "d_cls_loss": r_cls + f_cls,
            "d_real_acc": gan.rate(real_logits[:, 0] > 0, mask),
            "d_fake_acc": gan.rate(fake_logits[:, 0] < 0),
            "cls_acc_real": gan.rate(tf.equal(tf.argmax(real_cls_logits, -1, tf.int32), labels), mask),
            # Real rows in this replica's batch (end_of_step turns the two real rates above into per-real-example
            # rates).
            "dp_batch_size": tf.reduce_sum(mask),
            # Privacy units (examples or patients) in the batch, and how many had their gradient clipped;
            # end_of_step turns the two into dp_clipped_frac after the replica sum (diagnostic: how often
            # clipping binds).
            "dp_units": tf.reduce_sum(units),
            "dp_clipped_units": tf.reduce_sum(units * tf.cast(real_dp.unit_norms > clip_norm, tf.float32)),
        }

    # Several augmented views per example (DPDM's "noise multiplicity", Dockhorn et al. 2023): each example's loss
    # is the mean over V views, so its gradient is still ONE vector, clipped once: the sensitivity and hence the
    # privacy cost are unchanged, while the augmentation's variance inside the clipped gradient drops ~V-fold.
    # With views = 1 these are identities and the step is exactly the single-view one.
    def views(self, gan, images):
        """Augmented images [B, ...], or V independently augmented views [B, V, ...] with settings.views > 1."""
        v = self.settings.views
        if v == 1:
            return gan.augment_images(images)
        return tf.stack([gan.augment_images(images) for _ in range(v)], axis=1)

    def _first_view(self, images):
        return images if self.settings.views == 1 else images[:, 0]

    def _flatten_views(self, images, labels):
        """[b, V, ...] views and [b] labels -> [b * V, ...] and [b * V] (example-major)."""
        v = self.settings.views
        if v == 1:
            return images, labels
        return tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], 0)), tf.repeat(labels, v)

    def _mean_over_views(self, per_view):
        """[b * V] per-view losses -> [b] per-example means."""
        v = self.settings.views
        return per_view if v == 1 else tf.reduce_mean(tf.reshape(per_view, [-1, v]), axis=1)

    def _first_view_rows(self, t):
        v = self.settings.views
        return t if v == 1 else t[::v]

    def clip_norm(self):
        """This step's clip norm: the adaptive one when on, else the configured constant."""
        return self.settings.clip_norm if self.clip is None else self.clip.read_value()

    def end_of_step(self, gan, scalars: dict) -> dict:
        """After each step, in cross-replica context on the replicas' summed scalars (like the EMA): the adaptive
        clip norm's update, then the real rates as per-real-example rates (below).

        The update is geometric, from the summed noisy count (averaged over the step's D phases with d_steps > 1).
        Everything it reads is noised, so the new norm is post-processing of the accounted mechanism, and fine to
        log as ``dp_clip_norm``."""
        if self.clip is not None:
            dps = self.settings
            self.clip.assign(per_example.geometric_clip_update(self.clip, scalars["dp_count_noisy"],
                                                               dps.expected_units, dps.clip_quantile, dps.clip_lr))
            scalars = {**scalars, "dp_clip_norm": self.clip.read_value()}
        return per_real_example_rates(scalars, gan.global_batch_size)

    def checkpoint_state(self) -> dict:
        """The adaptive clip norm is training state: a resumed run continues from it."""
        return {} if self.clip is None else {"dp_clip_norm": self.clip}

    def fake_half(self, gan, fake, fake_labels, d_vars) -> FakeHalf:
        """The D phase's fake terms under DP: no real data, so no noise; this pass also advances spectral norm.

        With ``clip_fake`` (the default) each fake example's gradient is clipped to the real half's norm as well,
        so that the two halves enter D's update on one scale (as when the whole per-example D loss is clipped).
        Without it, once clipping binds, the unclipped fake half outweighs the clipped real half: in a pilot with
        almost no noise (sigma 0.05, C 1, s = 16, 741 units) D called every real unit fake and its loss ran away
        (d_loss 9 at step 100, 37 at 200, 71 at 300; d_real_acc 0.00), where sigma 0 with a clip norm that never
        binds trains like the ordinary step. With it the runaway is slower but still comes (sigma 0: d_loss 4.3 at
        step 300, 27 at 500): docs/dp.md, trade-off section. Costs a second per-example pass.
        """
        dps = self.settings
        # With clip_fake the gradient comes from the per-example pass below: nothing for a tape to record here.
        with contextlib.nullcontext() if dps.clip_fake else tf.GradientTape() as tape:
            views, view_labels = self._flatten_views(fake, fake_labels)
            logits, cls_logits = gan.discriminator(views, training=True)
            adv, cls = losses.discriminator_fake_terms(logits, cls_logits, view_labels,
                                                       class_weights=gan.class_weights)
            adv, cls = (tf.reduce_sum(self._mean_over_views(t)) / gan.global_batch_size for t in (adv, cls))
            loss = adv + gan.aux_weight * cls
            logits, cls_logits = self._first_view_rows(logits), self._first_view_rows(cls_logits)
        if dps.clip_fake:
            def fake_loss_fn(b):
                images, y = self._flatten_views(*b)
                f_logits, f_cls_logits = gan.discriminator(images, training=False)  # see real_loss_fn
                f_adv, f_cls = losses.discriminator_fake_terms(f_logits, f_cls_logits, y,
                                                               class_weights=gan.class_weights)
                return self._mean_over_views(f_adv + gan.aux_weight * f_cls)

            # Per-patient mode with fake_group_size k: consecutive fakes form pseudo-patients of k units, each group
            # clipped to C like a real patient, so both halves bring about B / k clipped units of norm <= C.
            groups = (tf.range(tf.shape(fake)[0]) // dps.fake_group_size) if dps.fake_group_size > 1 else None
            grads = per_example.dp_aggregate(
                per_example.per_example_gradients(fake_loss_fn, d_vars, (fake, fake_labels), method=dps.method),
                clip_norm=self.clip_norm(), noise_multiplier=0.0, normalizer=gan.global_batch_size,
                group_index=groups).grads
        else:
            grads = [tf.zeros_like(v) if g is None else g for g, v in zip(tape.gradient(loss, d_vars), d_vars)]
        return FakeHalf(grads, logits, cls_logits, adv, cls)


def per_real_example_rates(scalars: dict, global_batch: int) -> dict:
    """Under DP the real rates were shares of the EXPECTED batch (so that replicas can be summed); rescale them by
    the realised number of real examples, ``dp_batch_size``, so they are rates in [0, 1]; likewise the share of
    privacy units whose gradient was clipped."""
    scale = global_batch / tf.maximum(scalars["dp_batch_size"], 1.0)
    return {**scalars, **{k: scalars[k] * scale for k in ("d_real_acc", "cls_acc_real")},
            "dp_clipped_frac": scalars["dp_clipped_units"] / tf.maximum(scalars["dp_units"], 1.0)}
