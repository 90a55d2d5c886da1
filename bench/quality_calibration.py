"""Calibration of the quality gate's fidelity rule (C2ST AUC overall and per class, fixed vu space): the verdict of
each degradation of fresh real patients (components/evaluator/quality/degradations.py) at several cohort sizes.

    .venv/bin/python bench/quality_calibration.py --pool EXAMPLES_DIR --sizes 25,50,100,200 --seeds 3
    .venv/bin/python bench/quality_calibration.py --pool /tmp/quality-cohort/pre --sizes 10,20,29 --seeds 3

The pool's patients (all splits of an Examples artifact) are cut in two halves once: REFERENCE patients (playing the
evaluator's train + holdout) and FRESH patients (the "synthetic" set, as `vugan audit` reads real units: without
their patients). Each seed draws N patients from each half; every unit is embedded once. The verdict is the
shipped gate's (gate.two_sample_rules on privacy.max_c2st_auc). Prints a markdown table: per case and size, the
share of seeds that PASS and the median overall AUC / the largest per-class AUC; a class missing shows as 'missing'.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)
tf_env.configure()


def load_pool(examples: Path):
    from vugan.components.evaluator.run import load_inputs

    manifest, splits = load_inputs(examples)
    from vugan.components.schema import UnitArrays

    parts = list(splits.values())
    pool = UnitArrays(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("images", "class_ids", "regions", "level_names", "patients")))
    return pool, tuple(manifest["properties"]["class_names"])


def halves(patients: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    unique = np.random.default_rng(seed).permutation(np.unique(patients))
    return unique[: len(unique) // 2], unique[len(unique) // 2:]


def judge(ref_f, ref_l, ref_g, syn_f, syn_l, class_names, pcfg, seed) -> dict:
    """The gate's C2ST rule on one draw: {"passed", "overall_auc", "worst_class", "lines"}."""
    from vugan.components.evaluator import core, gate
    from vugan.components.evaluator.results import Evaluation

    feats = {"train": ref_f, "holdout": ref_f[:0], "synthetic": syn_f}
    labels = {"train": ref_l, "holdout": ref_l[:0], "synthetic": syn_l}
    groups = {"train": ref_g, "holdout": ref_g[:0], "synthetic": np.array([f"s{i}" for i in range(len(syn_l))])}
    ts = core.two_sample_in_space(feats, labels, groups, np.arange(len(syn_l)), class_names, seed)
    ok, lines = gate.two_sample_rules(Evaluation.from_dict({"fidelity": {"two_sample": ts}}), pcfg)
    per = [r for r in ts["per_class"].values()]
    worst = "missing" if any(r.get("missing") for r in per) else max(
        (r["auc"] for r in per if r.get("auc") is not None), default=None)
    return {"passed": ok, "overall_auc": ts["overall"]["auc"], "worst_class": worst, "lines": lines}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=Path, help="an Examples artifact (all splits form the pool)")
    ap.add_argument("--blobs", type=int, default=0, help="instead of --pool: this many phantom blob patients "
                                                         "(tests/support/privacy_controls.py), 4 units of 32x32x9")
    ap.add_argument("--sizes", default="25,50,100,200", help="patients per side")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--swap", default="thoracic,lumbar", help="the two classes whose labels are swapped")
    ap.add_argument("--missing", default="thoracic", help="the class left out")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    ap.add_argument("--table-from", default="", help="print the table of a stored --out JSON at today's limit")
    args = ap.parse_args(argv)
    if args.table_from:
        from vugan.components.evaluator.privacy.spec import PrivacyConfig

        stored = json.loads(Path(args.table_from).read_text())
        print(markdown(stored["results"], [str(n) for n in stored["sizes"]], PrivacyConfig().max_c2st_auc))
        return 0

    from vugan.components.evaluator.features.embeddings import vu_embedder
    from vugan.components.evaluator.privacy.spec import PrivacyConfig
    from vugan.components.evaluator.quality import degradations
    from vugan.components.schema import UnitArrays

    t0 = time.perf_counter()
    if args.blobs:
        sys.path.insert(0, str(ROOT / "tests"))
        from support.privacy_controls import blob_cohort
        from vugan.components.schema import REGIONS

        pool, class_names = blob_cohort(args.blobs, 4, size=32, slices=9, seed=3), tuple(REGIONS)
        args.pool = f"blob phantom, {args.blobs} patients"
    else:
        pool, class_names = load_pool(args.pool)
    sizes = [int(s) for s in args.sizes.split(",")]
    ref_patients, fresh_patients = halves(pool.patients, 0)
    if max(sizes) > min(len(ref_patients), len(fresh_patients)):
        raise SystemExit(f"--sizes: the pool has {len(np.unique(pool.patients))} patients, so at most "
                         f"{min(len(ref_patients), len(fresh_patients))} a side")
    pick = lambda mask: UnitArrays(*(getattr(pool, f)[mask] for f in  # noqa: E731
                                     ("images", "class_ids", "regions", "level_names", "patients")))
    ref, fresh = pick(np.isin(pool.patients, ref_patients)), pick(np.isin(pool.patients, fresh_patients))
    swap = tuple(class_names.index(c) for c in args.swap.split(","))
    cases = degradations.degraded(fresh, swap, class_names.index(args.missing), seed=0)
    vu = vu_embedder()
    ref_f = vu(ref.images)
    case_f = {k: vu(v.images) for k, v in cases.items()}
    print(f"pool {args.pool}: {len(pool)} units, {len(np.unique(pool.patients))} patients; embedded "
          f"{len(ref) + sum(len(v) for v in cases.values())} units in {time.perf_counter() - t0:.0f} s", flush=True)
    pcfg = PrivacyConfig()
    results: dict = {}
    for n in sizes:
        for seed in range(args.seeds):
            rng = np.random.default_rng([n, seed])
            r_mask = np.isin(ref.patients, rng.choice(ref_patients, n, replace=False))
            f_pat = rng.choice(fresh_patients, n, replace=False)
            for case, units in cases.items():
                m = np.isin(units.patients, f_pat)
                res = judge(ref_f[r_mask], ref.class_ids[r_mask], ref.patients[r_mask].astype(str), case_f[case][m],
                            units.class_ids[m], class_names, pcfg, seed)
                results.setdefault(case, {}).setdefault(n, []).append(res)
        print(f"size {n} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(markdown(results, sizes, pcfg.max_c2st_auc))
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    if args.out:
        Path(args.out).write_text(json.dumps({"pool": str(args.pool), "sizes": sizes, "seeds": args.seeds,
                                              "results": results}, indent=2, default=float) + "\n")
    return 0


def passes(r: dict, limit: float) -> bool:
    """The C2ST rule re-read from one stored draw (its AUCs and lines), for a table at another limit."""
    if r["worst_class"] == "missing" or any("not judged" in x or "too few units" in x for x in r["lines"]):
        return False
    return r["overall_auc"] <= limit and (r["worst_class"] is None or r["worst_class"] <= limit)


def markdown(results: dict, sizes: list[int], limit: float) -> str:
    def cell(rows):
        share = np.mean([passes(r, limit) for r in rows])
        verdict = "PASS" if share == 1 else "FAIL" if share == 0 else f"PASS {100 * share:.0f}%"
        worst = [r["worst_class"] for r in rows]
        w = "missing" if "missing" in worst else f"{np.median([x for x in worst if x is not None]):.2f}"
        return f"{verdict} ({np.median([r['overall_auc'] for r in rows]):.2f} / {w})"

    head = ["case"] + [f"{n} patients" for n in sizes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, by_size in results.items():
        lines.append("| " + " | ".join([case] + [cell(by_size[n]) for n in sizes]) + " |")
    lines.append(f"\nCell: verdict over the seeds (PASS k% where they differ) and the median C2ST AUC overall / "
                 f"the median of the largest per-class AUC; rule: each <= {limit:g} (privacy.max_c2st_auc).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
