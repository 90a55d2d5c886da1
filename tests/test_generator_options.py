"""Issue 22's generator options (a nonlinear full-resolution stage, two convs per block, class-conditional
BatchNorm) and D's real/fake AUC on held-out units: each changes what it claims, and nothing else."""
import glob
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from support.trainer_runs import TINY
from vugan.components.trainer.holdout_auc import real_fake_auc
from vugan.models import acgan, ema
from vugan.models.conditional_norm import ConditionalBatchNorm
from vugan.pipeline.config import load_config

SHAPE, WIDTH, NOISE = (32, 32, 3), 4, 8
BASE = dict(image_shape=SHAPE, num_classes=3, noise_dim=NOISE, width=WIDTH, batch_norm=True, g_upsample="resize")


def relus_at(g, hw):
    return [layer.name for layer in g.layers
            if isinstance(layer, keras.layers.ReLU) and tuple(layer.output.shape[1:3]) == hw]


def generate(g, classes, training=False):
    noise = tf.random.stateless_normal([len(classes), NOISE], seed=[1, 2])
    return g([noise, tf.constant(classes, tf.int32)], training=training)


@pytest.mark.parametrize("upsample", ["resize", "transpose"])
def test_two_conv_output_block_puts_a_relu_at_full_resolution(upsample):
    plain = acgan.build_generator(acgan.ArchConfig(**{**BASE, "g_upsample": upsample}))
    g = acgan.build_generator(acgan.ArchConfig(**{**BASE, "g_upsample": upsample}, g_output_block="two_conv"))
    assert relus_at(plain, SHAPE[:2]) == [] and len(relus_at(g, SHAPE[:2])) == 1
    # The x2 step now ends in `width` channels (kernel 3x3 after a resize, 4x4 transposed) + BN (4 per channel),
    # and a 3x3 conv makes the K slices.
    up_kernel = 9 if upsample == "resize" else 16
    grown = up_kernel * WIDTH * WIDTH + 4 * WIDTH + 9 * WIDTH * SHAPE[2] - up_kernel * WIDTH * SHAPE[2]
    assert g.count_params() - plain.count_params() == grown
    x = generate(g, [0, 1, 2], training=True)
    assert tuple(x.shape) == (3, *SHAPE) and float(tf.reduce_max(tf.abs(x))) <= 1.0


def test_two_convs_per_block_add_a_3x3_conv_and_relu_to_every_hidden_block():
    plain, g = (acgan.build_generator(acgan.ArchConfig(**BASE, g_block_convs=n)) for n in (1, 2))
    cfg = acgan.ArchConfig(**BASE)
    hidden = [(4 * 2 ** i, WIDTH * 2 ** (cfg.n_up - 1 - i)) for i in range(1, cfg.n_up)]  # (side, channels)
    for side, _ in hidden:
        assert len(relus_at(g, (side, side))) == 2 and len(relus_at(plain, (side, side))) == 1
    assert g.count_params() - plain.count_params() == sum(9 * c * c + 4 * c for _, c in hidden)
    assert tuple(generate(g, [0, 2]).shape) == (2, *SHAPE)
    with pytest.raises(ValueError, match="residual"):
        acgan.build_generator(acgan.ArchConfig(**BASE, g_block_convs=2, residual=True))


def _without_input_class(g):
    """Zero convt_0's weights from the one-hot channels: the class can then reach G only through its norms."""
    layer = g.get_layer("convt_0")
    kernel = layer.kernel.numpy()  # [kh, kw, out, in]; in = one-hot (num_classes) ++ noise
    kernel[..., :3] = 0.0
    layer.kernel.assign(kernel)
    return g


