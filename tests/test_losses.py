"""Each ac-GAN loss against values worked out by hand on 4-example batches (sigmoid(ln 3) = 3/4, etc.)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from vugan.models import losses
from vugan.models.tfgan_compat import tfgan

LN = math.log
REAL = [0.0, LN(3), -LN(3), LN(7)]  # sigmoid: 1/2, 3/4, 1/4, 7/8
FAKE = [0.0, LN(3), -LN(3), -LN(7)]  # 1 - sigmoid: 1/2, 1/4, 3/4, 7/8
# Softmax rows: [1/3,1/3,1/3], [1/2,1/4,1/4], [1/5,3/5,1/5], [1/4,1/4,1/2]
CLS = [[0.0, 0.0, 0.0], [LN(2), 0.0, 0.0], [0.0, LN(3), 0.0], [0.0, 0.0, LN(2)]]
LABELS = [0, 0, 1, 2]  # -> cross-entropies ln 3, ln 2, ln(5/3), ln 2


def col(values):
    return tf.constant(values, tf.float32)[:, None]


def test_modified_discriminator_loss_by_hand():
    got = losses.modified_discriminator_loss(col(REAL), col(FAKE), global_batch_size=4)
    real_terms = [LN(2), LN(4 / 3), LN(4), LN(8 / 7)]
    fake_terms = [LN(2), LN(4), LN(4 / 3), LN(8 / 7)]
    assert float(got) == pytest.approx((sum(real_terms) + sum(fake_terms)) / 4, rel=1e-6)


def test_one_sided_label_smoothing_targets_one_minus_value_on_real_only():
    got = losses.modified_discriminator_loss(col(REAL), col(FAKE), global_batch_size=4, real_label_smoothing=0.1)
    p = [0.5, 0.75, 0.25, 7 / 8]
    real_terms = [-(0.9 * LN(q) + 0.1 * LN(1 - q)) for q in p]  # target 0.9
    fake_terms = [LN(2), LN(4), LN(4 / 3), LN(8 / 7)]  # fake target stays 0
    assert float(got) == pytest.approx((sum(real_terms) + sum(fake_terms)) / 4, rel=1e-6)


def test_modified_generator_loss_by_hand():
    got = losses.modified_generator_loss(col(REAL), global_batch_size=4)
    assert float(got) == pytest.approx((LN(2) + LN(4 / 3) + LN(4) + LN(8 / 7)) / 4, rel=1e-6)


def test_acgan_generator_loss_is_cross_entropy_on_logits():
    got = losses.acgan_generator_loss(tf.constant(CLS), tf.constant(LABELS), num_classes=3, global_batch_size=4)
    assert float(got) == pytest.approx((LN(3) + LN(2) + LN(5 / 3) + LN(2)) / 4, rel=1e-6)
    # Not the reference's NLLLoss-on-probabilities quirk, which would give -mean(p_c) = -(1/3+1/2+3/5+1/2)/4.
    assert float(got) > 0


def test_acgan_generator_loss_class_weights():
    got = losses.acgan_generator_loss(tf.constant(CLS), tf.constant(LABELS), num_classes=3, global_batch_size=4,
                                      class_weights=[1.0, 2.0, 0.5])
    assert float(got) == pytest.approx((LN(3) + LN(2) + 2 * LN(5 / 3) + 0.5 * LN(2)) / 4, rel=1e-6)


def test_acgan_discriminator_loss_sums_real_and_generated_terms():
    fake_cls = tf.zeros([4, 3])  # uniform: ln 3 each
    got = losses.acgan_discriminator_loss(tf.constant(CLS), fake_cls, tf.constant(LABELS), num_classes=3,
                                          global_batch_size=4)
    assert float(got) == pytest.approx((LN(3) + LN(2) + LN(5 / 3) + LN(2) + 4 * LN(3)) / 4, rel=1e-6)


def test_losses_average_over_the_global_batch():
    """Two replicas' halves, each divided by the global batch of 4, add up to the whole batch's loss."""
    whole = losses.modified_discriminator_loss(col(REAL), col(FAKE), global_batch_size=4)
    halves = [losses.modified_discriminator_loss(col(REAL[i:i + 2]), col(FAKE[i:i + 2]), global_batch_size=4)
              for i in (0, 2)]
    assert float(halves[0] + halves[1]) == pytest.approx(float(whole), rel=1e-6)
    whole = losses.acgan_generator_loss(tf.constant(CLS), tf.constant(LABELS), num_classes=3, global_batch_size=4)
    halves = [losses.acgan_generator_loss(tf.constant(CLS[i:i + 2]), tf.constant(LABELS[i:i + 2]), num_classes=3,
                                          global_batch_size=4) for i in (0, 2)]
    assert float(halves[0] + halves[1]) == pytest.approx(float(whole), rel=1e-6)


def test_inverse_frequency_weights():
    w = losses.inverse_frequency_weights([1, 2, 1])  # N = 4, C = 3: N / (C n_c)
    np.testing.assert_allclose(w, [4 / 3, 2 / 3, 4 / 3])
    prior = np.array([1, 2, 1]) / 4
    assert float(prior @ np.array(w)) == pytest.approx(1.0)


def test_tfgan_estimator_stand_ins_refuse_use():
    assert hasattr(tfgan.losses.wargs, "acgan_generator_loss")
    with pytest.raises(RuntimeError, match="stand-in"):
        tf.estimator.Estimator()


def test_class_loss_nll_on_softmax_with_weight_sum_normalisation_by_hand():
    """The study's NLLLoss(weight=w) on softmax probabilities: -sum_i w_i p_(i, y_i) / sum_i w_i."""
    w = [1.0, 2.0, 0.5]
    got = losses.class_loss(tf.constant(CLS), tf.constant(LABELS), global_batch_size=4, class_weights=w,
                            kind="nll_softmax", normalization="weight_sum")
    # p_y: 1/3, 1/2, 3/5, 1/2 with weights 1, 1, 2, 0.5 (sum 4.5)
    assert float(got) == pytest.approx(-(1 / 3 + 1 / 2 + 2 * 3 / 5 + 0.5 * 1 / 2) / 4.5, rel=1e-6)
    ce = losses.class_loss(tf.constant(CLS), tf.constant(LABELS), global_batch_size=4, class_weights=w,
                           normalization="weight_sum")
    assert float(ce) == pytest.approx((LN(3) + LN(2) + 2 * LN(5 / 3) + 0.5 * LN(2)) / 4.5, rel=1e-6)
    # The default (cross-entropy over the global batch) equals the tfgan-based generator loss.
    default = losses.class_loss(tf.constant(CLS), tf.constant(LABELS), global_batch_size=4, class_weights=w)
    assert float(default) == pytest.approx(float(losses.acgan_generator_loss(
        tf.constant(CLS), tf.constant(LABELS), num_classes=3, global_batch_size=4, class_weights=w)), rel=1e-6)



