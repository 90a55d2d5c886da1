"""The shareable synthetic dataset: units drawn from the generator, written in the real data's formats.

Nothing here decides whether the set may be shared: the evaluator's verdict does. :func:`release_decision`
refuses a failed (or missing) verdict unless forced, and a forced release is recorded (who, when, why) in the
datasheet and the artifact properties, so the override travels with the data.

Outputs (docs/contracts.md): ``Split-synthetic/data-*.tfrecord.gz`` (``schema.encode``, ``synthetic=1``),
``nifti/<unit>.nii.gz``, ``previews/<class>.png``, ``manifest.csv`` and ``datasheet.md``.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import getpass
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from vugan.components import schema

SPLIT = "synthetic"
# Units generated per call of the sampling function; each chunk has its own derived seed, so the output does not
# depend on memory settings (batch_size only changes how a chunk is split into forward passes).
CHUNK = 1024


class ReleaseRefused(ValueError):
    """The evaluator's verdict did not pass and the release was not forced."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]
    found: bool  # False when verdict.json is missing or unreadable (treated as not passed)


def read_verdict(evaluation_dir: str | Path) -> Verdict:
    """``verdict.json`` of an Evaluation artifact; anything but ``"passed": true`` counts as not passed."""
    path = Path(evaluation_dir) / "verdict.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return Verdict(False, (f"no readable verdict at {path} ({type(exc).__name__})",), found=False)
    reasons = data.get("reasons") or []
    if not isinstance(reasons, list):
        reasons = [str(reasons)]
    return Verdict(data.get("passed") is True, tuple(str(r) for r in reasons), found=True)


