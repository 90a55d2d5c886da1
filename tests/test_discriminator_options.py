"""Issue 22's discriminator, loss, EMA and data options: each changes what it claims, and nothing else.

d_width / d_feature_width (a wider critic and feature layer), d_class_loss_on_fakes = false (D's class head learns
real anatomy only), lazy R1 (r1_every), ema_kimg (the EMA horizon in images) and mirror_slices (reversed slice
order as free augmentation)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from support.trainer_runs import BATCH, TINY
from vugan.components.trainer.data import inspect_examples, make_dataset
from vugan.models import acgan, ema
from vugan.pipeline.config import load_config

SHAPE, WIDTH = (32, 32, 3), 4
BASE = dict(image_shape=SHAPE, num_classes=3, noise_dim=8, width=WIDTH)


def conv_widths(d):
    return [layer.filters for layer in d.layers if isinstance(layer, keras.layers.Conv2D)]


def test_d_width_and_feature_width_widen_only_the_discriminator():
    plain = acgan.ArchConfig(**BASE)
    wide = acgan.ArchConfig(**BASE, d_width=6, d_feature_width=40)
    assert conv_widths(acgan.build_discriminator(plain)) == [4, 8, 16, 4]  # s-2s-4s-8s... squeezed back to s
    d = acgan.build_discriminator(wide)
    assert conv_widths(d) == [6, 12, 24, 40]
    assert d.get_layer("realfake_logits").kernel.shape == (40, 1)
    assert d.get_layer("class_logits").kernel.shape == (40, 3)
    # The generator does not change.
    assert acgan.build_generator(wide).count_params() == acgan.build_generator(plain).count_params()
    with pytest.raises(ValueError, match="d_width"):
        acgan.build_discriminator(acgan.ArchConfig(**BASE, d_width=-1))


def _gan(examples, extra):
    from vugan.components.trainer import core

    cfg = load_config(None, TINY + extra).trainer
    return core.build_gan(cfg, inspect_examples(examples), global_batch=BATCH), cfg


def test_without_the_fake_class_term_d_class_loss_ignores_the_fakes_class_logits(examples):
    """Hand-worked: with real class logits that are uniform over 3 classes, the class loss is log 3 from the real
    half; the ac-GAN adds the fake half's cross-entropy, the real-only variant does not, whatever the fakes say."""
    from vugan.components.trainer.gan_model import DiscriminatorOutputs

    labels = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])
    zeros, confident = tf.zeros([BATCH, 3]), tf.one_hot((labels + 1) % 3, 3) * 5.0  # fakes: a wrong class, 5 logits
    out = DiscriminatorOutputs(tf.zeros([BATCH, 1]), tf.zeros([BATCH, 1]), zeros, confident)
    wrong = -np.log(np.exp(0.0) / (np.exp(5.0) + 2))  # cross-entropy of a 5-logit wrong answer: 5 + log(1 + 2e^-5)
    with_fakes, _ = _gan(examples, [])
    real_only, _ = _gan(examples, ["trainer.d_class_loss_on_fakes=false"])
    _, cls_both = with_fakes.d_losses(out, labels, labels)
    _, cls_real = real_only.d_losses(out, labels, labels)
    assert float(cls_real) == pytest.approx(np.log(3), rel=1e-6)
    assert float(cls_both) == pytest.approx(np.log(3) + wrong, rel=1e-6)
    with pytest.raises(ValueError, match="d_class_loss_on_fakes"):
        load_config(None, ["trainer.d_class_loss_on_fakes=false", "trainer.dp=true"]).trainer.validate()


def test_ema_kimg_sets_the_half_life_in_images_whatever_the_batch():
    d32, d64 = ema.decay_for(0.99, 10.0, 32), ema.decay_for(0.99, 10.0, 64)
    assert d32 == pytest.approx(0.5 ** (32 / 10000))
    assert d32 ** (10000 / 32) == pytest.approx(0.5)  # after 10k images the old weights count half
    assert d32 ** 2 == pytest.approx(d64)  # two steps of 32 = one of 64
    assert ema.decay_for(0.99, 0.0, 32) == 0.99  # off: ema_decay as configured


def test_mirror_slices_reverses_the_slice_order_of_about_half_the_units_and_nothing_else(examples):
    info = inspect_examples(examples)
    kw = dict(global_batch=info.num_train, noise_dim=4, seed=3, class_balanced=False, shuffle_buffer=1)
    plain = next(iter(make_dataset(info, **kw)))
    mirrored = next(iter(make_dataset(info, **kw, mirror_slices=True)))
    a, b = plain["images"].numpy(), mirrored["images"].numpy()
    same = [np.array_equal(x, y) for x, y in zip(a, b)]
    reversed_ = [np.array_equal(x[..., ::-1], y) for x, y in zip(a, b)]
    assert all(s or r for s, r in zip(same, reversed_))  # every unit is itself or its mirror
    n_mirrored = sum(r and not s for s, r in zip(same, reversed_))
    assert 0.25 * len(a) <= n_mirrored <= 0.75 * len(a)  # 24 units, p = 0.5
    np.testing.assert_array_equal(plain["labels"], mirrored["labels"])
    np.testing.assert_array_equal(plain["z_d"], mirrored["z_d"])  # the noise keys do not move
    again = next(iter(make_dataset(info, **kw, mirror_slices=True)))["images"].numpy()
    np.testing.assert_array_equal(b, again)  # a stateless draw per example: resumes see the same mirrors
    with pytest.raises(ValueError, match="mirror_slices"):
        load_config(None, ["trainer.mirror_slices=true", "trainer.dp=true"]).trainer.validate()


