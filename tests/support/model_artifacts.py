"""A tiny real Model artifact and an Evaluation artifact, written with the same functions the trainer and the
evaluator use (``vugan.models.acgan``, ``write_artifact``), for the export, synthesize, evaluator and encoder tests."""
from __future__ import annotations

import json
from pathlib import Path

CLASS_NAMES = ("cervical", "thoracic", "lumbar")
IMAGE_SHAPE = (16, 16, 3)
NOISE_DIM = 100


def make_model_artifact(out_dir: Path, ema: bool = True, seed: int = 0, arch_options: dict | None = None) -> Path:
    """A real, untrained ac-GAN (16x16x3, 3 classes) saved as the trainer's Model artifact; ``arch_options``:
    further ``ArchConfig`` fields (e.g. a generator option whose export is under test)."""
    import keras

    from vugan.models.acgan import ArchConfig, build_discriminator, build_generator
    from vugan.pipeline.artifacts import ArtifactType, write_artifact

    keras.utils.set_random_seed(seed)
    arch = ArchConfig(image_shape=IMAGE_SHAPE, num_classes=len(CLASS_NAMES), noise_dim=NOISE_DIM, width=8,
                      **(arch_options or {}))
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = build_generator(arch)
    gen.save(out_dir / "generator.keras")
    if ema:
        # A distinguishable EMA copy: the same net with other weights, so tests can tell which one was used.
        keras.utils.set_random_seed(seed + 1)
        build_generator(arch).save(out_dir / "generator_ema.keras")
    build_discriminator(arch).save(out_dir / "discriminator.keras")
    info = {"class_names": list(CLASS_NAMES), "image_shape": list(IMAGE_SHAPE), "noise_dim": NOISE_DIM,
            "conditioning": "region", "steps": 0, "ema": ema}
    (out_dir / "model_info.json").write_text(json.dumps(info))
    write_artifact(out_dir, artifact_type=ArtifactType.MODEL, producer="train", config_fingerprint="test",
                   properties={"class_names": list(CLASS_NAMES), "image_shape": list(IMAGE_SHAPE)})
    return out_dir


def make_evaluation_artifact(out_dir: Path, passed: bool, reasons=(), metrics: dict | str | None = None,
                             model_dir: Path | None = None, config=None, dropped=()) -> Path:
    """An Evaluation artifact with a given verdict. With ``model_dir``, the release candidate is staged exactly as
    the evaluator stages it (components/synthesize/release/, ``config.synthesize``) and the chain is recorded."""
    from vugan.pipeline.artifacts import ArtifactType, read_artifact, write_artifact

    out_dir.mkdir(parents=True, exist_ok=True)
    verdict = {"passed": passed, "reasons": list(reasons), "forced": False}
    if model_dir is not None:
        from vugan.components.synthesize import release as syn
        from vugan.models.bundle import generate, load_model_bundle

        scfg = config.synthesize
        bundle = load_model_bundle(model_dir, ema=scfg.use_ema)
        syn.stage_candidate(lambda ids, seed: generate(bundle, ids, seed), bundle.class_names, "region", scfg,
                            out_dir / syn.CANDIDATE, log=lambda m: None)
        syn.write_filter(out_dir / syn.CANDIDATE, scfg.release_filter, dropped, "test")
        verdict["release"] = {**syn.release_spec(read_artifact(model_dir)["fingerprint"],
                                                 syn.generator_variant(scfg.use_ema, bundle.info), scfg.seed,
                                                 scfg.units_per_class, scfg.release_filter),
                              "candidate_sha256": syn.candidate_digest(out_dir / syn.CANDIDATE)}
    (out_dir / "verdict.json").write_text(json.dumps(verdict))
    if isinstance(metrics, str):
        (out_dir / "metrics.json").write_text(metrics)  # deliberately malformed content
    elif metrics is not None:
        (out_dir / "metrics.json").write_text(json.dumps(metrics))
    write_artifact(out_dir, artifact_type=ArtifactType.EVALUATION, producer="evaluate", config_fingerprint="test")
    return out_dir
