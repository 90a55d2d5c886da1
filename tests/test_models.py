"""Network shapes and parameter counts against the reference architecture; SN, EMA and DiffAugment."""
import numpy as np
import pytest
import tensorflow as tf

from vugan.components.trainer.spec import AUGMENTATIONS
from vugan.models import acgan, augment, ema

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def out_shape(model, name):
    return tuple(model.get_layer(name).output.shape[1:])


def test_reference_size_shapes_and_parameter_counts():
    cfg = acgan.ArchConfig(image_shape=(64, 64, 9), num_classes=3, noise_dim=100, width=128)
    g, d = acgan.build_generator(cfg), acgan.build_discriminator(cfg)
    s, k = 128, 9
    # Generator: one-hot (3) ++ noise (100) = 103 channels at 1x1; 4x4 kernels, no bias.
    widths = [103, 8 * s, 4 * s, 2 * s, s, k]
    assert [out_shape(g, f"convt_{i}") for i in range(5)] == [
        (4, 4, 8 * s), (8, 8, 4 * s), (16, 16, 2 * s), (32, 32, s), (64, 64, k)]
    g_expected = sum(a * b * 16 for a, b in zip(widths[:-1], widths[1:]))
    assert g_expected == 103 * 1024 * 16 + 1024 * 512 * 16 + 512 * 256 * 16 + 256 * 128 * 16 + 128 * 9 * 16
    assert g.count_params() == g_expected == 12_716_032  # "about 12.7 M" in the reference study
    # Discriminator: 4 stride-2 convs K -> s -> 2s -> 4s -> 8s, a 4x4 conv 8s -> s, heads s -> 1 and s -> 3.
    assert [out_shape(d, f"conv_{i}") for i in range(5)] == [
        (32, 32, s), (16, 16, 2 * s), (8, 8, 4 * s), (4, 4, 8 * s), (1, 1, s)]
    d_expected = (9 * s + s * 2 * s + 2 * s * 4 * s + 4 * s * 8 * s + 8 * s * s) * 16 + (s + 1) + (s * 3 + 3)
    assert d.count_params() == d_expected == 13_126_148  # "13.1 M"
    images = g([tf.random.normal([2, 100]), tf.constant([0, 2], tf.int32)])
    assert images.shape == (2, 64, 64, 9) and float(tf.reduce_max(tf.abs(images))) <= 1.0
    rf, cls = d(images)
    assert rf.shape == (2, 1) and cls.shape == (2, 3)
    # N(0, 0.02) initialisation.
    assert np.std(g.get_layer("convt_1").kernel.numpy()) == pytest.approx(0.02, rel=0.05)


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
@pytest.mark.parametrize("shape", [(32, 32, 3), (128, 128, 2), (64, 128, 3), (16, 16, 3)])
def test_other_sizes(shape, upsample):
    cfg = acgan.ArchConfig(image_shape=shape, num_classes=4, noise_dim=8, width=4, g_upsample=upsample)
    g, d = acgan.build_generator(cfg), acgan.build_discriminator(cfg)
    x = g([tf.zeros([3, 8]), tf.constant([0, 1, 3], tf.int32)])
    assert tuple(x.shape) == (3, *shape)
    rf, cls = d(x)
    assert rf.shape == (3, 1) and cls.shape == (3, 4)


def test_unsupported_size_is_an_error():
    with pytest.raises(ValueError, match="power of two"):
        acgan.build_generator(acgan.ArchConfig(image_shape=(48, 48, 1), num_classes=2))


def test_spectral_norm_conv_has_unit_spectral_norm_and_saves_its_state(tmp_path):
    import keras
    keras.utils.set_random_seed(0)  # a fixed kernel: the convergence rate depends on its singular-value gap
    cfg = acgan.ArchConfig(image_shape=(16, 16, 3), num_classes=3, noise_dim=8, width=4, spectral_norm=True)
    d = acgan.build_discriminator(cfg)
    x = tf.random.normal([2, 16, 16, 3])
    for _ in range(200):  # power iteration converges on repeated training calls
        d(x, training=True)
    layer = d.get_layer("conv_1")
    w = layer.normalized_kernel().numpy().reshape(-1, layer.filters)
    assert np.linalg.svd(w, compute_uv=False)[0] == pytest.approx(1.0, rel=1e-3)
    d.save(tmp_path / "d.keras")
    loaded = keras.models.load_model(tmp_path / "d.keras")
    np.testing.assert_allclose(loaded.get_layer("conv_1").vector_u.numpy(), layer.vector_u.numpy())
    np.testing.assert_allclose(loaded(x)[1].numpy(), d(x)[1].numpy(), rtol=1e-5, atol=1e-6)


