"""The ac-GAN as a keras.Model: ``train_step`` is one step of the algorithm, a labelled D phase then a G phase.

Each replica runs ``train_step`` on its share of the batch; losses are already divided by the GLOBAL batch
(models.losses), and accuracies are returned as (correct / global batch), so summing any returned scalar over
the replicas gives the global-batch value whatever the replica count.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import keras
import tensorflow as tf

from vugan.models import dp, losses
from vugan.models.acgan import MinibatchStdDev, conditional_logits
from vugan.models.augment import diff_augment
from vugan.models.ema import effective_decay, ema_update


class DiscriminatorOutputs(NamedTuple):
    real_logits: tf.Tensor  # [n, 1]
    fake_logits: tf.Tensor
    real_cls_logits: tf.Tensor  # [n, C]
    fake_cls_logits: tf.Tensor


class FakeHalf(NamedTuple):
    """The D phase's fake terms under DP: D's gradient from them, the logits and the two loss terms."""

    grads: list
    logits: tf.Tensor
    cls_logits: tf.Tensor
    adv: tf.Tensor
    cls: tf.Tensor


class DPSettings(NamedTuple):
    """DP-SGD of the discriminator's real-data gradient (models/dp.py; the plan comes from trainer/dp_training.py)."""

    clip_norm: float
    noise_multiplier: float
    normalizer: float  # the GLOBAL expected number of real examples per step (never the realised count)
    num_groups: int | None  # patient slots per replica batch (its capacity) with per-patient clipping, else None
    method: str = "vmap"
    clip_fake: bool = True  # clip the fake half per example to the same norm (no noise: it holds no real data)
    # Adaptive clipping (models/dp.py, Andrew et al. 2021); off when adaptive_count_stddev is 0.
    adaptive_count_stddev: float = 0.0  # noise std on the centred count of unclipped units
    expected_units: float = 0.0  # GLOBAL expected privacy units per step (the count's constant denominator)
    clip_quantile: float = 0.5
    clip_lr: float = 0.2
    fake_group_size: int = 1  # fakes clipped in groups of this many (per-patient mode: the mean units per patient)
    views: int = 1  # augmented views of each example whose losses are averaged BEFORE clipping (free in privacy)


