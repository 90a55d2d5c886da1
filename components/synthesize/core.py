"""The shareable synthetic dataset: units drawn from the generator, written in the real data's formats.

Nothing here decides whether the set may be shared: the evaluator's verdict does, through the release chain
(``release/``): it refuses a failed (or missing) verdict unless forced, and a forced release is recorded (who,
when, why) in the datasheet and the artifact properties, so the override travels with the data.

Outputs (docs/contracts.md): ``Split-synthetic/data-*.tfrecord.gz`` (``schema.encode``, ``synthetic=1``),
``nifti/<unit>.nii.gz``, ``previews/<class>.png``, ``manifest.csv`` and ``datasheet.md``.
"""
from __future__ import annotations

import csv
import dataclasses
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
