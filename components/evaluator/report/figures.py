"""Matplotlib figures of the fidelity/diversity/utility report, returned as PNG bytes (Agg backend, no display)."""
from __future__ import annotations

import io

import numpy as np

from vugan.components.evaluator.report.types import Figure


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def class_grids(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray,
                class_names: tuple[str, ...], per_class: int, seed: int) -> Figure:
    """One row per class: ``per_class`` real centre slices (left) and as many synthetic ones (right)."""
    plt = _plt()
    rng = np.random.default_rng(seed)
    rows = [c for c in range(len(class_names)) if (real_labels == c).any() or (fake_labels == c).any()]
    fig, axes = plt.subplots(len(rows), 2, figsize=(2 * 0.9 * per_class + 0.6, 1.05 * len(rows) + 0.5),
                             squeeze=False)
    k = real.shape[-1] // 2
    h, w = real.shape[1:3]
    for r, c in enumerate(rows):
        for col, (images, labels, side) in enumerate(((real, real_labels, "real"), (fake, fake_labels, "synthetic"))):
            idx = np.flatnonzero(labels == c)
            idx = rng.permutation(idx)[:per_class]
            strip = np.full((h, per_class * (w + 2)), -1.0)
            for j, i in enumerate(idx):
                strip[:, j * (w + 2):j * (w + 2) + w] = images[i, :, :, k]
            ax = axes[r, col]
            ax.imshow(strip, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(side, fontsize=10)
            if col == 0:
                ax.set_ylabel(class_names[c], fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return Figure("grids", "Real and synthetic units per class",
                  "Centre slice of randomly chosen units, real training units on the left, synthetic on the right, "
                  "one row per class. Synthetic units should show the same anatomy (two vertebral bodies with the "
                  "disc between them) and a similar variety.", _png(fig))


def ratio_bars(per_class: dict[str, dict[str, dict]], overall: dict[str, float | None], title: str) -> Figure:
    """Per-class distance ratio (synthetic / real-vs-real baseline) for each embedding, log scale, line at 1."""
    plt = _plt()
    names = list(next(iter(per_class.values())).keys()) if per_class else []
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(names) * len(per_class) + 2), 3.2))
    width = 0.8 / max(len(per_class), 1)
    for j, (emb, values) in enumerate(per_class.items()):
        ys = np.array([values[n].get("fd_ratio") or np.nan for n in names], float)
        cis = [values[n].get("fd_ratio_ci") or (np.nan, np.nan) for n in names]
        err = np.array([[y - lo for y, (lo, _) in zip(ys, cis)], [hi - y for y, (_, hi) in zip(ys, cis)]])
        ax.bar(np.arange(len(names)) + j * width, ys, width, yerr=np.maximum(np.nan_to_num(err), 0), capsize=2,
               label=f"{emb} (overall {_fmt(overall.get(emb))})")
    ax.axhline(1.0, color="k", lw=1, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(names)) + width * (len(per_class) - 1) / 2, names, rotation=45, ha="right",
                  fontsize=8)
    ax.set_ylabel("synthetic / real-vs-real")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=10)
    return Figure("fd_ratio", title, "Each bar is a class's Fréchet distance between synthetic units and the "
                  "reference patients divided by the same distance for as many real patients; 1 (dashed) means "
                  "synthetic units are as close as new real patients are; lower is better down to 1. Whiskers: "
                  "95% patient-bootstrap intervals.",
                  _png(fig))


def prdc_bars(prdc: dict | None, baseline: dict | None, label: str) -> Figure:
    plt = _plt()
    keys = ["precision", "recall", "density", "coverage"]
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    x = np.arange(len(keys))
    ax.bar(x - 0.2, [(prdc or {}).get(k, np.nan) for k in keys], 0.4, label="synthetic vs train")
    ax.bar(x + 0.2, [(baseline or {}).get(k, np.nan) for k in keys], 0.4, label="holdout vs train (real baseline)")
    ax.set_xticks(x, keys)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    ax.set_title(f"Precision / recall / density / coverage ({label})", fontsize=10)
    return Figure("prdc", "Precision, recall, density, coverage",
                  "Bars close to the real baseline (orange) are good; precision and density measure realism, "
                  "recall and coverage measure how much of the real variety the synthetic set covers.", _png(fig))


def msssim_bars(per_class: dict[str, dict]) -> Figure:
    plt = _plt()
    names = list(per_class)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(names) + 2), 3.0))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [per_class[n]["real"] if per_class[n]["real"] is not None else np.nan for n in names], 0.4,
           label="real (train)")
    ax.bar(x + 0.2, [per_class[n]["synthetic"] if per_class[n]["synthetic"] is not None else np.nan for n in names],
           0.4, label="synthetic")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("mean pairwise MS-SSIM")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return Figure("ms_ssim", "Within-class similarity (MS-SSIM)",
                  "Higher bars mean the units of a class look more alike. A synthetic bar clearly above the real "
                  "one means the generator repeats itself (mode collapse).", _png(fig))


def utility_bars(util) -> Figure:
    """util: a results.UtilityResult."""
    plt = _plt()
    ref = util.reference_study
    equal = util.tstr_equal_size or {}
    labels = ["TRTR (ours)", "TSTR 1x (ours)", "TSTR all (ours)", "TRTR (ref. study)", "TSTR (ref. study)"]
    ba = [util.trtr["balanced_accuracy"], equal.get("balanced_accuracy", np.nan), util.tstr["balanced_accuracy"],
          ref["trtr"]["balanced_accuracy"], ref["tstr"]["balanced_accuracy"]]
    auc = [util.trtr["macro_auc"], equal.get("macro_auc"), util.tstr["macro_auc"], ref["trtr"]["macro_auc"],
           ref["tstr"]["macro_auc"]]
    fig, ax = plt.subplots(figsize=(7.0, 3.0))
    x = np.arange(5)
    colours = ["C0", "C1", "C2", "0.7", "0.8"]
    ax.bar(x - 0.2, ba, 0.4, label="balanced accuracy", color=colours)
    ax.bar(x + 0.2, [a if a is not None else np.nan for a in auc], 0.4, label="macro AUC",
           color=colours, hatch="//", edgecolor="w")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Region classifier on the real test split", fontsize=10)
    return Figure("utility", "Train on synthetic, test on real",
                  "Our classifier trained on real (TRTR), on as many synthetic units as TRTR had (TSTR 1x: "
                  "like for like) and on all synthetic units drawn (TSTR all), scored on real test patients "
                  "(plain bars: balanced accuracy, hatched: macro AUC). Grey: the reference study's numbers on a "
                  "different dataset, for context only. Compare TSTR 1x with TRTR.",
                  _png(fig))


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"
