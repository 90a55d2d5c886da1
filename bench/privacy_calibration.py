"""Calibration of the release gate on phantom units: how often it passes a private set and fails a leaky one.

    .venv/bin/python bench/privacy_calibration.py                       # builds an 800-patient 32x32x9 phantom pool
    .venv/bin/python bench/privacy_calibration.py --pool EXAMPLES_DIR --sizes 25,50,100,200 --seeds 20

Scenarios (tests/support/privacy_controls.py): (a) null: the "synthetic" units are real units of fresh patients of
the same cohort; (b) one training patient copied; (c) 5% of synthetic units near-copies of training units; (d) a
generator that memorised 10% of the training patients (reproduced beyond the copy radius). Each seed draws disjoint
random patients from the pool: N members, 1.5 N held-out (N candidates + 0.5 N DOMIAS reference) and N fresh. The
gate is the shipped PrivacyConfig (bootstrap 20: the bootstrap interval is shown to reviewers, the gate does not use it).
Prints a markdown table of outcome shares (docs/privacy.md).

    .venv/bin/python bench/privacy_calibration.py --memorised --sizes 100 --seeds 20 [--shares 5,10]

--memorised runs the memorised-share scenarios instead (privacy_controls.memorised_scenarios: every unit of 2, 5 or
10% of the training patients given back under one identity-keeping change of privacy/identity_transforms.py) and
the null beside them, and says for each what the membership tests caught on their own (tail, quantile, AUC on a
gated attack) apart from the copy check, and the detectable memorised share the verdict stated.
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_pool(out: Path, patients: int, seed: int) -> Path:
    examples = out / f"pool-{patients}p-32px"
    if (examples / "artifact.json").exists():
        return examples
    vugan = [sys.executable, "-m", "vugan.pipeline.cli"]
    phantom = out / f"phantom-{patients}p"
    if not (phantom / "artifact.json").exists():
        subprocess.run([*vugan, "phantom", "--out", str(phantom), "--patients", str(patients), "--seed", str(seed)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*vugan, "preprocess", "--manifest", str(phantom / "scans.csv"), "--out", str(examples),
                    "--set", "preprocess.image_size=[32,32]"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return examples


def load_pool(examples: Path):
    from vugan.components.schema import UnitArrays, load_split

    parts = [load_split(str(examples), s) for s in ("train", "holdout", "test")]
    return UnitArrays(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("images", "class_ids", "regions", "level_names", "patients")))


def memorised_table(pool, sizes, seeds: int, shares, disguises, cfg, seed_start: int = 0,
                    null: bool = True) -> None:
    """One row per (size, scenario): shares of seeds caught by the membership tests, by the gate (with the copy
    check as on this branch), passed, the mean stated detectable share and seconds per draw."""
    from vugan.components.evaluator.gate import LEAK, NO_LEAK
    from support.privacy_controls import calibration_sets, judge_memorised, memorised_scenarios

    print("| patients a side | scenario | membership tests fire | gate: leak found | gate: passes | "
          "stated detectable share | s / draw |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        rows = [("null (fresh real patients)", None, None)] if null else []
        rows += [(key, s, d) for key, (s, d) in memorised_scenarios().items()
                 if round(100 * s) in shares and (not disguises or d in disguises)]
        for label, share, disguise in rows:
            t = time.perf_counter()
            if share is None:
                res = _judge_null(pool, n, range(seed_start, seed_start + seeds), cfg, calibration_sets)
            else:
                res = judge_memorised(pool, n, share, disguise, range(seed_start, seed_start + seeds), cfg)
            sec = (time.perf_counter() - t) / seeds
            det = [r["detectable_share"] for r in res if r["detectable_share"] is not None]
            print(f"| {n} | {label} | {np.mean([r['tests'] for r in res]):.2f} | "
                  f"{np.mean([r['outcome'] == LEAK for r in res]):.2f} | "
                  f"{np.mean([r['outcome'] == NO_LEAK for r in res]):.2f} | "
                  f"{(100 * np.mean(det)) if det else float('nan'):.0f}% | {sec:.1f} |", flush=True)


def _judge_null(pool, n, seeds, cfg, calibration_sets) -> list[dict]:
    from vugan.components.evaluator.gate import privacy_outcome
    from vugan.components.evaluator.privacy.attacks import evaluate_privacy

    out = []
    for seed in seeds:
        train, holdout, syn = calibration_sets(pool, n, "a", seed)
        r = evaluate_privacy(train, holdout, syn, None, None, cfg, seed)
        out.append({"outcome": privacy_outcome(r, cfg)[0],
                    "tests": any(a["patient"]["tests"]["finding"] for a in r.attacks.values() if a.get("gated")),
                    "detectable_share": (r.detectable.get("memorised") or {}).get("share")})
    return out


def main(argv=None) -> None:
    from vugan.components.evaluator.gate import LEAK, NO_LEAK, TOO_FEW
    from vugan.components.evaluator.privacy.spec import PrivacyConfig
    from support.privacy_controls import SCENARIOS, calibrate

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pool", type=Path, help="an Examples artifact whose units (all splits) form the pool")
    p.add_argument("--work", type=Path, default=Path("/tmp/vugan-calibration"))
    p.add_argument("--patients", type=int, default=800)
    p.add_argument("--sizes", default="25,50,100,200")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--memorised", action="store_true", help="the memorised-share scenarios (see above)")
    p.add_argument("--shares", default="2,5,10", help="with --memorised: memorised shares in percent")
    p.add_argument("--disguises", default="", help="with --memorised: comma-separated disguise names (all if empty)")
    p.add_argument("--blob-pool", action="store_true",
                   help="a quick pool of 800 blob patients (16x16x3, 4 units each; support.privacy_controls.blob_cohort)")
    p.add_argument("--seed-start", type=int, default=0, help="with --memorised: first seed")
    p.add_argument("--no-null", action="store_true", help="with --memorised: leave the null row out")
    p.add_argument("--copies", action="store_true",
                   help="the transformed-copy scenarios (one training patient copied under each transform) and the "
                        "null's per-patient false-positive rate, instead of scenarios a-d")
    p.add_argument("--scenarios", help="with --copies: comma-separated subset of the copy scenario names")
    p.add_argument("--grid", action="store_true",
                   help="every transformed-copy and memorised scenario (shares --shares) judged by the copy test in "
                        "one call per draw (support.privacy_controls.copy_grid_draw), with the null's fresh patients")
    p.add_argument("--copy-test-only", action="store_true",
                   help="with --copies: run the transformed-copy test alone (no attacks; the gate and old-radius "
                        "columns read n/a)")
    args = p.parse_args(argv)
    if args.blob_pool:
        from support.privacy_controls import blob_cohort

        pool = blob_cohort(args.patients, 4, seed=0)
    else:
        pool = load_pool(args.pool or build_pool(args.work, args.patients, seed=11))
    n_pat = len(np.unique(pool.patients))
    cfg = PrivacyConfig(bootstrap=20)
    print(f"pool: {len(pool)} units of {n_pat} patients, {pool.images.shape[1:]}; seeds 0..{args.seeds - 1}")
    if args.memorised:
        memorised_table(pool, [int(x) for x in args.sizes.split(",")], args.seeds,
                        {int(x) for x in args.shares.split(",")},
                        [d for d in args.disguises.split(",") if d], cfg, args.seed_start, not args.no_null)
        return
    if args.grid:
        grid_table(pool, [int(x) for x in args.sizes.split(",")], args.seeds, cfg,
                   tuple(int(x) / 100 for x in args.shares.split(",")), args.seed_start)
        return
    if args.copies:
        copies_table(pool, [int(x) for x in args.sizes.split(",")], args.seeds, cfg, args.scenarios,
                     args.copy_test_only)
        return
    print("| patients a side | scenario | passes (no leak found) | leak found | not enough patients | s / draw |")
    print("|---|---|---|---|---|---|")
    for n in (int(x) for x in args.sizes.split(",")):
        for scenario, label in SCENARIOS.items():
            t = time.perf_counter()
            counts = collections.Counter(calibrate(pool, n, scenario, range(args.seeds), cfg))
            sec = (time.perf_counter() - t) / args.seeds
            share = {k: counts[k] / args.seeds for k in (NO_LEAK, LEAK, TOO_FEW)}
            print(f"| {n} | ({scenario}) {label} | {share[NO_LEAK]:.2f} | {share[LEAK]:.2f} | {share[TOO_FEW]:.2f} "
                  f"| {sec:.1f} |", flush=True)


def copies_table(pool, sizes, seeds: int, cfg, only: str | None, copy_test_only: bool = False) -> None:
    """One row per size and scenario: share of seeds where the transformed-copy test named a training patient, the
    gate's leak share, the old copy radius's share, and the fresh patients flagged (cross-fitted) with the
    Clopper-Pearson interval of that per-patient rate, pooled over seeds."""
    from vugan.components.evaluator.gate import LEAK
    from vugan.components.evaluator.privacy.copies import clopper_pearson
    from support.privacy_controls import COPY_SCENARIOS, calibrate_copies

    wanted = only.split(",") if only else None
    names = (["a"] if not wanted or "null" in wanted else []) + [
        s for s in COPY_SCENARIOS if not wanted or s.split(": ", 1)[1] in wanted]
    print("| patients a side | scenario | copy test flags a training patient | gate: leak found | old copy radius "
          "flags | fresh patients flagged (cross-fitted) [95% CI] | s / draw |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        for scenario in names:
            t = time.perf_counter()
            rows = calibrate_copies(pool, n, scenario, range(seeds), cfg, copy_test_only)
            sec = (time.perf_counter() - t) / seeds
            fp, fresh = sum(r["fresh_flagged"] for r in rows), sum(r["fresh_patients"] for r in rows)
            lo, hi = clopper_pearson(fp, fresh)
            label = "(a) null: fresh real patients" if scenario == "a" else scenario
            gate = "n/a" if copy_test_only else f"{np.mean([r['outcome'] == LEAK for r in rows]):.2f}"
            old = "n/a" if copy_test_only else f"{np.mean([r['old_copied'] > 0 for r in rows]):.2f}"
            print(f"| {n} | {label} | {np.mean([r['copied'] > 0 for r in rows]):.2f} | {gate} | {old} | "
                  f"{fp} of {fresh} [{lo:.3f}, {hi:.3f}] | "
                  f"{sec:.1f} |", flush=True)


def grid_table(pool, sizes, seeds: int, cfg, shares, seed_start: int = 0) -> None:
    """One row per size and scenario: the share of seeds in which the leak was found, by the transform-invariant copy
    test alone and by the gate's two copy checks together (that test or the pixel-space copy radius of
    memorisation.py: either is a leak in the gate), and the mean share of the scenario's patients the gate's checks
    named. For the null: the fresh patients with a unit flagged by either check (in sample: their units are queries
    like any synthetic unit) and the copy test's cross-fitted per-patient rate, each with its Clopper-Pearson interval
    pooled over seeds. Both checks judge each unit on its own against radii from held-out patients, so pooling the
    scenarios' units into one query set gives each scenario its own verdict."""
    from vugan.components.evaluator import knn
    from vugan.components.evaluator.privacy.copies import clopper_pearson, transformed_copy_report
    from vugan.components.evaluator.privacy.memorisation import copy_radius
    from support.privacy_controls import copy_grid_draw

    print("| patients a side | scenario | copy test finds it (seeds) | gate's copy checks find it (seeds) | "
          "its patients named (mean) | seeds | s / draw |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        by_test: dict = collections.defaultdict(list)
        by_gate: dict = collections.defaultdict(list)
        named: dict = collections.defaultdict(list)
        null_flagged = null_patients = cf_flagged = cf_patients = 0
        t = time.perf_counter()
        for seed in range(seed_start, seed_start + seeds):
            train, holdout, queries, groups = copy_grid_draw(pool, n, seed, shares)
            metrics, mask = transformed_copy_report(train.images, train.patients, holdout.images, holdout.patients,
                                                    queries, cfg=cfg, seed=seed, max_named=0)
            proj = knn.Projection(int(np.prod(train.images.shape[1:])), cfg.knn_dims)
            index = knn.Index(proj(train.images), cfg.block_rows)
            radius = copy_radius(index.search(proj(holdout.images), 1)[0][:, 0], cfg.copy_quantile, cfg.copy_factor)
            either = mask | (index.search(proj(queries), 1)[0][:, 0] < radius)
            for key, (rows, patients) in groups.items():
                if key == "null":
                    null_flagged += len(np.unique(patients[either[rows]]))
                    null_patients += len(np.unique(patients))
                    continue
                by_test[key].append(bool(mask[rows].any()))
                by_gate[key].append(bool(either[rows].any()))
                named[key].append(len(np.unique(patients[either[rows]])) / len(np.unique(patients)))
            fp = metrics["false_positive_rate_per_patient"]
            cf_flagged, cf_patients = cf_flagged + fp["flagged"], cf_patients + fp["fresh_patients"]
        sec = (time.perf_counter() - t) / seeds
        lo, hi = clopper_pearson(null_flagged, null_patients)
        clo, chi = clopper_pearson(cf_flagged, cf_patients)
        print(f"| {n} | null: fresh patients with a unit flagged | — | {null_flagged} of {null_patients} "
              f"[{lo:.3f}, {hi:.3f}]; copy test cross-fitted on held-out: {cf_flagged} of {cf_patients} "
              f"[{clo:.3f}, {chi:.3f}] | — | {seeds} | {sec:.1f} |", flush=True)
        for key in by_test:
            print(f"| {n} | {key} | {np.mean(by_test[key]):.2f} | {np.mean(by_gate[key]):.2f} | "
                  f"{np.mean(named[key]):.2f} | {seeds} | {sec:.1f} |", flush=True)

if __name__ == "__main__":
    main()
