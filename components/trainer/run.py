"""``vugan train``: the trainer component. The edge where the distribution strategy is chosen.

MultiWorkerMirroredStrategy when TF_CONFIG is set (each worker runs `vugan train` with its own --out; the chief,
worker 0, writes the artifact to use); otherwise MirroredStrategy over several visible GPUs, or over
``trainer.cpu_replicas`` > 1 logical CPU devices when there is no GPU (so that multi-replica code runs in tests);
one device gets TensorFlow's default strategy.
Models and optimizers are built inside the strategy's scope; nothing below this file knows about strategies.
"""
from __future__ import annotations

import os
import sys

from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import ExecContext, ExecResult


def configure_devices(cpu_replicas: int) -> None:
    """With no GPU, split the CPU into ``cpu_replicas`` logical devices; must run before any TensorFlow op."""
    import tensorflow as tf

    if cpu_replicas <= 1 or os.environ.get("TF_CONFIG") or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    except RuntimeError as exc:  # the runtime already started in this process with another split
        if len(tf.config.list_logical_devices("CPU")) != cpu_replicas:
            raise ValueError(f"trainer.cpu_replicas = {cpu_replicas}: TensorFlow already started in this "
                             f"process; run the trainer in a fresh process ({exc})") from None


def make_strategy(cpu_replicas: int):
    """TF_CONFIG: MultiWorkerMirroredStrategy. Otherwise several devices: MirroredStrategy over them; ONE device:
    TensorFlow's default strategy, because a one-device MirroredStrategy still pays for its replica machinery
    (about twice the CPU time per step at s = 32, measured with bench/train.py)."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if gpus:
        return tf.distribute.get_strategy()
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:cpu_replicas]
    if len(devices) <= 1:
        return tf.distribute.get_strategy()
    # No NCCL on CPU: reduce through one device.
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def execute(ctx: ExecContext) -> ExecResult:
    cfg = ctx.config.trainer
    configure_devices(cfg.cpu_replicas)
    # The strategy first: MultiWorkerMirroredStrategy must exist before any TensorFlow op runs (reading records
    # is one); then check the data (and the configured shape against it) before anything is built.
    strategy = make_strategy(cfg.cpu_replicas)
    from vugan.components.trainer.data import inspect_examples

    info = inspect_examples(ctx.inputs["examples"], cfg.image_shape,
                            allow_missing_classes=cfg.allow_missing_classes)
    if info.skipped:
        ctx.log(f"skipped {len(info.skipped)} unreadable record(s): {'; '.join(info.skipped)}")

    import keras
    import tensorflow as tf

    from vugan.components.trainer import core
    from vugan.components.trainer.arch import arch_config
    from vugan.components.trainer.mode import OrdinaryTraining

    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"trainer.batch_size {cfg.batch_size} is not divisible by the "
                         f"{strategy.num_replicas_in_sync} replicas")
    if cfg.mixed_precision:
        if tf.config.list_physical_devices("GPU"):
            keras.mixed_precision.set_global_policy("mixed_bfloat16")  # no loss scaling needed, unlike float16
        else:
            ctx.log("trainer.mixed_precision ignored: no GPU")
    canaries = None
    if cfg.canaries:  # before the DP plan: inserted canaries are training patients like any other
        from vugan.components.trainer import canaries as canary_module

        canaries = canary_module.prepare(cfg.canary_examples, cfg.canaries, cfg.canary_seed, ctx.out_dir,
                                         info.image_shape, info.class_names, canary_module.training_patients(info))
        info = canary_module.with_canaries(info, canaries)
        ctx.log(f"canaries: {cfg.canaries // 2} public phantom patients ({canaries.record['inserted_units']} units) "
                f"inserted into training, {cfg.canaries // 2} held back (trainer.canary_seed {cfg.canary_seed})")
    mode = OrdinaryTraining()
    if cfg.dp:  # the one place a DP run is set up: its plan needs the patients and the replica count
        from vugan.components.trainer.dp.training import DPTraining

        mode = DPTraining.prepare(cfg, info, strategy.num_replicas_in_sync)
    source = None
    if cfg.init_from:  # checked before anything is built: a mismatch names the field and loses nothing
        from vugan.components.trainer import init_from
        from vugan.pipeline.artifacts import read_artifact

        source = init_from.check_source(cfg.init_from, arch_config(cfg, info), info.class_names, dp=cfg.dp,
                                        examples_fingerprint=read_artifact(ctx.inputs["examples"])["fingerprint"])
    with strategy.scope():
        gan = core.build_gan(cfg, info, global_batch=cfg.batch_size, discriminator_phase=mode.discriminator_phase())
        if source is not None:
            init_from.load_into(gan, source)
            ctx.log(f"init_from: G and D start from {source.folder} (fingerprint {source.fingerprint}); "
                    f"optimizers start fresh")
    result = core.train(strategy, gan, info, cfg, ctx.out_dir, log=ctx.log, mode=mode)
    dp_record = result.dp
    if dp_record is not None:  # what epsilon covers: the private cohort only, never the pre-training data
        dp_record = {**dp_record, "init_from_fingerprint": source.fingerprint if source else None,
                     "pretraining_note": source.pretraining_note() if source else None}
    model_info = core.export(gan, info, cfg, ctx.out_dir, result.steps, dp=dp_record,
                             init_from=source.record() if source else None,
                             canaries=canaries.record if canaries else None)
    ctx.log(f"trained to step {result.steps} (started at {result.start_step}) in {result.seconds:.1f}s")
    return ExecResult(
        counts={"steps": result.steps, "train_units": info.num_train, "skipped_records": len(info.skipped)},
        properties={"class_names": model_info["class_names"], "image_shape": model_info["image_shape"],
                    "noise_dim": cfg.noise_dim, "ema": model_info["ema"], "replicas": strategy.num_replicas_in_sync,
                    "resumed_from_step": result.start_step, "checkpoint_fallback": result.checkpoint_fallback,
                    "dp": dp_summary(dp_record),
                    "init_from": model_info["init_from"],
                    "canaries": model_info["canaries"],
                    "final": {k: round(v, 5) for k, v in result.last.items() if isinstance(v, float)}})


def dp_summary(record: dict | None) -> dict:
    """The artifact's short form of the privacy record (model_info.json "dp" has all of it)."""
    if record is None:
        return {"enabled": False}
    keys = ("epsilon", "epsilon_rdp", "epsilon_pld", "delta", "steps", "unit", "sampling", "accountant",
            "noise_multiplier", "clip_norm", "q", "target_epsilon", "stopped_at_target_epsilon")
    return {k: record.get(k) for k in keys}



if __name__ == "__main__":  # python -m vugan.components.trainer.run ... (same flags as `vugan train`)
    from vugan.pipeline.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
