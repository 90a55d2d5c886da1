"""The model bundle (docs/contracts.md): the only way downstream code loads a trained model.

Importing this module registers vugan's custom layers, so the ``.keras`` files load in any process.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np

from vugan.models import acgan  # noqa: F401  (registers SpectralNormConv2D for deserialisation)


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    generator: keras.Model
    discriminator: keras.Model
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    noise_dim: int
    info: dict


def load_model_bundle(model_dir, ema: bool = True) -> ModelBundle:
    """Load the generator (the EMA one when ``ema`` and it exists), the discriminator and model_info.json."""
    model_dir = Path(model_dir)
    info_path = model_dir / "model_info.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{model_dir}: no model_info.json; point at a finished `vugan train` output")
    info = json.loads(info_path.read_text())
    g_path = model_dir / ("generator_ema.keras" if ema and info.get("ema") else "generator.keras")
    return ModelBundle(
        generator=keras.models.load_model(g_path, compile=False),
        discriminator=keras.models.load_model(model_dir / "discriminator.keras", compile=False),
        class_names=tuple(info["class_names"]), image_shape=tuple(info["image_shape"]),
        noise_dim=int(info["noise_dim"]), info=info)


def noise_for(seed: int, n: int, noise_dim: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, noise_dim)).astype(np.float32)


def generate(bundle: ModelBundle, class_ids, seed: int, batch_size: int = 256) -> np.ndarray:
    """Images [N, H, W, K] in [-1, 1] for the given class ids; the same seed gives the same images."""
    class_ids = np.asarray(class_ids, np.int32).reshape(-1)
    if class_ids.size and (class_ids.min() < 0 or class_ids.max() >= len(bundle.class_names)):
        raise ValueError(f"class ids must be in 0..{len(bundle.class_names) - 1}, got {class_ids.min()}..{class_ids.max()}")
    noise = noise_for(seed, len(class_ids), bundle.noise_dim)
    out = np.zeros((len(class_ids), *bundle.image_shape), np.float32)
    for i in range(0, len(class_ids), batch_size):
        out[i:i + batch_size] = np.asarray(bundle.generator([noise[i:i + batch_size], class_ids[i:i + batch_size]],
                                                            training=False))
    return out


def discriminate(bundle: ModelBundle, images, batch_size: int = 256,
                 class_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """(realfake_logits [N], class_logits [N, C]) of the discriminator. A discriminator with a projection term
    (trainer.projection) has a class-conditional logit: pass ``class_ids`` [N] for it, else the unconditional
    part is returned."""
    images = np.asarray(images, np.float32)
    rf, cls = [], []
    for i in range(0, len(images), batch_size):
        outputs = bundle.discriminator(images[i:i + batch_size], training=False)
        if class_ids is not None:
            outputs = acgan.conditional_logits(outputs, np.asarray(class_ids, np.int32)[i:i + batch_size])
        a, b = outputs[0], outputs[1]
        rf.append(np.asarray(a)[:, 0])
        cls.append(np.asarray(b))
    if not rf:
        return np.zeros(0, np.float32), np.zeros((0, len(bundle.class_names)), np.float32)
    return np.concatenate(rf), np.concatenate(cls)
