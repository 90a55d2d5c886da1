"""The ac-GAN as a keras.Model: ``train_step`` is one step of the algorithm, a labelled D phase then a G phase.

Each replica runs ``train_step`` on its share of the batch; losses are already divided by the GLOBAL batch
(models.losses), and accuracies are returned as (correct / global batch), so summing any returned scalar over
the replicas gives the global-batch value whatever the replica count.
"""
from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from models import losses
from models.augment import diff_augment
from models.ema import effective_decay, ema_update


class DiscriminatorOutputs(NamedTuple):
    real_logits: tf.Tensor  # [n, 1]
    fake_logits: tf.Tensor
    real_cls_logits: tf.Tensor  # [n, C]
    fake_cls_logits: tf.Tensor


class ACGAN(keras.Model):
    def __init__(self, generator: keras.Model, discriminator: keras.Model, *, num_classes: int,
                 global_batch_size: int, aux_weight: float = 1.0, class_weights=None, label_smoothing: float = 0.0,
                 augment: tuple[str, ...] = (), generator_ema: keras.Model | None = None, ema_decay: float = 0.999):
        super().__init__(name="acgan")
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

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def discriminate_pair(self, real, fake, training=True) -> DiscriminatorOutputs:
        """D on the (augmented) real and fake batch in ONE call: half the kernel launches of two calls.

        Equivalent to two calls because D has no batch-coupled layers unless trainer.batch_norm is on; then
        real and fake share batch statistics, unlike the reference's separate calls.
        """
        n = tf.shape(real)[0]
        both = self._augment(tf.concat([real, tf.cast(fake, real.dtype)], axis=0))
        logits, cls_logits = self.discriminator(both, training=training)
        return DiscriminatorOutputs(logits[:n], logits[n:], cls_logits[:n], cls_logits[n:])

    def _augment(self, images):
        return diff_augment(images, self.augment) if self.augment else images

    def _rate(self, correct) -> tf.Tensor:
        return tf.reduce_sum(tf.cast(correct, tf.float32)) / self.global_batch_size

    def d_losses(self, out: DiscriminatorOutputs, labels):
        adv = losses.modified_discriminator_loss(out.real_logits, out.fake_logits,
                                                 global_batch_size=self.global_batch_size,
                                                 real_label_smoothing=self.label_smoothing)
        # The fakes were generated with the real batch's labels, so one label vector serves both halves.
        cls = losses.acgan_discriminator_loss(out.real_cls_logits, out.fake_cls_logits, labels,
                                              num_classes=self.num_classes, global_batch_size=self.global_batch_size,
                                              class_weights=self.class_weights)
        return adv, cls

    def train_step(self, batch):
        real, labels = batch["images"], batch["labels"]

        # ---- Discriminator phase: real batch vs G(z_d | labels); G is held fixed.
        fake = self.generator([batch["z_d"], labels], training=True)
        with tf.GradientTape() as tape:
            d_out = self.discriminate_pair(real, fake)
            d_adv, d_cls = self.d_losses(d_out, labels)
            d_loss = d_adv + self.aux_weight * d_cls
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, d_vars), d_vars))

        # ---- Generator phase: fresh noise z_g, classes drawn from the training prior; D is held fixed.
        g_labels = batch["g_labels"]
        with tf.GradientTape() as tape:
            fake_g = self.generator([batch["z_g"], g_labels], training=True)
            g_logits, g_cls_logits = self.discriminator(self._augment(fake_g), training=True)
            g_adv = losses.modified_generator_loss(g_logits, global_batch_size=self.global_batch_size)
            g_cls = losses.acgan_generator_loss(g_cls_logits, g_labels, num_classes=self.num_classes,
                                                global_batch_size=self.global_batch_size,
                                                class_weights=self.class_weights)
            g_loss = g_adv + self.aux_weight * g_cls
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, g_vars), g_vars))

        return {
            "d_loss": d_loss, "d_adv_loss": d_adv, "d_cls_loss": d_cls,
            "g_loss": g_loss, "g_adv_loss": g_adv, "g_cls_loss": g_cls,
            # D accuracy as a real/fake classifier (threshold at logit 0) on this step's real and fake images.
            "d_real_acc": self._rate(d_out.real_logits[:, 0] > 0),
            "d_fake_acc": self._rate(d_out.fake_logits[:, 0] < 0),
            # The auxiliary head's accuracy on real images and on the generator's (G-phase) images.
            "cls_acc_real": self._rate(tf.equal(tf.argmax(d_out.real_cls_logits, -1, tf.int32), labels)),
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