def test_ema_update_arithmetic():
    cfg = acgan.ArchConfig(image_shape=(16, 16, 1), num_classes=2, noise_dim=4, width=2)
    g = acgan.build_generator(cfg)
    g_ema = ema.clone_for_ema(g)
    for v in g_ema.weights:
        v.assign(np.ones(v.shape, np.float32))
    for v in g.weights:
        v.assign(3 * np.ones(v.shape, np.float32))
    ema.ema_update(g_ema, g, 0.9)
    for v in g_ema.weights:
        np.testing.assert_allclose(v.numpy(), 0.9 * 1 + 0.1 * 3)  # 1.2
    assert float(ema.effective_decay(0.999, 0)) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert float(ema.effective_decay(0.999, 90)) == pytest.approx(0.91)
    assert float(ema.effective_decay(0.999, 10**6)) == pytest.approx(0.999)


def test_ema_copies_batchnorm_statistics():
    cfg = acgan.ArchConfig(image_shape=(16, 16, 1), num_classes=2, noise_dim=4, width=2, batch_norm=True)
    g = acgan.build_generator(cfg)
    g_ema = ema.clone_for_ema(g)
    mean = g.get_layer("bn_0").moving_mean
    mean.assign(np.full(mean.shape, 5.0, np.float32))
    ema.ema_update(g_ema, g, 0.5)
    np.testing.assert_allclose(g_ema.get_layer("bn_0").moving_mean.numpy(), 5.0)


@pytest.mark.parametrize("policy", [("translation",), ("cutout",), ("intensity",), ("brightness",), ("contrast",),
                                    AUGMENTATIONS])
def test_diffaugment_keeps_shape_and_is_differentiable(policy):
    x = tf.Variable(tf.random.uniform([4, 16, 8, 3], -1, 1))
    with tf.GradientTape() as tape:
        y = augment.diff_augment(x, policy)
        loss = tf.reduce_sum(y * tf.random.normal(y.shape))
    grad = tape.gradient(loss, x)
    assert y.shape == x.shape
    assert grad is not None and np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).sum() > 0
    assert not np.allclose(y.numpy(), x.numpy())


def test_cutout_zeroes_a_quarter_and_translation_moves_content():
    x = tf.ones([8, 16, 16, 1])
    cut = augment.cutout(x).numpy()
    assert (cut == 0).mean() == pytest.approx(0.25, abs=0.1)  # half of each side, clipped at borders
    img = np.zeros([1, 16, 16, 1], np.float32)
    img[0, 8, 8, 0] = 1.0
    moved = augment.translation(tf.constant(np.repeat(img, 16, 0))).numpy()
    assert np.allclose(moved.sum(axis=(1, 2, 3)), 1.0)  # the single pixel stays inside (shift <= 2 at 16 px)
    assert len({tuple(np.argwhere(m[..., 0])[0]) for m in moved}) > 1


def test_augment_names_match_the_config_choices():
    assert augment.POLICIES == AUGMENTATIONS
    with pytest.raises(ValueError, match="unknown"):
        augment.parse_policy("translation,flip")


def test_discriminate_pair_concatenates_only_without_batchnorm():
    """One call on real ++ fake equals two separate calls (without BN); with a projection term each half's logit
    is conditional on its own classes (real labels, fake labels) in both paths."""
    from vugan.components.trainer.gan_model import ACGAN

    real, fake = tf.random.normal([3, 16, 16, 1]), tf.random.normal([3, 16, 16, 1])
    labels, fake_labels = tf.constant([0, 1, 1]), tf.constant([1, 0, 0])
    for bn, projection in ((False, False), (True, False), (False, True), (True, True)):
        cfg = acgan.ArchConfig(image_shape=(16, 16, 1), num_classes=2, noise_dim=4, width=2, batch_norm=bn,
                               d_batch_norm=bn, projection=projection)
        d = acgan.build_discriminator(cfg)
        gan = ACGAN(acgan.build_generator(cfg), d, num_classes=2, global_batch_size=3)
        out, _ = gan.discriminate_pair(real, fake, labels, fake_labels, training=True)
        separate = (acgan.conditional_logits(d(real, training=True), labels)[0],
                    acgan.conditional_logits(d(fake, training=True), fake_labels)[0])
        np.testing.assert_allclose(out.real_logits.numpy(), separate[0].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.fake_logits.numpy(), separate[1].numpy(), rtol=1e-4, atol=1e-5)
        if projection:  # the class really enters: the other labels give other logits
            swapped = acgan.conditional_logits(d(real, training=True), fake_labels)[0]
            assert not np.allclose(swapped.numpy(), separate[0].numpy())


