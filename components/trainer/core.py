"""The training loop: fetch, one distributed train step (D phase, G phase), EMA, then maintenance every N steps.

The strategy is created by run.py and handed in; everything replica-specific stays inside ``strategy.run``.
State that a resumed run needs (both networks, both optimizers, the EMA generator, the step counter and the
data position) lives in one tf.train.Checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vugan.components.trainer import finite
from vugan.components.trainer import init_from as init_from_module
from vugan.components.trainer.arch import arch_config
from vugan.components.trainer.callbacks import TrainingMonitor
from vugan.components.trainer.data import ExamplesInfo
from vugan.components.trainer.gan_model import ACGAN, DiscriminatorPhase
from vugan.components.trainer.holdout_auc import HoldoutAUCProbe
from vugan.components.trainer.mode import OrdinaryTraining
from vugan.components.trainer.spec import TrainerConfig
from vugan.models import acgan, augment, ema, losses
from vugan.models.augment import parse_policy


@dataclasses.dataclass(frozen=True)
class TrainResult:
    steps: int
    start_step: int  # > 0 when resumed from a checkpoint
    seconds: float
    last: dict  # the last logged scalars
    dp: dict | None = None  # the privacy record (dp.plan.DPPlan.record) of a DP run
    # When the newest checkpoint was damaged: which were (name, TensorFlow's reason) and which one was used.
    checkpoint_fallback: dict | None = None


def build_gan(cfg: TrainerConfig, info: ExamplesInfo, global_batch: int,
              discriminator_phase: DiscriminatorPhase | None = None) -> ACGAN:
    """Networks, EMA copy and optimizers (call inside ``strategy.scope()``). ``discriminator_phase``: None for the
    ac-GAN's own D phase, else the one the run's mode injects (DP-SGD: ``mode.discriminator_phase()``)."""
    keras.utils.set_random_seed(cfg.seed)  # the same initial weights whatever the strategy
    augment_p = (tf.Variable(cfg.augment_p, trainable=False, dtype=tf.float32, name="augment_p")
                 if cfg.adaptive_augment else None)
    arch = arch_config(cfg, info)
    generator, discriminator = acgan.build_generator(arch), acgan.build_discriminator(arch)
    gan = ACGAN(generator, discriminator, num_classes=arch.num_classes, global_batch_size=global_batch,
                aux_weight=cfg.aux_weight, label_smoothing=cfg.label_smoothing,
                class_weights=losses.inverse_frequency_weights(info.class_counts) if cfg.class_weighted_loss else None,
                augment=parse_policy(cfg.diffaugment),
                generator_ema=ema.clone_for_ema(generator) if cfg.ema else None,
                ema_decay=ema.decay_for(cfg.ema_decay, cfg.ema_kimg, global_batch),
                discriminator_phase=discriminator_phase, d_steps=cfg.d_steps, class_loss=cfg.class_loss,
                class_loss_normalization=cfg.class_loss_normalization, fake_labels_from_prior=cfg.fake_labels == "prior",
                adversarial_loss=cfg.adversarial_loss, r1_gamma=cfg.r1_gamma * cfg.r1_every,
                reuse_fakes=cfg.reuse_fakes, mode_seeking=cfg.mode_seeking, mode_seeking_pool=cfg.mode_seeking_pool,
                d_class_loss_on_fakes=cfg.d_class_loss_on_fakes, augment_p=augment_p)
    gan.compile(d_optimizer=keras.optimizers.Adam(cfg.lr_d, beta_1=cfg.beta1, beta_2=cfg.beta2),
                g_optimizer=keras.optimizers.Adam(cfg.lr_g, beta_1=cfg.beta1, beta_2=cfg.beta2))
    gan.discriminator_parameters = _count(discriminator.trainable_weights)  # before any layer is frozen
    if cfg.d_trainable_layers.strip():
        init_from_module.freeze_all_but(discriminator, init_from_module.trained_layer_names(cfg.d_trainable_layers))
    # Keras 3 + MirroredStrategy: optimizers must own their slots before the first distributed step.
    gan.d_optimizer.build(discriminator.trainable_variables)
    gan.g_optimizer.build(generator.trainable_variables)
    return gan


def make_checkpoint(gan: ACGAN, step: tf.Variable, examples_seen: tf.Variable) -> tf.train.Checkpoint:
    parts = dict(generator=gan.generator, discriminator=gan.discriminator, g_optimizer=gan.g_optimizer,
                 d_optimizer=gan.d_optimizer, step=step, examples_seen=examples_seen)
    if gan.generator_ema is not None:
        parts["generator_ema"] = gan.generator_ema
    if gan.augment_p is not None:  # ADA's p is training state: a resumed run continues from it
        parts["augment_p"] = gan.augment_p
    parts.update(gan.discriminator_phase.checkpoint_state())  # e.g. DP's adaptive clip norm
    return tf.train.Checkpoint(**parts)


def train(strategy: tf.distribute.Strategy, gan: ACGAN, info: ExamplesInfo, cfg: TrainerConfig, out_dir: Path,
          log=print, mode=None) -> TrainResult:
    """Train to ``cfg.steps``, or to the last step the run's ``mode`` allows (a DP target epsilon).

    ``mode`` is ``mode.OrdinaryTraining()`` by default, or the ``dp.training.DPTraining`` whose discriminator phase
    ``gan`` was built with: it supplies the batches, the values logged with the scalars (epsilon) and the record
    the result carries (the privacy statement).
    """
    mode = mode if mode is not None else OrdinaryTraining()
    out_dir = Path(out_dir)
    global_batch = gan.global_batch_size
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    examples_seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="examples_seen")
    ckpt = make_checkpoint(gan, step, examples_seen)
    manager = tf.train.CheckpointManager(ckpt, str(out_dir / "checkpoints"), max_to_keep=cfg.keep_checkpoints,
                                         step_counter=step, checkpoint_name="ckpt")
    remove_stale_temp_checkpoints(out_dir / "checkpoints")
    fallback = None
    if manager.latest_checkpoint:
        used, bad = restore_newest_intact(ckpt, out_dir / "checkpoints", manager.latest_checkpoint)
        if bad:
            fallback = {"bad": [{"checkpoint": Path(p).name, "error": why} for p, why in bad], "used": Path(used).name}
            names = ", ".join(Path(p).name for p, _ in bad)
            log(f"checkpoint {names} in {out_dir / 'checkpoints'} does not restore ({bad[0][1]}); "
                f"resuming from the newest intact one, {Path(used).name}, instead")
        log(f"resumed from {used} at step {int(step)} ({int(examples_seen)} examples seen)")
    start_step = int(step)

    total_steps = mode.last_step(cfg, log)
    iterator = mode.batches(strategy, info, cfg, global_batch=global_batch, start_step=start_step,
                            examples_seen=int(examples_seen))
    real_per_step = global_batch * cfg.d_steps

    def make_distributed_step(regularize: bool):
        # Its own compiled train step too: a shared inner tf.function would reuse the first graph for both.
        step_fn = tf.function(gan.train_step, jit_compile=True) if use_xla(cfg.xla) else gan.train_step

        @tf.function
        def distributed_step(iterator):
            # Read while tracing: this graph has the R1 term or not (lazy R1, trainer.r1_every).
            gan.r1_now = regularize
            return one_step(iterator, step_fn)
        return distributed_step

    def one_step(iterator, step_fn):
        per_replica = strategy.run(step_fn, args=(next(iterator),))
        # Every scalar is already a share of the global-batch value: summing the replicas gives it.
        scalars = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}
        gan.update_ema(step)
        # The D phase's own end of step (DP: the adaptive clip norm's update, per-real-example rates).
        scalars = gan.discriminator_phase.end_of_step(gan, scalars)
        if cfg.ada_target > 0:  # ADA: p follows the overfitting heuristic of this step's real batch
            gan.augment_p.assign(augment.ada_adjust(gan.augment_p, scalars["d_real_sign"], cfg.ada_target,
                                                    real_per_step / (1000.0 * cfg.ada_kimg)))
        if gan.augment_p is not None:
            scalars = {**scalars, "augment_p": tf.identity(gan.augment_p)}
        # The counters move inside the compiled step: no extra eager ops, and nothing read back, per step.
        step.assign_add(1)
        examples_seen.assign_add(real_per_step)
        return scalars

    # Lazy regularisation (StyleGAN2): R1 on every r1_every-th step only, at r1_every x gamma.
    regularized_step, plain_step = make_distributed_step(True), make_distributed_step(False)

    monitor = TrainingMonitor(out_dir, total_steps=total_steps, global_batch=global_batch * cfg.d_steps,  # real images
                              start_step=start_step,
                              constants={"lr_g": cfg.lr_g, "lr_d": cfg.lr_d}, log=log)
    fixed_noise, fixed_classes = fixed_sample_inputs(cfg, len(info.class_names))
    holdout_probe = (HoldoutAUCProbe.from_examples(info, cfg.d_auc_holdout, cfg.noise_dim, cfg.seed)
                     if cfg.d_auc_holdout else None)
    started, last = time.perf_counter(), {}
    log(f"training {cfg.steps} steps from step {start_step}: global batch {global_batch} "
        f"= {strategy.num_replicas_in_sync} replica(s) x {global_batch // strategy.num_replicas_in_sync}, "
        f"{info.num_train} training units, classes {dict(zip(info.class_names, info.class_counts))}")
    if (description := mode.describe()) is not None:
        log(description)
    # The host never waits on the device inside this loop except at log, image and checkpoint steps: the step
    # number is counted in Python alongside the variable (which the checkpoint holds), and the losses of the steps
    # in between are kept as tensors and checked for finiteness all at once, before anything is logged or saved.
    unchecked: list[tuple[int, dict]] = []
    for s in range(start_step + 1, total_steps + 1):
        # fetch + D phase + G phase + EMA + counters
        scalars = (regularized_step if (s - 1) % cfg.r1_every == 0 else plain_step)(iterator)
        unchecked.append((s, scalars))
        if (s % cfg.log_every == 0 or s % cfg.image_every == 0 or s % cfg.checkpoint_every == 0
                or s == total_steps):
            finite.check_steps(unchecked, cfg.checkpoint_every)
            unchecked.clear()
        if s % cfg.log_every == 0 or s == total_steps:
            probe = {"d_auc_holdout": holdout_probe(gan)} if holdout_probe is not None else {}
            last = monitor.scalars(s, {**{k: v.numpy() for k, v in scalars.items()}, **mode.log_values(s), **probe})
        if s % cfg.image_every == 0 or s == total_steps:
            images = gan.sampler([fixed_noise, fixed_classes], training=False).numpy()
            monitor.sample_grid(s, images, info.class_names, cfg.samples_per_class)
        if s % cfg.checkpoint_every == 0 or s == total_steps:
            manager.save(checkpoint_number=s)
    monitor.close()
    return TrainResult(steps=int(step), start_step=start_step, seconds=time.perf_counter() - started, last=last,
                       dp=mode.record(int(step), cfg, log), checkpoint_fallback=fallback)


class NoIntactCheckpointError(ValueError):
    """Every checkpoint of a resumed run failed to restore (an input fault of the --out folder: exit 2)."""


def checkpoint_candidates(folder: Path, latest: str) -> list[str]:
    """The checkpoint the index names first, then every earlier ``ckpt-N`` whose index file is on disk, newest
    first. Globbing (rather than the manager's list) finds the earlier ones even when the ``checkpoint`` index
    file names one that is gone; nothing newer than the index's own is tried (an abandoned, longer run's)."""
    def number(prefix: str) -> int:
        tail = Path(prefix).name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    on_disk = [str(p.with_suffix("")) for p in Path(folder).glob("ckpt-*.index")]
    earlier = sorted((p for p in on_disk if number(p) < number(latest)), key=number, reverse=True)
    return [latest, *earlier]


def restore_newest_intact(ckpt: tf.train.Checkpoint, folder: Path, latest: str) -> tuple[str, list[tuple[str, str]]]:
    """Restore the newest checkpoint that reads back whole; return it and the damaged ones tried before it.

    TensorFlow checks each tensor's CRC32C on restore, so a flipped bit (DataLossError), a truncated data file
    (IndexError: "Read less bytes than requested"), a damaged index file or a missing checkpoint (NotFoundError)
    all fail here rather than load wrong weights (measured: tests/test_reliability_recovery.py). A structure
    mismatch (assert_existing_objects_matched: another config) is not damage and is not caught.
    """
    bad = []
    for prefix in checkpoint_candidates(folder, latest):
        if not Path(prefix + ".index").exists():  # named by the index file, but its files are gone
            bad.append((prefix, "its files are missing"))
            continue
        try:
            ckpt.restore(prefix).assert_existing_objects_matched()
            return prefix, bad
        except (tf.errors.OpError, IndexError) as exc:
            bad.append((prefix, _first_line(exc)))
    tried = "; ".join(f"{Path(p).name}: {why}" for p, why in bad)
    raise NoIntactCheckpointError(
        f"{folder}: no checkpoint restores intact ({tried}); delete the folder {folder} to train from step 0, or "
        f"put back an intact copy of it")


def _first_line(exc: BaseException) -> str:
    """TensorFlow's reason without its op prefix ("{{function_node ...}} ... [Op:RestoreV2]"), one line, short."""
    text = str(exc).split("\n")[0]
    if "}}" in text:
        text = text.split("}}", 1)[1]
    return text.replace("[Op:RestoreV2]", "").strip()[:200] or type(exc).__name__


