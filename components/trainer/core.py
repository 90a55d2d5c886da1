"""The training loop: fetch, one distributed train step (D phase, G phase), EMA, then maintenance every N steps.

The strategy is created by run.py and handed in; everything replica-specific stays inside ``strategy.run``.
State that a resumed run needs (both networks, both optimizers, the EMA generator, the step counter and the
data position) lives in one tf.train.Checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from vugan.components.trainer import finite
from vugan.components.trainer import init_from as init_from_module
from vugan.components.trainer.callbacks import TrainingMonitor
from vugan.components.trainer.data import ExamplesInfo, make_dataset
from vugan.components.trainer.dp_training import DPPlan, TrainUnits, make_poisson_dataset
from vugan.components.trainer.gan_model import ACGAN
from vugan.components.trainer.spec import TrainerConfig
from vugan.models import acgan, ema, losses
from vugan.models.augment import parse_policy


@dataclasses.dataclass(frozen=True)
class TrainResult:
    steps: int
    start_step: int  # > 0 when resumed from a checkpoint
    seconds: float
    last: dict  # the last logged scalars
    dp: dict | None = None  # the privacy record (DPPlan.record) of a DP run


def arch_config(cfg: TrainerConfig, info: ExamplesInfo) -> acgan.ArchConfig:
    return acgan.ArchConfig(image_shape=info.image_shape, num_classes=len(info.class_names),
                            noise_dim=cfg.noise_dim, width=cfg.width,
                            batch_norm=cfg.batch_norm or cfg.generator_batch_norm,
                            d_batch_norm=cfg.batch_norm, spectral_norm=cfg.spectral_norm,
                            spectral_norm_heads=cfg.spectral_norm_heads, g_upsample=cfg.g_upsample, minibatch_stddev=cfg.minibatch_stddev,
                            d_block_bias=cfg.d_block_bias, d_feature_activation=cfg.d_feature_activation,
                            head_init=cfg.head_init, projection=cfg.projection, residual=cfg.residual)


def build_gan(cfg: TrainerConfig, info: ExamplesInfo, global_batch: int, dp_plan: DPPlan | None = None) -> ACGAN:
    """Networks, EMA copy and optimizers (call inside ``strategy.scope()``); DP-SGD in D's real half with a plan."""
    keras.utils.set_random_seed(cfg.seed)  # the same initial weights whatever the strategy
    arch = arch_config(cfg, info)
    generator, discriminator = acgan.build_generator(arch), acgan.build_discriminator(arch)
    gan = ACGAN(generator, discriminator, num_classes=arch.num_classes, global_batch_size=global_batch,
                aux_weight=cfg.aux_weight, label_smoothing=cfg.label_smoothing,
                class_weights=losses.inverse_frequency_weights(info.class_counts) if cfg.class_weighted_loss else None,
                augment=parse_policy(cfg.diffaugment),
                generator_ema=ema.clone_for_ema(generator) if cfg.ema else None, ema_decay=cfg.ema_decay,
                dp_settings=dp_plan.settings(cfg.dp_per_example, cfg.dp_clip_fake) if dp_plan else None,
                d_steps=cfg.d_steps, class_loss=cfg.class_loss,
                class_loss_normalization=cfg.class_loss_normalization, fake_labels_from_prior=cfg.fake_labels == "prior",
                adversarial_loss=cfg.adversarial_loss, r1_gamma=cfg.r1_gamma,
                reuse_fakes=cfg.reuse_fakes, mode_seeking=cfg.mode_seeking)
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
    if gan.dp_clip is not None:  # the adaptive clip norm is training state: a resumed run continues from it
        parts["dp_clip_norm"] = gan.dp_clip
    return tf.train.Checkpoint(**parts)