class ACGAN(keras.Model):
    def __init__(self, generator: keras.Model, discriminator: keras.Model, *, num_classes: int,
                 global_batch_size: int, aux_weight: float = 1.0, class_weights=None, label_smoothing: float = 0.0,
                 augment: tuple[str, ...] = (), generator_ema: keras.Model | None = None, ema_decay: float = 0.999,
                 dp_settings: DPSettings | None = None, d_steps: int = 1, class_loss: str = "cross_entropy",
                 class_loss_normalization: str = "batch", fake_labels_from_prior: bool = False,
                 adversarial_loss: str = "bce", r1_gamma: float = 0.0, reuse_fakes: bool = False,
                 mode_seeking: float = 0.0):
        super().__init__(name="acgan")
        self.mode_seeking = mode_seeking
        self.reuse_fakes = reuse_fakes
        self.adversarial_loss = adversarial_loss
        self.r1_gamma = r1_gamma
        self.class_loss_kind = class_loss
        self.class_loss_normalization = class_loss_normalization
        self.fake_labels_from_prior = fake_labels_from_prior
        self.d_steps = d_steps
        self.generator = generator
        self.discriminator = discriminator
        self.generator_ema = generator_ema
        self.num_classes = num_classes
        self.global_batch_size = global_batch_size
        self.aux_weight = aux_weight
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing
        self.augment = tuple(augment)
        self.ema_decay = ema_decay
        self.dp_settings = dp_settings
        # The adaptive clip norm: read by every D phase, updated once per step in cross-replica context.
        self.dp_clip = (tf.Variable(float(dp_settings.clip_norm), trainable=False, dtype=tf.float32,
                                    name="dp_clip_norm")
                        if dp_settings is not None and dp_settings.adaptive_count_stddev > 0 else None)

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def _d(self, images, class_ids, training):
        """D's (real/fake logit for ``class_ids``, class logits): with a projection term the logit is conditional."""
        return conditional_logits(self.discriminator(images, training=training), class_ids)

    def discriminate_pair(self, real, fake, labels, fake_labels, training=True, aug=None, r1: bool = False):
        """D on the (augmented) real and fake batch -> (DiscriminatorOutputs, R1 input gradients of the real half
        or None).

        Without batch-coupled layers one call on the concatenation is equivalent and launches half the kernels.
        With trainer.batch_norm (or minibatch_stddev), real and fake go through D separately (as in DCGAN and the
        reference): a mixed batch would give D statistics it never sees in the generator phase (an all-fake
        batch), and in a 200-step demo run that let both losses collapse towards 0 while G produced noise.
        With ``r1`` the gradient of D's real logits with respect to D's (augmented) real input is returned too;
        call this inside the D tape so that the penalty on it is differentiated as well.
        """
        real_u, fake_u = (None, None) if aug is None else (aug[:, 0], aug[:, 1])
        fake = tf.cast(fake, real.dtype)
        if self._d_batch_coupled:
            real_in, fake_in = self._augment(real, real_u), self._augment(fake, fake_u)
            with tf.GradientTape(watch_accessed_variables=False) if r1 else contextlib.nullcontext() as r1_tape:
                if r1:
                    r1_tape.watch(real_in)
                real_logits, real_cls = self._d(real_in, labels, training)
                real_sum = tf.reduce_sum(real_logits)  # inside the tape: the gradient's target
            grads = r1_tape.gradient(real_sum, real_in) if r1 else None
            fake_logits, fake_cls = self._d(fake_in, fake_labels, training)
            return DiscriminatorOutputs(real_logits, fake_logits, real_cls, fake_cls), grads
        n = tf.shape(real)[0]
        both = self._augment(tf.concat([real, fake], axis=0),
                             None if aug is None else tf.concat([real_u, fake_u], axis=0))
        with tf.GradientTape(watch_accessed_variables=False) if r1 else contextlib.nullcontext() as r1_tape:
            if r1:
                r1_tape.watch(both)
            logits, cls_logits = self._d(both, tf.concat([labels, fake_labels], axis=0), training)
            real_sum = tf.reduce_sum(logits[:n])
        # No layer couples examples here, so the real logits' gradient lives in the real rows only.
        grads = r1_tape.gradient(real_sum, both)[:n] if r1 else None
        return DiscriminatorOutputs(logits[:n], logits[n:], cls_logits[:n], cls_logits[n:]), grads

    @property
    def _d_batch_coupled(self) -> bool:
        coupled = (keras.layers.BatchNormalization, MinibatchStdDev)
        return any(isinstance(layer, coupled) for layer in self.discriminator.layers)

    def _augment(self, images, u=None):
        """DiffAugment with the batch's stateless draws ``u`` [n, DRAWS] (the input pipeline's ``aug``)."""
        return diff_augment(images, self.augment, u) if self.augment else images

    def _rate(self, correct, mask=None) -> tf.Tensor:
        correct = tf.cast(correct, tf.float32)
        return tf.reduce_sum(correct if mask is None else correct * mask) / self.global_batch_size

    def _class_loss(self, cls_logits, labels):
        return losses.class_loss(cls_logits, labels, global_batch_size=self.global_batch_size,
                                 class_weights=self.class_weights, kind=self.class_loss_kind,
                                 normalization=self.class_loss_normalization)

    def d_losses(self, out: DiscriminatorOutputs, labels, fake_labels):
        if self.adversarial_loss == "hinge":
            adv = losses.hinge_discriminator_loss(out.real_logits, out.fake_logits,
                                                  global_batch_size=self.global_batch_size)
        else:
            adv = losses.modified_discriminator_loss(out.real_logits, out.fake_logits,
                                                     global_batch_size=self.global_batch_size,
                                                     real_label_smoothing=self.label_smoothing)
        # Each half its own class term (the study: two NLLLoss calls, each normalised on its own).
        cls = self._class_loss(out.real_cls_logits, labels) + self._class_loss(out.fake_cls_logits, fake_labels)
        return adv, cls

    # Batch entries of the D phase: with d_steps = k they hold k consecutive D batches, split here.
    D_PHASE_KEYS = ("images", "labels", "mask", "patient", "z_d", "d_fake_labels", "aug")

    def train_step(self, batch):
        """``d_steps`` D phases (each on its own real batch), then one G phase; D scalars are averaged over them."""
        if self.reuse_fakes:
            return self._train_step_reusing_fakes(batch)
        d_step = self._dp_discriminator_step if self.dp_settings else self._discriminator_step
        if self.d_steps == 1:
            d_scalars = d_step(batch)
        else:
            parts = {k: tf.split(v, self.d_steps, axis=0) for k, v in batch.items() if k in self.D_PHASE_KEYS}
            per_step = [d_step({k: v[i] for k, v in parts.items()}) for i in range(self.d_steps)]
            d_scalars = {k: tf.add_n([s[k] for s in per_step]) / self.d_steps for k in per_step[0]}
        return {**d_scalars, **self._generator_step(batch)}

    def _train_step_reusing_fakes(self, batch):
        """trainer.reuse_fakes (a change of algorithm, not the study's): G's update takes the D phase's fakes (same
        z and classes), scored by the D just updated, instead of a fresh G forward on new noise. One G forward of
        the usual two is saved (4 -> 3 G + 8 D forward-equivalents per image)."""
        fake_labels = batch["d_fake_labels"] if self.fake_labels_from_prior else batch["labels"]
        with tf.GradientTape() as tape:
            fake = self.generator([batch["z_d"], fake_labels], training=True)
            with tape.stop_recording():  # the D phase is no part of G's gradient
                d_scalars = self._discriminator_step(batch, fake=tf.stop_gradient(fake))
            aug = batch.get("aug")
            g_loss, g_scalars = self._generator_loss(fake, fake_labels, None if aug is None else aug[:, 2],
                                                     batch["z_d"])
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))
        return {**d_scalars, **g_scalars}

    def _discriminator_step(self, batch, fake=None) -> dict:
        """D phase: real batch vs G(z_d | the real batch's labels, or prior-drawn ones); G is held fixed."""
        real, labels = batch["images"], batch["labels"]
        fake_labels = batch["d_fake_labels"] if self.fake_labels_from_prior else labels
        if fake is None:
            fake = self.generator([batch["z_d"], fake_labels], training=True)
        with tf.GradientTape() as tape:
            d_out, r1_grads = self.discriminate_pair(real, fake, labels, fake_labels, aug=batch.get("aug"),
                                                      r1=self.r1_gamma > 0)
            d_adv, d_cls = self.d_losses(d_out, labels, fake_labels)
            d_loss = d_adv + self.aux_weight * d_cls
            if r1_grads is not None:
                r1 = losses.r1_penalty(r1_grads, gamma=self.r1_gamma, global_batch_size=self.global_batch_size)
                d_loss += r1
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))
        extra = {"r1_penalty": r1} if r1_grads is not None else {}
        return {
            "d_loss": d_loss, "d_adv_loss": d_adv, "d_cls_loss": d_cls, **extra,
            # D accuracy as a real/fake classifier (threshold at logit 0) on this step's real and fake images.
            "d_real_acc": self._rate(d_out.real_logits[:, 0] > 0),
            "d_fake_acc": self._rate(d_out.fake_logits[:, 0] < 0),
            # The auxiliary head's accuracy on real images.
            "cls_acc_real": self._rate(tf.equal(tf.argmax(d_out.real_cls_logits, -1, tf.int32), labels)),
        }

    def _dp_discriminator_step(self, batch) -> dict:
        """D phase under DP-SGD (docs/dp.md): the real half's gradient is clipped per privacy unit and noised
        (models/dp.py); the fake half, which touches no real data, is not noised (and is clipped alike with
        ``clip_fake``).

        The fakes' classes are ``d_fake_labels``, drawn independently of the real batch: reusing the real labels
        (as the non-private step does) would pass them into D's fake class loss and G's input without clipping.
        The returned real-data scalars (real loss, d_real_acc, cls_acc_real) are un-noised diagnostics, outside
        the guarantee. ``mask`` (padded Poisson batches) and ``patient`` (batch-local patient index, for
        per-patient clipping) are optional batch entries.
        """
        dps = self.dp_settings
        clip_norm = self._clip_norm()
        labels = batch["labels"]
        real = self._views(batch["images"])  # augment outside the per-example map; [B, V, ...] with views
        mask = batch.get("mask")
        mask = tf.ones(tf.shape(labels), tf.float32) if mask is None else tf.cast(mask, tf.float32)
        fake_labels = batch["d_fake_labels"]
        fake = self.generator([batch["z_d"], fake_labels], training=True)
        d_vars = self.discriminator.trainable_variables
        fake_half = self._dp_fake_half(self._views(tf.cast(fake, real.dtype)), fake_labels, d_vars)
        fake_logits, fake_cls_logits, f_adv, f_cls = (fake_half.logits, fake_half.cls_logits, fake_half.adv,
                                                      fake_half.cls)

        # Diagnostics on the real batch with the weights the gradient is taken at (training=False: no state moves).
        real_logits, real_cls_logits = self.discriminator(self._first_view(real), training=False)
        r_adv, r_cls = losses.discriminator_real_terms(real_logits, real_cls_logits, labels,
                                                       label_smoothing=self.label_smoothing,
                                                       class_weights=self.class_weights)
        r_adv, r_cls = (tf.reduce_sum(t * mask) / dps.normalizer for t in (r_adv, r_cls))

        def real_loss_fn(b):  # per example, not averaged: dp divides the noisy sum by the constant normalizer
            images, y = b
            # training=False: D has no dropout and (under DP) no BatchNorm, so the only difference is that spectral
            # norm does not STORE its power-iteration vector here (the fake pass above advanced it once this step,
            # as in the ordinary step). Storing it inside vectorized_map fails under MirroredStrategy (merge_call).
            images, y = self._flatten_views(images, y)
            logits, cls_logits = self.discriminator(images, training=False)
            adv, cls = losses.discriminator_real_terms(logits, cls_logits, y, label_smoothing=self.label_smoothing,
                                                       class_weights=self.class_weights)
            return self._mean_over_views(adv + self.aux_weight * cls)

        real_dp = dp.dp_gradients(real_loss_fn, d_vars, (real, labels), clip_norm=clip_norm,
                                  noise_multiplier=dps.noise_multiplier, normalizer=dps.normalizer, mask=mask,
                                  group_index=batch.get("patient") if dps.num_groups else None,
                                  num_groups=dps.num_groups, method=dps.method)
        # The optimizer SUMs replicas' gradients: each replica's share (noise on replica 0 only) adds up.
        self.d_optimizer.apply_gradients(zip([r + f for r, f in zip(real_dp.grads, fake_half.grads)], d_vars))
        units = tf.cast(real_dp.unit_norms > 0, tf.float32)  # empty patient slots / padding have norm 0
        adaptive = {}
        if self.dp_clip is not None:
            # Present units from the mask (not from norm > 0, an un-noised property of the data).
            group = batch.get("patient") if dps.num_groups else None
            occupied = (mask if group is None else
                        tf.math.unsorted_segment_max(mask, tf.cast(group, tf.int32), dps.num_groups) > 0)
            adaptive = {"dp_count_noisy": dp.noisy_unclipped_count(
                real_dp.unit_norms, occupied, clip_norm, dps.adaptive_count_stddev, dp.is_noise_replica())}
        return {**adaptive,
            "d_loss": r_adv + f_adv + self.aux_weight * (r_cls + f_cls), "d_adv_loss": r_adv + f_adv,
            "d_cls_loss": r_cls + f_cls,
            "d_real_acc": self._rate(real_logits[:, 0] > 0, mask),
            "d_fake_acc": self._rate(fake_logits[:, 0] < 0),
            "cls_acc_real": self._rate(tf.equal(tf.argmax(real_cls_logits, -1, tf.int32), labels), mask),
            # Real rows in this replica's batch (core turns the two real rates above into per-real-example rates).
            "dp_batch_size": tf.reduce_sum(mask),
            # Privacy units (examples or patients) in the batch, and how many had their gradient clipped; core
            # turns the two into dp_clipped_frac after the replica sum (diagnostic: how often clipping binds).
            "dp_units": tf.reduce_sum(units),
            "dp_clipped_units": tf.reduce_sum(units * tf.cast(real_dp.unit_norms > clip_norm, tf.float32)),
        }

    # Several augmented views per example (DPDM's "noise multiplicity", Dockhorn et al. 2023): each example's loss
    # is the mean over V views, so its gradient is still ONE vector, clipped once: the sensitivity and hence the
    # privacy cost are unchanged, while the augmentation's variance inside the clipped gradient drops ~V-fold.
    # With views = 1 these are identities and the step is exactly the single-view one.
    def _views(self, images):
        """Augmented images [B, ...], or V independently augmented views [B, V, ...] with dp_settings.views > 1."""
        v = self.dp_settings.views
        if v == 1:
            return self._augment(images)
        return tf.stack([self._augment(images) for _ in range(v)], axis=1)

    def _first_view(self, images):
        return images if self.dp_settings.views == 1 else images[:, 0]

    def _flatten_views(self, images, labels):
        """[b, V, ...] views and [b] labels -> [b * V, ...] and [b * V] (example-major)."""
        v = self.dp_settings.views
        if v == 1:
            return images, labels
        return tf.reshape(images, tf.concat([[-1], tf.shape(images)[2:]], 0)), tf.repeat(labels, v)

    def _mean_over_views(self, per_view):
        """[b * V] per-view losses -> [b] per-example means."""
        v = self.dp_settings.views
        return per_view if v == 1 else tf.reduce_mean(tf.reshape(per_view, [-1, v]), axis=1)

    def _first_view_rows(self, t):
        v = self.dp_settings.views
        return t if v == 1 else t[::v]

    def _clip_norm(self):
        """This step's clip norm: the adaptive one when on, else the configured constant."""
        return self.dp_settings.clip_norm if self.dp_clip is None else self.dp_clip.read_value()

    def update_dp_clip(self, scalars: dict) -> None:
        """After each step (cross-replica context, like the EMA): the geometric update of the adaptive clip norm
        from the replicas' summed noisy count (averaged over the step's D phases with d_steps > 1). Everything it
        reads is noised, so the new norm is post-processing of the accounted mechanism."""
        if self.dp_clip is not None:
            dps = self.dp_settings
            self.dp_clip.assign(dp.geometric_clip_update(self.dp_clip, scalars["dp_count_noisy"],
                                                         dps.expected_units, dps.clip_quantile, dps.clip_lr))

    def _dp_fake_half(self, fake, fake_labels, d_vars) -> "FakeHalf":
        """The D phase's fake terms under DP: no real data, so no noise; this pass also advances spectral norm.

        With ``clip_fake`` (the default) each fake example's gradient is clipped to the real half's norm as well,
        so that the two halves enter D's update on one scale (as when the whole per-example D loss is clipped).
        Without it, once clipping binds, the unclipped fake half outweighs the clipped real half: in a pilot with
        almost no noise (sigma 0.05, C 1, s = 16, 741 units) D called every real unit fake and its loss ran away
        (d_loss 9 at step 100, 37 at 200, 71 at 300; d_real_acc 0.00), where sigma 0 with a clip norm that never
        binds trains like the ordinary step. With it the runaway is slower but still comes (sigma 0: d_loss 4.3 at
        step 300, 27 at 500): docs/dp.md, trade-off section. Costs a second per-example pass.
        """
        dps = self.dp_settings
        # With clip_fake the gradient comes from the per-example pass below: nothing for a tape to record here.
        with contextlib.nullcontext() if dps.clip_fake else tf.GradientTape() as tape:
            views, view_labels = self._flatten_views(fake, fake_labels)
            logits, cls_logits = self.discriminator(views, training=True)
            adv, cls = losses.discriminator_fake_terms(logits, cls_logits, view_labels,
                                                       class_weights=self.class_weights)
            adv, cls = (tf.reduce_sum(self._mean_over_views(t)) / self.global_batch_size for t in (adv, cls))
            loss = adv + self.aux_weight * cls
            logits, cls_logits = self._first_view_rows(logits), self._first_view_rows(cls_logits)
        if dps.clip_fake:
            def fake_loss_fn(b):
                images, y = self._flatten_views(*b)
                f_logits, f_cls_logits = self.discriminator(images, training=False)  # see real_loss_fn
                f_adv, f_cls = losses.discriminator_fake_terms(f_logits, f_cls_logits, y,
                                                               class_weights=self.class_weights)
                return self._mean_over_views(f_adv + self.aux_weight * f_cls)

            # Per-patient mode with fake_group_size k: consecutive fakes form pseudo-patients of k units, each group
            # clipped to C like a real patient, so both halves bring about B / k clipped units of norm <= C.
            groups = (tf.range(tf.shape(fake)[0]) // dps.fake_group_size) if dps.fake_group_size > 1 else None
            grads = dp.dp_aggregate(
                dp.per_example_gradients(fake_loss_fn, d_vars, (fake, fake_labels), method=dps.method),
                clip_norm=self._clip_norm(), noise_multiplier=0.0, normalizer=self.global_batch_size,
                group_index=groups).grads
        else:
            grads = [tf.zeros_like(v) if g is None else g for g, v in zip(tape.gradient(loss, d_vars), d_vars)]
        return FakeHalf(grads, logits, cls_logits, adv, cls)

    def _generator_step(self, batch) -> dict:
        """G phase: fresh noise z_g, classes drawn from the training prior; D is held fixed. No real data.

        With d_steps = k every batch entry holds k x the rows: this replica's share of ONE global batch (the first
        rows of z_g, g_labels) is used, so G's loss stays a mean over the global batch."""
        rows = tf.shape(batch["z_g"])[0] // self.d_steps
        g_labels = batch["g_labels"][:rows]
        aug = batch.get("aug")
        with tf.GradientTape() as tape:
            fake_g = self.generator([batch["z_g"][:rows], g_labels], training=True)
            g_loss, scalars = self._generator_loss(fake_g, g_labels, None if aug is None else aug[:rows, 2],
                                                   batch["z_g"][:rows])
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))
        return scalars

    def _generator_loss(self, fake_g, g_labels, aug_u, noise):
        """G's loss on its images (D held fixed) and the G-phase scalars; ``noise`` made ``fake_g``."""
        g_logits, g_cls_logits = self._d(self._augment(fake_g, aug_u), g_labels, True)
        if self.adversarial_loss == "hinge":
            g_adv = losses.hinge_generator_loss(g_logits, global_batch_size=self.global_batch_size)
        else:
            g_adv = losses.modified_generator_loss(g_logits, global_batch_size=self.global_batch_size)
        g_cls = self._class_loss(g_cls_logits, g_labels)
        g_loss = g_adv + self.aux_weight * g_cls
        extra = {}
        if self.mode_seeking > 0:  # on G's own images, before augmentation: it is G's diversity that is rewarded
            extra["g_mode_seeking"] = losses.mode_seeking_loss(fake_g, noise, g_labels,
                                                               global_batch_size=self.global_batch_size)
            g_loss += self.mode_seeking * extra["g_mode_seeking"]
        return g_loss, {
            "g_loss": g_loss, "g_adv_loss": g_adv, "g_cls_loss": g_cls, **extra,
            # The auxiliary head's accuracy on the generator's (G-phase) images.
            "cls_acc_fake": self._rate(tf.equal(tf.argmax(g_cls_logits, -1, tf.int32), g_labels)),
        }

    def update_ema(self, step):
        """After each step (cross-replica context): G_ema <- decay * G_ema + (1 - decay) * G."""
        if self.generator_ema is not None:
            ema_update(self.generator_ema, self.generator, effective_decay(self.ema_decay, step))

    @property
    def sampler(self) -> keras.Model:
        """The generator used for samples and export: the EMA one when kept."""
        return self.generator_ema if self.generator_ema is not None else self.generator
