"""Train the fixed VU feature network (vu-encoder) ONCE and write its weights file and model card.

    nice -n 10 .venv/bin/python tools/train_vu_encoder.py            # writes models/vu_encoder/vu-encoder-v1.*

Data (public only; the card lists it): a phantom cohort at scale from the project's own generator (seed 1001,
not the demo's seed 0, so the demo cohort is NOT in-sample) and every scan of ../shared/data/spine-mri-cohort
(which includes ../shared/data/spine-mri-real), cut with the default preprocess config (disc units, 64x64x9).
Results on those real scans are in-sample for the encoder. Patients are split 80/20 (fixed seed): the network
and its feature statistics see only the 80 %; the card reports linear-probe accuracy on the 20 % held-out patients.

Objective of the conv stages (so the features see texture and anatomy, not only the class), on z-scored units:
  * SimCLR-style contrast (NT-Xent) between two augmented views of each unit (shift, small gain/offset, slice
    order, noise; deliberately NO blur, so blur stays visible), on the pooled mean/std features of all four stages;
  * reconstruction of the standardised unit from the deepest stage (a small decoder), so fine structure is kept;
  * region and level classification from the pooled features (anatomy), with a small weight.
Then the float network is quantised to the integer form of components/evaluator/features/vu_encoder.py, and on
the training patients the whitening of the fixed texture energies and of the pooled conv features' first principal
axes is fitted (why whitened: see vu_encoder.py). What was tried and measured on the demo and cohort generators
is in docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vugan.pipeline import tf_env  # oneDNN and threads, before TensorFlow loads
tf_env.configure()

from vugan.components.evaluator.features import checksum  # noqa: E402
from vugan.components.evaluator.features import vu_encoder as vu  # noqa: E402

# The real scans live beside the repository (../shared), never inside it.
REAL_MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "spine-mri-cohort" / "scans.csv"
PHANTOM_SEED = 1001
SALT = "vu-encoder-v1"  # fixed pseudonym salt: the same patients fall in the same split on every run


# ----------------------------------------------------------------------------------------------- data

def cut_units(manifest: str, source: str, log) -> dict[str, np.ndarray]:
    from vugan.components.preprocess.manifest import plan
    from vugan.components.preprocess.spec import PreprocessConfig
    from vugan.components.preprocess.units import process_scan

    cfg = PreprocessConfig()
    images, regions, levels, patients = [], [], [], []
    for task in plan(manifest, cfg, SALT).tasks:
        for rec, _ in process_scan(task, cfg).records:
            images.append(rec.image)
            regions.append(rec.region)
            levels.append(rec.level_name)
            patients.append(f"{source}:{rec.patient}")
    log(f"data: {source}: {len(images)} units of {len(set(patients))} patients")
    return {"images": np.stack(images).astype(np.float32), "regions": np.array(regions),
            "levels": np.array(levels), "patients": np.array(patients), "source": np.array([source] * len(images))}


def build_data(phantom_patients: int, use_real: bool, cache: Path, log) -> dict[str, np.ndarray]:
    from vugan.components.phantom.core import generate_cohort
    from vugan.components.phantom.spec import PhantomConfig

    key = cache / f"units_phantom{phantom_patients}_s{PHANTOM_SEED}_real{int(use_real)}.npz"
    if key.is_file():
        with np.load(key) as z:
            return {k: z[k] for k in z.files}
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        generate_cohort(tmp, PhantomConfig(patients=phantom_patients, seed=PHANTOM_SEED, preview_patients=0))
        parts.append(cut_units(str(Path(tmp) / "scans.csv"), "phantom", log))
    if use_real:
        if not REAL_MANIFEST.is_file():
            raise FileNotFoundError(f"{REAL_MANIFEST} does not exist; the encoder is trained on the shared real "
                                    f"cohort as well (or pass --no-real, and say so in the card)")
        parts.append(cut_units(str(REAL_MANIFEST), "spine-mri-cohort", log))
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(key, **data)
    return data


def patient_split(patients: np.ndarray, held_out_fraction: float, seed: int) -> np.ndarray:
    """True for units of held-out patients: a seeded fraction of each source's patients."""
    rng = np.random.default_rng(seed)
    held = set()
    for source in sorted({p.split(":")[0] for p in patients}):
        ids = sorted({p for p in patients if p.startswith(source + ":")})
        ids = [ids[i] for i in rng.permutation(len(ids))]
        held |= set(ids[:max(1, round(held_out_fraction * len(ids)))])
    return np.array([p in held for p in patients])


