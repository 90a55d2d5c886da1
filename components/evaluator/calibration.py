"""Calibration controls of the fidelity metrics: "generators" whose truth is known, scored like a real one.

Every control is built from FRESH real patients (a split neither the reference nor the real comparator uses):
  * real       : the fresh units as they are; a fair metric gives ratio ~1 with an interval that holds 1;
  * blurred    : the fresh units blurred in-plane (Gaussian, BLUR_SIGMA px): lost detail;
  * checkerboard: a faint 4-px checkerboard added (CHECKER_AMPLITUDE), the texture the demo's generator makes;
  * shifted    : every intensity raised by SHIFT (clipped to [-1, 1]): wrong contrast;
  * one-mode   : one fresh unit per class, repeated with tiny noise (a collapsed generator; independent draws).
A metric worth gating on puts each degraded control above the gate's rule (privacy.max_fid_ratio) and the real
control near 1; the MS-SSIM mode-collapse rule must fire on one-mode and not on real.

Pure: arrays and config in, a dict of results out (bench/fidelity_calibration.py prints the table).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from vugan.components.schema import UnitArrays

BLUR_SIGMA = 1.5
CHECKER_AMPLITUDE = 0.15
CHECKER_PERIOD = 4
SHIFT = 0.3
CONTROLS = ("real", "blurred", "checkerboard", "shifted", "one-mode")


def _with_images(units: UnitArrays, images: np.ndarray, patients: np.ndarray | None = None) -> UnitArrays:
    return UnitArrays(np.clip(images, -1, 1).astype(np.float32), units.class_ids, units.regions, units.level_names,
                      units.patients if patients is None else patients)


def blurred(units: UnitArrays, sigma: float = BLUR_SIGMA) -> UnitArrays:
    from scipy.ndimage import gaussian_filter

    return _with_images(units, gaussian_filter(units.images, sigma=(0, sigma, sigma, 0), mode="nearest"))


def checkerboard(units: UnitArrays, amplitude: float = CHECKER_AMPLITUDE, period: int = CHECKER_PERIOD) -> UnitArrays:
    h, w = units.images.shape[1:3]
    yy, xx = np.mgrid[0:h, 0:w]
    board = (((yy // (period // 2)) + (xx // (period // 2))) % 2 * 2 - 1).astype(np.float32)
    return _with_images(units, units.images + amplitude * board[None, :, :, None])


def shifted(units: UnitArrays, shift: float = SHIFT) -> UnitArrays:
    return _with_images(units, units.images + shift)


def one_mode(units: UnitArrays, counts: np.ndarray, seed: int, noise: float = 0.01) -> UnitArrays:
    """``counts[c]`` units of class c, all copies of ONE fresh unit of that class plus noise; each its own draw."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([np.full(int(k), rng.choice(np.flatnonzero(units.class_ids == c)))
                          for c, k in enumerate(counts) if k and (units.class_ids == c).any()])
    images = units.images[idx] + rng.normal(0, noise, units.images[idx].shape)
    out = UnitArrays(units.images[idx], units.class_ids[idx], units.regions[idx], units.level_names[idx],
                     np.array([f"one-mode-{i}" for i in range(len(idx))], object))
    return _with_images(out, images)


def control_sets(fresh: UnitArrays, train: UnitArrays, n_classes: int, seed: int) -> dict[str, UnitArrays]:
    counts = np.bincount(train.class_ids, minlength=n_classes)
    return {"real": fresh, "blurred": blurred(fresh), "checkerboard": checkerboard(fresh), "shifted": shifted(fresh),
            "one-mode": one_mode(fresh, counts, seed)}


def calibrate(train: UnitArrays, holdout: UnitArrays, fresh: UnitArrays, spaces: dict[str, object],
              class_names: tuple[str, ...], cfg, seed: int = 0,
              controls: tuple[str, ...] = CONTROLS, log: Callable[[str], None] = print) -> dict:
    """Score every control in every space like the evaluator scores a generator.

    Args:
      spaces: name -> Embedder (components/evaluator/features/embeddings.py).
      cfg: EvaluatorConfig (bootstrap, KID blocks, PRDC k, MS-SSIM settings).
    Returns:
      {control: {"spaces": {space: {"against_holdout": overall, "against_train": overall}},
                 "mode_collapse_warning": bool, "ms_ssim": {...}}}
    """
    from vugan.components.evaluator import core
    from vugan.components.evaluator.quality import diversity

    sets = control_sets(fresh, train, len(class_names), seed)
    real_feats = {name: {k: emb(v.images) for k, v in (("train", train), ("holdout", holdout))}
                  for name, emb in spaces.items()}
    out = {}
    for control in controls:
        syn = sets[control]
        log(f"calibration: {control} ({len(syn)} units)")
        labels = {"train": train.class_ids, "holdout": holdout.class_ids, "synthetic": syn.class_ids}
        groups = {"train": train.patients, "holdout": holdout.patients, "synthetic": syn.patients}
        row = {"spaces": {}}
        for name, emb in spaces.items():
            feats = core.whitened_on_train(emb, {**real_feats[name], "synthetic": emb(syn.images)})
            res = core.fidelity_in_space(feats, labels, groups, class_names, cfg, seed)
            row["spaces"][name] = {"against_holdout": _brief(res["against_holdout"]["overall"]),
                                   "against_train": _brief(res["overall"]), "copying": res["copying"]["flagged"]}
        div = diversity.diversity_report(
            train.images, train.class_ids, syn.images, syn.class_ids, tuple(class_names),
            diversity.MsSsimSettings(cfg.msssim_scales, cfg.msssim_filter_size, cfg.msssim_pairs),
            cfg.mode_collapse_margin, seed, real_patients=train.patients, fake_patients=syn.patients)
        row["mode_collapse_warning"] = div["mode_collapse_warning"]
        row["ms_ssim"] = div["ms_ssim"]
        out[control] = row
    return out


def _brief(o: dict) -> dict:
    return {"fd_ratio": o["fd_ratio"], "fd_ratio_ci": o["fd_ratio_ci"], "fd": o["fd"], "fd_baseline": o["fd_baseline"],
            "n": o["n"]}
