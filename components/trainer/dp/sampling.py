"""What a DP run trains on, and how a step's batch is drawn: the train split in memory, Poisson sampling of units or
of whole patients (what the accountant assumes), batches padded to a fixed capacity and masked, and the per-replica
input pipeline built from them.

The accountant (accounting.py) models Poisson sampling, so ``trainer.dp_sampling = "poisson"`` samples exactly that:
every step, each privacy unit (a patient, taken whole, or a vertebral unit) joins independently with probability q.
Under a strategy with R replicas the units (or patients) are split into R fixed shards (``DPPlan.shards``), and
replica r samples its own shard with the same q: every unit still joins every step independently with probability
q, so the mechanism is unchanged, and each patient's units are on one replica (needed for per-patient clipping).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
from scipy import stats

from vugan.components import schema
from vugan.components.trainer.data import ExamplesInfo
from vugan.components.trainer.dp.accounting import PrivacyUnit


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


def poisson_batch_capacity(num_units: int, q: float, overflow_prob: float = 1e-12) -> int:
    """Smallest batch capacity K with P(Binomial(num_units, q) > K) <= overflow_prob.

    Batches are padded to K so that shapes are static; a step that samples more than K (probability <= overflow_prob)
    is truncated, which changes the mechanism with that probability: over T steps the guarantee becomes
    (epsilon, delta + (1 + e^epsilon) * T * overflow_prob), negligible at the default.
    """
    return max(1, int(stats.binom.isf(overflow_prob, num_units, q)))


def group_batch_capacity(group_sizes: np.ndarray, q: float, overflow_prob: float = 1e-12) -> int:
    """Capacity in EXAMPLES for patient-level Poisson sampling: each group (patient) of size n_g is taken whole with
    probability q, so the batch size is sum_g n_g * Bernoulli(q). Its exact distribution is the convolution over
    distinct sizes n of n * Binomial(#groups of size n, q); returns the smallest K with P(size > K) <= overflow_prob.
    """
    sizes, counts = np.unique(np.asarray(group_sizes, dtype=np.int64), return_counts=True)
    if sizes.size == 0 or sizes[0] < 1:
        raise ValueError("group_sizes must be a non-empty list of sizes >= 1")
    pmf = np.ones(1)
    for n, c in zip(sizes, counts):
        part = np.zeros(n * c + 1)
        part[::n] = stats.binom.pmf(np.arange(c + 1), c, q)  # n * Binomial(c, q) lives on multiples of n
        pmf = np.convolve(pmf, part)
    tail = 1.0 - np.cumsum(pmf)  # tail[k] = P(size > k)
    return max(1, int(np.argmax(tail <= overflow_prob)))


def poisson_sample(rng: np.random.Generator, num_units: int, q: float, capacity: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One Poisson-sampled batch: each of num_units indices independently with probability q.

    Returns (indices int64 [capacity], mask float32 [capacity]); padded slots hold index 0 with mask 0. On overflow
    (see `poisson_batch_capacity`) a uniformly random subset of `capacity` sampled indices is kept.
    """
    chosen = np.flatnonzero(rng.random(num_units) < q)
    if chosen.size > capacity:
        chosen = np.sort(rng.choice(chosen, capacity, replace=False))
    indices = np.zeros(capacity, np.int64)
    mask = np.zeros(capacity, np.float32)
    indices[: chosen.size], mask[: chosen.size] = chosen, 1.0
    return indices, mask


def poisson_sample_groups(rng: np.random.Generator, group_of_unit: np.ndarray, q: float, capacity: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One patient-level Poisson batch: each patient independently with probability q, taking all of its units.

    Args:
      group_of_unit: [N] patient id (any non-negative ints) of every training unit.
      q: per-patient sampling probability.
      capacity: padded batch size in units (see `group_batch_capacity`).

    Returns:
      (indices int64 [capacity], mask float32 [capacity], local_group int32 [capacity]): unit indices to gather,
      1 for real rows, and each row's batch-local patient index 0..k-1 (0 on padding), for `per_example.dp_aggregate`'s
      group_index. On overflow whole patients are dropped at random until the batch fits.
    """
    group_of_unit = np.asarray(group_of_unit)
    groups = np.unique(group_of_unit)
    picked = groups[rng.random(groups.size) < q]
    rng.shuffle(picked)
    units = [np.flatnonzero(group_of_unit == g) for g in picked]
    keep, total = [], 0
    for g_units in units:
        if total + g_units.size <= capacity:
            keep.append(g_units)
            total += g_units.size
    indices = np.zeros(capacity, np.int64)
    mask = np.zeros(capacity, np.float32)
    local = np.zeros(capacity, np.int32)
    if keep:
        indices[:total] = np.concatenate(keep)
        local[:total] = np.concatenate([np.full(u.size, i, np.int32) for i, u in enumerate(keep)])
        mask[:total] = 1.0
    return indices, mask, local


def poisson_batches(plan, units: TrainUnits, *, replicas: int, per_replica_batch: int, noise_dim: int,
                    seed: int, class_prior, start_step: int = 0):
    """Endless per-replica elements of Poisson-sampled batches by ``plan`` (a ``plan.DPPlan``, which imports this
    module). With ``plan.d_steps`` = k each element is k consecutive single-step elements (below) concatenated
    row-wise: the train step splits them into its k D phases, each an independent Poisson draw (k DP-SGD steps)."""
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


def _poisson_batches(plan, units: TrainUnits, *, replicas: int, per_replica_batch: int, noise_dim: int,
                     seed: int, class_prior, start_step: int = 0):
    """Endless per-replica elements, R per step in replica order (step s, replica r keyed by (seed, s, r)): the
    Poisson-sampled real batch, padded to ``plan.capacity`` and masked, and this replica's share of the step's
    noise and generator classes (drawn independently of the real batch). The seed keys the sampling, so it must
    be secret for the guarantee: the trainer passes ``training.secret_dp_seed()``, never trainer.seed."""
    prior = np.asarray(class_prior, np.float64)
    step = start_step
    while True:
        for r in range(replicas):
            rng = np.random.default_rng([seed, step, r])
            shard = plan.shards[r]
            if plan.unit == PrivacyUnit.PATIENT:
                idx, mask, local = poisson_sample_groups(rng, units.patients[shard], plan.q, plan.capacity)
            else:
                idx, mask = poisson_sample(rng, shard.size, plan.q, plan.capacity)
                local = np.arange(plan.capacity, dtype=np.int32)
            rows = shard[idx]
            draw = lambda: rng.choice(prior.size, per_replica_batch, p=prior).astype(np.int32)  # noqa: E731
            yield {"images": units.images[rows], "labels": units.labels[rows], "mask": mask, "patient": local,
                   "z_d": rng.standard_normal((per_replica_batch, noise_dim)).astype(np.float32),
                   "d_fake_labels": draw(),
                   "z_g": rng.standard_normal((per_replica_batch, noise_dim)).astype(np.float32),
                   "g_labels": draw()}
        step += 1


def make_poisson_dataset(plan, units: TrainUnits, *, replicas: int, global_batch: int, noise_dim: int,
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
