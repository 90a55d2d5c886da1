"""Small generated data and models for the privacy controls (tests and bench), all numpy / tiny Keras.

`blob_cohort` makes phantom-like units: a bright "vertebra" blob whose height depends on the class, with per-patient
shape, position and intensity, several units per patient and per-unit noise, so units of one patient resemble each
other more than units of two patients do (as real VUs do).
"""
from __future__ import annotations

import types

import numpy as np

from components.schema import UnitArrays


def blob_cohort(n_patients: int, units_per_patient: int, *, size: int = 16, slices: int = 3, n_classes: int = 3,
                noise: float = 0.1, seed: int = 0, prefix: str = "p") -> UnitArrays:
    """Units [N, size, size, slices] in [-1, 1]; patient ids f"{prefix}{i}"."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images, classes, patients = [], [], []
    for p in range(n_patients):
        cx, width, gain = rng.uniform(0.35, 0.65), rng.uniform(0.08, 0.16), rng.uniform(0.6, 1.0)
        texture = rng.normal(0, 0.15, (size, size)).astype(np.float32)  # the patient's "fingerprint"
        for u in range(units_per_patient):
            c = int(rng.integers(n_classes))
            cy = 0.25 + 0.25 * c + rng.normal(0, 0.03)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width ** 2))
            img = np.stack([gain * blob * (1 - 0.2 * abs(k - slices // 2)) for k in range(slices)], -1)
            img = img + texture[..., None] + rng.normal(0, noise, img.shape)
            images.append(np.clip(2 * img - 1, -1, 1))
            classes.append(c)
            patients.append(f"{prefix}{p}")
    n = len(classes)
    return UnitArrays(np.asarray(images, np.float32), np.asarray(classes, np.int32),
                      np.array(["x"] * n, object), np.array(["L1/L2"] * n, object), np.array(patients, object))


def take(units: UnitArrays, idx) -> UnitArrays:
    idx = np.asarray(idx)
    return UnitArrays(units.images[idx], units.class_ids[idx], units.regions[idx], units.level_names[idx],
                      units.patients[idx])


def leaky_synthetic(train: UnitArrays, n: int, noise: float, seed: int) -> UnitArrays:
    """A "generator" that returns training units plus a little Gaussian noise (what memorisation looks like)."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(train), n)
    out = take(train, pick)
    imgs = np.clip(out.images + rng.normal(0, noise, out.images.shape), -1, 1).astype(np.float32)
    return UnitArrays(imgs, out.class_ids, out.regions, out.level_names,
                      np.array([f"syn{i}" for i in range(n)], object))


def memorising_bundle(train: UnitArrays, n_classes: int, temperature: float = 0.005):
    """A tiny Keras bundle (models.bundle contract) that has memorised `train`, for the model-attack controls.

    generator([z, c]) = mean + z V, V an orthonormal basis of the training images' span (noise_dim = its rank): every
    training image is exactly reachable by optimising z, a new patient's only up to its projection residual.
    discriminator(x) = (log-sum-exp over training images t of -||x - t||^2 / (T D), and per class c the same
    log-sum-exp over the training images of class c as the class logit). Both are real Keras models.
    """
    import keras
    from keras import ops

    flat = train.images.reshape(len(train), -1).astype(np.float32)
    shape, d = train.images.shape[1:], flat.shape[1]
    mean = flat.mean(0)
    _, sv, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[sv > 1e-4 * sv[0]].astype(np.float32)
    noise_dim = len(basis)

    z_in = keras.Input((noise_dim,))
    c_in = keras.Input((), dtype="int32")
    # The class input is accepted (contract) but a memoriser needs no class: it multiplies it by zero.
    c_term = ops.cast(ops.expand_dims(c_in, -1), "float32") * 0.0
    out = ops.reshape(ops.matmul(z_in, ops.convert_to_tensor(basis)) + mean + c_term, (-1, *shape))
    generator = keras.Model([z_in, c_in], out, name="memorising_generator")

    x_in = keras.Input(shape)
    xf = ops.reshape(x_in, (-1, d))
    d2 = ops.sum(xf ** 2, axis=1, keepdims=True) - 2 * ops.matmul(xf, ops.transpose(flat)) + \
        ops.sum(flat ** 2, axis=1)[None, :]
    sim = -d2 / (temperature * d)
    rf = ops.logsumexp(sim, axis=1, keepdims=True)
    masks = [ops.convert_to_tensor(np.where(train.class_ids == c, 0.0, -1e9).astype("f4")) for c in range(n_classes)]
    cls = ops.stack([ops.logsumexp(sim + m[None, :], axis=1) for m in masks], axis=1)
    discriminator = keras.Model(x_in, [rf, cls], name="memorising_discriminator")
    return types.SimpleNamespace(generator=generator, discriminator=discriminator, noise_dim=noise_dim,
                                 class_names=tuple(f"class{c}" for c in range(n_classes)), image_shape=shape,
                                 info={"note": "memorising control bundle"})
