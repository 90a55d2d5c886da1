"""Differentially private training, the parts outside the train step (docs/dp.md): the plan (sampling rate q,
normaliser, batch capacity, delta, step budget), the Poisson-sampled input pipeline, and the privacy record.

The accountant (models/dp_accounting.py) models Poisson sampling, so ``dp_sampling = "poisson"`` samples exactly
that: every step, each privacy unit (a patient, taken whole, or a vertebral unit) joins independently with
probability q, and the batch is padded to a fixed capacity and masked. ``"shuffle"`` (per-unit only) keeps the
ordinary shuffled fixed-size batches and accounts them as Poisson with q = batch / N, which the statement flags.

Under a strategy with R replicas the units (or patients) are split into R fixed shards, and replica r samples its
own shard with the same q: every unit still joins every step independently with probability q, so the mechanism
is unchanged, and each patient's units are on one replica (needed for per-patient clipping).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from vugan.components import schema
from vugan.components.trainer.data import ExamplesInfo
from vugan.components.trainer.gan_model import DPSettings
from vugan.components.trainer.spec import TrainerConfig
from vugan.models import dp_accounting as acc

# What the non-noised parts of a DP run are, said once in model_info.json and the report.
CLASS_PRIOR_NOTE = ("The class prior (the generator's class sampling) and any class weights are counts of the "
                    "training units, used un-noised: they are treated as public metadata (the level/region mix).")
RANDOMNESS_NOTE = ("Poisson sampling and the Gaussian noise are keyed by a per-run secret from the operating "
                   "system's entropy, not by trainer.seed (which is in config.toml), and the secret is not stored: "
                   "DP runs are not bit-for-bit reproducible, by design.")
DIAGNOSTICS_NOTE = ("Logged real-data scalars (d_real_acc, cls_acc_real, the real half of d_loss, dp_clipped_frac) "
                    "are un-noised training diagnostics outside the guarantee.")


@dataclasses.dataclass(frozen=True)
class TrainUnits:
    """The train split in memory, for Poisson sampling by index: images [N, H, W, K], labels [N], patient [N]
    (integer ids 0..P-1 of ``patient_pseudo_id``)."""

    images: np.ndarray
    labels: np.ndarray
    patients: np.ndarray

    @property
    def num_patients(self) -> int:
        return int(self.patients.max()) + 1 if self.patients.size else 0


def load_train_units(info: ExamplesInfo) -> TrainUnits:
    """Read every usable training record (the ones ``inspect_examples`` counted) with its patient."""
    ds = tf.data.TFRecordDataset(list(info.train_files), compression_type="GZIP")
    ds = ds.map(schema.parse_with_patient_fn(info.image_shape))
    if info.skipped:
        ds = ds.ignore_errors()
    images, labels, patients = [], [], []
    for image, label, patient in ds.as_numpy_iterator():
        images.append(image), labels.append(label), patients.append(patient)
    _, patient_ids = np.unique(np.array(patients, object), return_inverse=True)
    return TrainUnits(np.stack(images).astype(np.float32), np.array(labels, np.int32),
                      patient_ids.astype(np.int64))


@dataclasses.dataclass(frozen=True)
class DPPlan:
    """Everything the accounting and the input pipeline agree on; fixed before the first step."""

    q: float
    normalizer: float  # expected real examples per step (global) = q * N_units = the global batch size
    capacity: int  # padded examples per replica batch (poisson); 0 with shuffle
    delta: float
    noise_multiplier: float
    clip_norm: float
    unit: str
    sampling: str
    accountant: str
    num_units: int
    num_patients: int
    target_epsilon: float  # 0 = none
    max_steps: int | None  # steps within the target epsilon; None without a target
    shards: tuple  # per replica: the unit indices it samples from (poisson)
    d_steps: int = 1  # DP-SGD steps (D phases) per training step
    # Adaptive clipping (Andrew et al. 2021): count_stddev > 0 turns it on; clip_norm is then the starting norm.
    count_stddev: float = 0.0  # noise std on the centred count of unclipped units (sensitivity 1/2)
    expected_units: float = 0.0  # expected privacy units per step, globally: q * #units or q * #patients
    clip_quantile: float = 0.5
    clip_lr: float = 0.2
    fake_group_size: int = 1  # dp_fake_clip_group = "patient": fakes clipped in groups of the mean units/patient
    views: int = 1  # augmented views averaged per unit before clipping (trainer.dp_views)

    @property
    def adaptive(self) -> bool:
        return self.count_stddev > 0

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

    def settings(self, method: str, clip_fake: bool = True) -> DPSettings:
        return DPSettings(self.clip_norm, self.noise_multiplier, self.normalizer,
                          self.capacity if self.unit == acc.PrivacyUnit.PATIENT else None, method, clip_fake,
                          adaptive_count_stddev=self.count_stddev, expected_units=self.expected_units,
                          clip_quantile=self.clip_quantile, clip_lr=self.clip_lr,
                          fake_group_size=self.fake_group_size, views=self.views)

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


def plan_dp(cfg: TrainerConfig, units: TrainUnits, global_batch: int, replicas: int) -> DPPlan:
    """The sampling rate, normaliser, capacity, delta and step budget of a DP run (docs/dp.md, step 1).

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
        capacity = max(acc.group_batch_capacity(np.unique(units.patients[s], return_counts=True)[1], q)
                       if s.size else 1 for s in shards)
    else:
        shards = tuple(np.arange(r, n_units, replicas) for r in range(replicas))
        capacity = max(acc.poisson_batch_capacity(s.size, q) for s in shards)
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
                  # The mean units per patient is a ratio of the data set's sizes, which (like q) are treated as
                  # public; it only shapes the fake half, which holds no real data.
                  fake_group_size=max(1, round(n_units / n_patients)) if cfg.dp_fake_clip_group == "patient" else 1)