def remove_stale_temp_checkpoints(folder: Path) -> list[Path]:
    """A save killed half-way leaves ``ckpt-N_temp/`` (TensorFlow writes there, then renames); the manager never
    lists it and never deletes it. Only this process writes checkpoints here, so any such folder is stale."""
    stale = sorted(p for p in folder.glob("ckpt-*_temp") if p.is_dir()) if folder.is_dir() else []
    for path in stale:
        shutil.rmtree(path)
    return stale


def use_xla(setting) -> bool:
    """trainer.xla: true/false as given; 'auto' = on where a GPU is visible. On CPU the oneDNN kernels beat XLA's
    (issue 13, bench/train.py at s = 32: 116.5 images/s without XLA, 77.7 with it), so 'auto' is off there."""
    if isinstance(setting, bool):
        return setting
    return bool(tf.config.list_logical_devices("GPU"))


def fixed_sample_inputs(cfg: TrainerConfig, num_classes: int):
    rng = np.random.default_rng(cfg.seed + 12345)
    n = cfg.samples_per_class
    noise = rng.standard_normal((num_classes * n, cfg.noise_dim)).astype(np.float32)
    return noise, np.repeat(np.arange(num_classes, dtype=np.int32), n)


def _count(weights) -> int:
    return sum(int(w.shape.num_elements()) for w in weights)


