"""DP-SGD gradients (components/trainer/dp/per_example.py): clipping, patient grouping, noise, vectorised
per-example gradients, replicas.

The hand-worked case is a linear logistic model with two weights w = (0.5, -1), where example i's gradient is
(sigmoid(w.x_i) - y_i) x_i:
  x1 = (2, 1), y1 = 1: w.x = 0,  sigmoid = 0.5         -> g1 = (-1, -0.5),          |g1| = sqrt(1.25) = 1.118034
  x2 = (4, 0), y2 = 0: w.x = 2,  sigmoid(2) = 0.880797 -> g2 = (3.523188, 0),       |g2| = 3.523188
  x3 = (0, 3), y3 = 0: w.x = -3, sigmoid(-3) = 0.047426 -> g3 = (0, 0.142278),      |g3| = 0.142278
  x4 = (2, 1), y4 = 0: w.x = 0,  sigmoid = 0.5         -> g4 = (1, 0.5),            |g4| = 1.118034
"""
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from vugan.components.trainer.dp import per_example as dp
from support.paths import ROOT

X = tf.constant([[2.0, 1.0], [4.0, 0.0], [0.0, 3.0], [2.0, 1.0]])
Y = tf.constant([1.0, 0.0, 0.0, 0.0])
G_BY_HAND = np.array([[-1.0, -0.5], [3.523188, 0.0], [0.0, 0.142278], [1.0, 0.5]])


def logistic():
    w = tf.Variable([0.5, -1.0])

    def loss(batch):
        x, y = batch
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=tf.linalg.matvec(x, w))
    return w, loss


def aggregate(grads, **kwargs):
    kwargs = {"clip_norm": 1.0, "noise_multiplier": 0.0, "normalizer": 4.0, **kwargs}
    return dp.dp_aggregate(grads, **kwargs)


@pytest.mark.parametrize("method", dp.PER_EXAMPLE_METHODS)
def test_per_example_gradients_of_logistic_model_match_hand_values(method):
    w, loss = logistic()
    unused = keras.Variable([1.0, 2.0, 3.0])  # e.g. a head the real loss does not touch: zero rows, no error
    g, g_unused = dp.per_example_gradients(loss, [w, unused], (X, Y), method=method)
    np.testing.assert_allclose(g.numpy(), G_BY_HAND, atol=1e-5)
    np.testing.assert_array_equal(g_unused.numpy(), np.zeros((4, 3)))


def test_per_example_clipping_by_hand_and_bounds_each_example():
    w, loss = logistic()
    grads = dp.per_example_gradients(loss, [w], (X, Y))
    out = aggregate(grads)
    # C = 1 scales g1, g2, g4 onto the unit sphere and leaves g3: g1 and g4 cancel, so the sum is (1, 0.142278).
    np.testing.assert_allclose(out.grads[0].numpy(), [1.0 / 4, 0.142278 / 4], atol=1e-6)
    np.testing.assert_allclose(out.unit_norms.numpy(), [1.118034, 3.523188, 0.142278, 1.118034], atol=1e-5)
    # Sensitivity: removing any one example moves the un-normalised sum by at most C, however large its gradient.
    big = [tf.concat([grads[0], [[1e6, -1e6]]], axis=0)]
    full = aggregate(big, normalizer=1.0).grads[0].numpy()
    for i in range(5):
        without = aggregate([tf.gather(big[0], [j for j in range(5) if j != i])], normalizer=1.0).grads[0].numpy()
        assert np.linalg.norm(full - without) <= 1.0 + 1e-6