# ----------------------------------------------------------------------------------------------- model

def build_models(n_levels: int):
    import keras
    from keras import layers

    spec = vu.INPUT_SPEC
    inp = keras.Input((spec["height"], spec["width"], spec["slices"]))
    x, acts = inp, []
    for i, c in enumerate(vu.STAGE_CHANNELS):
        x = layers.ZeroPadding2D(1)(x)
        x = layers.Conv2D(c, 3, strides=2, padding="valid", activation="relu", name=f"stage{i}")(x)
        acts.append(x)
    encoder = keras.Model(inp, acts, name="vu_encoder")

    deep = keras.Input(acts[-1].shape[1:])
    y = deep
    for c in (64, 48, 24, 16):
        y = layers.UpSampling2D(2)(y)
        y = layers.Conv2D(c, 3, padding="same", activation="relu")(y)
    y = layers.Conv2D(spec["slices"], 3, padding="same")(y)  # the standardised unit (linear)
    decoder = keras.Model(deep, y, name="decoder")

    dim = 2 * sum(vu.STAGE_CHANNELS)
    pooled = keras.Input((dim,))
    h = layers.LayerNormalization()(pooled)
    proj = layers.Dense(64)(layers.Dense(256, activation="relu")(h))
    head_proj = keras.Model(pooled, proj, name="projection")
    head_cls = keras.Model(pooled, [layers.Dense(3)(h), layers.Dense(n_levels)(h)], name="classes")
    return encoder, decoder, head_proj, head_cls


def pooled_tf(acts):
    import tensorflow as tf

    out = []
    for a in acts:
        mean = tf.reduce_mean(a, axis=(1, 2))
        var = tf.reduce_mean(tf.square(a), axis=(1, 2)) - tf.square(mean)
        out += [mean, tf.sqrt(tf.maximum(var, 0.0) + 1e-6)]
    return tf.concat(out, axis=1)


def augment(x, seed_pair):
    """A random view of a standardised unit: integer shift (up to 4 px), slice-order flip, a little gain/offset
    (what standardisation leaves of contrast differences), a little noise. No blur, so blur stays visible."""
    import tensorflow as tf

    n = tf.shape(x)[0]
    s = tf.random.experimental.stateless_split(seed_pair, 6)
    dy = tf.random.stateless_uniform([], s[0], -4, 5, tf.int32)
    dx = tf.random.stateless_uniform([], s[1], -4, 5, tf.int32)
    x = tf.roll(x, shift=[dy, dx], axis=[1, 2])
    flip = tf.random.stateless_uniform([n, 1, 1, 1], s[2]) < 0.5
    x = tf.where(flip, tf.reverse(x, axis=[3]), x)
    gain = tf.random.stateless_uniform([n, 1, 1, 1], s[3], 0.9, 1.1)
    offset = tf.random.stateless_uniform([n, 1, 1, 1], s[4], -0.1, 0.1)
    x = x * gain + offset + 0.05 * tf.random.stateless_normal(tf.shape(x), s[5])
    return tf.clip_by_value(x, -127.0 / vu.NORM_GRID, 127.0 / vu.NORM_GRID)


def nt_xent(z1, z2, temperature: float):
    import tensorflow as tf

    z = tf.math.l2_normalize(tf.concat([z1, z2], 0), axis=1)
    n = tf.shape(z1)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature - 1e9 * tf.eye(2 * n)
    labels = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], 0)
    return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


