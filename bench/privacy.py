"""Time each privacy attack per 1,000 queries on random 9x64x64 units and an untrained ac-GAN of the project's
architecture (models/acgan.py). Random data: only the cost is meaningful, not the AUCs.

    .venv/bin/python bench/privacy.py --queries 1000 --synthetic 10000 --width 32 --pbb-queries 32

Prints one line per attack: seconds per 1,000 queries, and the peak resident memory of the process.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)
tf_env.configure()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--queries", type=int, default=1000, help="candidate units for the distance attacks")
    p.add_argument("--synthetic", type=int, default=10000, help="synthetic units (references)")
    p.add_argument("--train", type=int, default=2000, help="training units for the memorisation pass")
    p.add_argument("--shape", default="64,64,9")
    p.add_argument("--width", type=int, default=32, help="ac-GAN width s (reference: 128)")
    p.add_argument("--pbb-queries", type=int, default=32, help="queries timed for the reconstruction attack")
    p.add_argument("--pbb-steps", type=int, default=200)
    p.add_argument("--pbb-restarts", type=int, default=3)
    p.add_argument("--block-rows", type=int, default=1024)
    args = p.parse_args(argv)

    from components.evaluator.mia_distances import query_distances
    from components.evaluator.mia_model_attacks import discriminator_scores, reconstruction_errors
    from components.evaluator.privacy_memorisation import memorisation_report
    from models.acgan import ArchConfig, build_discriminator, build_generator

    shape = tuple(int(x) for x in args.shape.split(","))
    rng = np.random.default_rng(0)

    def units(n):
        return rng.uniform(-1, 1, (n, *shape)).astype(np.float32)

    q, syn, tr, ho = units(args.queries), units(args.synthetic), units(args.train), units(args.train // 4)
    arch = ArchConfig(image_shape=shape, num_classes=3, noise_dim=100, width=args.width)
    gen, disc = build_generator(arch), build_discriminator(arch)
    print(f"units {shape}, {args.queries} queries, {args.synthetic} synthetic; ac-GAN width {args.width}: generator "
          f"{gen.count_params():,} / discriminator {disc.count_params():,} parameters; "
          f"{os.cpu_count()} CPUs visible")

    def report(name, seconds, n):
        print(f"{name:58s} {1000 * seconds / n:9.2f} s / 1000 queries")

    t = time.perf_counter()
    query_distances(q, syn, block_rows=args.block_rows, median=True, density_quantile=0.01)
    report(f"distance attacks, pixel (nearest, median, density) vs {args.synthetic}", time.perf_counter() - t, len(q))

    t = time.perf_counter()
    memorisation_report(tr, ho, syn[:args.train], repeats=5, n_cells=10, min_cell=20, copy_quantile=0.01,
                        copy_factor=0.5, block_rows=args.block_rows, seed=0)
    report(f"memorisation (per synthetic unit; {args.train} train, {len(ho)} holdout)", time.perf_counter() - t,
           args.train)

    c = rng.integers(0, 3, len(q)).astype(np.int32)
    discriminator_scores(disc, q[:8], c[:8])  # build / trace once
    _, _, sec = discriminator_scores(disc, q, c)
    report("white-box LOGAN (discriminator logit + aux confidence)", sec, 1)

    n = args.pbb_queries
    reconstruction_errors(gen, 100, 3, q[:n], c[:n], steps=2, restarts=1, lr=0.05, batch=n, class_mode="query",
                          seed=0)  # trace once
    _, sec = reconstruction_errors(gen, 100, 3, q[:n], c[:n], steps=args.pbb_steps, restarts=args.pbb_restarts,
                                   lr=0.05, batch=n, class_mode="query", seed=0)
    report(f"partial black-box GAN-Leaks ({args.pbb_steps} steps x {args.pbb_restarts} restarts, batch {n})", sec, 1)
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
