"""A tiny Examples artifact (what preprocess writes), with images whose class is easy to see.

Class c draws a bright disc whose radius grows with c on a dark background, at a jittered position, with a
little noise, in every slice (the middle slice brightest). Reusable by any component's tests:

    root = make_examples_artifact(tmp_path / "examples", n_per_class=8, shape=(16, 16, 3))
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vugan.components import schema
from vugan.pipeline.artifacts import ArtifactType, write_artifact


def class_image(rng: np.random.Generator, class_id: int, num_classes: int, shape) -> np.ndarray:
    h, w, k = shape
    radius = (0.12 + 0.26 * class_id / max(num_classes - 1, 1)) * min(h, w)
    cy, cx = h / 2 + rng.uniform(-0.1, 0.1) * h, w / 2 + rng.uniform(-0.1, 0.1) * w
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (((yy - cy) ** 2 + (xx - cx) ** 2) <= radius ** 2).astype(np.float32)
    weights = 1.0 - 0.4 * np.abs(np.arange(k) - (k - 1) / 2) / max((k - 1) / 2, 1)
    image = -0.8 + 1.5 * disc[..., None] * weights[None, None, :]
    image = image + rng.normal(0, 0.05, size=(h, w, k))
    return np.clip(image, -1, 1).astype(np.float32)


def make_records(n_per_class: int, shape, class_names, seed: int, split: str) -> list[bytes]:
    rng = np.random.default_rng([seed, len(split)])
    out = []
    for c in range(len(class_names)):
        region = schema.REGIONS[c % len(schema.REGIONS)]
        for i in range(n_per_class):
            out.append(schema.encode(schema.UnitRecord(
                image=class_image(rng, c, len(class_names), shape), level_name="L4/L5", upper_code=23,
                lower_code=24, region=region, class_id=c, patient=f"p{split}{i % 5}", scan=f"s{split}{i}")))
    rng.shuffle(out)
    return out


def make_examples_artifact(root, n_per_class=8, shape=(16, 16, 3), class_names=schema.REGIONS, seed=0,
                           holdout_per_class=2, num_shards=2) -> Path:
    """Write Split-{train,holdout,test}/ shards and an Examples artifact.json; returns ``root``."""
    root = Path(root)
    counts = {"train": n_per_class, "holdout": holdout_per_class, "test": holdout_per_class}
    splits = {}
    for split, n in counts.items():
        records = make_records(n, shape, class_names, seed, split)
        schema.write_shards(records, schema.split_dir(str(root), split), num_shards=num_shards)
        splits[split] = len(records)
    write_artifact(root, artifact_type=ArtifactType.EXAMPLES, producer="preprocess", config_fingerprint="fixture",
                   counts=splits,
                   properties={"image_shape": list(shape), "class_names": list(class_names),
                               "conditioning": "region", "unit": "disc", "splits": splits})
    return root