def train_float(x, region, level, n_levels, steps, batch, seed, log):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    encoder, decoder, head_proj, head_cls = build_models(n_levels)
    params = (encoder.trainable_variables + decoder.trainable_variables + head_proj.trainable_variables
              + head_cls.trainable_variables)
    opt = keras.optimizers.Adam(1e-3)

    @tf.function
    def step(xb, rb, lb, seeds):
        with tf.GradientTape() as tape:
            v1, v2 = augment(xb, seeds[0]), augment(xb, seeds[1])
            a1, a2 = encoder(v1, training=True), encoder(v2, training=True)
            p1, p2 = pooled_tf(a1), pooled_tf(a2)
            contrast = nt_xent(head_proj(p1), head_proj(p2), 0.2)
            recon = tf.reduce_mean(tf.square(decoder(a1[-1]) - xb))
            r_logits, l_logits = head_cls(p1)
            cls = (tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(rb, r_logits, from_logits=True))
                   + tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(lb, l_logits, from_logits=True)))
            loss = contrast + 2.0 * recon + 0.2 * cls
        grads = tape.gradient(loss, params)
        opt.apply_gradients(zip(grads, params))
        return contrast, recon, cls

    rng = np.random.default_rng(seed)
    t0 = time.time()
    for i in range(steps):
        idx = rng.choice(len(x), batch, replace=False)
        seeds = tf.constant(rng.integers(0, 2**31 - 1, (2, 2)), tf.int32)
        c, r, k = step(tf.constant(x[idx]), tf.constant(region[idx]), tf.constant(level[idx]), seeds)
        if i % 50 == 0 or i == steps - 1:
            log(f"step {i:5d}  contrast {float(c):.3f}  recon {float(r):.4f}  class {float(k):.3f}  "
                f"({time.time() - t0:.0f} s)")
    return encoder


# ----------------------------------------------------------------------------------------------- export

def quantise(encoder, x_calib: np.ndarray) -> dict[str, np.ndarray]:
    """Float network -> integer kernels, biases and requantisation factors (module docstring of vu_encoder)."""
    acts = encoder.predict(x_calib, batch_size=256, verbose=0)
    act_scale = [vu.ACTIVATION_MAX / max(float(np.percentile(a, 99.99)), 1e-6) for a in acts]
    arrays, in_scale, requant = {}, float(vu.NORM_GRID), []
    for i in range(len(vu.STAGE_CHANNELS)):
        kernel, bias = encoder.get_layer(f"stage{i}").get_weights()
        w_scale = vu.WEIGHT_MAX / max(float(np.abs(kernel).max()), 1e-12)
        arrays[f"kernel{i}"] = np.rint(kernel.reshape(-1, kernel.shape[-1]) * w_scale).astype(np.int32)
        arrays[f"bias{i}"] = np.rint(bias.astype(np.float64) * in_scale * w_scale).astype(np.int64)
        requant.append(act_scale[i] / (in_scale * w_scale))
        in_scale = act_scale[i]
    arrays["requant"] = np.array(requant, np.float64)
    arrays["act_scale"] = np.array(act_scale, np.float64)
    return arrays


def _whitening(z: np.ndarray, dims: int) -> tuple[np.ndarray, float]:
    """Integer projection (1/1024 units) on the first ``dims`` principal axes of ``z``, each scaled to unit
    variance; and the share of variance those axes hold."""
    eigval, eigvec = np.linalg.eigh(np.cov(z, rowvar=False))
    order = np.argsort(eigval)[::-1][:dims]
    vecs = eigvec[:, order] * np.sign(eigvec[:, order].sum(0) + 1e-12)  # fixed sign: reproducible file
    whitened = vecs / np.sqrt(eigval[order])
    return np.rint(whitened * 1024).astype(np.int32), float(eigval[order].sum() / eigval.sum())