def test_reference_config_builds_the_studys_networks_exactly():
    """configs/reference.toml through the trainer's own arch mapping: the study's parameter counts and layout."""
    from vugan.components.trainer.core import arch_config
    from vugan.components.trainer.data import ExamplesInfo
    from vugan.pipeline.config import load_config

    cfg = load_config(ROOT / "configs" / "reference.toml", []).trainer
    info = ExamplesInfo(root=None, image_shape=(64, 64, 9), class_names=("cervical", "thoracic", "lumbar"),
                        conditioning="region", train_files=(), class_counts=(2, 5, 2), skipped=())
    arch = arch_config(cfg, info)
    g, d = acgan.build_generator(arch), acgan.build_discriminator(arch)
    assert g.count_params() == 12_716_032
    assert d.count_params() == 13_127_940
    s = 128
    # The difference from the default layout is exactly the biases of D's blocks 2-4 (2s + 4s + 8s).
    assert d.count_params() - 13_126_148 == 2 * s + 4 * s + 8 * s
    assert [d.get_layer(f"conv_{i}").use_bias for i in range(5)] == [False, True, True, True, False]
    assert not any(layer.name == "lrelu_4" for layer in d.layers)  # no activation after the last conv
    head = d.get_layer("class_logits").kernel.numpy()
    assert np.abs(head).max() <= 1 / np.sqrt(s) and np.std(head) == pytest.approx(1 / np.sqrt(3 * s), rel=0.1)
    assert (cfg.class_weighted_loss, cfg.class_loss, cfg.class_loss_normalization, cfg.fake_labels) == (
        True, "nll_softmax", "weight_sum", "prior")
    assert (cfg.lr_g, cfg.lr_d, cfg.beta1, cfg.beta2, cfg.batch_size, cfg.noise_dim) == (1e-4, 1e-4, 0.5, 0.999, 32, 100)


def test_projection_term_is_realfake_plus_the_class_embedding_dot_features():
    """conditional_logits by hand: realfake + <embed(y), features>, with embed(y) row y of the projection kernel."""
    import keras
    base = acgan.ArchConfig(image_shape=(16, 16, 3), num_classes=3, noise_dim=8, width=4)
    proj = acgan.ArchConfig(image_shape=(16, 16, 3), num_classes=3, noise_dim=8, width=4, projection=True)
    d, d0 = acgan.build_discriminator(proj), acgan.build_discriminator(base)
    assert d.count_params() == d0.count_params() + 3 * 4  # one embedding row of width s per class, no bias
    x = tf.random.normal([5, 16, 16, 3])
    y = np.array([0, 1, 2, 2, 1], np.int32)
    out = d(x)
    assert len(out) == 3 and tuple(out[2].shape) == (5, 3) and len(d0(x)) == 2
    features = keras.Model(d.inputs, d.get_layer("features").output)(x).numpy()
    embed = d.get_layer("projection_scores").kernel.numpy()  # [s, C]
    rf, cls = acgan.conditional_logits(out, y)
    expected = out[0].numpy()[:, 0] + np.einsum("ns,sn->n", features, embed[:, y])
    np.testing.assert_allclose(np.asarray(rf)[:, 0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(cls), out[1].numpy())
    other = acgan.conditional_logits(out, (y + 1) % 3)[0]
    assert not np.allclose(np.asarray(other), np.asarray(rf))  # the class changes the logit
    # Without a projection term the logit is D's realfake output as it is.
    out0 = d0(x)
    np.testing.assert_array_equal(np.asarray(acgan.conditional_logits(out0, y)[0]), out0[0].numpy())


@pytest.mark.parametrize("shape", [(32, 32, 3), (32, 64, 1)])
def test_residual_networks_keep_the_shapes_and_add_skip_paths(shape):
    cfg = acgan.ArchConfig(image_shape=shape, num_classes=3, noise_dim=8, width=4, residual=True,
                           spectral_norm=True, batch_norm=True, g_upsample="resize", projection=True)
    g, d = acgan.build_generator(cfg), acgan.build_discriminator(cfg)
    x = g([tf.random.normal([2, 8]), tf.constant([0, 2])], training=True)
    assert tuple(x.shape) == (2, *shape)
    rf, cls, scores = d(x, training=True)
    assert tuple(rf.shape) == (2, 1) and tuple(cls.shape) == (2, 3) and tuple(scores.shape) == (2, 3)
    # n_up - 1 upsampling blocks in G, n_up downsampling blocks in D, each with a 1x1 shortcut.
    n_up = cfg.n_up
    assert sum(layer.name.startswith("res_add_") for layer in g.layers) == n_up - 1
    assert sum(layer.name.startswith("res_add_") for layer in d.layers) == n_up
    assert isinstance(d.get_layer("res_skip_0"), acgan.SpectralNormConv2D)
    assert tuple(d.get_layer(f"res_add_{n_up - 1}").output.shape[1:3]) == cfg.base_grid
