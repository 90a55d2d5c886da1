"""Throughput of the preprocess job on the real lumbar MRI, against the floor of just reading the volumes.

  .venv/bin/python bench/preprocess.py [--manifest scans.csv] [--repeats 3] [--workers 2]

For each DirectRunner mode (in_memory, multi_processing with --workers processes) the whole job (plan, Beam
graph, crops, TFRecords, previews, stats) runs --repeats times into fresh folders; the floor is loading and
decompressing the same image and mask volumes with nibabel, nothing else. Prints the median wall time, VUs per
second and job/floor ratio per mode, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import tempfile
import time

from vugan.pipeline import tf_env  # noqa: E402  (oneDNN and threads, before TensorFlow loads)
tf_env.configure()

# The real scans live beside the repository (../shared), never inside it.
REAL = str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "spine-mri-real" / "scans.csv")


def load_floor(tasks) -> float:
    import nibabel as nib
    import numpy as np

    started = time.perf_counter()
    for t in tasks:
        for path in (t.image, t.mask):
            if path:
                np.asanyarray(nib.load(path).dataobj)
    return time.perf_counter() - started


def run_job(tasks, cfg, beam_args) -> tuple[float, int]:
    from vugan.components.preprocess import beam_pipeline

    out = tempfile.mkdtemp(prefix="vugan-bench-")
    try:
        started = time.perf_counter()
        beam_pipeline.make_pipeline(tasks, cfg, out, beam_args).run().wait_until_finish()
        elapsed = time.perf_counter() - started
        with open(os.path.join(out, "stats.json")) as fh:
            written = json.load(fh)["vus_written"]
        return elapsed, written
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=REAL)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    import logging
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    from vugan.components.preprocess.manifest import plan_tasks
    from vugan.pipeline.config import load_config

    cfg = load_config(None).preprocess
    tasks = plan_tasks(args.manifest, cfg, salt="bench")
    floor = statistics.median(load_floor(tasks) for _ in range(args.repeats))
    print(f"floor (load + decompress {len(tasks)} images and masks): {floor:.2f} s  "
          f"[load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs]")
    modes = {"in_memory": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
             f"multi_processing x{args.workers}": ["--direct_running_mode=multi_processing",
                                                   f"--direct_num_workers={args.workers}"]}
    result = {"scans": len(tasks), "floor_s": round(floor, 3), "modes": {}}
    for name, beam_args in modes.items():
        times, written = [], 0
        for _ in range(args.repeats):
            t, written = run_job(tasks, cfg, beam_args)
            times.append(t)
        med = statistics.median(times)
        result["modes"][name] = {"median_s": round(med, 2), "runs_s": [round(t, 2) for t in times],
                                 "vus": written, "vus_per_s": round(written / med, 2),
                                 "ratio_to_floor": round(med / floor, 2)}
        print(f"{name:>22}: {med:6.2f} s median of {[round(t, 1) for t in times]}, {written} VUs, "
              f"{written / med:6.2f} VUs/s, {med / floor:5.1f} x the floor")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
