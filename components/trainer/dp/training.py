"""A DP run, as the training loop sees it (docs/dp.md): the trainer's run.py builds one ``DPTraining`` from the
config and the data, and ``core.train`` asks it the same five questions it asks ``mode.OrdinaryTraining``:
which discriminator phase, the last step, the batches, the values logged per step, and the closing record.
"""
from __future__ import annotations

import secrets

import tensorflow as tf

from vugan.components.trainer.data import ExamplesInfo
from vugan.components.trainer.dp.discriminator_phase import DPDiscriminatorPhase
from vugan.components.trainer.dp.plan import DPPlan, plan_dp
from vugan.components.trainer.dp.sampling import TrainUnits, load_train_units, make_poisson_dataset
from vugan.components.trainer.mode import shuffled_batches
from vugan.components.trainer.spec import TrainerConfig


class DPTraining:
    """DP-SGD in D's real half, by ``plan``; ``units`` (the train split in memory) feed Poisson sampling."""

    def __init__(self, plan: DPPlan, units: TrainUnits):
        self.plan, self.units = plan, units
        self.phase: DPDiscriminatorPhase | None = None

    @classmethod
    def prepare(cls, cfg: TrainerConfig, info: ExamplesInfo, replicas: int) -> "DPTraining":
        """Read the train split and plan the run; the plan needs the patients and the replica count, so this runs
        before the model is built. Raises ValueError when the accounting would not hold (``plan_dp``)."""
        units = load_train_units(info)
        return cls(plan_dp(cfg, units, cfg.batch_size, replicas), units)

    def discriminator_phase(self) -> DPDiscriminatorPhase:
        """The private D phase (call inside ``strategy.scope()``: it may own the adaptive clip norm variable)."""
        self.phase = DPDiscriminatorPhase(self.plan)
        return self.phase

    def stops_early(self, cfg: TrainerConfig) -> bool:
        return self.plan.max_steps is not None and self.plan.max_steps < cfg.steps

    def last_step(self, cfg: TrainerConfig, log) -> int:
        plan = self.plan
        if not self.stops_early(cfg):
            return cfg.steps
        # The stop rule: the last step whose epsilon is within the target.
        log(f"DP: target epsilon {plan.target_epsilon} allows {plan.max_steps} of the {cfg.steps} configured steps "
            f"({plan.accountant.upper()}); training stops there")
        return plan.max_steps

    def batches(self, strategy, info: ExamplesInfo, cfg: TrainerConfig, *, global_batch: int, start_step: int,
                examples_seen: int):
        """Poisson-sampled batches, or (dp_sampling = "shuffle") shuffled ones; either way keyed by a secret seed,
        with the D phase's fake classes drawn from the prior, independently of the real batch."""
        seed = secret_dp_seed()
        if self.plan.sampling != "poisson":
            return shuffled_batches(strategy, info, cfg, global_batch=global_batch, examples_seen=examples_seen,
                                    seed=seed, d_fake_labels=True)
        replicas = strategy.num_replicas_in_sync
        return iter(strategy.distribute_datasets_from_function(lambda _: make_poisson_dataset(
            self.plan, self.units, replicas=replicas, global_batch=global_batch, noise_dim=cfg.noise_dim, seed=seed,
            class_prior=info.class_prior, start_step=start_step)))

    def describe(self) -> str:
        plan = self.plan
        return (f"DP-SGD on D's real half: per {plan.unit}, {plan.sampling} sampling q = {plan.q:.4g}, "
                f"noise {plan.noise_multiplier}, clip {plan.clip_norm}"
                + (f" (adaptive to the {plan.clip_quantile:g} quantile, count noise {plan.count_stddev:.3g}; "
                   f"accounted with effective noise {plan.accounting_noise_multiplier:.4g})" if plan.adaptive else "")
                + f", delta {plan.delta:.1e}; "
                f"{plan.num_patients} patients, {plan.num_units} units")

    def log_values(self, step: int) -> dict:
        if self.plan.noise_multiplier > 0:  # RDP: microseconds, so every log line
            return {"dp_epsilon": self.plan.epsilon(step)}
        return {}

    def record(self, steps: int, cfg: TrainerConfig, log) -> dict:
        """The privacy record (``DPPlan.record``) after ``steps`` training steps, with the final clip norm."""
        clip = self.phase.clip if self.phase is not None else None
        record = self.plan.record(steps, stopped_at_target=self.stops_early(cfg),
                                  final_clip=float(clip.numpy()) if clip is not None else None)
        if record["stopped_at_target_epsilon"]:
            log(f"DP: stopped at step {steps} of {cfg.steps}: the target epsilon {self.plan.target_epsilon} is "
                f"reached (one more step would exceed it)")
        log(f"DP: {record['statement']}")
        return record


def secret_dp_seed() -> int:
    """A DP run's sampling and noise seed, from the operating system's entropy; never logged or stored.

    trainer.seed is written to config.toml. Were the Poisson batches and the Gaussian noise drawn from it, anyone
    holding the config could replay both: subtract the noise, and know which patients each step used, which
    removes the amplification by subsampling that epsilon counts on. So a DP run reseeds TensorFlow's global RNG
    (the noise in per_example.py is drawn by stateful ops whose seeds derive from it; the weights were already
    initialised from trainer.seed, which is fine: DP-SGD holds for any public start) and keys the sampler with the
    same secret. A resumed run draws a new secret: each step is still an independent Poisson draw. The price is
    that DP runs are not bit-for-bit reproducible, by design.
    """
    seed = secrets.randbits(62)
    tf.random.set_seed(seed)
    return seed
