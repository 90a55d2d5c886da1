"""The trainer on real fixture TFRecords: a short run with every option on, its artifact and model bundle;
2 replicas log the same losses as 1; a SIGKILLed `vugan train` resumes and ends exactly at the configured step."""
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from vugan.components.trainer.callbacks import read_stats
from vugan.components.trainer.component import SPEC
from support.examples import make_examples_artifact
from vugan.models.bundle import discriminate, generate, load_model_bundle
from vugan.pipeline.config import load_config

from support.paths import ROOT
from support.trainer_runs import TINY, run_cli, sets


def test_short_run_with_all_options_writes_a_loadable_bundle(examples, tmp_path):
    cfg = load_config(None, TINY + ["trainer.steps=4", "trainer.log_every=2", "trainer.image_every=4",
                                    "trainer.checkpoint_every=2", "trainer.ema=true", "trainer.spectral_norm=true",
                                    "trainer.class_weighted_loss=true", "trainer.label_smoothing=0.1",
                                    "trainer.class_balanced=true", "trainer.lr_d=0.0004",
                                    "trainer.diffaugment='translation,cutout,intensity'"])
    out = tmp_path / "model"
    manifest = SPEC.run(cfg, {"examples": examples}, out, log=lambda m: None)
    assert manifest["type"] == "Model" and manifest["counts"]["steps"] == 4
    for name in ("generator.keras", "generator_ema.keras", "discriminator.keras", "model_info.json", "stats.jsonl"):
        assert (out / name).exists(), name
    info = json.loads((out / "model_info.json").read_text())
    assert info["class_names"] == ["cervical", "thoracic", "lumbar"] and info["image_shape"] == [16, 16, 3]
    assert info["steps"] == 4 and info["ema"] is True and info["noise_dim"] == 16
    assert info["class_prior"] == pytest.approx([1 / 3] * 3)
    rows = read_stats(out / "stats.jsonl")
    assert [r["step"] for r in rows] == [2, 4]
    for key in ("d_loss", "g_loss", "d_adv_loss", "d_cls_loss", "g_adv_loss", "g_cls_loss", "d_real_acc",
                "d_fake_acc", "cls_acc_real", "cls_acc_fake", "lr_g", "lr_d", "images_per_s"):
        assert np.isfinite(rows[-1][key]), key
    assert rows[-1]["lr_d"] == 0.0004
    # TensorBoard: scalars and per-class image summaries were written.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(out / "logs"), size_guidance={"tensors": 0}).Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"d_loss", "g_cls_loss", "cls_acc_fake", "samples/all_classes", "samples/lumbar"} <= tags
    assert (out / "logs" / "samples-000004.png").exists()
    # The bundle: deterministic generation per seed, discriminator outputs of the contract's shapes.
    bundle = load_model_bundle(out)
    a, b = generate(bundle, [0, 1, 2, 2], seed=3), generate(bundle, [0, 1, 2, 2], seed=3)
    assert a.shape == (4, 16, 16, 3) and np.array_equal(a, b) and np.abs(a).max() <= 1
    assert not np.array_equal(a, generate(bundle, [0, 1, 2, 2], seed=4))
    rf, cls = discriminate(bundle, a)
    assert rf.shape == (4,) and cls.shape == (4, 3)
    assert load_model_bundle(out, ema=False).generator is not None


@pytest.mark.slow  # a trainer process on 2 replicas
def test_two_replicas_log_the_same_losses_as_one(examples, tmp_path):
    """Same seed = same weights, data order and noise (keyed by example index): only the replica count differs.
    With the study's class loss (weighted, normalised by the GLOBAL batch's weight sum: an all-reduce)."""
    overrides = TINY + ["trainer.steps=3", "trainer.log_every=1", "trainer.image_every=100",
                        "trainer.checkpoint_every=100", "trainer.class_weighted_loss=true",
                        "trainer.class_loss_normalization='weight_sum'", "trainer.fake_labels='prior'"]
    one = tmp_path / "one"
    SPEC.run(load_config(None, overrides), {"examples": examples}, one, log=lambda m: None)
    two = tmp_path / "two"
    proc = run_cli(["--examples", str(examples), "--out", str(two), *sets(overrides + ["trainer.cpu_replicas=2"])])
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "2 replica(s) x 4" in output
    r1, r2 = read_stats(one / "stats.jsonl"), read_stats(two / "stats.jsonl")
    assert [r["step"] for r in r2] == [1, 2, 3]
    # Step 1: a FIXED batch through identical weights; the logged d_loss must agree.
    assert r2[0]["d_loss"] == pytest.approx(r1[0]["d_loss"], rel=1e-5)
    for a, b in zip(r1, r2):  # later steps too: gradients are summed over replicas of global-batch losses
        for key in ("d_loss", "g_loss", "d_cls_loss", "g_cls_loss", "d_real_acc", "cls_acc_fake"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)


