"""Benchmark the evaluator's stages: seconds per 1,000 images of each (generation excluded; privacy separate).

    .venv/bin/python bench/evaluate.py --n 2000 --shape 64 64 9 --inception-size 299
    .venv/bin/python bench/evaluate.py --n 10000 --no-inception   # the 10k vs 10k memory/time check

Real and synthetic units are random class-structured crops (tests/fixtures_examples.class_image), so the numbers
measure cost, not quality. Peak resident memory is printed at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)
tf_env.configure()


def make_units(n: int, shape, seed: int, prefix: str):
    from components import schema
    from fixtures_examples import class_image

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 3, n).astype(np.int32)
    images = np.stack([class_image(rng, int(c), 3, shape) for c in ids])
    return schema.UnitArrays(images=images, class_ids=ids, regions=np.array([schema.REGIONS[c] for c in ids], object),
                             level_names=np.array([schema.REGIONS[c] for c in ids], object),
                             patients=np.array([f"{prefix}{i // 6}" for i in range(n)], object))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="units in train, holdout and synthetic each (test: n/4)")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 64, 9), metavar=("H", "W", "K"))
    p.add_argument("--inception-size", type=int, default=299)
    p.add_argument("--no-inception", action="store_true", help="skip the Inception stage")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--privacy", action="store_true", help="also time the privacy evaluator (no model attacks)")
    args = p.parse_args(argv)

    from components.evaluator import core
    from components.evaluator.features.embeddings import inception_embedder
    from components.evaluator.spec import EvaluatorConfig

    shape = tuple(args.shape)
    t0 = time.perf_counter()
    train, holdout = make_units(args.n, shape, 1, "tr"), make_units(args.n, shape, 2, "ho")
    test, synthetic = make_units(max(args.n // 4, 12), shape, 3, "te"), make_units(args.n, shape, 4, "sy")
    print(f"data: 3 x {args.n} + {len(test)} units of {shape} in {time.perf_counter() - t0:.1f} s")
    cfg = EvaluatorConfig(classifier_epochs=args.epochs, inception_input_size=args.inception_size)
    inception = None
    if not args.no_inception:
        import keras

        weights = Path(tempfile.mkdtemp()) / "inception_random.weights.h5"
        keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                       input_shape=(args.inception_size,) * 2 + (3,)).save_weights(weights)
        inception = inception_embedder(weights, args.inception_size, cfg.inception_batch_size)
    timer = core.StageTimer(log=lambda s: print(s, flush=True))
    outcome = core.evaluate_units(train, holdout, test, synthetic, ("cervical", "thoracic", "lumbar"), cfg,
                                  inception=inception, inception_skip_reason="--no-inception", timer=timer)
    if args.privacy:
        from components.evaluator.privacy.attacks import evaluate_privacy
        from components.evaluator.privacy.spec import PrivacyConfig

        pcfg = dataclasses.replace(PrivacyConfig(), pbb_enabled=False, whitebox_enabled=False)
        with timer.stage("privacy", 2 * args.n + args.n):
            evaluate_privacy(train, holdout, synthetic, None, outcome.domain, pcfg, 0)
    print(f"\n{'stage':<22}{'images':>10}{'seconds':>10}{'s / 1000 images':>18}")
    for name, s in timer.stages.items():
        print(f"{name:<22}{s['images']:>10}{s['seconds']:>10.1f}{s['seconds_per_1000_images']:>18.2f}")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory: {peak_gb:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
