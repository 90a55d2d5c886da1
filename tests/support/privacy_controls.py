"""Small generated data and models for the privacy controls (tests and bench), all numpy / tiny Keras.

`blob_cohort` makes phantom-like units: a bright "vertebra" blob whose height depends on the class, with per-patient
shape, position and intensity, several units per patient and per-unit noise, so units of one patient resemble each
other more than units of two patients do (as real VUs do).
"""
from __future__ import annotations

import types

import numpy as np

from vugan.components.schema import UnitArrays


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


# ------------------------------------------------------------------------------------------------ calibration
#
# Scenarios of the calibration harness (docs/privacy.md), built from a pool of real (phantom) units of distinct
# patients. Each draw takes disjoint random patients: N members (train), 1.5 N held-out (N candidates and 0.5 N
# DOMIAS reference at reference_fraction 1/3) and N fresh patients whose units stand in for a perfect generator.
#   a  null: the "synthetic" units are the fresh patients' real units (nothing leaked);
#   b  one training patient copied: the null set plus a near-copy of each unit of one training patient;
#   c  5% near-copies: 5% of the null set replaced by near-copies of random training units;
#   d  memorised 10% of the training patients: every unit of 10% of them reproduced, not copied (moved away from
#      the original by 0.7 x the distance within which the nearest 1% of held-out units sit, i.e. beyond the copy
#      radius), replacing as many fresh units.
# Near-copies sit at 5% of that distance. Distances are set exactly along a random direction (no clipping).
SCENARIOS = {"a": "null (fresh real patients)", "b": "one training patient copied", "c": "5% near-copies",
             "d": "10% of training patients memorised"}


def _patient_index(units: UnitArrays) -> dict:
    out: dict = {}
    for i, p in enumerate(np.asarray(units.patients).astype(str)):
        out.setdefault(p, []).append(i)
    return {p: np.asarray(v) for p, v in out.items()}


def _moved(images: np.ndarray, distance: float, rng: np.random.Generator) -> np.ndarray:
    direction = rng.standard_normal(images.shape).astype(np.float32)
    norms = np.sqrt((direction.reshape(len(images), -1) ** 2).sum(1))
    return (images + direction * (distance / norms).reshape(-1, *([1] * (images.ndim - 1)))).astype(np.float32)


def _draw(pool: UnitArrays, n: int, rng: np.random.Generator) -> tuple[UnitArrays, UnitArrays, UnitArrays]:
    """Disjoint random patients of the pool: N members (train), 1.5 N held-out and N fresh."""
    index = _patient_index(pool)
    ids = rng.permutation(sorted(index))
    n_hold = int(np.ceil(1.5 * n))
    if len(ids) < 2 * n + n_hold:
        raise ValueError(f"the pool has {len(ids)} patients; {2 * n + n_hold} are needed for {n} a side")
    groups = ids[:n], ids[n:n + n_hold], ids[n + n_hold:2 * n + n_hold]
    train, holdout, fresh = (take(pool, np.concatenate([index[p] for p in g])) for g in groups)
    return train, holdout, fresh


def calibration_sets(pool: UnitArrays, n: int, scenario: str, seed: int) -> tuple[UnitArrays, UnitArrays, UnitArrays]:
    """(train, holdout, synthetic) of one scenario draw; see SCENARIOS."""
    if scenario in COPY_SCENARIOS:
        return transformed_copy_sets(pool, n, scenario, seed)
    rng = np.random.default_rng([seed, n, ord(scenario)])
    train, holdout, fresh = _draw(pool, n, rng)
    syn = take(fresh, np.arange(len(fresh)))
    if scenario == "a":
        return train, holdout, syn
    from vugan.components.evaluator import knn

    d_ht = knn.Index(knn.project(train.images, 256)).search(knn.project(holdout.images, 256), 1)[0][:, 0]
    q01 = float(np.quantile(d_ht, 0.01))
    t_index = _patient_index(train)
    if scenario == "b":
        rows = t_index[str(rng.choice(sorted(t_index)))]
        extra = take(train, rows)
        images = np.concatenate([syn.images, _moved(extra.images, 0.05 * q01, rng)])
        keep = np.arange(len(syn))
        return train, holdout, _with_images(syn, keep, extra, images)
    if scenario == "c":
        k = max(1, int(round(0.05 * len(syn))))
        rows = rng.choice(len(train), k, replace=False)
        extra = take(train, rows)
        keep = rng.permutation(len(syn))[k:]
        images = np.concatenate([syn.images[keep], _moved(extra.images, 0.05 * q01, rng)])
        return train, holdout, _with_images(syn, keep, extra, images)
    if scenario == "d":
        chosen = rng.permutation(sorted(t_index))[:max(1, int(round(0.1 * len(t_index))))]
        rows = np.concatenate([t_index[p] for p in chosen])
        extra = take(train, rows)
        keep = rng.permutation(len(syn))[min(len(rows), len(syn) - 1):]
        images = np.concatenate([syn.images[keep], _moved(extra.images, 0.7 * q01, rng)])
        return train, holdout, _with_images(syn, keep, extra, images)
    raise ValueError(f"scenario {scenario!r}: allowed {sorted(SCENARIOS)}")


