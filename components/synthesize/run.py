"""``vugan synthesize``: the shareable synthetic dataset (the SyntheticDataset artifact).

  vugan synthesize --model RUN/train --evaluation RUN/evaluate --out DIR [--force] [--force-release]

Runs after the evaluator because nothing shareable may be written before the release gate is known. It publishes
the evaluator's staged candidate (release/, "the release chain"): the very units that were judged. It refuses, before
any file is written,
  * an evaluation of another set (model fingerprint, generator variant, seed, count or filter differ, or the
    candidate changed): never overridable;
  * a failed (or missing) verdict, unless ``--force-release``, which is recorded with who, when and the verdict's
    reasons in ``datasheet.md`` and in the artifact's ``release`` property.
``--force`` only reruns a cached component.
"""
from __future__ import annotations

import json
from pathlib import Path

from vugan.components.synthesize import core, datasheet, release
from vugan.pipeline.artifacts import ArtifactError, ArtifactType, _version, read_artifact
from vugan.pipeline.component import ExecContext, ExecResult


def _examples_properties(model_manifest: dict, model_dir: Path) -> tuple[dict, str]:
    """Properties of the Examples the model was trained on (slice spacing, unit), found through the lineage;
    a run folder that was moved falls back to its sibling ``preprocess/``."""
    candidates = []
    uri = (model_manifest.get("inputs") or {}).get("examples", {}).get("uri")
    if uri:
        candidates.append(Path(uri))
    candidates.append(model_dir.parent / "preprocess")
    for folder in candidates:
        try:
            manifest = read_artifact(folder, ArtifactType.EXAMPLES)
        except ArtifactError:
            continue
        return manifest.get("properties") or {}, manifest.get("fingerprint", "?")
    return {}, (model_manifest.get("inputs") or {}).get("examples", {}).get("fingerprint", "?")


def _geometry(props: dict, info: dict) -> tuple[core.Geometry, str]:
    slice_mm = props.get("slice_spacing_mm") or info.get("slice_spacing_mm")
    pixel = props.get("pixel_size_mm") or info.get("pixel_size_mm")
    pixel_mm = (float(pixel[0]), float(pixel[1])) if isinstance(pixel, (list, tuple)) and len(pixel) == 2 else (
        (float(pixel), float(pixel)) if isinstance(pixel, (int, float)) else None)
    geometry = core.Geometry(pixel_mm=pixel_mm, slice_mm=float(slice_mm) if slice_mm else None)
    note = (f"slices {geometry.slice_mm:g} mm apart" if geometry.slice_mm else "slice spacing unknown (1 mm used)")
    note += ("; in-plane pixel %g x %g mm" % pixel_mm) if pixel_mm else (
        "; in-plane pixel size varies per crop (each crop spans its unit's length), so the NIfTI affine uses 1 mm")
    return geometry, note + ". NIfTI axes: rows head to feet, columns front to back, slices left to right."


def _gate(ctx: ExecContext):
    """The release chain and the gate: (model manifest, variant, judged candidate, verdict, release record);
    raises ReleaseMismatch / ReleaseRefused."""
    cfg = ctx.config.synthesize
    model_dir, eval_dir = ctx.inputs["model"], ctx.inputs["evaluation"]
    model_manifest = read_artifact(model_dir, ArtifactType.MODEL)
    info = json.loads((Path(model_dir) / "model_info.json").read_text())
    variant = release.generator_variant(cfg.use_ema, info)
    judged = release.check_release(eval_dir, release.release_spec(model_manifest["fingerprint"], variant, cfg.seed,
                                                                  cfg.units_per_class, cfg.release_filter))
    verdict = release.read_verdict(eval_dir)
    record = release.release_decision(verdict, force=bool(ctx.options.get("force_release")))
    return model_manifest, variant, judged, verdict, record


def validate(ctx: ExecContext) -> None:
    """The contract's check before the output folder is touched (ComponentSpec.validate): a refused release
    leaves a previous synthetic set, its config.toml and its marker exactly as they were."""
    _gate(ctx)


def execute(ctx: ExecContext) -> ExecResult:
    cfg = ctx.config.synthesize
    model_dir, eval_dir = ctx.inputs["model"], ctx.inputs["evaluation"]
    # The chain and the gate come first (validate already passed them): a refused release writes nothing.
    model_manifest, variant, judged, verdict, record = _gate(ctx)
    if record["forced"]:
        ctx.log(f"synthesize: WARNING: verdict failed ({'; '.join(verdict.reasons)}); released by --force-release "
                f"({record['forced_by']}, {record['forced_at']})")
    candidate_dir = Path(eval_dir) / release.CANDIDATE
    filt = release.read_filter(candidate_dir)
    record["filter"] = {"enabled": filt["enabled"], "dropped_units": len(filt["dropped_units"]),
                        "rule": filt["rule"]}
    record["candidate_sha256"] = judged["candidate_sha256"]

    from vugan.models.bundle import load_model_bundle

    bundle = load_model_bundle(str(model_dir), ema=cfg.use_ema)
    eval_manifest = read_artifact(eval_dir, ArtifactType.EVALUATION)
    props, examples_fp = _examples_properties(model_manifest, Path(model_dir))
    geometry, geometry_note = _geometry(props, bundle.info)
    conditioning = bundle.info.get("conditioning") or props.get("conditioning") or "region"

    summary = core.synthesize(
        release.candidate_sampler(candidate_dir), bundle.class_names, conditioning,
        cfg.units_per_class, cfg.seed, ctx.out_dir, geometry, shards=cfg.shards, write_volumes=cfg.write_nifti,
        preview_units=cfg.preview_units, log=ctx.log, class_prior=bundle.info.get("class_prior"),
        drop=frozenset(filt["dropped_units"]))

    metrics = release.read_metrics(eval_dir)
    headline = release.headline_metrics(metrics)
    model = {"fingerprint": model_manifest["fingerprint"], "uri": str(Path(model_dir).resolve()),
             "ema": variant == "EMA",
             "steps": bundle.info.get("steps"), "examples_fingerprint": examples_fp,
             # The verdict and headline metrics this datasheet reports (pipeline.artifacts summary fingerprint).
             "evaluation_fingerprint": eval_manifest.get("summary_fingerprint", eval_manifest["fingerprint"])}
    text = datasheet.render(
        created_at=release.now(), version=_version(), summary=summary, class_names=bundle.class_names,
        image_shape=bundle.image_shape, conditioning=conditioning, base_seed=cfg.seed, model=model,
        release=record, metrics=headline, metrics_found=bool(metrics), geometry_note=geometry_note,
        dp=bundle.info.get("dp"), burned_in=props.get("burned_in_annotation"))
    (ctx.out_dir / "datasheet.md").write_text(text)
    ctx.log(f"synthesize: {summary['units']} units in {len(summary['shards'])} shard(s); datasheet.md written")
    return ExecResult(
        counts={"units": summary["units"], **{f"units_{core.safe_name(c)}": n for c, n in summary["counts"].items()}},
        properties={"class_names": list(bundle.class_names), "image_shape": list(bundle.image_shape),
                    "conditioning": conditioning, "split": core.SPLIT, "seeds": summary["seeds"],
                    "base_seed": cfg.seed, "release": record, "model_fingerprint": model_manifest["fingerprint"],
                    "headline_metrics": json.loads(json.dumps(headline))})
