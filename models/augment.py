"""DiffAugment-style differentiable augmentation (Zhao et al. 2020, arXiv:2006.10738).

The same random transform family is applied to real AND generated images right before the discriminator, so D
cannot memorise the small training set while G still receives gradients through every op (all are gathers,
masks and affine intensity maps). Adapted to MRI stacks [N, H, W, K] in [-1, 1]: "intensity" shifts and scales
all K slices of an example together (a scanner-gain change), instead of DiffAugment's RGB colour jitter.
"""
from __future__ import annotations

import tensorflow as tf

POLICIES = ("translation", "cutout", "intensity")


def parse_policy(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"augmentation {name!r} is unknown; allowed: {', '.join(POLICIES)}")
    return names


def diff_augment(x: tf.Tensor, policy: tuple[str, ...]) -> tf.Tensor:
    """Apply each named transform in order, with independent randomness per example."""
    for name in policy:
        x = _OPS[name](x)
    return x


def intensity(x, shift: float = 0.2, scale: float = 0.25):
    n = tf.shape(x)[0]
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    gain = tf.random.uniform([n, 1, 1, 1], 1.0 - scale, 1.0 + scale, dtype=x.dtype)
    offset = tf.random.uniform([n, 1, 1, 1], -shift, shift, dtype=x.dtype)
    return (x - mean) * gain + mean + offset


def translation(x, ratio: float = 0.125):
    """Shift each example by up to ratio/2 of the side in each direction; uncovered pixels become 0."""
    n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    sh = tf.cast(tf.cast(h, tf.float32) * ratio / 2 + 0.5, tf.int32)
    sw = tf.cast(tf.cast(w, tf.float32) * ratio / 2 + 0.5, tf.int32)
    ty = tf.random.uniform([n, 1, 1], -sh, sh + 1, dtype=tf.int32)
    tx = tf.random.uniform([n, 1, 1], -sw, sw + 1, dtype=tf.int32)
    # Index into a 1-pixel zero border; clipping out-of-range rows/cols onto it fills them with zeros.
    rows = tf.clip_by_value(tf.range(h)[None, :, None] + ty + 1, 0, h + 1)
    cols = tf.clip_by_value(tf.range(w)[None, None, :] + tx + 1, 0, w + 1)
    batch = tf.broadcast_to(tf.range(n)[:, None, None], tf.shape(rows + cols))
    idx = tf.stack([batch, tf.broadcast_to(rows, tf.shape(batch)), tf.broadcast_to(cols, tf.shape(batch))], -1)
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return tf.gather_nd(padded, idx)


def cutout(x, ratio: float = 0.5):
    """Zero one random rectangle of ratio * side per example (mask multiply: differentiable elsewhere)."""
    n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    ch = tf.cast(tf.cast(h, tf.float32) * ratio + 0.5, tf.int32)
    cw = tf.cast(tf.cast(w, tf.float32) * ratio + 0.5, tf.int32)
    cy = tf.random.uniform([n, 1, 1], 0, h + (1 - ch % 2), dtype=tf.int32)
    cx = tf.random.uniform([n, 1, 1], 0, w + (1 - cw % 2), dtype=tf.int32)
    rows = tf.range(h)[None, :, None]
    cols = tf.range(w)[None, None, :]
    inside = ((rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch)) & ((cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw))
    return x * tf.cast(~inside, x.dtype)[..., None]


_OPS = {"translation": translation, "cutout": cutout, "intensity": intensity}