@pytest.mark.parametrize("residual", [False, True])
def test_conditional_norm_carries_the_class_to_the_last_hidden_block(residual):
    keras.utils.set_random_seed(0)
    last_hidden = f"relu_{acgan.ArchConfig(**BASE).n_up if residual else acgan.ArchConfig(**BASE).n_up - 1}"
    differences = {}
    for conditional in (False, True):
        g = _without_input_class(acgan.build_generator(acgan.ArchConfig(**BASE, residual=residual,
                                                                        g_conditional_norm=conditional)))
        probe = keras.Model(g.inputs, g.get_layer(last_hidden).output)
        noise = tf.repeat(tf.random.stateless_normal([1, NOISE], seed=[3, 4]), 2, axis=0)  # one z, two classes
        a, b = probe([noise, tf.constant([0, 1], tf.int32)], training=False).numpy()
        differences[conditional] = np.abs(a - b).max() / np.abs(a).max()  # relative: N(0, 0.02) activations are tiny
    assert differences[False] == 0.0  # the control: with the input path cut, plain BN has no class left
    assert differences[True] > 1e-3  # per-class gains start N(1, 0.02) apart: a few percent
    # The class tables learn: the output's gradient reaches the rows of the classes in the batch, and only those.
    cbn = [layer for layer in g.layers if isinstance(layer, ConditionalBatchNorm)][-1]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(generate(g, [0, 0, 1, 1], training=True)))
    gain, bias = (np.abs(t.numpy()).sum(axis=1) for t in tape.gradient(loss, [cbn.class_gain, cbn.class_bias]))
    assert gain[0] > 0 and gain[1] > 0 and gain[2] == 0 and bias[0] > 0 and bias[2] == 0