def test_lazy_r1_penalises_every_kth_step_at_k_times_gamma(examples, tmp_path):
    """A real 5-step run with r1_every = 2: the graphs of steps 2 and 4 have no R1 term (their scalars lack it),
    those of steps 1, 3 and 5 have it, weighted 2 x r1_gamma."""
    from vugan.components.trainer.callbacks import read_stats
    from vugan.components.trainer.component import SPEC

    cfg = load_config(None, TINY + ["trainer.steps=5", "trainer.log_every=1", "trainer.image_every=5",
                                    "trainer.checkpoint_every=5", "trainer.r1_gamma=0.5", "trainer.r1_every=2"])
    SPEC.run(cfg, {"examples": examples}, tmp_path / "model", log=lambda m: None)
    rows = read_stats(tmp_path / "model" / "stats.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [("r1_penalty" in r) for r in rows] == [True, False, True, False, True]
    assert all(r["r1_penalty"] > 0 for r in rows if "r1_penalty" in r)
    # The weight the penalty gets: gamma x r1_every.
    gan, _ = _gan(examples, ["trainer.r1_gamma=0.5", "trainer.r1_every=2"])
    assert gan.r1_gamma == 1.0


def test_ada_adjust_moves_p_by_one_step_towards_the_target_and_stays_in_0_1():
    from vugan.models.augment import ada_adjust

    assert float(ada_adjust(0.5, 0.8, 0.6, 0.01)) == pytest.approx(0.51)  # D overconfident on real: more augment
    assert float(ada_adjust(0.5, 0.2, 0.6, 0.01)) == pytest.approx(0.49)
    assert float(ada_adjust(0.995, 1.0, 0.6, 0.01)) == 1.0 and float(ada_adjust(0.004, -1.0, 0.6, 0.01)) == 0.0


def test_augment_probability_gates_each_transform_per_example():
    from vugan.models.augment import DRAWS, GATES, diff_augment

    x = tf.random.stateless_uniform([2, 16, 16, 3], seed=[5, 6], minval=-1, maxval=1)
    draws = tf.random.stateless_uniform([2, DRAWS], seed=[7, 8])
    gates = tf.constant([[0.2] * GATES, [0.7] * GATES])  # example 0 below p = 0.5, example 1 above
    u = tf.concat([draws, gates], axis=-1)
    policy = ("translation", "cutout")
    always = diff_augment(x, policy, draws).numpy()
    np.testing.assert_array_equal(diff_augment(x, policy, u, p=1.0).numpy(), always)
    np.testing.assert_array_equal(diff_augment(x, policy, u, p=0.0).numpy(), x.numpy())
    half = diff_augment(x, policy, u, p=0.5).numpy()
    np.testing.assert_array_equal(half[0], always[0])
    np.testing.assert_array_equal(half[1], x.numpy()[1])


def test_ada_run_logs_p_moving_one_step_per_step_and_checkpoints_it(examples, tmp_path):
    """A real 4-step run with ADA from p = 0.5: p moves by exactly batch / (1000 ada_kimg) each step, in the
    direction of the logged heuristic, and the checkpoint holds it."""
    from vugan.components.trainer.callbacks import read_stats
    from vugan.components.trainer.component import SPEC

    cfg = load_config(None, TINY + ["trainer.steps=4", "trainer.log_every=1", "trainer.image_every=4",
                                    "trainer.checkpoint_every=4", "trainer.diffaugment='translation,cutout'",
                                    "trainer.augment_p=0.5", "trainer.ada_target=0.6", "trainer.ada_kimg=0.8"])
    SPEC.run(cfg, {"examples": examples}, tmp_path / "model", log=lambda m: None)
    rows = read_stats(tmp_path / "model" / "stats.jsonl")
    step, p = BATCH / 800, 0.5
    for r in rows:
        p = min(1.0, max(0.0, p + np.sign(r["d_real_sign"] - 0.6) * step))
        assert r["augment_p"] == pytest.approx(p, abs=1e-6)
    assert len({r["augment_p"] for r in rows}) > 1
    reader = tf.train.load_checkpoint(str(tmp_path / "model" / "checkpoints"))
    saved = [k for k in reader.get_variable_to_shape_map() if k.startswith("augment_p")]
    assert saved and reader.get_tensor(saved[0]) == pytest.approx(rows[-1]["augment_p"], abs=1e-6)
    with pytest.raises(ValueError, match="diffaugment"):
        load_config(None, ["trainer.augment_p=0.5"]).trainer.validate()
