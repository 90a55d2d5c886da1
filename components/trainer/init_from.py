"""``trainer.init_from``: start G and D from a trained model (public pre-training, then fine-tuning, e.g. with DP).

The source is a finished ``vugan train`` output (a Model artifact). Its architecture must be this run's, field by
field (width, image shape, classes, noise length, normalisation, upsampling, ...): a mismatch is an error that names
the field and both values, never a silent partial load. Only the network weights are taken (G, D and, when both
runs keep one, the EMA generator); the optimizers and the step counter start fresh, as in fine-tuning.

Privacy: under DP-SGD (Abadi et al. 2016) any starting point that does not depend on the private cohort is fine,
and epsilon then covers the private cohort only; the source's own training data get no guarantee from this run.
So under ``trainer.dp`` a source trained on this very examples artifact is refused (that would be pre-training on
the private data, un-noised), and the record says what the run started from (the source's fingerprint) and what
epsilon covers.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras

from vugan.components.trainer.arch import arch_config
from vugan.models import acgan
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import check_input
from vugan.pipeline.config import ConfigError, load_config

# ArchConfig fields whose config key has another name, or that come from the data rather than the config.
_FIELD_SOURCE = {
    "image_shape": "the examples' image shape (trainer.image_shape)",
    "num_classes": "the examples' classes",
    "batch_norm": "trainer.generator_batch_norm / trainer.batch_norm",
    "d_batch_norm": "trainer.batch_norm",
}
PRETRAINING_NOTE = ("The generator and discriminator started from a pre-trained model (init_from, fingerprint "
                    "{fingerprint}), whose training data are treated as public: epsilon covers only the private "
                    "cohort this run was trained on, not the pre-training data.")


@dataclasses.dataclass(frozen=True)
class InitSource:
    """A checked source model: where it is, what it is (fingerprint, lineage), and its architecture."""

    folder: Path
    fingerprint: str
    examples_fingerprint: str | None  # the examples artifact the source was trained on, from its lineage
    arch: acgan.ArchConfig
    class_names: tuple[str, ...]
    ema: bool
    dp: dict  # the source's own privacy record ({"enabled": False} when it was not DP)

    def record(self) -> dict:
        """model_info.json / artifact properties "init_from"."""
        return {"uri": str(self.folder.resolve()), "fingerprint": self.fingerprint,
                "trained_on_examples_fingerprint": self.examples_fingerprint,
                "source_dp_enabled": bool(self.dp.get("enabled")),
                "weights": "generator, discriminator" + (", generator_ema" if self.ema else ""),
                "optimizers": "fresh (not taken from the source)"}

    def pretraining_note(self) -> str:
        return PRETRAINING_NOTE.format(fingerprint=self.fingerprint)


def _source_arch(folder: Path, info: dict) -> acgan.ArchConfig:
    if "arch" in info:
        raw = dict(info["arch"])
        raw["image_shape"] = tuple(raw["image_shape"])
        known = {f.name for f in dataclasses.fields(acgan.ArchConfig)}
        return acgan.ArchConfig(**{k: v for k, v in raw.items() if k in known})
    # Models written before model_info.json carried "arch": rebuild it from the run's resolved config.toml.
    try:
        src_cfg = load_config(folder / "config.toml").trainer
    except ConfigError as exc:
        raise ValueError(f"trainer.init_from = {folder}: its config.toml cannot be read by this vugan ({exc}); "
                         f"retrain the source model with this version") from None
    shim = type("Info", (), {"image_shape": tuple(info["image_shape"]), "class_names": info["class_names"]})
    return arch_config(src_cfg, shim)


def check_source(folder: str | Path, arch: acgan.ArchConfig, class_names, *, dp: bool,
                 examples_fingerprint: str | None) -> InitSource:
    """Read and check the source model against this run's architecture and classes.

    Raises ValueError naming the first field that differs (model value vs this run's) and which setting it comes
    from; ArtifactError when the folder is not a finished Model artifact.
    """
    folder = Path(folder)
    manifest = check_input(folder, ArtifactType.MODEL)  # finished, and its files as train wrote them
    info_path = folder / "model_info.json"
    if not info_path.exists():
        raise ValueError(f"trainer.init_from = {folder}: no model_info.json; point at a finished `vugan train` output")
    info = json.loads(info_path.read_text())
    src_arch = _source_arch(folder, info)
    for f in dataclasses.fields(acgan.ArchConfig):
        theirs, ours = getattr(src_arch, f.name), getattr(arch, f.name)
        if f.name == "image_shape":
            theirs, ours = tuple(theirs), tuple(ours)
        if theirs != ours:
            where = _FIELD_SOURCE.get(f.name, f"trainer.{f.name}")
            raise ValueError(f"trainer.init_from = {folder}: the model's architecture differs from this run's in "
                             f"field '{f.name}' (model: {theirs!r}, this run: {ours!r}; set by {where}); "
                             f"configure this run like the model, or point init_from at a matching model")
    if tuple(info["class_names"]) != tuple(class_names):
        raise ValueError(f"trainer.init_from = {folder}: field 'class_names' differs (model: {info['class_names']}, "
                         f"this run: {list(class_names)}); class ids would mean other classes")
    src_examples = (manifest.get("inputs", {}).get("examples") or {}).get("fingerprint")
    if dp and examples_fingerprint is not None and src_examples == examples_fingerprint:
        raise ValueError(f"trainer.init_from = {folder}: that model was trained on this run's own examples "
                         f"(fingerprint {src_examples}); under trainer.dp the starting point must not depend on the "
                         f"private cohort. Pre-train on public data (e.g. the phantom cohort)")
    return InitSource(folder=folder, fingerprint=manifest["fingerprint"], examples_fingerprint=src_examples,
                      arch=src_arch, class_names=tuple(info["class_names"]), ema=bool(info.get("ema")),
                      dp=info.get("dp") or {"enabled": False})


def _copy_weights(target: keras.Model, source: keras.Model, what: str) -> None:
    # Same builder and ArchConfig give the same weight list in the same order; shapes are checked all the same.
    if len(target.weights) != len(source.weights):
        raise ValueError(f"trainer.init_from: {what} has {len(source.weights)} weights, this run's "
                         f"{len(target.weights)}; the architectures differ")
    for t, s in zip(target.weights, source.weights):
        if tuple(t.shape) != tuple(s.shape):
            raise ValueError(f"trainer.init_from: {what} weight {s.path} has shape {tuple(s.shape)}, this run's "
                             f"{t.path} {tuple(t.shape)}; the architectures differ")
    for t, s in zip(target.weights, source.weights):
        t.assign(s.numpy())


def load_into(gan, source: InitSource) -> None:
    """G, D (and the EMA generator) take the source's weights. Call inside the strategy scope, before training."""
    load = lambda name: keras.models.load_model(source.folder / name, compile=False)  # noqa: E731
    generator = load("generator.keras")
    _copy_weights(gan.generator, generator, "generator.keras")
    _copy_weights(gan.discriminator, load("discriminator.keras"), "discriminator.keras")
    if gan.generator_ema is not None:  # the source's EMA when it kept one, else its generator
        _copy_weights(gan.generator_ema, load("generator_ema.keras") if source.ema else generator,
                      "generator_ema.keras" if source.ema else "generator.keras")


def trained_layer_names(setting: str) -> tuple[str, ...]:
    """``trainer.d_trainable_layers`` as names; () = every layer trains."""
    return tuple(name.strip() for name in setting.split(",") if name.strip())


def freeze_all_but(discriminator: keras.Model, names: tuple[str, ...]) -> None:
    """Freeze every D layer with weights except ``names`` (call before the optimizer is built, so that it keeps
    slots for the trained layers only). Freezing does not change
    ``model.weights``' order, which ``load_into`` and the checkpoints rely on.

    Why: under DP-SGD the noise added to D's gradient has norm ~ sigma C sqrt(#parameters) while the clipped
    signal is at most C per privacy unit, so training only D's top layers on a public start divides the noise by
    sqrt(#all / #trained) at the same epsilon (Tramer & Boneh 2021: private learning needs good public features).
    """
    with_weights = {layer.name: layer for layer in discriminator.layers if layer.trainable_weights}
    unknown = [n for n in names if n not in with_weights]
    if unknown:
        raise ValueError(f"trainer.d_trainable_layers: {', '.join(map(repr, unknown))} is not a discriminator layer "
                         f"with weights; choose from {', '.join(with_weights)}")
    for name, layer in with_weights.items():
        layer.trainable = name in names