def fit_output(arrays: dict, x_train: np.ndarray, dim: int) -> tuple[dict, float]:
    """On the training patients: standardisation and whitening of the texture energies with the intensity features
    (all 17 axes together) and of the pooled conv features (first ``dim`` principal axes)."""
    dummy = dict(arrays, feat_mean=np.zeros(1), feat_std=np.ones(1), projection=np.zeros((1, dim)),
                 texture_mean=np.zeros(1), texture_std=np.ones(1),
                 texture_projection=np.zeros((1, vu.APPEARANCE_DIM)))
    enc = vu.VuEncoder(dummy, {})
    parts = [enc.pooled(x_train[s:s + 64]) for s in range(0, len(x_train), 64)]
    pooled, _, texture = (np.concatenate([p[i] for p in parts]) for i in range(3))
    mean, std = pooled.mean(0), pooled.std(0) + 1e-6
    projection, explained = _whitening((pooled - mean) / std, dim)
    t_mean, t_std = texture.mean(0), texture.std(0) + 1e-9
    t_projection, _ = _whitening((texture - t_mean) / t_std, vu.APPEARANCE_DIM)
    return dict(arrays, feat_mean=mean, feat_std=std, projection=projection,
                texture_mean=t_mean, texture_std=t_std, texture_projection=t_projection), explained


