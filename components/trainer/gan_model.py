"""The ac-GAN as a keras.Model: ``train_step`` is one step of the algorithm, a labelled D phase then a G phase.

Each replica runs ``train_step`` on its share of the batch; losses are already divided by the GLOBAL batch
(models.losses), and accuracies are returned as (correct / global batch), so summing any returned scalar over
the replicas gives the global-batch value whatever the replica count.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple, Protocol

import keras
import tensorflow as tf

from vugan.models import losses
from vugan.models.acgan import MinibatchStdDev, conditional_logits
from vugan.models.augment import diff_augment
from vugan.models.ema import effective_decay, ema_update


class DiscriminatorOutputs(NamedTuple):
    real_logits: tf.Tensor  # [n, 1]
    fake_logits: tf.Tensor
    real_cls_logits: tf.Tensor  # [n, C]
    fake_cls_logits: tf.Tensor


class DiscriminatorPhase(Protocol):
    """One discriminator update: ``phase(gan, batch) -> scalars``, in replica context, once per D phase.

    The ordinary phase (``OrdinaryDiscriminatorPhase``, the default) is ``ACGAN.discriminator_step``; the trainer
    injects another one for DP-SGD (components/trainer/dp/discriminator_phase.py), so this file knows nothing of
    privacy. ``end_of_step`` runs once per training step in cross-replica context on the replicas' summed
    scalars and returns the scalars to log; ``checkpoint_state`` names the phase's own training state.
    """

    def __call__(self, gan: ACGAN, batch: dict) -> dict: ...

    def end_of_step(self, gan: ACGAN, scalars: dict) -> dict: ...

    def checkpoint_state(self) -> dict: ...


class OrdinaryDiscriminatorPhase:
    """The study's D phase (``ACGAN.discriminator_step``); it keeps no state of its own."""

    def __call__(self, gan: ACGAN, batch: dict) -> dict:
        return gan.discriminator_step(batch)

    def end_of_step(self, gan: ACGAN, scalars: dict) -> dict:
        return scalars

    def checkpoint_state(self) -> dict:
        return {}


