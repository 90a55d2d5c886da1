"""The plan of a DP run (docs/dp.md, step 1), fixed before the first step: sampling rate q, normaliser, batch
capacity, delta and step budget, and the privacy record it closes with.

``trainer.dp_sampling = "poisson"`` samples what the accountant models (sampling.py); ``"shuffle"`` (per-unit only)
keeps the ordinary shuffled fixed-size batches and accounts them as Poisson with q = batch / N, which the
statement flags.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from vugan.components.trainer.dp import accounting as acc
from vugan.components.trainer.dp.sampling import TrainUnits, group_batch_capacity, poisson_batch_capacity
from vugan.components.trainer.dp.spec import DPConfig, DPSettings

# What the non-noised parts of a DP run are, said once in model_info.json and the report.
CLASS_PRIOR_NOTE = ("The class prior (the generator's class sampling) and any class weights are counts of the "
                    "training units, used un-noised: they are treated as public metadata (the level/region mix).")
RANDOMNESS_NOTE = ("Poisson sampling and the Gaussian noise are keyed by a per-run secret from the operating "
                   "system's entropy, not by trainer.seed (which is in config.toml), and the secret is not stored: "
                   "DP runs are not bit-for-bit reproducible, by design.")
DIAGNOSTICS_NOTE = ("Logged real-data scalars (d_real_acc, cls_acc_real, the real half of d_loss, dp_clipped_frac) "
                    "are un-noised training diagnostics outside the guarantee.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DPPlan(DPSettings):
    """Everything the accounting, the input pipeline and the private D phase agree on; fixed before the first step.

    The D phase's settings are the inherited ``DPSettings`` fields (clip, noise, normaliser = the global batch
    size = q * N_units, adaptive clipping, ...); the fields below are the sampler's and the accountant's.
    """

    q: float
    capacity: int  # padded examples per replica batch (poisson); 0 with shuffle
    delta: float
    unit: str
    sampling: str
    accountant: str
    num_units: int
    num_patients: int
    target_epsilon: float  # 0 = none
    max_steps: int | None  # steps within the target epsilon; None without a target
    shards: tuple  # per replica: the unit indices it samples from (poisson)
    d_steps: int = 1  # DP-SGD steps (D phases) per training step

    @property
    def count_noise_multiplier(self) -> float | None:
        """The count query's noise multiplier: std / sensitivity = count_stddev / (1/2)."""
        return 2.0 * self.count_stddev if self.adaptive else None

    @property
    def accounting_noise_multiplier(self) -> float:
        """The one Gaussian each DP-SGD step is accounted as: the gradient's sigma, composed with the count query's
        under adaptive clipping (``acc.effective_noise_multiplier``)."""
        if not self.adaptive or self.noise_multiplier == 0:
            return self.noise_multiplier
        return acc.effective_noise_multiplier(self.noise_multiplier, self.count_noise_multiplier)

    def epsilon(self, steps: int, accountant: str = "rdp") -> float:
        """Epsilon spent after ``steps`` training steps, i.e. ``steps * d_steps`` DP-SGD steps (inf with no noise:
        clipping alone gives no guarantee)."""
        if self.noise_multiplier == 0:
            return 0.0 if steps <= 0 else math.inf
        return acc.compute_epsilon(self.q, self.accounting_noise_multiplier, steps * self.d_steps, self.delta,
                                   accountant)

    def adaptive_record(self, final_clip: float | None) -> dict:
        """model_info.json "dp"["adaptive_clip"] and the sentence the statement gains."""
        if not self.adaptive:
            return {"adaptive_clip": None}
        text = (f" Adaptive clipping (Andrew et al. 2021): the clip norm started at {self.clip_norm:g} and followed "
                f"the {self.clip_quantile:g} quantile of the per-{self.unit} gradient norms (geometric step "
                f"{self.clip_lr:g}), estimated each step from a count of unclipped units noised with std "
                f"{self.count_stddev:.4g} (noise multiplier {self.count_noise_multiplier:.4g}); each step's two "
                f"Gaussian mechanisms are accounted as one with effective noise multiplier "
                f"{self.accounting_noise_multiplier:.4g} = (sigma^-2 + sigma_count^-2)^-1/2, gradient sigma "
                f"{self.noise_multiplier:g}.")
        return {"adaptive_clip": {"initial_clip_norm": self.clip_norm, "final_clip_norm": final_clip,
                                  "target_quantile": self.clip_quantile, "learning_rate": self.clip_lr,
                                  "count_stddev": self.count_stddev,
                                  "count_noise_multiplier": self.count_noise_multiplier,
                                  "expected_units_per_step": self.expected_units,
                                  "gradient_noise_multiplier": self.noise_multiplier,
                                  "effective_noise_multiplier": self.accounting_noise_multiplier},
                "adaptive_clip_sentence": text}

    def record(self, steps: int, stopped_at_target: bool, final_clip: float | None = None) -> dict:
        """model_info.json "dp": the privacy statement plus how the run was set up and why it stopped. ``steps``
        are training steps; the statement counts DP-SGD steps (``steps * d_steps``)."""
        training_steps, steps = steps, steps * self.d_steps
        base = {"enabled": True, "training_steps": training_steps, "d_steps": self.d_steps, "unit": self.unit,
                "sampling": self.sampling, "accountant": self.accountant, "fake_clip_group_size": self.fake_group_size,
                "views_per_unit": self.views,
                "num_units": self.num_units, "num_patients": self.num_patients, "normalizer": self.normalizer,
                "batch_capacity_per_replica": self.capacity, "target_epsilon": self.target_epsilon or None,
                "max_steps_for_target": self.max_steps, "stopped_at_target_epsilon": stopped_at_target,
                "class_prior": "public", "class_prior_note": CLASS_PRIOR_NOTE, "diagnostics_note": DIAGNOSTICS_NOTE,
                "randomness_note": RANDOMNESS_NOTE}
        adaptive = self.adaptive_record(final_clip)
        sentence = adaptive.pop("adaptive_clip_sentence", "")
        base.update(adaptive)
        if self.noise_multiplier == 0:
            # JSON has no infinity: None, with the statement saying why.
            return {**base, "epsilon": None, "epsilon_rdp": None, "epsilon_pld": None, "delta": self.delta,
                    "steps": steps, "q": self.q, "noise_multiplier": 0.0, "clip_norm": self.clip_norm,
                    "statement": "No privacy guarantee: noise multiplier 0 (gradients were clipped only)."}
        stmt = acc.privacy_statement(self.q, self.accounting_noise_multiplier, steps, self.delta, self.clip_norm,
                                     unit=self.unit, sampling=self.sampling, with_pld=steps > 0)
        eps = stmt.epsilon_pld if (self.accountant == "pld" and stmt.epsilon_pld is not None) else stmt.epsilon_rdp
        record = {**base, **stmt.to_dict(), "epsilon": eps}
        record["statement"] += sentence
        return record