def export(gan: ACGAN, info: ExamplesInfo, cfg: TrainerConfig, out_dir: Path, steps: int,
           dp: dict | None = None, init_from: dict | None = None, canaries: dict | None = None) -> dict:
    """Write the model bundle (docs/contracts.md): .keras files plus model_info.json."""
    out_dir = Path(out_dir)
    gan.generator.save(out_dir / "generator.keras")
    gan.discriminator.save(out_dir / "discriminator.keras")
    if gan.generator_ema is not None:
        gan.generator_ema.save(out_dir / "generator_ema.keras")
    info_json = {
        "class_names": list(info.class_names),
        "image_shape": list(info.image_shape),
        "noise_dim": cfg.noise_dim,
        "conditioning": info.conditioning,
        "steps": steps,
        "ema": gan.generator_ema is not None,
        "class_prior": list(info.class_prior),
        "class_counts": list(info.class_counts),
        "skipped_records": list(info.skipped),
        "width": cfg.width,
        "global_batch_size": gan.global_batch_size,
        "dp": dp if dp is not None else {"enabled": False},
        # The full architecture, so that trainer.init_from can check a later run against it field by field.
        "arch": {**dataclasses.asdict(arch_config(cfg, info)), "image_shape": list(info.image_shape)},
        "init_from": init_from,  # the model this run started from (uri, fingerprint), or None
        # Public phantom canaries trained beside the cohort (trainer/canaries.py): which, fingerprinted; or off.
        "canaries": canaries if canaries is not None else {"enabled": False},
        # trainer.d_trainable_layers: what the run trained of D (under DP, the noised parameters), the rest frozen.
        "discriminator_trained": {
            "layers": list(init_from_module.trained_layer_names(cfg.d_trainable_layers)) or "all",
            "parameters": _count(gan.discriminator.trainable_weights),
            "of_parameters": gan.discriminator_parameters,
        },
    }
    (out_dir / "model_info.json").write_text(json.dumps(info_json, indent=2) + "\n")
    return info_json
