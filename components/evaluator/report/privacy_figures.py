"""Figures of the privacy section, drawn with matplotlib (Agg) and returned as PNG bytes."""
from __future__ import annotations

import numpy as np

from vugan.components.evaluator.report.figures import _plt, _png  # one Agg set-up for every report figure
from vugan.components.evaluator.privacy.stats import roc_curve


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str) -> bytes:
    """curves: name -> (scores, labels, auc). Log-scaled FPR panel beside the linear one: low FPR is what matters."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for name, (scores, labels, auc) in curves.items():
        fpr, tpr = roc_curve(scores, labels)
        for ax in axes:
            ax.plot(fpr, tpr, lw=1.2, label=f"{name} (AUC {auc:.2f})")
    lin = np.linspace(1e-4, 1, 200)
    for ax in axes:
        ax.plot(lin, lin, "k--", lw=0.8, label="chance")
        ax.set_xlabel("false positive rate (non-members called members)")
        ax.set_ylabel("true positive rate (members found)")
    axes[1].set_xscale("log")
    axes[1].set_xlim(1e-3, 1)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    return _png(fig)


def histogram_figure(groups: dict[str, np.ndarray], title: str, xlabel: str) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    values = np.concatenate([np.asarray(v, np.float64) for v in groups.values() if len(v)])
    bins = np.linspace(values.min(), values.max() + 1e-9, 40)
    for name, v in groups.items():
        ax.hist(np.asarray(v, np.float64), bins=bins, alpha=0.5, density=True, label=f"{name} (n={len(v)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _png(fig)


def pair_grid_figure(synthetic: np.ndarray, train: np.ndarray, distances: np.ndarray, title: str) -> bytes:
    """Rows of (synthetic centre slice | nearest training unit's centre slice | absolute difference)."""
    plt = _plt()
    n = len(synthetic)
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False, layout="constrained")
    k = synthetic.shape[-1] // 2
    for i in range(n):
        a, b = synthetic[i, ..., k], train[i, ..., k]
        for j, (img, label) in enumerate([(a, "synthetic"), (b, "nearest training"), (np.abs(a - b), "|difference|")]):
            ax = axes[i, j]
            ax.imshow(img, cmap="gray", vmin=0 if j == 2 else -1, vmax=2 if j == 2 else 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=9)
        axes[i, 0].set_ylabel(f"d = {distances[i]:.2f}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _png(fig)