class ACGAN(keras.Model):
    def __init__(self, generator: keras.Model, discriminator: keras.Model, *, num_classes: int,
                 global_batch_size: int, aux_weight: float = 1.0, class_weights=None, label_smoothing: float = 0.0,
                 augment: tuple[str, ...] = (), generator_ema: keras.Model | None = None, ema_decay: float = 0.999,
                 d_steps: int = 1, class_loss: str = "cross_entropy", class_loss_normalization: str = "batch",
                 fake_labels_from_prior: bool = False, adversarial_loss: str = "bce", r1_gamma: float = 0.0,
                 reuse_fakes: bool = False, mode_seeking: float = 0.0, mode_seeking_pool: int = 1,
                 d_class_loss_on_fakes: bool = True,
                 augment_p: tf.Variable | None = None,
                 discriminator_phase: DiscriminatorPhase | None = None):
        super().__init__(name="acgan")
        self.mode_seeking = mode_seeking
        self.mode_seeking_pool = mode_seeking_pool
        self.d_class_loss_on_fakes = d_class_loss_on_fakes
        self.reuse_fakes = reuse_fakes
        self.adversarial_loss = adversarial_loss
        self.r1_gamma = r1_gamma
        # Whether the step being traced adds the R1 term (core.train traces one graph with it and, with lazy R1,
        # one without).
        self.r1_now = True
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
        # The probability each transform applies (a non-trainable variable the trainer adapts: ADA), or None: always.
        self.augment_p = augment_p
        self.ema_decay = ema_decay
        self.discriminator_phase = discriminator_phase or OrdinaryDiscriminatorPhase()

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
            real_in, fake_in = self.augment_images(real, real_u), self.augment_images(fake, fake_u)
            with tf.GradientTape(watch_accessed_variables=False) if r1 else contextlib.nullcontext() as r1_tape:
                if r1:
                    r1_tape.watch(real_in)
                real_logits, real_cls = self._d(real_in, labels, training)
                real_sum = tf.reduce_sum(real_logits)  # inside the tape: the gradient's target
            grads = r1_tape.gradient(real_sum, real_in) if r1 else None
            fake_logits, fake_cls = self._d(fake_in, fake_labels, training)
            return DiscriminatorOutputs(real_logits, fake_logits, real_cls, fake_cls), grads
        n = tf.shape(real)[0]
        both = self.augment_images(tf.concat([real, fake], axis=0),
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

    def augment_images(self, images, u=None):
        """DiffAugment with the batch's stateless draws ``u`` [n, DRAWS] (the input pipeline's ``aug``)."""
        return diff_augment(images, self.augment, u, self.augment_p) if self.augment else images

    def rate(self, correct, mask=None) -> tf.Tensor:
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
        # Each half its own class term (the study: two NLLLoss calls, each normalised on its own). Without the fake
        # half (trainer.d_class_loss_on_fakes = false) D's class head learns real anatomy only.
        cls = self._class_loss(out.real_cls_logits, labels)
        if self.d_class_loss_on_fakes:
            cls += self._class_loss(out.fake_cls_logits, fake_labels)
        return adv, cls

    # Batch entries of the D phase: with d_steps = k they hold k consecutive D batches, split here.
    D_PHASE_KEYS = ("images", "labels", "mask", "patient", "z_d", "d_fake_labels", "aug")

    def train_step(self, batch):
        """``d_steps`` D phases (each on its own real batch), then one G phase; D scalars are averaged over them."""
        if self.reuse_fakes:  # another algorithm: G's forward pass spans the D phase (see below)
            return self._train_step_reusing_fakes(batch)
        d_scalars = self._discriminator_phases(batch)
        return {**d_scalars, **self._generator_step(batch)}

    def _discriminator_phases(self, batch) -> dict:
        """``d_steps`` updates by the discriminator phase, each on its own slice of the batch's D entries."""
        if self.d_steps == 1:
            return self.discriminator_phase(self, batch)
        parts = {k: tf.split(v, self.d_steps, axis=0) for k, v in batch.items() if k in self.D_PHASE_KEYS}
        per_step = [self.discriminator_phase(self, {k: v[i] for k, v in parts.items()}) for i in range(self.d_steps)]
        return {k: tf.add_n([s[k] for s in per_step]) / self.d_steps for k in per_step[0]}

    def _train_step_reusing_fakes(self, batch):
        """trainer.reuse_fakes (a change of algorithm, not the study's): G's update takes the D phase's fakes (same
        z and classes), scored by the D just updated, instead of a fresh G forward on new noise. One G forward of
        the usual two is saved (4 -> 3 G + 8 D forward-equivalents per image)."""
        fake_labels = batch["d_fake_labels"] if self.fake_labels_from_prior else batch["labels"]
        with tf.GradientTape() as tape:
            fake = self.generator([batch["z_d"], fake_labels], training=True)
            with tape.stop_recording():  # the D phase is no part of G's gradient
                d_scalars = self.discriminator_step(batch, fake=tf.stop_gradient(fake))
            aug = batch.get("aug")
            g_loss, g_scalars = self._generator_loss(fake, fake_labels, None if aug is None else aug[:, 2],
                                                     batch["z_d"])
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))
        return {**d_scalars, **g_scalars}

    def discriminator_step(self, batch, fake=None) -> dict:
        """D phase: real batch vs G(z_d | the real batch's labels, or prior-drawn ones); G is held fixed."""
        real, labels = batch["images"], batch["labels"]
        fake_labels = batch["d_fake_labels"] if self.fake_labels_from_prior else labels
        if fake is None:
            fake = self.generator([batch["z_d"], fake_labels], training=True)
        with tf.GradientTape() as tape:
            d_out, r1_grads = self.discriminate_pair(real, fake, labels, fake_labels, aug=batch.get("aug"),
                                                      r1=self.r1_gamma > 0 and self.r1_now)
            d_adv, d_cls = self.d_losses(d_out, labels, fake_labels)
            d_loss = d_adv + self.aux_weight * d_cls
            if r1_grads is not None:
                r1 = losses.r1_penalty(r1_grads, gamma=self.r1_gamma, global_batch_size=self.global_batch_size)
                d_loss += r1
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))
        extra = {"r1_penalty": r1} if r1_grads is not None else {}
        if self.augment_p is not None:  # ADA's overfitting heuristic r_t = E[sign D(augmented real)]
            extra["d_real_sign"] = tf.reduce_sum(tf.sign(tf.cast(d_out.real_logits, tf.float32))) / self.global_batch_size
        return {
            "d_loss": d_loss, "d_adv_loss": d_adv, "d_cls_loss": d_cls, **extra,
            # D accuracy as a real/fake classifier (threshold at logit 0) on this step's real and fake images.
            "d_real_acc": self.rate(d_out.real_logits[:, 0] > 0),
            "d_fake_acc": self.rate(d_out.fake_logits[:, 0] < 0),
            # The auxiliary head's accuracy on real images.
            "cls_acc_real": self.rate(tf.equal(tf.argmax(d_out.real_cls_logits, -1, tf.int32), labels)),
        }

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
        g_logits, g_cls_logits = self._d(self.augment_images(fake_g, aug_u), g_labels, True)
        if self.adversarial_loss == "hinge":
            g_adv = losses.hinge_generator_loss(g_logits, global_batch_size=self.global_batch_size)
        else:
            g_adv = losses.modified_generator_loss(g_logits, global_batch_size=self.global_batch_size)
        g_cls = self._class_loss(g_cls_logits, g_labels)
        g_loss = g_adv + self.aux_weight * g_cls
        extra = {}
        if self.mode_seeking > 0:  # on G's own images, before augmentation: it is G's diversity that is rewarded
            extra["g_mode_seeking"] = losses.mode_seeking_loss(fake_g, noise, g_labels,
                                                               global_batch_size=self.global_batch_size,
                                                               pool=self.mode_seeking_pool)
            g_loss += self.mode_seeking * extra["g_mode_seeking"]
        return g_loss, {
            "g_loss": g_loss, "g_adv_loss": g_adv, "g_cls_loss": g_cls, **extra,
            # The auxiliary head's accuracy on the generator's (G-phase) images.
            "cls_acc_fake": self.rate(tf.equal(tf.argmax(g_cls_logits, -1, tf.int32), g_labels)),
        }

    def update_ema(self, step):
        """After each step (cross-replica context): G_ema <- decay * G_ema + (1 - decay) * G."""
        if self.generator_ema is not None:
            ema_update(self.generator_ema, self.generator, effective_decay(self.ema_decay, step))

    @property
    def sampler(self) -> keras.Model:
        """The generator used for samples and export: the EMA one when kept."""
        return self.generator_ema if self.generator_ema is not None else self.generator