def test_patient_clipping_by_hand_and_bounds_each_patient():
    w, loss = logistic()
    grads = dp.per_example_gradients(loss, [w], (X, Y))
    # Patients A = {1, 2}, B = {3, 4}: A's sum (2.523188, -0.5) has norm 2.572252 -> (0.980926, -0.194382);
    # B's sum (1, 0.642278) has norm 1.188495 -> (0.841400, 0.540413).
    out = aggregate(grads, group_index=tf.constant([0, 0, 1, 1]))
    np.testing.assert_allclose(out.grads[0].numpy(), [(0.980926 + 0.841400) / 4, (-0.194382 + 0.540413) / 4],
                               atol=1e-5)
    np.testing.assert_allclose(out.unit_norms.numpy(), [2.572252, 1.188495, 0.0, 0.0], atol=1e-5)
    # Patient A alone, however many examples and however large: its whole contribution has norm <= C.
    only_a = aggregate([tf.concat([grads[0][:2], [[1e3, 1e3], [-5.0, 7.0]]], 0)],
                       group_index=tf.constant([3, 3, 3, 3]), normalizer=1.0).grads[0].numpy()
    assert np.linalg.norm(only_a) == pytest.approx(1.0, abs=1e-6)


def test_masked_padding_rows_contribute_nothing():
    w, loss = logistic()
    (g,) = dp.per_example_gradients(loss, [w], (X, Y))
    padded = [tf.concat([g, [[50.0, 50.0], [-3.0, 0.0]]], 0)]
    mask = tf.constant([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(aggregate(padded, mask=mask).grads[0].numpy(), aggregate([g]).grads[0].numpy(),
                               atol=1e-7)
    grouped = aggregate(padded, mask=mask, group_index=tf.constant([0, 0, 1, 1, 0, 1]))
    np.testing.assert_allclose(grouped.grads[0].numpy(),
                               aggregate([g], group_index=tf.constant([0, 0, 1, 1])).grads[0].numpy(), atol=1e-7)


def tiny_acgan_discriminator(num_classes=3):
    """Two convs and two heads, the ac-GAN discriminator's shape in miniature."""
    x = inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh")(x)
    x = keras.layers.Conv2D(3, 3, padding="same", activation="tanh")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, [keras.layers.Dense(1)(x), keras.layers.Dense(num_classes)(x)])


def acgan_real_loss(model):
    def loss(batch):
        images, labels = batch
        realfake, cls = model(images)
        return (tf.nn.sigmoid_cross_entropy_with_logits(tf.ones_like(realfake), realfake)[:, 0]
                + tf.nn.sparse_softmax_cross_entropy_with_logits(labels, cls))
    return loss


@pytest.fixture(scope="module")
def conv_case():
    keras.utils.set_random_seed(0)
    model = tiny_acgan_discriminator()
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(6, 8, 8, 2)), tf.float32)
    labels = tf.constant([0, 2, 1, 1, 0, 2])
    return model, acgan_real_loss(model), (images, labels)


@pytest.mark.parametrize("method", dp.PER_EXAMPLE_METHODS)
def test_vectorised_per_example_gradients_match_python_loop_on_conv_model(conv_case, method):
    model, loss, (images, labels) = conv_case
    variables = model.trainable_variables
    reference = []
    for i in range(6):  # the slow, obviously right way: one tape per example
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(loss((images[i:i + 1], labels[i:i + 1])))
        reference.append(tape.gradient(value, variables))
    compiled = tf.function(lambda batch: dp.per_example_gradients(loss, variables, batch, method=method))
    for got in (dp.per_example_gradients(loss, variables, (images, labels), method=method),
                compiled((images, labels))):
        assert len(got) == len(variables) == 8  # 2 convs + 2 heads, kernel and bias each
        for v, g in enumerate(got):
            np.testing.assert_allclose(g.numpy(), np.stack([r[v].numpy() for r in reference]), atol=1e-5)


@pytest.mark.parametrize("group_index", [None, [0, 0, 1, 2, 2, 2]])
def test_zero_noise_and_huge_clip_give_the_ordinary_mean_gradient(conv_case, group_index):
    model, loss, batch = conv_case
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        mean_loss = tf.reduce_mean(loss(batch))
    expected = tape.gradient(mean_loss, variables)
    step = tf.function(lambda b: dp.dp_gradients(
        loss, variables, b, clip_norm=1e9, noise_multiplier=0.0, normalizer=6,
        group_index=None if group_index is None else tf.constant(group_index)))
    got = step(batch).grads
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e.numpy(), atol=1e-6)


