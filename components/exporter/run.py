"""``vugan export``: the trained (EMA) generator as a SavedModel for TF Serving (the PushedModel artifact).

  vugan export --model RUN/train --out DIR [--config FILE] [--set exporter.use_ema=false]

Writes ``saved_model/`` (signatures ``serving_default`` and ``generate``, class names as an asset) and
``export_info.json``; the artifact manifest is written only after the SavedModel reloaded in a fresh process
and both signatures answered a 2-unit request (see ``core.check_saved_model``). docs/serving.md shows how to
serve it.
"""
from __future__ import annotations

import json
import shutil

from vugan.components.exporter import core
from vugan.pipeline.artifacts import ArtifactType, read_artifact
from vugan.pipeline.component import ExecContext, ExecResult

SAVED_MODEL = "saved_model"


def execute(ctx: ExecContext) -> ExecResult:
    from vugan.models.bundle import load_model_bundle

    cfg = ctx.config.exporter
    model_dir = ctx.inputs["model"]
    bundle = load_model_bundle(str(model_dir), ema=cfg.use_ema)
    # A rerun replaces the previous export; tf.saved_model.save would otherwise merge into stale files.
    target = ctx.out_dir / SAVED_MODEL
    shutil.rmtree(target, ignore_errors=True)
    core.export_generator(bundle.generator, bundle.class_names, bundle.noise_dim, bundle.image_shape, target,
                          max_batch=cfg.max_batch)
    ctx.log(f"export: wrote {target}; reloading it in a fresh process to call both signatures")
    check = core.check_saved_model(target, len(bundle.class_names), bundle.noise_dim, bundle.image_shape)
    info = core.ExportInfo(
        saved_model=SAVED_MODEL, class_names=tuple(bundle.class_names),
        image_shape=tuple(int(x) for x in bundle.image_shape), noise_dim=int(bundle.noise_dim),
        signatures=core.describe_signatures(bundle.noise_dim, bundle.image_shape), check=check)
    model_manifest = read_artifact(model_dir, ArtifactType.MODEL)
    ema_used = bool(cfg.use_ema and bundle.info.get("ema"))
    payload = {**info.__dict__, "ema": ema_used, "model_fingerprint": model_manifest["fingerprint"],
               "model_steps": bundle.info.get("steps"), "max_batch": cfg.max_batch}
    (ctx.out_dir / "export_info.json").write_text(json.dumps(payload, indent=2, default=list) + "\n")
    ctx.log(f"export: reload check passed ({', '.join(check['signatures'])}); ema={ema_used}")
    return ExecResult(
        counts={"classes": len(bundle.class_names)},
        properties={"saved_model": SAVED_MODEL, "signatures": list(core.SIGNATURES),
                    "class_names": list(bundle.class_names), "image_shape": list(info.image_shape),
                    "noise_dim": info.noise_dim, "ema": ema_used, "model_fingerprint": model_manifest["fingerprint"]})
