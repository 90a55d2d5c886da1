"""The class check: are generated units recognisably of their class?

A deliberately simple classifier, independent of the GAN (logistic regression on 16x16 block means of all K slices),
is fitted on the REAL train split and labels the generated units; it also scores the real test split, its own
ceiling. A high score means the generator reproduces the gross anatomy that separates the classes, not that it
fooled its own auxiliary head. It is scored on the evaluation's class names (levels or regions), where the TSTR/TRTR
classifiers of quality/utility.py are scored on regions.

Deterministic: lbfgs has no random state, so the same units in the same order give the same numbers on any run.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vugan.components.schema import UnitArrays

CELLS = 16  # blocks per side: coarse enough to ignore texture, fine enough to see disc bands and canal
C = 0.1  # strong L2: a handful of real patients must not be memorised pixel by pixel
MAX_ITER = 2000
CLASSIFIER = (f"logistic regression (lbfgs, C={C}, max_iter={MAX_ITER}) on {CELLS}x{CELLS} block means of all "
              f"slices, fitted on the real train split")


def block_means(images: np.ndarray, cells: int = CELLS) -> np.ndarray:
    """Mean of each of ``cells`` x ``cells`` equal blocks, per slice: [N, H, W, K] -> [N, cells * cells * K].

    Raises:
      ValueError: H or W is not a multiple of ``cells``.
    """
    n, h, w, k = images.shape
    if h % cells or w % cells:
        raise ValueError(f"images of {h}x{w} do not split into {cells}x{cells} equal blocks")
    return images.reshape(n, cells, h // cells, cells, w // cells, k).mean(axis=(2, 4)).reshape(n, -1)


def class_check(train: UnitArrays, test: UnitArrays, synthetic: UnitArrays, class_names: Sequence[str],
                classes_present: Sequence[int] | None = None) -> dict:
    """Fit the class-check classifier on ``train`` and score ``test`` (its ceiling) and ``synthetic``.

    Args:
      train / test / synthetic: units with ``class_ids`` indexing ``class_names``.
      classes_present: the class ids to score (e.g. those with a non-zero prior); None: every class. A class with no
        synthetic unit is left out either way.
    Returns:
      {"accuracy": share of the scored synthetic units labelled with their class, "per_class": {name: accuracy},
      "real_test_accuracy", "generated": synthetic units scored, "classifier": what was fitted}. A class absent
      from ``train`` is reported as None (the classifier cannot name it: "unknown", not "wrong") and its units are
      not in "accuracy". When no classifier can be fitted (fewer than two classes in train, images that do not
      split into blocks) every number is None and "missing" says why.
    """
    wanted = range(len(class_names)) if classes_present is None else classes_present
    classes = [int(c) for c in wanted if np.any(synthetic.class_ids == c)]
    known = set(np.unique(train.class_ids).tolist())
    h, w = train.images.shape[1:3]
    missing = ("the real train split has fewer than two classes" if len(known) < 2 else
               f"images of {h}x{w} do not split into {CELLS}x{CELLS} blocks" if h % CELLS or w % CELLS else None)
    if missing:
        return {"accuracy": None, "per_class": {class_names[c]: None for c in classes}, "real_test_accuracy": None,
                "generated": 0, "classifier": CLASSIFIER, "missing": missing}

    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=MAX_ITER, C=C).fit(block_means(train.images), train.class_ids)
    scored = np.isin(synthetic.class_ids, [c for c in classes if c in known])
    ids = synthetic.class_ids[scored]
    pred = clf.predict(block_means(synthetic.images[scored])) if len(ids) else ids
    real = clf.predict(block_means(test.images)) == test.class_ids if len(test) else None
    return {"accuracy": float(np.mean(pred == ids)) if len(ids) else None,
            "per_class": {class_names[c]: float(np.mean(pred[ids == c] == c)) if c in known else None
                          for c in classes},
            "real_test_accuracy": float(np.mean(real)) if real is not None else None,
            "generated": int(len(ids)), "classifier": CLASSIFIER}