def linear_probe(f_tr, y_tr, f_te, y_te) -> float:
    """Balanced accuracy of a multinomial logistic regression (sklearn) on held-out patients."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(f_tr)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(sc.transform(f_tr), y_tr)
    keep = np.isin(y_te, np.unique(y_tr))
    return float(balanced_accuracy_score(y_te[keep], clf.predict(sc.transform(f_te[keep]))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--phantom-patients", type=int, default=300)
    p.add_argument("--no-real", action="store_true", help="phantom data only (the shipped v1 uses the real cohort)")
    p.add_argument("--steps", type=int, default=700, help="optimiser steps (the shipped v1: 700)")
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--dim", type=int, default=8, help="whitened principal axes of the conv features kept")
    p.add_argument("--reuse-float", action="store_true", help="reuse the cached float network of these steps/seed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "vu_encoder_data"))
    p.add_argument("--out", default=str(vu.MODEL_DIR))
    args = p.parse_args(argv)
    log = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.time()

    data = build_data(args.phantom_patients, not args.no_real, Path(args.cache), log)
    held = patient_split(data["patients"], 0.2, args.seed)
    level_names = sorted(set(data["levels"]))
    region_names = sorted(set(data["regions"]))
    y_level = np.array([level_names.index(l) for l in data["levels"]], np.int32)
    y_region = np.array([region_names.index(r) for r in data["regions"]], np.int32)
    x = np.concatenate([vu.normalised_input(vu.quantised_input(data["images"][s:s + 512]))[0]
                        for s in range(0, len(data["images"]), 512)]).astype(np.float32) / vu.NORM_GRID
    tr = ~held
    log(f"data: {tr.sum()} training units, {held.sum()} held-out units ({len(set(data['patients'][held]))} "
        f"patients) in {time.time() - t0:.0f} s")

    keras_weights = Path(args.cache) / f"float_encoder_s{args.steps}_seed{args.seed}.weights.h5"
    timing = keras_weights.with_suffix(".seconds.json")
    if args.reuse_float and keras_weights.is_file():  # re-export only (e.g. another --dim): same float network
        encoder = build_models(len(level_names))[0]
        encoder.load_weights(keras_weights)
        train_seconds = json.loads(timing.read_text())["seconds"] if timing.is_file() else None
    else:
        t_train = time.time()
        encoder = train_float(x[tr], y_region[tr], y_level[tr], len(level_names), args.steps, args.batch,
                              args.seed, log)
        train_seconds = round(time.time() - t_train)
        encoder.save_weights(keras_weights)
        timing.write_text(json.dumps({"seconds": train_seconds}))
    arrays = quantise(encoder, x[tr][:2000])
    arrays, explained = fit_output(arrays, data["images"][tr], args.dim)
    meta = {"name": vu.NAME, "version": vu.VERSION, "input_spec": vu.INPUT_SPEC, "norm_grid": vu.NORM_GRID,
            "stage_channels": list(vu.STAGE_CHANNELS), "structure_dims": args.dim,
            "dim": vu.APPEARANCE_DIM + args.dim}
    arrays["meta"] = np.array(json.dumps(meta))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{vu.NAME}-{vu.VERSION}.npz"
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    weights.write_bytes(buf.getvalue())

    enc = vu.VuEncoder({k: v for k, v in arrays.items() if k != "meta"}, meta)
    feats = np.concatenate([enc.features(data["images"][s:s + 256]) for s in range(0, len(x), 256)])
    probe = {}
    for name, y in (("region", y_region), ("level", y_level)):
        probe[name] = linear_probe(feats[tr], y[tr], feats[held], y[held])
        for source in sorted(set(data["source"])):
            m = data["source"] == source
            if len(np.unique(y[held & m])) > 1:
                probe[f"{name}_{source}"] = linear_probe(feats[tr & m], y[tr & m], feats[held & m], y[held & m])
    log(f"linear probe (balanced accuracy, held-out patients): {probe}")

    def counts(mask):
        return {s: {"units": int((mask & (data["source"] == s)).sum()),
                    "patients": len(set(data["patients"][mask & (data["source"] == s)]))}
                for s in sorted(set(data["source"]))}

    card = {
        "name": f"{vu.NAME}-{vu.VERSION}", "version": vu.VERSION, "file": weights.name,
        "sha256": checksum.sha256_file(weights), "bytes": weights.stat().st_size,
        "date": datetime.date.today().isoformat(),
        "input_spec": {**vu.INPUT_SPEC, "mapping": "any [n, H, W, K] crop in [-1, 1] is resampled to 64 x 64 x 9 "
                                                   "by linear interpolation (half-pixel centres), quantised to "
                                                   "integers round(127 x)"},
        "architecture": {"stages": "4 x (3x3 conv, stride 2, 1-pixel zero pad, ReLU)",
                         "stage_channels": list(vu.STAGE_CHANNELS),
                         "pooling": "per stage and channel: spatial mean and standard deviation",
                         "normalisation": "each unit z-scored (1/32 grid) before the first stage",
                         "texture": "fixed derivative filters on the standardised unit, 3 pyramid levels: mean "
                                    "|d/dy|, |d/dx|, |Laplacian| per level and mean |d/dslice| (10)",
                         "intensity": "the unit's mean, std, 5/50/95 % quantiles and shares of voxels at either "
                                      "end of the window (7)",
                         "output": f"{vu.APPEARANCE_DIM + args.dim} features: the 10 texture energies and 7 "
                                   f"intensity features whitened together, and {args.dim} whitened "
                                   f"principal axes of the standardised pooled conv features ({explained:.1%} of "
                                   f"their variance); whitening and standardisation fitted on the training "
                                   f"patients; on a 1/{vu.FEATURE_GRID} grid",
                         "arithmetic": "exact integers in float64 (identical on any machine and thread count)"},
        "training": {"script": "tools/train_vu_encoder.py", "seed": args.seed, "steps": args.steps,
                     "batch": args.batch,
                     "objective": "NT-Xent between two augmented views (shift, slice flip, small gain/offset, "
                                  "noise; no blur) on the pooled features + 2 x reconstruction MSE of the "
                                  "standardised unit + 0.2 x region/level cross-entropy",
                     "data": {"phantom": f"components/phantom cohort, {args.phantom_patients} patients, seed "
                                         f"{PHANTOM_SEED} (the demo uses seed 0: not in-sample)",
                              "spine-mri-cohort": (None if args.no_real else
                                                   "../shared/data/spine-mri-cohort/scans.csv, every scan (includes "
                                                   "spine-mri-real): results on these scans are IN-SAMPLE"),
                              "preprocess": "default PreprocessConfig (disc units, 64x64x9, 3 mm slices)"},
                     "units": {"train": counts(tr), "held_out": counts(held)},
                     "float_training_seconds": train_seconds,
                     "export_seconds": round(time.time() - t0),
                     "machine": "2 shared CPU cores, niced, other jobs running"},
        "held_out_patients_linear_probe_balanced_accuracy": probe,
        "probe": "multinomial logistic regression (scikit-learn, standardised features) fitted on the training "
                 "patients' features, scored on the 20 % held-out patients (never seen by the network)",
    }
    card_path = out / f"{vu.NAME}-{vu.VERSION}.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    log(f"wrote {weights} ({card['bytes']} bytes, sha256 {card['sha256']}) and {card_path} in "
        f"{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