def read_metrics(evaluation_dir: str | Path) -> dict:
    """``metrics.json`` or {} (the datasheet says so) when it is missing or not a JSON object."""
    try:
        data = json.loads((Path(evaluation_dir) / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def headline_metrics(metrics: dict, limit: int = 14) -> dict[str, float]:
    """Scalar metrics worth a line in the datasheet: the evaluator's own choice, ``metrics["headline"]``
    (components/evaluator/report/headline.py); for a metrics.json written without one, the same selection made here."""
    from vugan.components.evaluator.report.headline import numeric_leaves, select_headline

    if isinstance(metrics.get("headline"), dict):
        return dict(list(numeric_leaves(metrics["headline"]))[:limit])
    return select_headline(metrics, limit)


def release_decision(verdict: Verdict, force: bool, who: str | None = None, when: str | None = None) -> dict:
    """The release record; raises :class:`ReleaseRefused` for a failed verdict without ``force``."""
    if verdict.passed:
        return {"passed": True, "forced": False, "reasons": list(verdict.reasons)}
    if not force:
        reasons = "; ".join(verdict.reasons) or "no reason given"
        raise ReleaseRefused(
            f"synthesize: the evaluator's verdict did not pass ({reasons}); no synthetic data was written. "
            f"Improve the model, or pass --force-release to release anyway (the override is recorded in the datasheet)")
    return {"passed": False, "forced": True, "reasons": list(verdict.reasons),
            "forced_by": who or _user(), "forced_at": when or _now()}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER", "unknown")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def class_seed(seed: int, class_id: int, chunk: int) -> int:
    """Independent, reproducible seed for (base seed, class, chunk) (numpy SeedSequence mixing)."""
    return int(np.random.SeedSequence([seed, class_id, chunk]).generate_state(1)[0])


def safe_name(class_name: str) -> str:
    """A class name usable in file names ("L4/L5" -> "L4-L5")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", class_name).strip("-") or "class"


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What is known about the crops' voxel size; used for the NIfTI affine and the records."""

    pixel_mm: tuple[float, float] | None  # in-plane (row, column) size, None when the crops have no fixed size
    slice_mm: float | None  # distance between the K parasagittal slices

    def affine(self, shape: Sequence[int]) -> np.ndarray:
        """Voxel (row, column, slice) -> RAS mm, origin at the crop centre. Rows run head to feet (-S), columns
        front to back (-A, the usual sagittal display), slices left to right (+R). Unknown sizes are 1 mm."""
        row, col = self.pixel_mm or (1.0, 1.0)
        sl = self.slice_mm or 1.0
        a = np.array([[0, 0, sl, 0], [0, -col, 0, 0], [-row, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
        a[:3, 3] = -a[:3, :3] @ ((np.asarray(shape[:3], np.float64) - 1) / 2)
        return a


def unit_record(image: np.ndarray, class_id: int, class_names: Sequence[str], conditioning: str,
                unit_id: str, geometry: Geometry) -> schema.UnitRecord:
    """A synthetic unit in the real schema; the level is known only under level conditioning."""
    name = class_names[class_id]
    if conditioning == "level":
        parts = name.split("/")
        upper = schema.LEVEL_CODES.get(parts[0], 0)
        lower = schema.LEVEL_CODES.get(parts[-1], upper)
        level_name, region = name, schema.unit_region(name)
    else:
        level_name, upper, lower, region = "", 0, 0, name
    return schema.UnitRecord(
        image=image.astype(np.float32), level_name=level_name, upper_code=upper, lower_code=lower, region=region,
        class_id=class_id, patient=unit_id, scan=unit_id, sequence="synthetic",
        source_spacing=(0.0, 0.0, 0.0), slice_spacing=float(geometry.slice_mm or 0.0), synthetic=True)


def write_nifti(path: Path, image: np.ndarray, geometry: Geometry) -> None:
    import nibabel as nib

    affine = geometry.affine(image.shape)
    img = nib.Nifti1Image(np.asarray(image, np.float32), affine)
    # The crop has no scanner frame: mark the affine as "aligned" (code 2), not scanner coordinates.
    img.set_sform(affine, code=2)
    img.set_qform(affine, code=2)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def preview_grid(images: np.ndarray, min_size: int = 64, cols: int = 8) -> np.ndarray:
    """uint8 grid of the middle slice of each unit, upscaled (nearest) so small crops stay visible."""
    n, h, w, k = images.shape
    scale = max(1, math.ceil(min_size / max(h, w)))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    pad = 2
    grid = np.zeros((rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad), np.uint8)
    for i, img in enumerate(images):
        tile = np.clip((img[:, :, k // 2] + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
        tile = np.kron(tile, np.ones((scale, scale), np.uint8))
        r, c = divmod(i, cols)
        y, x = pad + r * (h * scale + pad), pad + c * (w * scale + pad)
        grid[y:y + h * scale, x:x + w * scale] = tile
    return grid


def clear_outputs(out_dir: Path) -> None:
    """A rerun must not leave shards, volumes or previews of an earlier, larger run behind."""
    for name in (f"Split-{SPLIT}", "nifti", "previews"):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in ("manifest.csv", "datasheet.md"):
        (out_dir / name).unlink(missing_ok=True)


SampleFn = Callable[[np.ndarray, int], np.ndarray]  # (class_ids [n], seed) -> images [n, H, W, K] in [-1, 1]


def synthesize(sample: SampleFn, class_names: Sequence[str], conditioning: str, units_per_class: int, seed: int,
               out_dir: Path, geometry: Geometry, shards: int = 1, write_volumes: bool = True,
               preview_units: int = 16, log: Callable[[str], None] = print,
               class_prior: Sequence[float] | None = None, drop: frozenset = frozenset()) -> dict:
    """Draw ``units_per_class`` units of every class and write all payload files except the datasheet.

    A class with prior 0 (absent from the training data, trainer.allow_missing_classes) is not generated: the
    generator never learned it, so its units would be noise labelled as anatomy.

    ``drop``: unit ids left out (the release filter's near-copies); they are drawn, so the other units keep their
    seeds, but not written.

    Returns a summary: per-class counts, the seeds used ({class: [chunk seeds]}) and the file list sizes.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    clear_outputs(out_dir)
    (out_dir / "previews").mkdir(parents=True)
    if write_volumes:
        (out_dir / "nifti").mkdir()
    rows: list[dict] = []
    seeds: dict[str, list[int]] = {}

    def records() -> Iterator[bytes]:
        for cid, cname in enumerate(class_names):
            if class_prior is not None and class_prior[cid] <= 0:
                log(f"synthesize: {cname}: absent from the training data, none generated")
                continue
            seeds[cname] = []
            shown: list[np.ndarray] = []
            for chunk, start in enumerate(range(0, units_per_class, CHUNK)):
                n = min(CHUNK, units_per_class - start)
                s = class_seed(seed, cid, chunk)
                seeds[cname].append(s)
                images = np.asarray(sample(np.full(n, cid, np.int32), s), np.float32)
                if images.shape[0] != n:
                    raise RuntimeError(f"sampler returned {images.shape[0]} images for {n} class ids")
                for j, image in enumerate(images):
                    unit_id = f"syn-{safe_name(cname)}-{start + j:06d}"
                    if unit_id in drop:
                        continue
                    nifti = f"nifti/{unit_id}.nii.gz" if write_volumes else ""
                    if write_volumes:
                        write_nifti(out_dir / nifti, image, geometry)
                    rows.append({"unit_id": unit_id, "class_id": cid, "class_name": cname, "seed": s,
                                 "index_in_chunk": j, "nifti": nifti})
                    yield schema.encode(unit_record(image, cid, class_names, conditioning, unit_id, geometry))
                if len(shown) < preview_units:
                    shown.extend(images[:preview_units - len(shown)])
            if shown:
                grid = preview_grid(np.stack(shown))
                Image.fromarray(grid).save(out_dir / "previews" / f"{safe_name(cname)}.png")
            log(f"synthesize: {cname}: {units_per_class} units drawn (seeds {seeds[cname]})")

    shard_paths = schema.write_shards(records(), schema.split_dir(str(out_dir), SPLIT), num_shards=shards)
    # write_shards deals records round-robin: unit i lands in shard i % shards.
    for i, row in enumerate(rows):
        row["tfrecord"] = os.path.relpath(shard_paths[i % shards], out_dir)
    with open(out_dir / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["unit_id", "class_id", "class_name", "seed", "index_in_chunk",
                                                "tfrecord", "nifti"])
        writer.writeheader()
        writer.writerows(rows)
    counts = {c: sum(r["class_name"] == c for r in rows) for c in class_names}
    return {"counts": counts, "seeds": seeds, "units": len(rows), "shards": [os.path.relpath(p, out_dir)
                                                                            for p in shard_paths]}


# ------------------------------------------------------------------------------------------------ release chain
#
# What is released is what was judged. The evaluator stages the release CANDIDATE (the very units synthesize will
# publish: same model, generator variant, seed and count) under ``evaluate/candidate/`` (not shareable: no NIfTI,
# no previews, no datasheet) and judges it; its verdict.json records the chain below. Synthesize publishes the
# candidate's units only when every link matches, and refuses naming the first that does not.

CANDIDATE = "candidate"
FILTER_FILE = "release_filter.json"


class ReleaseMismatch(ReleaseRefused):
    """The evaluation judged another set than the one asked for (model, generator variant, seed, count, filter)."""


def generator_variant(use_ema: bool, info: dict) -> str:
    return "EMA" if use_ema and info.get("ema") else "raw"


def release_spec(model_fingerprint: str, variant: str, seed: int, units_per_class: int, release_filter: bool) -> dict:
    return {"model_fingerprint": model_fingerprint, "generator": variant, "seed": int(seed),
            "units_per_class": int(units_per_class), "release_filter": bool(release_filter)}


def candidate_digest(candidate_dir: str | Path) -> str:
    """SHA-256 of the candidate's CONTENT: every unit's id, class and float32 pixels, in record order, and the
    filter file (file bytes would not do: the gzip container differs between two writes of the same records)."""
    import hashlib

    root = Path(candidate_dir)
    h = hashlib.sha256()
    for rec in schema.iter_records(schema.shard_files(str(root), SPLIT)):
        h.update(f"{rec.patient}\0{rec.class_id}\0".encode())
        h.update(np.ascontiguousarray(rec.image, np.float32).tobytes())
    if (root / FILTER_FILE).is_file():
        h.update((root / FILTER_FILE).read_bytes())
    return h.hexdigest()


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


def read_release_record(evaluation_dir: str | Path) -> dict | None:
    try:
        data = json.loads((Path(evaluation_dir) / "verdict.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    rec = data.get("release") if isinstance(data, dict) else None
    return rec if isinstance(rec, dict) else None


def check_release(evaluation_dir: str | Path, expected: dict) -> dict:
    """The evaluation's release record when it judged exactly ``expected`` and its candidate is intact; else
    raises ReleaseMismatch naming the first difference (no override: a verdict on another set says nothing)."""
    record = read_release_record(evaluation_dir)
    where = Path(evaluation_dir) / "verdict.json"
    if record is None:
        raise ReleaseMismatch(f"synthesize: {where} records no judged release candidate; rerun the evaluator "
                              "(vugan evaluate) with this model and [synthesize] config")
    labels = {"model_fingerprint": "model fingerprint", "generator": "generator variant (synthesize.use_ema)",
              "seed": "seed (synthesize.seed)", "units_per_class": "count (synthesize.units_per_class)",
              "release_filter": "release filter (synthesize.release_filter)"}
    for key, label in labels.items():
        if record.get(key) != expected[key]:
            raise ReleaseMismatch(
                f"synthesize: the evaluation judged another set: {label} is {record.get(key)!r} there but "
                f"{expected[key]!r} here; no synthetic data was written. Rerun the evaluator for this model and "
                "config (vugan evaluate, or vugan run --run DIR)")
    digest = candidate_digest(Path(evaluation_dir) / CANDIDATE)
    if record.get("candidate_sha256") != digest:
        raise ReleaseMismatch(f"synthesize: the judged candidate under {Path(evaluation_dir) / CANDIDATE} changed "
                              f"since the verdict (sha256 {digest[:12]} != {str(record.get('candidate_sha256'))[:12]})"
                              "; rerun the evaluator")
    return record


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