def _with_images(syn: UnitArrays, keep: np.ndarray, extra: UnitArrays, images: np.ndarray) -> UnitArrays:
    n = len(images)
    return UnitArrays(images, np.r_[syn.class_ids[keep], extra.class_ids].astype(np.int32),
                      np.r_[syn.regions[keep], extra.regions], np.r_[syn.level_names[keep], extra.level_names],
                      np.array([f"syn{i}" for i in range(n)], object))


def calibrate(pool: UnitArrays, n: int, scenario: str, seeds, cfg) -> list[str]:
    """The privacy outcome of the gate for each seed (components/evaluator/gate.py)."""
    from vugan.components.evaluator.gate import privacy_outcome
    from vugan.components.evaluator.privacy.attacks import evaluate_privacy

    outcomes = []
    for seed in seeds:
        train, holdout, syn = calibration_sets(pool, n, scenario, seed)
        result = evaluate_privacy(train, holdout, syn, None, None, cfg, seed)
        outcomes.append(privacy_outcome(result, cfg)[0])
    return outcomes


# ------------------------------------------------------------------------------------------------ memorised shares
#
# A generator that memorised a share of its training patients, built WITHOUT the detectors' notion of distance: every
# unit of 2, 5 or 10% of the training patients is given back under one identity-keeping change of
# privacy/identity_transforms.py (COPY_DISGUISES: a shift, the slice order reversed, a flip, an intensity remap),
# replacing as many of the fresh units; nothing is moved "by a chosen distance" in pixel space. The draw is that of
# calibration_sets (N members, 1.5 N held-out, N fresh).
MEMORISED_SHARES = (0.02, 0.05, 0.10)


def memorised_scenarios() -> dict:
    """key -> (share, disguise name), e.g. "mem05 slices reversed" -> (0.05, "slices reversed")."""
    from vugan.components.evaluator.privacy.identity_transforms import COPY_DISGUISES

    return {f"mem{round(100 * s):02d} {d}": (s, d) for s in MEMORISED_SHARES for d in COPY_DISGUISES}


def memorised_sets(pool: UnitArrays, n: int, share: float, disguise: str,
                   seed: int) -> tuple[UnitArrays, UnitArrays, UnitArrays]:
    """(train, holdout, synthetic): the fresh set with every unit of round(share x N) training patients (at least
    one) given back under `disguise`."""
    from vugan.components.evaluator.privacy.identity_transforms import COPY_DISGUISES

    rng = np.random.default_rng([seed, n, int(round(1000 * share)), 7])
    train, holdout, fresh = _draw(pool, n, rng)
    t_index = _patient_index(train)
    chosen = rng.permutation(sorted(t_index))[:max(1, int(round(share * len(t_index))))]
    extra = take(train, np.concatenate([t_index[p] for p in chosen]))
    keep = rng.permutation(len(fresh))[min(len(extra), len(fresh) - 1):]
    images = np.concatenate([fresh.images[keep], COPY_DISGUISES[disguise](extra.images)])
    return train, holdout, _with_images(fresh, keep, extra, images)


