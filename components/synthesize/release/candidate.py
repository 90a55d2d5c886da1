"""The release candidate: the very units synthesize will publish, staged by the evaluator and judged there.

The evaluator draws the candidate (same model, generator variant, seed and count as the release) under
``evaluate/candidate/`` (records only: no NIfTI, no previews, no datasheet, so nothing there is shareable), records
which near-copies the release filter dropped, and puts the candidate's content digest into verdict.json.
Synthesize publishes these units, read back through :func:`candidate_sampler`.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vugan.components import schema
from vugan.components.synthesize.core import SPLIT, Geometry, SampleFn, synthesize
from vugan.components.synthesize.release.verdict import ReleaseMismatch

CANDIDATE = "candidate"
FILTER_FILE = "release_filter.json"


def stage_candidate(sample: SampleFn, class_names: Sequence[str], conditioning: str, cfg, out_dir: Path,
                    class_prior=None, log: Callable[[str], None] = print):
    """Draw the release candidate into ``out_dir`` (one shard, records only); returns it as UnitArrays whose
    ``patients`` are the unit ids."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    synthesize(sample, class_names, conditioning, cfg.units_per_class, cfg.seed, out_dir, Geometry(None, None),
               shards=1, write_volumes=False, preview_units=0, log=log, class_prior=class_prior)
    shutil.rmtree(out_dir / "previews", ignore_errors=True)
    return schema.load_split(str(out_dir), SPLIT)


def write_filter(candidate_dir: Path, enabled: bool, dropped: Sequence[str], rule: str) -> dict:
    record = {"enabled": bool(enabled), "dropped_units": sorted(str(u) for u in dropped), "rule": rule}
    (Path(candidate_dir) / FILTER_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_filter(candidate_dir: str | Path) -> dict:
    """The release filter's record (what :func:`write_filter` wrote)."""
    return json.loads((Path(candidate_dir) / FILTER_FILE).read_text())


def candidate_digest(candidate_dir: str | Path) -> str:
    """SHA-256 of the candidate's CONTENT: every unit's id, class and float32 pixels, in record order, and the
    filter file (file bytes would not do: the gzip container differs between two writes of the same records)."""
    root = Path(candidate_dir)
    h = hashlib.sha256()
    for rec in schema.iter_records(schema.shard_files(str(root), SPLIT)):
        h.update(f"{rec.patient}\0{rec.class_id}\0".encode())
        h.update(np.ascontiguousarray(rec.image, np.float32).tobytes())
    if (root / FILTER_FILE).is_file():
        h.update((root / FILTER_FILE).read_bytes())
    return h.hexdigest()


def candidate_sampler(candidate_dir: str | Path) -> SampleFn:
    """A sampling function that returns the staged candidate's units for each (class, chunk seed)."""
    with open(Path(candidate_dir) / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    units = schema.load_split(str(candidate_dir), SPLIT)  # one shard: records in manifest order
    by_seed: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_seed.setdefault(int(row["seed"]), []).append(i)

    def sample(class_ids: np.ndarray, seed: int) -> np.ndarray:
        idx = by_seed.get(int(seed), [])
        if len(idx) != len(class_ids) or not np.all(units.class_ids[idx] == class_ids):
            raise ReleaseMismatch(f"synthesize: the candidate holds no chunk with seed {seed} of these classes")
        return units.images[idx]

    return sample
