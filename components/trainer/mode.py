"""What kind of run the training loop drives: ``OrdinaryTraining`` (the default) or a DP run
(``dp.training.DPTraining``), which the trainer's run.py builds and hands to ``core.train`` whole.

A mode decides the five things in which a DP run differs from an ordinary one, so the loop itself has no
``if dp`` branch: the discriminator phase injected into the ac-GAN (None = the ordinary one), the last step
(a DP target epsilon may stop earlier), the batches (Poisson sampling, keyed by a secret seed), the extra values
logged per step (epsilon) and the record the run closes with (the privacy statement).
"""
from __future__ import annotations

import tensorflow as tf

from vugan.components.trainer.data import ExamplesInfo, make_dataset
from vugan.components.trainer.spec import TrainerConfig
from vugan.models.augment import parse_policy


def shuffled_batches(strategy: tf.distribute.Strategy, info: ExamplesInfo, cfg: TrainerConfig, *,
                     global_batch: int, examples_seen: int, seed: int, d_fake_labels: bool):
    """An iterator of distributed shuffled fixed-size batches, resumed at ``examples_seen``. With d_steps = k one
    element holds k D batches (the train step splits them)."""
    dataset = make_dataset(info, global_batch=global_batch * cfg.d_steps, noise_dim=cfg.noise_dim, seed=seed,
                           class_balanced=cfg.class_balanced, shuffle_buffer=cfg.shuffle_buffer,
                           start_example=examples_seen, d_fake_labels=d_fake_labels,
                           augment=bool(parse_policy(cfg.diffaugment)), mirror_slices=cfg.mirror_slices,
                           augment_gates=cfg.adaptive_augment)
    return iter(strategy.experimental_distribute_dataset(dataset))


class OrdinaryTraining:
    """The configured steps on trainer.seed's shuffled batches, the ac-GAN's own D phase, no record."""

    def discriminator_phase(self):
        return None

    def last_step(self, cfg: TrainerConfig, log) -> int:
        return cfg.steps

    def batches(self, strategy, info: ExamplesInfo, cfg: TrainerConfig, *, global_batch: int, start_step: int,
                examples_seen: int):
        return shuffled_batches(strategy, info, cfg, global_batch=global_batch, examples_seen=examples_seen,
                                seed=cfg.seed, d_fake_labels=cfg.fake_labels == "prior")

    def describe(self) -> str | None:
        return None

    def log_values(self, step: int) -> dict:
        return {}

    def record(self, steps: int, cfg: TrainerConfig, log) -> dict | None:
        return None