def train(strategy: tf.distribute.Strategy, gan: ACGAN, info: ExamplesInfo, cfg: TrainerConfig, out_dir: Path,
          log=print, dp_plan: DPPlan | None = None, units: TrainUnits | None = None) -> TrainResult:
    """Train to ``cfg.steps`` (or, under DP with a target epsilon, to the last step within it).

    With ``dp_plan`` (and ``units``, the train split in memory, for Poisson sampling) the D phase is DP-SGD,
    epsilon is logged with the scalars, and the result carries the privacy record.
    """
    out_dir = Path(out_dir)
    global_batch = gan.global_batch_size
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    examples_seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="examples_seen")
    ckpt = make_checkpoint(gan, step, examples_seen)
    manager = tf.train.CheckpointManager(ckpt, str(out_dir / "checkpoints"), max_to_keep=cfg.keep_checkpoints,
                                         step_counter=step, checkpoint_name="ckpt")
    remove_stale_temp_checkpoints(out_dir / "checkpoints")
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log(f"resumed from {manager.latest_checkpoint} at step {int(step)} ({int(examples_seen)} examples seen)")
    start_step = int(step)

    total_steps = cfg.steps
    if dp_plan is not None and dp_plan.max_steps is not None and dp_plan.max_steps < cfg.steps:
        total_steps = dp_plan.max_steps  # the stop rule: the last step whose epsilon is within the target
        log(f"DP: target epsilon {dp_plan.target_epsilon} allows {total_steps} of the {cfg.steps} configured steps "
            f"({dp_plan.accountant.upper()}); training stops there")
    data_seed = secret_dp_seed() if dp_plan is not None else cfg.seed
    if dp_plan is not None and dp_plan.sampling == "poisson":
        replicas = strategy.num_replicas_in_sync
        iterator = iter(strategy.distribute_datasets_from_function(lambda _: make_poisson_dataset(
            dp_plan, units, replicas=replicas, global_batch=global_batch, noise_dim=cfg.noise_dim, seed=data_seed,
            class_prior=info.class_prior, start_step=start_step)))
    else:
        # With d_steps = k one element holds k D batches (the train step splits them).
        dataset = make_dataset(info, global_batch=global_batch * cfg.d_steps, noise_dim=cfg.noise_dim, seed=data_seed,
                               class_balanced=cfg.class_balanced, shuffle_buffer=cfg.shuffle_buffer,
                               start_example=int(examples_seen),
                               d_fake_labels=dp_plan is not None or cfg.fake_labels == "prior",
                               augment=bool(parse_policy(cfg.diffaugment)))
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
    step_fn = tf.function(gan.train_step, jit_compile=True) if use_xla(cfg.xla) else gan.train_step
    real_per_step = global_batch * cfg.d_steps

    @tf.function
    def distributed_step(iterator):
        per_replica = strategy.run(step_fn, args=(next(iterator),))
        # Every scalar is already a share of the global-batch value: summing the replicas gives it.
        scalars = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}
        gan.update_ema(step)
        gan.update_dp_clip(scalars)  # adaptive clipping: the next step's clip norm from this step's noisy count
        if gan.dp_clip is not None:
            scalars["dp_clip_norm"] = gan.dp_clip.read_value()  # noised (post-processing): fine to log
        # The counters move inside the compiled step: no extra eager ops, and nothing read back, per step.
        step.assign_add(1)
        examples_seen.assign_add(real_per_step)
        return per_real_example_rates(scalars, global_batch)

    monitor = TrainingMonitor(out_dir, total_steps=total_steps, global_batch=global_batch * cfg.d_steps,  # real images
                              start_step=start_step,
                              constants={"lr_g": cfg.lr_g, "lr_d": cfg.lr_d}, log=log)
    fixed_noise, fixed_classes = fixed_sample_inputs(cfg, len(info.class_names))
    started, last = time.perf_counter(), {}
    log(f"training {cfg.steps} steps from step {start_step}: global batch {global_batch} "
        f"= {strategy.num_replicas_in_sync} replica(s) x {global_batch // strategy.num_replicas_in_sync}, "
        f"{info.num_train} training units, classes {dict(zip(info.class_names, info.class_counts))}")
    if dp_plan is not None:
        log(f"DP-SGD on D's real half: per {dp_plan.unit}, {dp_plan.sampling} sampling q = {dp_plan.q:.4g}, "
            f"noise {dp_plan.noise_multiplier}, clip {dp_plan.clip_norm}"
            + (f" (adaptive to the {dp_plan.clip_quantile:g} quantile, count noise {dp_plan.count_stddev:.3g}; "
               f"accounted with effective noise {dp_plan.accounting_noise_multiplier:.4g})" if dp_plan.adaptive else "")
            + f", delta {dp_plan.delta:.1e}; "
            f"{dp_plan.num_patients} patients, {dp_plan.num_units} units")
    # The host never waits on the device inside this loop except at log, image and checkpoint steps: the step
    # number is counted in Python alongside the variable (which the checkpoint holds), and the losses of the steps
    # in between are kept as tensors and checked for finiteness all at once, before anything is logged or saved.
    unchecked: list[tuple[int, dict]] = []
    for s in range(start_step + 1, total_steps + 1):
        scalars = distributed_step(iterator)  # fetch + D phase + G phase + EMA + counters
        unchecked.append((s, scalars))
        if (s % cfg.log_every == 0 or s % cfg.image_every == 0 or s % cfg.checkpoint_every == 0
                or s == total_steps):
            finite.check_steps(unchecked, cfg.checkpoint_every)
            unchecked.clear()
        if s % cfg.log_every == 0 or s == total_steps:
            values = {k: v.numpy() for k, v in scalars.items()}
            if dp_plan is not None and dp_plan.noise_multiplier > 0:  # RDP: microseconds, so every log line
                values["dp_epsilon"] = dp_plan.epsilon(s)
            last = monitor.scalars(s, values)
        if s % cfg.image_every == 0 or s == total_steps:
            images = gan.sampler([fixed_noise, fixed_classes], training=False).numpy()
            monitor.sample_grid(s, images, info.class_names, cfg.samples_per_class)
        if s % cfg.checkpoint_every == 0 or s == total_steps:
            manager.save(checkpoint_number=s)
    monitor.close()
    record = None
    if dp_plan is not None:
        record = dp_plan.record(int(step), stopped_at_target=total_steps < cfg.steps,
                                final_clip=float(gan.dp_clip.numpy()) if gan.dp_clip is not None else None)
        if record["stopped_at_target_epsilon"]:
            log(f"DP: stopped at step {int(step)} of {cfg.steps}: the target epsilon {dp_plan.target_epsilon} is "
                f"reached (one more step would exceed it)")
        log(f"DP: {record['statement']}")
    return TrainResult(steps=int(step), start_step=start_step, seconds=time.perf_counter() - started, last=last,
                       dp=record)


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