def test_hinge_losses_by_hand():
    # real logits 0, ln3, -ln3, ln7 -> relu(1 - r); fake 0, ln3, -ln3, -ln7 -> relu(1 + f)
    d = losses.hinge_discriminator_loss(col(REAL), col(FAKE), global_batch_size=4)
    real_terms = [1.0, 0.0, 1 + LN(3), 0.0]  # ln 3 > 1 and ln 7 > 1: those margins are met, terms 0
    fake_terms = [1.0, 1 + LN(3), 0.0, 0.0]
    assert float(d) == pytest.approx((sum(real_terms) + sum(fake_terms)) / 4, rel=1e-6)
    g = losses.hinge_generator_loss(col(FAKE), global_batch_size=4)
    assert float(g) == pytest.approx(-(0 + LN(3) - LN(3) - LN(7)) / 4, rel=1e-6)


def test_r1_penalty_by_hand():
    grads = tf.constant([[[1.0, 2.0]], [[0.0, 3.0]]])  # squared norms 5 and 9
    assert float(losses.r1_penalty(grads, gamma=2.0, global_batch_size=2)) == pytest.approx(0.5 * 2 * (5 + 9) / 2)


def test_mode_seeking_loss_by_hand():
    """Pairs (0, 2) and (1, 3): only the first has one class. d_I = mean |x0 - x2| = 0.5, d_z = mean |z0 - z2| = 2,
    so its term is 1 / (0.25 + eps); the other pair adds 0; divided by the global pairs (global batch 8 / 2)."""
    from vugan.models.losses import mode_seeking_loss
    images = np.zeros((4, 2, 2, 1), np.float32)
    images[2] += 0.5
    images[3] += 3.0
    noise = np.array([[0, 0], [0, 0], [2, -2], [1, 1]], np.float32)
    labels = tf.constant([1, 0, 1, 2])
    value = mode_seeking_loss(images, noise, labels, global_batch_size=8, eps=1e-5)
    assert float(value) == pytest.approx((1 / (0.25 + 1e-5)) / 4, rel=1e-6)
    # Collapse (same image for both noise vectors) costs far more than diverse images.
    collapsed = mode_seeking_loss(np.zeros((4, 2, 2, 1), np.float32), noise, labels, global_batch_size=8)
    assert float(collapsed) > 1000 * float(value)


def test_pooled_mode_seeking_ignores_pixel_scale_differences():
    """Two same-class images: B = c + a * checkerboard (a > c > 0) against A = 0, noise vectors 1 apart per entry.
    Per pixel they differ by mean |B| = a; after 2x2 average pooling the checkerboard cancels and they differ by c.
    The loss is 1 / (d_img / d_z + eps) for the one pair, over global_batch / 2 = 1 pair."""
    a, c, eps = 0.6, 0.1, 1e-5
    checker = np.indices((4, 4)).sum(axis=0) % 2 * 2 - 1  # +-1
    images = np.stack([np.zeros((4, 4)), c + a * checker])[..., None].astype(np.float32)
    noise = np.stack([np.zeros(3), np.ones(3)]).astype(np.float32)
    labels = tf.constant([1, 1])
    pixel = losses.mode_seeking_loss(images, noise, labels, global_batch_size=2)
    pooled = losses.mode_seeking_loss(images, noise, labels, global_batch_size=2, pool=2)
    assert float(pixel) == pytest.approx(1 / (a + eps), rel=1e-5)
    assert float(pooled) == pytest.approx(1 / (c + eps), rel=1e-5)