def plan_dp(cfg: DPConfig, units: TrainUnits, global_batch: int, replicas: int) -> DPPlan:
    """The sampling rate, normaliser, capacity, delta and step budget of a DP run (docs/dp.md, step 1), and the
    private D phase's settings. ``cfg`` is the trainer's config (its ``dp*`` keys, ``steps``, ``d_steps``,
    ``shuffle_buffer``).

    Raises ValueError for settings whose accounting would not hold (delta >= 1 / patients, a partial shuffle
    buffer, a batch larger than the data, a target epsilon with no noise).
    """
    n_units, n_patients = len(units.labels), units.num_patients
    delta = cfg.dp_delta or acc.default_delta(n_patients)
    if delta >= 1.0 / n_patients:
        raise ValueError(f"trainer.dp_delta {delta:g} must be below 1 / {n_patients} training patients")
    if global_batch > n_units:
        raise ValueError(f"trainer.batch_size {global_batch} exceeds the {n_units} training units")
    # q * N_units = global batch in both modes: patient mode samples global_batch / mean_units_per_patient patients.
    q = global_batch / n_units
    shards: tuple = ()
    capacity = 0
    if cfg.dp_sampling == acc.Sampling.SHUFFLE:
        if cfg.shuffle_buffer < n_units:
            raise ValueError(f"trainer.dp_sampling = 'shuffle' needs shuffle_buffer >= {n_units} training units "
                             f"(a partial buffer is not a uniform shuffle); got {cfg.shuffle_buffer}")
    elif cfg.dp_unit == acc.PrivacyUnit.PATIENT:
        shard_of = units.patients % replicas
        shards = tuple(np.flatnonzero(shard_of == r) for r in range(replicas))
        capacity = max(group_batch_capacity(np.unique(units.patients[s], return_counts=True)[1], q)
                       if s.size else 1 for s in shards)
    else:
        shards = tuple(np.arange(r, n_units, replicas) for r in range(replicas))
        capacity = max(poisson_batch_capacity(s.size, q) for s in shards)
    # Adaptive clipping: the count's constant denominator is the expected number of privacy units per step.
    expected_units = q * (n_patients if cfg.dp_unit == acc.PrivacyUnit.PATIENT else n_units)
    count_stddev = (cfg.dp_clip_count_noise or expected_units / 20.0) if cfg.dp_adaptive_clip else 0.0
    sigma = cfg.dp_noise_multiplier
    if count_stddev and sigma:
        sigma = acc.effective_noise_multiplier(sigma, 2.0 * count_stddev)
    max_steps = None
    if cfg.dp_target_epsilon > 0:
        if cfg.dp_noise_multiplier == 0:
            raise ValueError("trainer.dp_target_epsilon needs dp_noise_multiplier > 0 (no noise, no privacy)")
        dp_steps = acc.steps_for_epsilon(cfg.dp_target_epsilon, q, sigma, delta,
                                         cfg.dp_accountant, max_steps=max(cfg.steps, 1) * cfg.d_steps)
        max_steps = dp_steps // cfg.d_steps  # training steps: each spends d_steps DP-SGD steps
    return DPPlan(q=q, normalizer=float(global_batch), capacity=int(capacity), delta=float(delta),
                  noise_multiplier=float(cfg.dp_noise_multiplier), clip_norm=float(cfg.dp_clip_norm),
                  unit=str(cfg.dp_unit), sampling=str(cfg.dp_sampling), accountant=str(cfg.dp_accountant),
                  num_units=n_units, num_patients=n_patients, target_epsilon=float(cfg.dp_target_epsilon),
                  max_steps=max_steps, shards=shards, d_steps=int(cfg.d_steps), count_stddev=float(count_stddev),
                  expected_units=float(expected_units), clip_quantile=float(cfg.dp_clip_quantile),
                  clip_lr=float(cfg.dp_clip_lr), views=int(cfg.dp_views),
                  num_groups=int(capacity) if cfg.dp_unit == acc.PrivacyUnit.PATIENT else None,
                  method=str(cfg.dp_per_example), clip_fake=bool(cfg.dp_clip_fake),
                  # The mean units per patient is a ratio of the data set's sizes, which (like q) are treated as
                  # public; it only shapes the fake half, which holds no real data.
                  fake_group_size=max(1, round(n_units / n_patients)) if cfg.dp_fake_clip_group == "patient" else 1)