def latest_checkpoint_step(folder: Path) -> int:
    text = (folder / "checkpoint").read_text() if (folder / "checkpoint").exists() else ""
    return int(text.split('"ckpt-')[1].split('"')[0]) if '"ckpt-' in text else 0


def logged_steps(out: Path) -> list[int]:
    path = out / "stats.jsonl"
    try:
        return [r["step"] for r in read_stats(path)] if path.exists() else []
    except ValueError:  # a line half-written at this instant
        return []


@pytest.mark.slow  # three trainer processes, 120 steps each
def test_sigkill_then_rerun_resumes_exactly(examples, tmp_path):
    """Kill a real `vugan train` (DiffAugment, EMA, spectral norm on) after a checkpoint and some logged steps
    past it; the rerun resumes, and its final weights equal an uninterrupted run's bit for bit. The killed run's
    steps past the checkpoint appear once in stats.jsonl and TensorBoard; a stale temp checkpoint is removed."""
    overrides = TINY + ["trainer.steps=120", "trainer.log_every=5", "trainer.checkpoint_every=20",
                        "trainer.image_every=100", "trainer.keep_checkpoints=2", "trainer.ema=true",
                        "trainer.spectral_norm=true", "trainer.diffaugment='translation,cutout,intensity'"]
    straight = tmp_path / "straight"
    proc = run_cli(["--examples", str(examples), "--out", str(straight), *sets(overrides)])
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output

    out = tmp_path / "model"
    args = ["--examples", str(examples), "--out", str(out), *sets(overrides)]
    first = run_cli(args)
    deadline = time.time() + 240
    # Kill once a checkpoint exists AND the run has logged steps beyond it (so there is something to drop).
    while not (latest_checkpoint_step(out / "checkpoints") and
               max(logged_steps(out), default=0) > latest_checkpoint_step(out / "checkpoints")):
        assert first.poll() is None, first.communicate()[0]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    assert not (out / "artifact.json").exists()
    killed_at = max(logged_steps(out))
    # What a save killed half-way leaves behind (TensorFlow writes <prefix>_temp/ and renames it at the end).
    stale = out / "checkpoints" / "ckpt-999_temp"
    stale.mkdir()
    (stale / "part-00000-of-00001.index").write_bytes(b"partial")

    second = run_cli(args)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    resumed_at = int(output.split("resumed from")[1].split("at step ")[1].split()[0])
    assert 20 <= resumed_at < killed_at <= 120 and resumed_at % 20 == 0
    assert not stale.exists()
    rows = read_stats(out / "stats.jsonl")
    assert [r["step"] for r in rows] == list(range(5, 121, 5))  # each logged step exactly once
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(out / "logs"), size_guidance={"tensors": 0}, purge_orphaned_data=False).Reload()
    assert [e.step for e in acc.Tensors("d_loss")] == list(range(5, 121, 5))
    manifest = json.loads((out / "artifact.json").read_text())
    assert manifest["counts"]["steps"] == 120 and manifest["properties"]["resumed_from_step"] == resumed_at
    assert json.loads((out / "model_info.json").read_text())["steps"] == 120
    import tensorflow as tf
    ckpt = tf.train.load_checkpoint(str(out / "checkpoints" / "ckpt-120"))
    # Optimizer state came back too: Adam's counters went on from the checkpoint rather than restarting.
    assert ckpt.get_tensor("g_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 120
    assert ckpt.get_tensor("d_optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 120
    assert ckpt.get_tensor("examples_seen/.ATTRIBUTES/VARIABLE_VALUE") == 120 * 8
    # Bit for bit: every weight of G, G_ema and D (incl. spectral norm's power-iteration vectors).
    for ema in (False, True):
        a, b = load_model_bundle(straight, ema=ema), load_model_bundle(out, ema=ema)
        for model_a, model_b in ((a.generator, b.generator), (a.discriminator, b.discriminator)):
            wa, wb = model_a.get_weights(), model_b.get_weights()
            assert len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb)), (ema, model_a.name)
    # The final losses logged by both runs agree exactly too.
    assert read_stats(straight / "stats.jsonl")[-1]["d_loss"] == rows[-1]["d_loss"]