def test_conditional_norm_generator_saves_reloads_and_clones_for_ema(tmp_path):
    g = acgan.build_generator(acgan.ArchConfig(**BASE, g_conditional_norm=True, g_output_block="two_conv",
                                               g_output="linear_clip"))
    generate(g, [0, 1, 2, 0], training=True)  # move the moving statistics off their start
    g.save(tmp_path / "g.keras")
    loaded = keras.models.load_model(tmp_path / "g.keras", compile=False)
    copy = ema.clone_for_ema(g)
    expected = generate(g, [0, 1, 2]).numpy()
    np.testing.assert_allclose(generate(loaded, [0, 1, 2]).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(generate(copy, [0, 1, 2]).numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="generator_batch_norm"):
        acgan.build_generator(acgan.ArchConfig(**{**BASE, "batch_norm": False}, g_conditional_norm=True))
    with pytest.raises(ValueError, match="generator_batch_norm"):
        load_config(None, ["trainer.g_conditional_norm=true"]).trainer.validate()


def test_linear_clip_output_passes_the_gradient_of_an_overshoot_and_exports_in_range():
    """With the last conv scaled up, G overshoots: tanh saturates (gradient ~0 at those voxels), linear_clip keeps
    the overshoot while training (full gradient, D can see it) and clips it in inference."""
    outputs = {}
    for output in ("tanh", "linear_clip"):
        keras.utils.set_random_seed(0)
        g = acgan.build_generator(acgan.ArchConfig(**BASE, g_output=output))
        last = g.get_layer(f"convt_{acgan.ArchConfig(**BASE).n_up}")
        last.kernel.assign(last.kernel * 2000.0)
        noise = tf.random.stateless_normal([2, NOISE], seed=[5, 6])
        with tf.GradientTape() as tape:
            tape.watch(noise)
            train_images = g([noise, tf.constant([0, 1])], training=True)
            total = tf.reduce_sum(train_images)
        pre_tanh = keras.Model(g.inputs, g.get_layer("images").input)([noise, tf.constant([0, 1])], training=False)
        outputs[output] = (train_images.numpy(), tape.gradient(total, noise).numpy(),
                           g([noise, tf.constant([0, 1])], training=False).numpy(), pre_tanh.numpy())
    tanh_train, tanh_grad, _, _ = outputs["tanh"]
    linear_train, linear_grad, linear_infer, linear_pre = outputs["linear_clip"]
    assert np.mean(np.abs(tanh_train) > 0.97) > 0.3  # the scaled kernel did make most voxels overshoot
    assert np.abs(linear_train).max() > 1.5  # training sees the overshoot itself
    assert np.abs(linear_grad).sum() > 20 * np.abs(tanh_grad).sum()  # and its gradient is not squashed
    # Inference (samples, export): the same pre-activation, clipped into the data's range.
    assert np.abs(linear_pre).max() > 1.0 and np.abs(linear_infer).max() <= 1.0
    np.testing.assert_array_equal(linear_infer, np.clip(linear_pre, -1, 1))


def test_exporter_serves_a_conditional_norm_generator(tmp_path):
    """The exporter's path (SavedModel written, then reloaded and called in a fresh interpreter by the exporter's
    own check) takes the custom layers (conditional BatchNorm, noise inputs); the served images are the Keras
    generator's."""
    from support.model_artifacts import NOISE_DIM, make_model_artifact
    from vugan.components.exporter.component import SPEC
    from vugan.models.bundle import load_model_bundle

    options = dict(batch_norm=True, g_conditional_norm=True, g_output_block="two_conv", g_block_convs=2,
                   g_output="linear_clip", g_noise_inputs=True)
    model = make_model_artifact(tmp_path / "train", ema=False, arch_options=options)
    SPEC.run(load_config(None), {"model": model}, tmp_path / "export")
    served = tf.saved_model.load(str(tmp_path / "export" / "saved_model"))
    noise = np.random.default_rng(0).standard_normal((3, NOISE_DIM)).astype(np.float32)
    ids = np.array([0, 1, 2])
    got = served.signatures["serving_default"](class_ids=tf.constant(ids, tf.int64), noise=tf.constant(noise))
    want = load_model_bundle(tmp_path / "train", ema=False).generator([noise, ids.astype(np.int32)], training=False)
    np.testing.assert_allclose(got["images"].numpy(), np.asarray(want), atol=1e-5)


def test_real_fake_auc_counts_ordered_pairs_and_half_ties():
    assert real_fake_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert real_fake_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert real_fake_auc([1.0, 3.0], [2.0, 2.0]) == 0.5  # (0 + 0 + 1 + 1) / 4
    assert real_fake_auc([2.0], [2.0, 1.0]) == 0.75  # a tie counts one half


def test_holdout_probe_reads_the_holdout_split_and_changes_no_state(examples):
    """The probe scores the holdout split's units (not train's, not test's) and leaves every variable as it was:
    BatchNorm statistics and spectral-norm vectors included, so a run trains the same with it as without."""
    from support.trainer_runs import BATCH
    from vugan.components.trainer import core
    from vugan.components.trainer.data import inspect_examples
    from vugan.components import schema
    from vugan.components.trainer.holdout_auc import HoldoutAUCProbe

    cfg = load_config(None, TINY + ["trainer.generator_batch_norm=true", "trainer.spectral_norm=true"]).trainer
    info = inspect_examples(examples)
    gan = core.build_gan(cfg, info, global_batch=BATCH)
    probe = HoldoutAUCProbe.from_examples(info, 100, cfg.noise_dim, cfg.seed)
    assert len(probe.images) == 6 and sorted(probe.class_ids) == [0, 0, 1, 1, 2, 2]  # the fixture's 2 per class
    for split in ("train", "test"):  # none of the probe's units is a training or a test unit
        files = sorted(glob.glob(f"{schema.split_dir(str(examples), split)}/{schema.SHARD_GLOB}"))
        ds = tf.data.TFRecordDataset(files, compression_type="GZIP").map(schema.parse_fn(info.image_shape))
        others = np.stack([x.numpy() for x, _ in ds])
        assert not any(np.array_equal(unit, other) for unit in probe.images for other in others)
    before = [v.numpy().copy() for v in gan.generator.weights + gan.discriminator.weights]
    assert 0.0 <= probe(gan) <= 1.0
    after = [v.numpy() for v in gan.generator.weights + gan.discriminator.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_run_logs_d_auc_holdout_and_the_new_generator_reloads(examples, tmp_path):
    """A TINY 3-step run with every new option on: each stats row carries d_auc_holdout in [0, 1], and the bundle
    (EMA generator included) reloads with the conditional BatchNorm and the full-resolution block."""
    from vugan.components.trainer.callbacks import read_stats
    from vugan.components.trainer.component import SPEC
    from vugan.models.bundle import generate as bundle_generate
    from vugan.models.bundle import load_model_bundle

    cfg = load_config(None, TINY + ["trainer.steps=3", "trainer.log_every=1", "trainer.image_every=3",
                                    "trainer.checkpoint_every=3", "trainer.d_auc_holdout=6", "trainer.ema=true",
                                    "trainer.generator_batch_norm=true", "trainer.g_conditional_norm=true",
                                    "trainer.g_output_block='two_conv'", "trainer.g_block_convs=2",
                                    "trainer.diffaugment='translation,cutout'"])
    out = tmp_path / "model"
    SPEC.run(cfg, {"examples": examples}, out, log=lambda m: None)
    rows = read_stats(out / "stats.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(0.0 <= r["d_auc_holdout"] <= 1.0 for r in rows)
    arch = json.loads((out / "model_info.json").read_text())["arch"]
    assert arch["g_conditional_norm"] and arch["g_output_block"] == "two_conv" and arch["g_block_convs"] == 2
    bundle = load_model_bundle(out)
    assert any(isinstance(layer, ConditionalBatchNorm) for layer in bundle.generator.layers)
    images = bundle_generate(bundle, [0, 1, 2], seed=0)
    assert images.shape == (3, *bundle.image_shape) and np.abs(images).max() <= 1.0


def test_noise_inputs_start_silent_learn_a_strength_and_keep_one_image_per_noise_vector(tmp_path):
    """g_noise_inputs: at the start (strengths 0) G draws exactly what the same G without noise inputs draws; with a
    strength the image changes, the output's gradient reaches every strength, and an example's image depends on its
    own noise vector only (alone or in a batch, saved and reloaded), while two vectors get different maps."""
    from vugan.models.noise_injection import NoiseInjection

    keras.utils.set_random_seed(0)
    plain = acgan.build_generator(acgan.ArchConfig(**BASE))
    keras.utils.set_random_seed(0)
    g = acgan.build_generator(acgan.ArchConfig(**BASE, g_noise_inputs=True))
    layers = [layer for layer in g.layers if isinstance(layer, NoiseInjection)]
    assert len(layers) == acgan.ArchConfig(**BASE).n_up + 1  # every hidden block + the output (no full-res block)
    np.testing.assert_array_equal(generate(plain, [0, 1, 2]).numpy(), generate(g, [0, 1, 2]).numpy())
    for layer in layers:
        layer.strength.assign(np.full(layer.strength.shape, 0.5, np.float32))
    noise = tf.random.stateless_normal([3, NOISE], seed=[1, 2])
    classes = tf.constant([0, 1, 2], tf.int32)
    with tf.GradientTape() as tape:
        images = g([noise, classes], training=False)
        loss = tf.reduce_sum(images ** 2)
    grads = tape.gradient(loss, [layer.strength for layer in layers])
    assert all(float(tf.reduce_sum(tf.abs(gr))) > 0 for gr in grads)
    assert not np.allclose(images.numpy(), generate(plain, [0, 1, 2]).numpy())
    alone = g([noise[1:2], classes[1:2]], training=False).numpy()
    np.testing.assert_allclose(alone[0], images.numpy()[1], atol=1e-6)
    g.save(tmp_path / "g.keras")
    again = keras.models.load_model(tmp_path / "g.keras")([noise, classes], training=False).numpy()
    np.testing.assert_allclose(again, images.numpy(), atol=1e-6)
    probe = keras.Model(g.inputs, g.get_layer(layers[-1].name).output)
    same_class = probe([noise[:2], tf.constant([0, 0], tf.int32)], training=False).numpy()
    assert not np.allclose(same_class[0], same_class[1])