def judge_memorised(pool: UnitArrays, n: int, share: float, disguise: str, seeds, cfg) -> list[dict]:
    """Per seed: the gate's privacy outcome, whether a membership test fired (tail, quantile or AUC on a gated
    attack) and whether the copy check did, and the stated detectable memorised share."""
    from vugan.components.evaluator.gate import privacy_outcome
    from vugan.components.evaluator.privacy.attacks import evaluate_privacy

    out = []
    for seed in seeds:
        train, holdout, syn = memorised_sets(pool, n, share, disguise, seed)
        r = evaluate_privacy(train, holdout, syn, None, None, cfg, seed)
        tests = [a["patient"]["tests"] for a in r.attacks.values() if a.get("gated")]
        out.append({"outcome": privacy_outcome(r, cfg)[0], "tests": any(t["finding"] for t in tests),
                    "copies": r.memorisation["pixel"]["copied_patients"] > cfg.max_copied_patients,
                    "detectable_share": (r.detectable.get("memorised") or {}).get("share")})
    return out


# ------------------------------------------------------------------------------------------------ transformed copies
#
# One training patient copied under a change that keeps the patient (issue 23): the null set (fresh patients' real
# units) plus every unit of one random training patient, changed by one of identity_transforms.COPY_DISGUISES, by
# the old near-copy cases (noise, blur, offset, gain), or with its centre slices pasted into as many fresh units
# (which they replace). Built from the pool's real units with the transforms alone, independently of how the copy
# test measures (no distance, radius or projection is used to build them).

def _old_copy_cases() -> dict:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(7)
    return {"noise s.d. 0.05": lambda x: np.clip(x + rng.normal(0, 0.05, x.shape), -1, 1).astype(np.float32),
            "blur sigma 0.7": lambda x: gaussian_filter(x, (0, 0.7, 0.7, 0)).astype(np.float32),
            "offset +0.05": lambda x: np.clip(x + 0.05, -1, 1).astype(np.float32),
            "gain x0.9": lambda x: (0.9 * x).astype(np.float32)}


def _copy_scenarios() -> dict:
    from vugan.components.evaluator.privacy.identity_transforms import COPY_DISGUISES

    out = {f"copy: {k}": f"one training patient copied, {k}" for k in COPY_DISGUISES}
    out["copy: centre slice pasted"] = "one training patient's centre slices pasted into fresh units"
    out.update({f"copy: {k}": f"one training patient copied, {k}" for k in _old_copy_cases()})
    return out


COPY_SCENARIOS = _copy_scenarios()


def _copy_change(name: str):
    """The change of a "copy: NAME" scenario: an identity disguise or one of the old near-copy cases."""
    from vugan.components.evaluator.privacy.identity_transforms import COPY_DISGUISES

    return COPY_DISGUISES.get(name) or _old_copy_cases()[name]


def transformed_copy_sets(pool: UnitArrays, n: int, scenario: str, seed: int):
    """(train, holdout, synthetic) of one transformed-copy draw; the patients are those of the null draw (a)."""
    from vugan.components.evaluator.privacy import identity_transforms as T

    train, holdout, syn = calibration_sets(pool, n, "a", seed)
    rng = np.random.default_rng([seed, n, 23])
    t_index = _patient_index(train)
    src = take(train, t_index[str(rng.choice(sorted(t_index)))])
    name = scenario.split(": ", 1)[1]
    if name == "centre slice pasted":
        targets = rng.permutation(len(syn))[:len(src)]
        images = syn.images.copy()
        images[targets] = T.centre_slice_pasted(src.images[:len(targets)], syn.images[targets])
        return train, holdout, _with_images(syn, np.arange(len(syn)), take(syn, np.arange(0)), images)
    images = np.concatenate([syn.images, _copy_change(name)(src.images)])
    return train, holdout, _with_images(syn, np.arange(len(syn)), src, images)


def calibrate_copies(pool: UnitArrays, n: int, scenario: str, seeds, cfg, copy_test_only: bool = False) -> list[dict]:
    """Per seed: the gate's outcome, whether the transformed-copy test flagged a training patient, and its
    fresh patients flagged (cross-fitted) of fresh patients. copy_test_only: run privacy/copies.py alone (no
    attacks, no old radius: outcome and old_copied are None); a copy it finds is a leak in the gate by construction
    (gate.transformed_copy_findings)."""
    from vugan.components.evaluator.gate import privacy_outcome
    from vugan.components.evaluator.privacy.attacks import evaluate_privacy
    from vugan.components.evaluator.privacy.copies import transformed_copy_report

    rows = []
    for seed in seeds:
        train, holdout, syn = calibration_sets(pool, n, scenario, seed)
        if copy_test_only:
            c, _ = transformed_copy_report(train.images, train.patients, holdout.images, holdout.patients, syn.images,
                                           cfg=cfg, seed=seed)
            fp = c["false_positive_rate_per_patient"]
            rows.append({"outcome": None, "copied": c["copied_patients"], "old_copied": None,
                         "fresh_flagged": fp["flagged"], "fresh_patients": fp["fresh_patients"]})
            continue
        result = evaluate_privacy(train, holdout, syn, None, None, cfg, seed)
        fp = result.copies["false_positive_rate_per_patient"]
        rows.append({"outcome": privacy_outcome(result, cfg)[0], "copied": result.copies["copied_patients"],
                     "old_copied": result.memorisation["pixel"]["copied_patients"],
                     "fresh_flagged": fp["flagged"], "fresh_patients": fp["fresh_patients"]})
    return rows