def poisson_batches(plan: DPPlan, units: TrainUnits, *, replicas: int, per_replica_batch: int, noise_dim: int,
                    seed: int, class_prior, start_step: int = 0):
    """With ``plan.d_steps`` = k each element is k consecutive single-step elements (below) concatenated row-wise:
    the train step splits them into its k D phases, each an independent Poisson draw (k DP-SGD steps)."""
    d_steps = plan.d_steps
    singles = _poisson_batches(plan, units, replicas=replicas, per_replica_batch=per_replica_batch,
                               noise_dim=noise_dim, seed=seed, class_prior=class_prior,
                               start_step=start_step * d_steps)
    if d_steps == 1:
        yield from singles
        return
    while True:  # per replica r: its k consecutive draws (the single stream runs step-major, replica-minor)
        draws = [[next(singles) for _ in range(replicas)] for _ in range(d_steps)]
        for r in range(replicas):
            yield {k: np.concatenate([draws[i][r][k] for i in range(d_steps)]) for k in draws[0][r]}


def _poisson_batches(plan: DPPlan, units: TrainUnits, *, replicas: int, per_replica_batch: int, noise_dim: int,
                     seed: int, class_prior, start_step: int = 0):
    """Endless per-replica elements, R per step in replica order (step s, replica r keyed by (seed, s, r)): the
    Poisson-sampled real batch, padded to ``plan.capacity`` and masked, and this replica's share of the step's
    noise and generator classes (drawn independently of the real batch). The seed keys the sampling, so it must
    be secret for the guarantee: the trainer passes ``core.secret_dp_seed()``, never trainer.seed."""
    prior = np.asarray(class_prior, np.float64)
    step = start_step
    while True:
        for r in range(replicas):
            rng = np.random.default_rng([seed, step, r])
            shard = plan.shards[r]
            if plan.unit == acc.PrivacyUnit.PATIENT:
                idx, mask, local = acc.poisson_sample_groups(rng, units.patients[shard], plan.q, plan.capacity)
            else:
                idx, mask = acc.poisson_sample(rng, shard.size, plan.q, plan.capacity)
                local = np.arange(plan.capacity, dtype=np.int32)
            rows = shard[idx]
            draw = lambda: rng.choice(prior.size, per_replica_batch, p=prior).astype(np.int32)  # noqa: E731
            yield {"images": units.images[rows], "labels": units.labels[rows], "mask": mask, "patient": local,
                   "z_d": rng.standard_normal((per_replica_batch, noise_dim)).astype(np.float32),
                   "d_fake_labels": draw(),
                   "z_g": rng.standard_normal((per_replica_batch, noise_dim)).astype(np.float32),
                   "g_labels": draw()}
        step += 1


def make_poisson_dataset(plan: DPPlan, units: TrainUnits, *, replicas: int, global_batch: int, noise_dim: int,
                         seed: int, class_prior, start_step: int = 0) -> tf.data.Dataset:
    """``poisson_batches`` as a tf.data.Dataset of per-replica elements (for distribute_datasets_from_function)."""
    per_replica_batch = global_batch // replicas
    cap, b, shape = plan.capacity * plan.d_steps, per_replica_batch * plan.d_steps, units.images.shape[1:]
    spec = {"images": tf.TensorSpec([cap, *shape], tf.float32), "labels": tf.TensorSpec([cap], tf.int32),
            "mask": tf.TensorSpec([cap], tf.float32), "patient": tf.TensorSpec([cap], tf.int32),
            "z_d": tf.TensorSpec([b, noise_dim], tf.float32), "d_fake_labels": tf.TensorSpec([b], tf.int32),
            "z_g": tf.TensorSpec([b, noise_dim], tf.float32), "g_labels": tf.TensorSpec([b], tf.int32)}
    return tf.data.Dataset.from_generator(
        lambda: poisson_batches(plan, units, replicas=replicas, per_replica_batch=per_replica_batch,
                                noise_dim=noise_dim, seed=seed, class_prior=class_prior, start_step=start_step),
        output_signature=spec).prefetch(2)
