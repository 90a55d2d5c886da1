"""Are generated units recognisably of their class? A region classifier trained on REAL crops labels generated ones.

    python bench/class_check.py runs/00001-demo/preprocess runs/00001-demo/train [--per-class 100] [--grid out.png]

The classifier is deliberately simple and independent of the GAN (logistic regression on 16x16 block means of all
K slices), so a high score means the generator reproduces the gross anatomy that separates the regions, not that it
fooled its own auxiliary head. It prints the classifier's accuracy on the real test split (its own ceiling) and on
generated units, overall and per class. Classes absent from training (prior 0) are left out. The check itself is
the evaluator's (utility.class_check in metrics.json); this script adds the per-class draw and the grid.
"""
from __future__ import annotations

import argparse

from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)
tf_env.configure()

import numpy as np  # noqa: E402


def class_check(train, test, bundle, *, per_class: int = 100, seed: int = 0) -> dict:
    """Generate ``per_class`` units of every class with a non-zero prior and score them with the product's class
    check (components/evaluator/quality/class_check.py, fitted on ``train``, a schema split, and scored on
    ``test``); the generated units come back with the numbers, for the grid."""
    from vugan.components.evaluator.quality.class_check import class_check as score
    from vugan.components.schema import UnitArrays
    from vugan.models.bundle import generate

    prior = bundle.info.get("class_prior") or [1.0] * len(bundle.class_names)
    classes = [c for c in range(len(bundle.class_names)) if prior[c] > 0]
    ids = np.repeat(np.array(classes, np.int32), per_class)
    fake = generate(bundle, ids, seed=seed)
    none = np.full(len(ids), "", object)  # the check reads images and class ids only
    synthetic = UnitArrays(images=fake, class_ids=ids, regions=none, level_names=none, patients=none)
    return {**score(train, test, synthetic, bundle.class_names, classes),
            "images": fake, "class_ids": ids, "classes": classes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("examples")
    parser.add_argument("model")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", help="write real (top) and generated (bottom) centre slices here")
    args = parser.parse_args()

    from vugan.components import schema
    from vugan.models.bundle import load_model_bundle

    train, test = schema.load_split(args.examples, "train"), schema.load_split(args.examples, "test")
    result = class_check(train, test, load_model_bundle(args.model), per_class=args.per_class, seed=args.seed)
    print(f"real test split: accuracy {result['real_test_accuracy']:.3f} ({len(test)} units)")
    print(f"generated units: {result['accuracy']:.3f} labelled with their class "
          f"({result['generated']} units); per class {result['per_class']}")
    if args.grid:
        save_grid(args.grid, train, result)


def save_grid(path, train, result: dict) -> None:
    """Centre slices: 8 real units per class (top rows), then 8 generated ones per class."""
    from PIL import Image

    fake, ids, classes = result["images"], result["class_ids"], result["classes"]
    mid = fake.shape[-1] // 2
    rows = [np.concatenate([train.images[train.class_ids == c][j, :, :, mid] for j in range(8)], 1)
            for c in classes if np.sum(train.class_ids == c) >= 8]
    rows += [np.concatenate([fake[ids == c][j, :, :, mid] for j in range(8)], 1) for c in classes]
    grid = np.concatenate(rows, 0)
    Image.fromarray(((grid + 1) / 2 * 255).clip(0, 255).astype(np.uint8)).save(path)

if __name__ == "__main__":
    main()