# ------------------------------------------------------------------------------------------------ the whole grid at once
#
# The transformed-copy test judges each synthetic unit on its own: its smallest distance to the training units'
# variants against a radius set by held-out patients alone (privacy/copies.py). So the leak units of many scenarios
# can be pooled into ONE query set and each scenario read off the units that are its own, with exactly the verdicts
# it would get alone, at the cost of one call per draw. The gate calls any copy found a leak
# (gate.transformed_copy_findings), so "caught by the copy test" is "leak found" for these scenarios.

def _compound_disguises() -> dict:
    """Several identity-keeping changes at once: what a reviewer tries after the single ones are caught."""
    from vugan.components.evaluator.privacy import identity_transforms as T

    rng = np.random.default_rng(11)
    noisy = lambda x, sd: np.clip(x + rng.normal(0, sd, x.shape), -1, 1).astype(np.float32)  # noqa: E731
    return {"shift (1, 1) + gamma 1.5 + noise s.d. 0.03": lambda x: noisy(T.remapped(T.shifted(x, 1, 1), gamma=1.5), 0.03),
            "slices reversed + flipped + shift (2, 0)": lambda x: T.shifted(T.flipped(T.slices_reversed(x), "rows"), 2, 0),
            "0.7x + 0.15 + flipped + noise s.d. 0.05": lambda x: noisy(T.flipped(T.remapped(x, 0.7, 0.15), "cols"), 0.05)}


def copy_grid_draw(pool: UnitArrays, n: int, seed: int, shares=MEMORISED_SHARES):
    """(train, holdout, queries, groups) of one draw: the null draw's patients (calibration_sets "a"); queries = the
    fresh units followed by every scenario's leak units; groups: scenario -> (row indices in queries, the training
    patient of each of those rows). Scenarios: every COPY_SCENARIOS case (one random training patient each) and
    three compound changes (_compound_disguises), and every memorised share x disguise (round(share x N) random
    training patients, at least one, every unit given back under the disguise); "null" is the fresh units."""
    from vugan.components.evaluator.privacy import identity_transforms as T

    train, holdout, fresh = calibration_sets(pool, n, "a", seed)
    rng = np.random.default_rng([seed, n, 2323])
    t_index = _patient_index(train)
    names = sorted(t_index)
    parts, groups, start = [fresh.images], {"null": (np.arange(len(fresh)), np.asarray(fresh.patients, str))}, len(fresh)

    def add(key, images, patients):
        nonlocal start
        parts.append(images)
        groups[key] = (np.arange(start, start + len(images)), np.asarray(patients, str))
        start += len(images)

    for scenario in COPY_SCENARIOS:
        p = str(rng.choice(names))
        src = train.images[t_index[p]]
        name = scenario.split(": ", 1)[1]
        if name == "centre slice pasted":
            targets = rng.choice(len(fresh), len(src), replace=False)
            add(scenario, T.centre_slice_pasted(src, fresh.images[targets]), [p] * len(src))
        else:
            add(scenario, _copy_change(name)(src), [p] * len(src))
    for name, change in _compound_disguises().items():
        p = str(rng.choice(names))
        add(f"copy: {name}", change(train.images[t_index[p]]), [p] * len(t_index[p]))
    for key, (share, disguise) in memorised_scenarios().items():
        if share not in shares:
            continue
        chosen = rng.permutation(names)[:max(1, int(round(share * len(names))))]
        rows = np.concatenate([t_index[p] for p in chosen])
        add(key, T.COPY_DISGUISES[disguise](train.images[rows]), train.patients[rows])
    return train, holdout, np.concatenate(parts), groups
