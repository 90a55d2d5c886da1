"""DiffAugment-style differentiable augmentation (Zhao et al. 2020, arXiv:2006.10738).

The same random transform family is applied to real AND generated images right before the discriminator, so D
cannot memorise the small training set while G still receives gradients through every op (all are gathers,
masks and affine intensity maps). Adapted to MRI stacks [N, H, W, K] in [-1, 1]: "intensity" shifts and scales
all K slices of an example together (a scanner-gain change), instead of DiffAugment's RGB colour jitter.
"""
from __future__ import annotations

import tensorflow as tf

POLICIES = ("translation", "cutout", "intensity", "brightness", "contrast")


def parse_policy(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"augmentation {name!r} is unknown; allowed: {', '.join(POLICIES)}")
    return names


# Uniform draws in [0, 1) per example that one augmentation pass consumes (columns of ``u``): translation (2),
# cutout (2), intensity (2), brightness (1), contrast (1). The trainer draws them in the input pipeline with
# stateless ops keyed on the example index (components/trainer/data.py), so a resumed run and any replica split
# see the same augmentations.
_COLUMNS = {"translation": slice(0, 2), "cutout": slice(2, 4), "intensity": slice(4, 6), "brightness": slice(6, 7),
            "contrast": slice(7, 8)}
DRAWS = max(c.stop for c in _COLUMNS.values())  # 8
# With an application probability p (trainer.augment_p, or ADA's adaptive p), one more uniform per transform decides
# whether it applies to the example: columns DRAWS + POLICIES.index(name) of ``u``.
GATES = len(POLICIES)


def diff_augment(x: tf.Tensor, policy: tuple[str, ...], u: tf.Tensor | None = None, p=None) -> tf.Tensor:
    """Apply each named transform in order, with independent randomness per example: from ``u`` [N, DRAWS]
    (uniform in [0, 1)) when given, else from TensorFlow's stateful generator.

    With ``p`` (a scalar in [0, 1], StyleGAN2-ADA's augmentation probability) each transform applies to an example
    only when that example's gate draw ``u[:, DRAWS + POLICIES.index(name)]`` is below p, so ``u`` is then
    [N, DRAWS + GATES]; without it every transform always applies (DiffAugment)."""
    if u is None:
        u = tf.random.uniform([tf.shape(x)[0], DRAWS + (GATES if p is not None else 0)])
    for name in policy:
        y = _OPS[name](x, u[:, _COLUMNS[name]])
        if p is not None:
            applies = u[:, DRAWS + POLICIES.index(name)] < tf.cast(p, u.dtype)
            y = tf.where(applies[:, None, None, None], y, x)
        x = y
    return x


def _uniforms(x, u):
    return tf.random.uniform([tf.shape(x)[0], 2]) if u is None else u


def _int_in(u, lo, hi):
    """Map uniforms in [0, 1) to integers in [lo, hi), [N] -> [N, 1, 1]."""
    span = tf.cast(hi - lo, tf.float32)
    value = lo + tf.minimum(tf.cast(tf.floor(u * span), tf.int32), hi - lo - 1)
    return value[:, None, None]


def intensity(x, u=None, shift: float = 0.2, scale: float = 0.25):
    u = tf.cast(_uniforms(x, u), x.dtype)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    gain = (1.0 - scale + 2 * scale * u[:, 0])[:, None, None, None]
    offset = (-shift + 2 * shift * u[:, 1])[:, None, None, None]
    return (x - mean) * gain + mean + offset


def brightness(x, u=None, amount: float = 0.5):
    """DiffAugment's rand_brightness: add U(-amount, amount) to every pixel of an example (images in [-1, 1])."""
    u = tf.cast(tf.random.uniform([tf.shape(x)[0], 1]) if u is None else u, x.dtype)
    return x + ((u[:, 0] - 0.5) * 2 * amount)[:, None, None, None]


def contrast(x, u=None, low: float = 0.5, high: float = 1.5):
    """DiffAugment's rand_contrast: scale each example about its mean by U(low, high)."""
    u = tf.cast(tf.random.uniform([tf.shape(x)[0], 1]) if u is None else u, x.dtype)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x - mean) * (low + (high - low) * u[:, 0])[:, None, None, None] + mean


def translation(x, u=None, ratio: float = 0.125):
    """Shift each example by up to ratio of the side in each direction (DiffAugment's published 1/8: +-8 pixels
    at 64); uncovered pixels become 0."""
    u = _uniforms(x, u)
    n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    sh = tf.cast(tf.cast(h, tf.float32) * ratio + 0.5, tf.int32)
    sw = tf.cast(tf.cast(w, tf.float32) * ratio + 0.5, tf.int32)
    ty = _int_in(u[:, 0], -sh, sh + 1)
    tx = _int_in(u[:, 1], -sw, sw + 1)
    # Index into a 1-pixel zero border; clipping out-of-range rows/cols onto it fills them with zeros.
    rows = tf.clip_by_value(tf.range(h)[None, :, None] + ty + 1, 0, h + 1)
    cols = tf.clip_by_value(tf.range(w)[None, None, :] + tx + 1, 0, w + 1)
    batch = tf.broadcast_to(tf.range(n)[:, None, None], tf.shape(rows + cols))
    idx = tf.stack([batch, tf.broadcast_to(rows, tf.shape(batch)), tf.broadcast_to(cols, tf.shape(batch))], -1)
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return tf.gather_nd(padded, idx)


def cutout(x, u=None, ratio: float = 0.5):
    """Zero one random rectangle of ratio * side per example (mask multiply: differentiable elsewhere)."""
    u = _uniforms(x, u)
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    ch = tf.cast(tf.cast(h, tf.float32) * ratio + 0.5, tf.int32)
    cw = tf.cast(tf.cast(w, tf.float32) * ratio + 0.5, tf.int32)
    cy = _int_in(u[:, 0], 0, h + (1 - ch % 2))
    cx = _int_in(u[:, 1], 0, w + (1 - cw % 2))
    rows = tf.range(h)[None, :, None]
    cols = tf.range(w)[None, None, :]
    inside = ((rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch)) & ((cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw))
    return x * tf.cast(~inside, x.dtype)[..., None]


_OPS = {"translation": translation, "cutout": cutout, "intensity": intensity, "brightness": brightness,
        "contrast": contrast}


def ada_adjust(p, real_sign, target: float, step: float):
    """StyleGAN2-ADA's update of the augmentation probability: up by ``step`` when the overfitting heuristic
    r_t = E[sign D(real)] is above ``target``, down when below, kept in [0, 1]. ``step`` = images of this update /
    images over which p may go from 0 to 1."""
    p = tf.convert_to_tensor(p, tf.float32)
    return tf.clip_by_value(p + tf.sign(tf.cast(real_sign, tf.float32) - target) * step, 0.0, 1.0)