def test_noise_std_is_sigma_times_clip_over_normalizer():
    # One variable of 40,000 coordinates: one call gives 40,000 independent noise draws. Expected std
    # sigma * C / normalizer = 2 * 0.5 / 4 = 0.25; the sample std has relative standard error 1 / sqrt(2n) = 0.35%,
    # so a 2% tolerance is ~6 standard errors; the mean's standard error is 0.25 / 200 = 0.00125 (tolerance 0.0075).
    n = 40_000
    grads = [tf.ones([4, n]) * 1e-3]
    noiseless = aggregate(grads, clip_norm=0.5).grads[0].numpy()
    noisy = aggregate(grads, clip_norm=0.5, noise_multiplier=2.0, seed=tf.constant([1, 2])).grads[0].numpy()
    noise = noisy - noiseless
    assert noise.std() == pytest.approx(0.25, rel=0.02)
    assert abs(noise.mean()) < 0.0075
    same = aggregate(grads, clip_norm=0.5, noise_multiplier=2.0, seed=tf.constant([1, 2])).grads[0].numpy()
    other = aggregate(grads, clip_norm=0.5, noise_multiplier=2.0, seed=tf.constant([1, 3])).grads[0].numpy()
    np.testing.assert_array_equal(same, noisy)  # stateless seed: reproducible
    assert np.corrcoef(noisy - noiseless, other - noiseless)[0, 1] < 0.05  # a new seed gives fresh noise
    stateful = aggregate(grads, clip_norm=0.5, noise_multiplier=2.0).grads[0].numpy() - noiseless
    assert stateful.std() == pytest.approx(0.25, rel=0.02)
    off = aggregate(grads, clip_norm=0.5, noise_multiplier=2.0, add_noise=False).grads[0].numpy()
    np.testing.assert_array_equal(off, noiseless)


def test_unknown_method_is_rejected():
    w, loss = logistic()
    with pytest.raises(ValueError, match="method"):
        dp.per_example_gradients(loss, [w], (X, Y), method="loop")


MIRRORED_SCRIPT = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from vugan.components.trainer.dp import per_example as dp
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(8, 3)), tf.float32)
    y = tf.constant((rng.random(8) < 0.5).astype("float32"))
    with strategy.scope():
        w = tf.Variable([0.3, -0.2, 0.5])
    def loss(batch):
        xb, yb = batch
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=yb, logits=tf.linalg.matvec(xb, w))
    kw = dict(clip_norm=0.7, normalizer=8.0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    @tf.function
    def step(b, sigma):
        return strategy.run(lambda bb: dp.dp_gradients(loss, [w], bb, noise_multiplier=sigma, **kw).grads[0],
                            args=(b,))
    single = dp.dp_gradients(loss, [w], (x, y), noise_multiplier=0.0, **kw).grads[0].numpy()
    clean = step(batch, tf.constant(0.0))  # tensors: one trace for both
    summed = strategy.reduce(tf.distribute.ReduceOp.SUM, clean, axis=None).numpy()
    np.testing.assert_allclose(summed, single, atol=1e-6)  # replicas' shares add up to the one-device gradient
    noisy = step(batch, tf.constant(5.0))
    r0, r1 = [t.numpy() for t in strategy.experimental_local_results(noisy)]
    c0, c1 = [t.numpy() for t in strategy.experimental_local_results(clean)]
    np.testing.assert_allclose(r1, c1, atol=1e-7)  # replica 1 adds no noise ...
    assert np.abs(r0 - c0).max() > 1e-2            # ... replica 0 adds it, once
    print("OK")
""")


def test_mirrored_strategy_sums_clipped_shares_and_adds_noise_once():
    # A fresh process: logical CPU devices must be configured before TensorFlow initialises its runtime.
    done = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                                            "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]
