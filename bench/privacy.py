"""Cost of the image-only privacy evaluation (every distance attack, DOMIAS, memorisation, copies and C_T through
components/evaluator/knn.py, and the transformed-copy test of privacy/copies.py, whose synthetic rows are streamed
chunk by chunk with the projection) at release scale, on random 9x64x64 units: only the cost is meaningful, not the AUCs.

    .venv/bin/python bench/privacy.py                 # 10,000 synthetic vs 2,000 training units, then 100,000 vs 20,000
    .venv/bin/python bench/privacy.py --cases 10000:2000

Each case runs in its own process (so its peak resident memory is its own) with the shipped PrivacyConfig: the
held-out split is half the training split, 10 units per patient. The 100,000-unit synthetic set is generated and
streamed through the fixed projection 4,096 units at a time, as a release would be read shard by shard; the real
splits are held as pixels, as the evaluator holds them. Baseline, in the same process: the nearest-synthetic
search of the first attack done the way this project did it before knn.py (exact blocked numpy distances on the
raw 36,864-pixel rows), on the same candidates; the ratio compares the two for that one search.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)
tf_env.configure()
SHAPE = (64, 64, 9)


def _units(n: int, prefix: str, per_patient: int, rng) -> "UnitArrays":
    from vugan.components.schema import UnitArrays

    classes = rng.integers(0, 3, n).astype(np.int32)
    names = np.array(["cervical", "thoracic", "lumbar"], object)[classes]
    return UnitArrays(rng.uniform(-1, 1, (n, *SHAPE)).astype(np.float32), classes, names, names,
                      np.array([f"{prefix}{i // per_patient}" for i in range(n)], object))


def blocked_numpy_nearest(queries: np.ndarray, refs_chunks, block_rows: int = 1024) -> float:
    """Seconds of an exact nearest-neighbour pass on raw pixels, refs streamed in chunks (the old path)."""
    t = time.perf_counter()
    q = queries.reshape(len(queries), -1)
    qq = np.einsum("ij,ij->i", q, q)
    best = np.full(len(q), np.inf, np.float32)
    for refs in refs_chunks():
        r = refs.reshape(len(refs), -1)
        rr = np.einsum("ij,ij->i", r, r)
        for s in range(0, len(q), block_rows):
            d2 = qq[s:s + block_rows, None] - 2 * q[s:s + block_rows] @ r.T + rr[None]
            best[s:s + block_rows] = np.minimum(best[s:s + block_rows], d2.min(1))
    return time.perf_counter() - t


def one_case(n_syn: int, n_train: int, baseline: bool) -> dict:
    from vugan.components.evaluator import knn
    from vugan.components.evaluator.gate import privacy_outcome
    from vugan.components.evaluator.privacy.attacks import evaluate_privacy
    from vugan.components.evaluator.privacy.spec import PrivacyConfig
    from vugan.components.schema import UnitArrays

    rng = np.random.default_rng(0)
    cfg = PrivacyConfig()
    train, holdout = _units(n_train, "t", 10, rng), _units(n_train // 2, "h", 10, rng)
    chunk = 4096

    def synthetic_chunks():
        g = np.random.default_rng(1)
        for s in range(0, n_syn, chunk):
            yield g.uniform(-1, 1, (min(chunk, n_syn - s), *SHAPE)).astype(np.float32)

    t0 = time.perf_counter()
    proj = knn.Projection(int(np.prod(SHAPE)), cfg.knn_dims)
    from vugan.components.evaluator.privacy.copies import query_rows

    rows, copy_rows = [], {}
    for c in synthetic_chunks():  # each chunk through both: the fixed projection and the copy test's rows
        rows.append(proj(c))
        for name, r in query_rows(c, cfg).items():
            copy_rows.setdefault(name, []).append(r)
    rows = np.concatenate(rows)
    copy_rows = {name: np.concatenate(r) for name, r in copy_rows.items()}
    t_proj = time.perf_counter() - t0
    classes = np.random.default_rng(2).integers(0, 3, n_syn).astype(np.int32)
    names = np.array(["cervical", "thoracic", "lumbar"], object)[classes]
    synthetic = UnitArrays(np.zeros((n_syn, 1, 1, 1), np.float32), classes, names, names,
                           np.array([f"s{i}" for i in range(n_syn)], object))
    t1 = time.perf_counter()
    result = evaluate_privacy(train, holdout, synthetic, None, None, cfg, 0, synthetic_rows=rows,
                              synthetic_copy_rows=copy_rows)
    t_eval = time.perf_counter() - t1
    out = {"synthetic": n_syn, "train": n_train, "holdout": n_train // 2,
           "queries": result.metrics["candidates"]["member_units"] + result.metrics["candidates"]["nonmember_units"],
           "seconds_total": round(t_proj + t_eval, 1), "seconds_projection": round(t_proj, 1),
           "phases": result.metrics["seconds"], "outcome": privacy_outcome(result, cfg)[0]}
    if baseline:
        # The first attack's nearest-synthetic search, old way, same candidates (members of the drawn patients).
        q = train.images[: out["queries"] // 2]
        q = np.concatenate([q, holdout.images[: out["queries"] - len(q)]])
        knn_sec = time.perf_counter()
        knn.Index(rows, cfg.block_rows).search(proj(q), 1)
        knn_sec = time.perf_counter() - knn_sec
        out["nearest_search_seconds"] = {"knn.py": round(knn_sec, 1),
                                         "blocked numpy, raw pixels": round(blocked_numpy_nearest(q, synthetic_chunks), 1)}
        out["nearest_search_seconds"]["ratio"] = round(out["nearest_search_seconds"]["blocked numpy, raw pixels"]
                                                      / max(knn_sec, 1e-9), 1)
    out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="10000:2000,100000:20000", help="SYNTHETIC:TRAIN pairs, comma-separated")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        n_syn, n_train = (int(x) for x in args.one.split(":"))
        print(json.dumps(one_case(n_syn, n_train, args.baseline)))
        return
    print(f"{os.cpu_count()} CPUs visible; units {SHAPE}; one process per case")
    for i, case in enumerate(args.cases.split(",")):
        cmd = [sys.executable, os.path.abspath(__file__), "--one", case] + (["--baseline"] if i == 0 else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{r['synthetic']:>7,} synthetic vs {r['train']:>6,} training ({r['holdout']:,} held-out, "
              f"{r['queries']:,} candidate units): {r['seconds_total']:7.1f} s (projection {r['seconds_projection']} s; "
              f"phases {r['phases']}), peak memory {r['peak_rss_gib']} GiB")
        if "nearest_search_seconds" in r:
            ns = r["nearest_search_seconds"]
            print(f"    nearest-synthetic search: knn.py {ns['knn.py']} s vs blocked numpy on raw pixels "
                  f"{ns['blocked numpy, raw pixels']} s ({ns['ratio']}x)")


if __name__ == "__main__":
    main()