def test_small_data_options_train_and_the_bundle_loads(examples, tmp_path):
    """Hinge loss, R1, spectral norm on every D layer (heads too), minibatch stddev, DiffAugment's published
    policies: a short run logs finite losses and an R1 term, and the saved D (custom layers) reloads and scores
    like the trained one."""
    cfg = load_config(None, TINY + ["trainer.steps=3", "trainer.log_every=1", "trainer.image_every=3",
                                    "trainer.checkpoint_every=3", "trainer.adversarial_loss='hinge'",
                                    "trainer.r1_gamma=1.0", "trainer.spectral_norm=true",
                                    "trainer.spectral_norm_heads=true", "trainer.minibatch_stddev=true",
                                    "trainer.ema=true", "trainer.lr_d=0.0004",
                                    "trainer.diffaugment='translation,cutout,brightness,contrast'"])
    out = tmp_path / "model"
    SPEC.run(cfg, {"examples": examples}, out, log=lambda m: None)
    rows = read_stats(out / "stats.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("d_loss", "g_loss", "r1_penalty", "d_cls_loss"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[-1]["r1_penalty"] > 0
    bundle = load_model_bundle(out)
    layers = {type(layer).__name__ for layer in bundle.discriminator.layers}
    assert {"SpectralNormConv2D", "SpectralNormDense", "MinibatchStdDev"} <= layers
    images = generate(bundle, [0, 1, 2, 2], seed=0)
    rf, cls = discriminate(bundle, images)
    assert np.isfinite(rf).all() and cls.shape == (4, 3)


def test_reuse_fakes_trains_g_on_the_d_phase_fakes(examples, tmp_path):
    """trainer.reuse_fakes: a short run trains (finite losses, G moves) and differs from the default algorithm."""
    base = TINY + ["trainer.steps=3", "trainer.log_every=1", "trainer.image_every=3", "trainer.checkpoint_every=3",
                   "trainer.lr_g=0.001"]
    runs = {}
    for reuse in (False, True):
        out = tmp_path / f"reuse{int(reuse)}"
        SPEC.run(load_config(None, base + [f"trainer.reuse_fakes={str(reuse).lower()}"]), {"examples": examples}, out,
                 log=lambda m: None)
        runs[reuse] = read_stats(out / "stats.jsonl")
    assert all(np.isfinite(r["g_loss"]) for r in runs[True])
    # Step 1's D phase is the same computation either way; G's loss is taken on other images (and another D).
    assert runs[True][0]["d_loss"] == pytest.approx(runs[False][0]["d_loss"], rel=1e-6)
    # (at width 4 D's logits are near 0, so G's losses are near ln 6 either way: compare exactly, and the weights)
    assert runs[True][0]["g_loss"] != runs[False][0]["g_loss"]
    g = [load_model_bundle(tmp_path / f"reuse{i}", ema=False).generator.get_weights() for i in (0, 1)]
    assert any(not np.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(*g))


def test_projection_and_residual_train_and_the_white_box_attack_reads_the_conditional_logit(examples, tmp_path):
    """trainer.projection + trainer.residual (with hinge, R1, mode seeking, spectral norm on every layer): a short
    real run; the
    bundle's D has the projection output, discriminate(class_ids=...) and the evaluator's white-box scores give the
    class-conditional logit, and the projection embedding was trained (moved from its initial value)."""
    import keras

    from vugan.components.evaluator.privacy.model_attacks import discriminator_scores
    from vugan.models import acgan

    cfg = load_config(None, TINY + ["trainer.steps=3", "trainer.log_every=1", "trainer.image_every=3",
                                    "trainer.checkpoint_every=3", "trainer.projection=true", "trainer.residual=true",
                                    "trainer.spectral_norm=true", "trainer.spectral_norm_heads=true",
                                    "trainer.adversarial_loss='hinge'", "trainer.r1_gamma=1.0",
                                    "trainer.g_upsample='resize'", "trainer.generator_batch_norm=true",
                                    "trainer.diffaugment='translation,cutout'", "trainer.mode_seeking=1.0"])
    out = tmp_path / "model"
    SPEC.run(cfg, {"examples": examples}, out, log=lambda m: None)
    rows = read_stats(out / "stats.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r[k]) for r in rows for k in ("d_loss", "g_loss", "r1_penalty", "g_mode_seeking"))
    assert max(r["g_mode_seeking"] for r in rows) > 0  # same-class pairs were found and paid for
    bundle = load_model_bundle(out)
    assert len(bundle.discriminator.outputs) == 3
    assert any(layer.name.startswith("res_add_") for layer in bundle.discriminator.layers)
    images, y = generate(bundle, [0, 1, 2, 2], seed=0), np.array([0, 1, 2, 2])
    rf_uncond, cls = discriminate(bundle, images)
    rf, cls_c = discriminate(bundle, images, class_ids=y)
    scores = np.asarray(bundle.discriminator(images, training=False)[2])
    np.testing.assert_allclose(rf, rf_uncond + scores[np.arange(4), y], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cls, cls_c)
    logit, _, _ = discriminator_scores(bundle.discriminator, images, y, batch=3)
    np.testing.assert_allclose(logit, rf, rtol=1e-5, atol=1e-6)
    arch = json.loads((out / "model_info.json").read_text())["arch"]
    assert arch["projection"] is True and arch["residual"] is True
    arch = acgan.ArchConfig(**{**arch, "image_shape": tuple(arch["image_shape"])})
    keras.utils.set_random_seed(cfg.trainer.seed)  # as build_gan: seed, then G, then D: the run's initial weights
    acgan.build_generator(arch)
    start = acgan.build_discriminator(arch)
    moved = np.abs(bundle.discriminator.get_layer("projection_scores").kernel.numpy()
                   - start.get_layer("projection_scores").kernel.numpy()).max()
    assert moved > 1e-4


def test_projection_is_refused_under_dp():
    with pytest.raises(ValueError, match="projection"):
        load_config(None, ["trainer.dp=true", "trainer.projection=true"]).trainer.validate()


def test_cohort_config_trains_a_cohort_lacking_a_class_on_class_balanced_batches(tmp_path):
    """configs/cohort.toml is configs/demo.toml plus the real-cohort recipe (docs/training.md, third ablation) and
    the demo's schedule before issue 22 (1,200 steps, DiffAugment on every input: the recipe measured on the real
    cohort; the demo's adaptive augmentation and 800 steps were measured on the phantom only): a cohort with no
    cervical and few thoracic units trains (cervical prior 0), and its real batches are drawn uniformly over the
    classes present while the generator's classes keep the training prior."""
    import dataclasses

    import tensorflow as tf

    from vugan.components import schema
    from vugan.components.trainer.data import inspect_examples, make_dataset

    cohort, demo = load_config(ROOT / "configs" / "cohort.toml"), load_config(ROOT / "configs" / "demo.toml")
    changed = {f.name for f in dataclasses.fields(cohort.trainer)
               if getattr(cohort.trainer, f.name) != getattr(demo.trainer, f.name)}
    assert changed == {"mode_seeking", "class_balanced", "allow_missing_classes",
                       "steps", "augment_p", "ada_target", "ada_kimg"}
    assert cohort.trainer.steps == 1200 and cohort.trainer.augment_p == 1.0 and cohort.trainer.ada_target == 0.0
    assert cohort.trainer.class_balanced and cohort.trainer.allow_missing_classes
    assert 0 < cohort.trainer.mode_seeking < demo.trainer.mode_seeking
    for name in ("preprocess", "evaluator", "privacy", "synthesize"):
        assert getattr(cohort, name) == getattr(demo, name), name
    # A cohort like the real one: no cervical units, thoracic 2 of 10.
    root = make_examples_artifact(tmp_path / "ex", n_per_class=8, shape=(16, 16, 3), num_shards=1)
    path = schema.shard_files(str(root), "train")[0]
    records = list(tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator())
    thoracic = [r for r in records if schema.decode(r).class_id == 1][:2]
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for r in thoracic + [r for r in records if schema.decode(r).class_id == 2]:
            w.write(r)
    from vugan.pipeline.artifacts import ArtifactType, read_artifact, write_artifact

    made = read_artifact(root)  # marked again: this is the cohort preprocess wrote (10 train units)
    write_artifact(root, artifact_type=ArtifactType.EXAMPLES, producer="preprocess", config_fingerprint="fixture",
                   counts={**made["counts"], "train": 10},
                   properties={**made["properties"], "splits": {**made["counts"], "train": 10}})
    cfg = load_config(ROOT / "configs" / "cohort.toml",
                      TINY + ["trainer.steps=3", "trainer.log_every=1", "trainer.image_every=100",
                              "trainer.checkpoint_every=100"])
    out = tmp_path / "model"
    assert SPEC.run(cfg, {"examples": root}, out, log=lambda m: None)["counts"]["steps"] == 3
    info = json.loads((out / "model_info.json").read_text())
    assert info["class_prior"] == pytest.approx([0.0, 0.2, 0.8])
    rows = read_stats(out / "stats.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(rows[-1][k]) for k in ("d_loss", "g_loss"))
    assert "g_mode_seeking" in rows[-1]
    assert generate(load_model_bundle(out), [1, 2], seed=0).shape == (2, 16, 16, 3)
    # The batches the trainer draws with this config: thoracic as often as lumbar, never cervical.
    examples = inspect_examples(root, allow_missing_classes=cfg.trainer.allow_missing_classes)
    batch = next(iter(make_dataset(examples, global_batch=600, noise_dim=2, seed=0,
                                   class_balanced=cfg.trainer.class_balanced, shuffle_buffer=10)))
    counts = np.bincount(batch["labels"].numpy(), minlength=3)
    assert counts[0] == 0 and all(240 < n < 360 for n in counts[1:]), counts
    g_counts = np.bincount(batch["g_labels"].numpy(), minlength=3)
    assert g_counts[0] == 0 and 70 < g_counts[1] < 170, g_counts
