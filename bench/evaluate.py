"""Benchmark the evaluator: seconds per 1,000 units of each feature-space stage before (the evaluator-trained
domain encoder, main before issue 12) and after (the fixed vu-encoder), medians of --repeats; then the whole
evaluation (every stage of core.evaluate_units, privacy optional) of --synthetic synthetic vs --real real units.

    nice -n 10 .venv/bin/python bench/evaluate.py                          # 10,000 synthetic vs 2,000 real
    nice -n 10 .venv/bin/python bench/evaluate.py --synthetic 2000 --real 600 --repeats 3 --no-inception

Real and synthetic units are random class-structured crops (tests/support/examples.class_image), so the numbers
measure cost, not quality. The real units are split 60/20/20 into train/holdout/test as preprocess does. Both
encoders run in this process, on the same units, so the ratio is like for like. Peak resident memory at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)
tf_env.configure()


def make_units(n: int, shape, seed: int, prefix: str):
    from vugan.components import schema
    from support.examples import class_image

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 3, n).astype(np.int32)
    images = np.stack([class_image(rng, int(c), 3, shape) for c in ids])
    return schema.UnitArrays(images=images, class_ids=ids, regions=np.array([schema.REGIONS[c] for c in ids], object),
                             level_names=np.array([schema.REGIONS[c] for c in ids], object),
                             patients=np.array([f"{prefix}{i // 6}" for i in range(n)], object))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def feature_stages(train, holdout, test, synthetic, cfg, repeats: int) -> list[tuple[str, str, int, float]]:
    """(encoder, stage, units, median seconds) for the domain encoder (before) and the vu-encoder (after)."""
    from vugan.components.evaluator import core
    from vugan.components.evaluator.features.embeddings import domain_embedder, vu_embedder
    from vugan.components.evaluator.quality import utility

    sets = {"train": train, "holdout": holdout, "synthetic": synthetic}
    labels = {k: v.class_ids for k, v in sets.items()}
    groups = {k: v.patients for k, v in sets.items()}
    sub = core.matched_subsample(synthetic.class_ids, holdout.class_ids, np.random.default_rng(0))
    n_embed = sum(len(v) for v in sets.values())
    settings = utility.ClassifierSettings.from_config(cfg)
    rows = []
    runs: dict[tuple, list] = {}
    for _ in range(repeats):
        # before: a CNN trained in the run (on main the TRTR classifier on train; here the TEST split, same cost
        # per unit), then its embedding and the fidelity metrics on it
        clf, sec = timed(lambda: utility.train_classifier(test.images, test.class_ids, 3, settings, cfg.seed,
                                                          groups=test.patients.astype(str)))
        runs.setdefault(("domain (before)", "train encoder", len(test)), []).append(sec)
        for key, make in (("domain (before)", lambda: domain_embedder(clf, batch_size=cfg.batch_size)),
                          ("vu-encoder-v1 (after)", lambda: vu_embedder())):
            emb, sec = timed(make)
            if key.startswith("vu"):
                runs.setdefault((key, "load + sha256 check", 0), []).append(sec)
            feats, sec = timed(lambda: {k: emb(v.images) for k, v in sets.items()})
            runs.setdefault((key, "embed", n_embed), []).append(sec)
            _, sec = timed(lambda: core.fidelity_in_space(feats, labels, groups, ("cervical", "thoracic", "lumbar"),
                                                          cfg, cfg.seed))
            runs.setdefault((key, "FD/KD/PRDC", n_embed), []).append(sec)
    for (enc, stage, n), secs in runs.items():
        rows.append((enc, stage, n, statistics.median(secs)))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synthetic", type=int, default=10000, help="synthetic units")
    p.add_argument("--real", type=int, default=2000, help="real units, split 60/20/20 into train/holdout/test")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 64, 9), metavar=("H", "W", "K"))
    p.add_argument("--repeats", type=int, default=3, help="repeats of the feature-space stages (median shown)")
    p.add_argument("--inception-size", type=int, default=299)
    p.add_argument("--no-inception", action="store_true", help="skip the Inception stage of the whole evaluation")
    p.add_argument("--no-whole", action="store_true", help="only the feature-space stages")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--privacy", action="store_true", help="also time the privacy evaluator (no model attacks)")
    p.add_argument("--rerun", action="store_true",
                   help="evaluate a second time on the same real units: the real-split features then come from the "
                        "feature cache (evaluator.feature_cache), as when a user evaluates another model")
    args = p.parse_args(argv)

    from vugan.components.evaluator import core
    from vugan.components.evaluator.features.embeddings import inception_embedder
    from vugan.components.evaluator.spec import EvaluatorConfig

    shape = tuple(args.shape)
    n_train, n_holdout = round(0.6 * args.real), round(0.2 * args.real)
    t0 = time.perf_counter()
    train, holdout = make_units(n_train, shape, 1, "tr"), make_units(n_holdout, shape, 2, "ho")
    test, synthetic = make_units(args.real - n_train - n_holdout, shape, 3, "te"), make_units(args.synthetic, shape, 4,
                                                                                               "sy")
    print(f"data: {len(train)} train + {len(holdout)} holdout + {len(test)} test real, {len(synthetic)} synthetic "
          f"units of {shape} in {time.perf_counter() - t0:.1f} s", flush=True)
    # An empty feature cache of its own: the first whole evaluation is what a user gets on new data (cold), the
    # --rerun one what they get evaluating another model on the same data (warm).
    cfg = EvaluatorConfig(classifier_epochs=args.epochs, inception_input_size=args.inception_size,
                          feature_cache=tempfile.mkdtemp(prefix="vugan-bench-features-"))

    rows = feature_stages(train, holdout, test, synthetic, cfg, args.repeats)
    print(f"\nfeature-space stages, median of {args.repeats}")
    print(f"{'encoder':<24}{'stage':<22}{'units':>8}{'seconds':>10}{'s / 1000 units':>17}")
    for enc, stage, n, sec in rows:
        per = f"{1000 * sec / n:.2f}" if n else "-"
        print(f"{enc:<24}{stage:<22}{n:>8}{sec:>10.2f}{per:>17}")
    n_embed = max(n for _, _, n, _ in rows)
    before = sum(sec for e, _, _, sec in rows if e.startswith("domain"))
    after = sum(sec for e, _, _, sec in rows if e.startswith("vu"))
    print(f"feature space, all stages: before {before:.1f} s, after {after:.1f} s ({1000 * before / n_embed:.2f} vs "
          f"{1000 * after / n_embed:.2f} s per 1,000 embedded units; after / before {after / before:.2f})")

    if not args.no_whole:
        inception = None
        if not args.no_inception:
            import keras

            weights = Path(tempfile.mkdtemp()) / "inception_random.weights.h5"
            keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                           input_shape=(args.inception_size,) * 2 + (3,)).save_weights(weights)
            inception = inception_embedder(weights, args.inception_size, cfg.inception_batch_size)
        for run in ("cold feature cache", "warm feature cache (--rerun)")[:2 if args.rerun else 1]:
            timer = core.StageTimer(log=lambda s: print(s, flush=True))
            t_all = time.perf_counter()
            outcome = core.evaluate_units(train, holdout, test, synthetic, ("cervical", "thoracic", "lumbar"), cfg,
                                          inception=inception, inception_skip_reason="--no-inception", timer=timer)
            if args.privacy:
                from vugan.components.evaluator.privacy.attacks import evaluate_privacy
                from vugan.components.evaluator.privacy.spec import PrivacyConfig

                pcfg = dataclasses.replace(PrivacyConfig(), pbb_enabled=False, whitebox_enabled=False)
                with timer.stage("privacy", len(train) + len(holdout) + len(synthetic)):
                    evaluate_privacy(train, holdout, synthetic, None, outcome.domain, pcfg, 0)
            total = time.perf_counter() - t_all
            print(f"\nwhole evaluation ({run}): {len(synthetic)} synthetic vs {args.real} real units")
            print(f"{'stage':<22}{'units':>10}{'seconds':>10}{'s / 1000 units':>17}  real features")
            for name, s in timer.stages.items():
                cached = "/".join(sorted(set(s.get("real_feature_cache", {}).values())))
                print(f"{name:<22}{s['images']:>10}{s['seconds']:>10.1f}{s['seconds_per_1000_images']:>17.2f}  "
                      f"{cached}")
            print(f"{'total':<22}{'':>10}{total:>10.1f}")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory: {peak_gb:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