def secret_dp_seed() -> int:
    """A DP run's sampling and noise seed, from the operating system's entropy; never logged or stored.

    trainer.seed is written to config.toml. Were the Poisson batches and the Gaussian noise drawn from it, anyone
    holding the config could replay both: subtract the noise, and know which patients each step used, which
    removes the amplification by subsampling that epsilon counts on. So a DP run reseeds TensorFlow's global RNG
    (the noise in models/dp.py is drawn by stateful ops whose seeds derive from it; the weights were already
    initialised from trainer.seed, which is fine: DP-SGD holds for any public start) and keys the sampler with the
    same secret. A resumed run draws a new secret: each step is still an independent Poisson draw. The price is
    that DP runs are not bit-for-bit reproducible, by design.
    """
    seed = secrets.randbits(62)
    tf.random.set_seed(seed)
    return seed


def per_real_example_rates(scalars: dict, global_batch: int) -> dict:
    """Under DP the real rates were shares of the EXPECTED batch (so that replicas can be summed); rescale them by
    the realised number of real examples, ``dp_batch_size``, so they are rates in [0, 1]; likewise the share of
    privacy units whose gradient was clipped."""
    if "dp_batch_size" not in scalars:
        return scalars
    scale = global_batch / tf.maximum(scalars["dp_batch_size"], 1.0)
    return {**scalars, **{k: scalars[k] * scale for k in ("d_real_acc", "cls_acc_real")},
            "dp_clipped_frac": scalars["dp_clipped_units"] / tf.maximum(scalars["dp_units"], 1.0)}


def fixed_sample_inputs(cfg: TrainerConfig, num_classes: int):
    rng = np.random.default_rng(cfg.seed + 12345)
    n = cfg.samples_per_class
    noise = rng.standard_normal((num_classes * n, cfg.noise_dim)).astype(np.float32)
    return noise, np.repeat(np.arange(num_classes, dtype=np.int32), n)


def _count(weights) -> int:
    return sum(int(w.shape.num_elements()) for w in weights)


def export(gan: ACGAN, info: ExamplesInfo, cfg: TrainerConfig, out_dir: Path, steps: int,
           dp: dict | None = None, init_from: dict | None = None) -> dict:
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
        # trainer.d_trainable_layers: what the run trained of D (under DP, the noised parameters), the rest frozen.
        "discriminator_trained": {
            "layers": list(init_from_module.trained_layer_names(cfg.d_trainable_layers)) or "all",
            "parameters": _count(gan.discriminator.trainable_weights),
            "of_parameters": gan.discriminator_parameters,
        },
    }
    (out_dir / "model_info.json").write_text(json.dumps(info_json, indent=2) + "\n")
    return info_json
