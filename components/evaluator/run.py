"""`vugan evaluate`: fidelity, diversity, utility and privacy of a trained generator's synthetic set.

Reads the real splits of an Examples artifact and a Model artifact (through models/bundle.py), draws a synthetic
sample for fidelity, diversity and utility (training class prior, evaluator.seed), stages the RELEASE CANDIDATE
(exactly what synthesize will publish: [synthesize] variant, seed and count) under candidate/, judges its privacy
(after the release filter when synthesize.release_filter is on), applies the release gate (gate.py), and writes
metrics.json, verdict.json (with the release chain), report.html and figures/ (docs/contracts.md).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from vugan.components.evaluator.report.headline import headline
from vugan.components.evaluator.results import Evaluation, jsonable  # noqa: F401  (run.jsonable: one sanitiser)
from vugan.components.synthesize.release import write_verdict
from vugan.pipeline.artifacts import ArtifactType, read_artifact
from vugan.pipeline.component import ExecContext, ExecResult


def _import_privacy():
    """The privacy evaluator is part of this component: a missing or broken module is an error, never a skip."""
    import importlib

    try:
        privacy = importlib.import_module("vugan.components.evaluator.privacy.attacks")
    except Exception as exc:  # ImportError, or any error raised while importing it
        raise RuntimeError(f"evaluate: the privacy evaluator (components/evaluator/privacy/) could not be "
                           f"imported ({type(exc).__name__}: {exc}); no verdict can be given without it") from exc
    return privacy


def load_inputs(examples_dir: Path, split_names=("train", "holdout", "test")):
    """The Examples manifest and its real splits, each in content order under content-derived patient names
    (canonical.py): the evidence must not depend on the salt, the manifest's row order or the shard count."""
    from vugan.components.evaluator.canonical import canonical_real
    from vugan.components.schema import check_record_count

    manifest = read_artifact(examples_dir, ArtifactType.EXAMPLES)
    splits = {}
    for split in split_names:
        units = load_split_naming_shard(examples_dir, split)
        check_record_count(str(examples_dir), manifest, split, len(units.class_ids))
        splits[split] = canonical_real(units)
    for name, units in splits.items():
        if len(units) == 0:
            raise ValueError(f"{examples_dir}: split {name!r} is empty; the evaluator needs train, holdout and "
                             f"test units (check preprocess.split_fractions and the number of patients)")
    return manifest, splits


def load_split_naming_shard(examples_dir: Path, split: str):
    """``schema.load_split``, one shard at a time, so that a shard that does not read back (a damaged gzip stream,
    a bad record) is named with its split instead of surfacing as TensorFlow's bare DataLossError."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    from vugan.components import schema

    records = []
    for path in schema.shard_files(str(examples_dir), split):
        try:
            records.extend(schema.iter_records([path]))
        except (tf.errors.OpError, DecodeError, ValueError, KeyError) as exc:
            reason = str(exc).splitlines()[0].split("}}")[-1].strip()[:200] or type(exc).__name__
            raise ValueError(f"{path}: shard of the {split!r} split cannot be read ({type(exc).__name__}: "
                             f"{reason}); rerun `vugan preprocess` to rewrite the examples, or restore the "
                             f"file") from exc
    return schema.arrays_from_records(records)


def inception_or_skip(cfg):
    """(Embedder, "") when a weights file is configured, else (None, reason)."""
    if not cfg.inception_weights:
        return None, ("evaluator.inception_weights is empty: no ImageNet InceptionV3 weights file was configured "
                      "(none can be downloaded offline), so the Keras ImageNet InceptionV3 distances "
                      "(FD-InceptionV3, KD-InceptionV3) were not computed")
    from vugan.components.evaluator.features.embeddings import inception_embedder

    return inception_embedder(cfg.inception_weights, cfg.inception_input_size, cfg.inception_batch_size,
                              cfg.inception_sha256), ""


def write_outputs(out: Path, metrics: dict, verdict: dict, evaluation: Evaluation, splits: dict, synthetic,
                  class_names, cfg, facts: dict, privacy_sections: list, title: str) -> None:
    """metrics.json, verdict.json and report.html (shared by `vugan evaluate` and `vugan audit`)."""
    from vugan.components.evaluator.report import sections
    from vugan.components.evaluator.report.figures import class_grids
    from vugan.components.evaluator.report.html import write_report
    from vugan.components.evaluator.report.privacy_sections import dp_section

    (out / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=2, allow_nan=False) + "\n")
    write_verdict(out, jsonable(verdict))
    grids = class_grids(splits["train"].images, splits["train"].class_ids, synthetic.images, synthetic.class_ids,
                        class_names, cfg.grid_units, cfg.seed)
    ours = [sections.overview_section(evaluation, grids), sections.fidelity_section(evaluation),
            sections.diversity_section(evaluation), sections.utility_section(evaluation)]
    priv_sections = list(privacy_sections)  # the DP guarantee goes right after the attacks' summary section
    priv_sections[1:1] = [dp_section(evaluation.privacy.dp, evaluation.privacy.strongest or {})]
    if evaluation.canary is not None:  # the canary audit right after the DP guarantee it is read beside
        from vugan.components.evaluator.report.privacy_sections import canary_section

        priv_sections[2:2] = [canary_section(evaluation.canary)]
    write_report(out, title, facts, verdict, ours + priv_sections)


def judge_and_write(out: Path, evaluation: Evaluation, judged, splits: dict, synthetic, class_names, cfg, pcfg,
                    timer, *, verdict_fields: dict, record: dict, facts: dict, title: str) -> tuple[dict, dict]:
    """The one judging path of `vugan evaluate` and `vugan audit`: privacy figures, the release gate on the typed
    evaluation, the run record around it, and metrics.json, verdict.json and report.html.

    Args:
      evaluation: fidelity, diversity, utility and privacy (its evidence included) of the set.
      judged: the units the privacy result judged (the release candidate, or the audited set).
      synthetic: the units of the report's image grids (the evaluation's draw).
      verdict_fields: what the verdict says about the judged set beside the gate ("release" or "audited").
      record: "config" and "inputs" of metrics.json.
    Returns:
      (metrics, verdict) as written.
    """
    from vugan.components.evaluator import gate
    from vugan.components.evaluator.report.privacy_sections import privacy_sections

    priv = evaluation.privacy
    tick = time.perf_counter()
    drawn = privacy_sections(priv, judged.images, splits["train"].images, pcfg)
    if priv.seconds:  # the figures' time, as part of the privacy evaluation's total
        sec = time.perf_counter() - tick
        seconds = {k: v for k, v in priv.seconds.items() if k != "total"}
        seconds.update(figures=round(sec, 3), total=round(priv.seconds["total"] + sec, 3))
        priv = dataclasses.replace(priv, seconds=seconds)
    # From here on every reader sees the record exactly as metrics.json holds it (strict JSON values).
    evaluation = Evaluation.from_dict(jsonable(dataclasses.replace(evaluation, privacy=priv).to_dict()))
    verdict = gate.release_gate(evaluation, pcfg).to_dict()
    verdict.update(verdict_fields)
    metrics = evaluation.to_dict()
    metrics["verdict"] = verdict
    metrics["timings"] = timer.stages
    metrics.update(record)
    metrics["headline"] = headline(evaluation)  # what the datasheet and the run summary show
    write_outputs(out, metrics, verdict, evaluation, splits, synthetic, class_names, cfg, facts, drawn, title)
    return metrics, verdict


def judge_release(ctx: ExecContext, splits: dict, candidate, candidate_dir: Path, encoder, bundle, release: dict,
                  release_filter: bool, timer, privacy):
    """Privacy of the release candidate, after the release filter when it is on; writes the filter record and
    completes the release chain (components/synthesize/release/) with the candidate's digest."""
    from vugan.components.synthesize import release as syn

    pcfg, seed = ctx.config.privacy, ctx.config.evaluator.seed
    n = len(splits["train"]) + len(splits["holdout"]) + len(candidate)
    with timer.stage("privacy", n):
        priv = privacy.evaluate_privacy(splits["train"], splits["holdout"], candidate, bundle, encoder, pcfg, seed)
    rule = "near-copies of a training unit (pixel space, the gate's copy radius) are dropped before judging"
    dropped = []
    if release_filter and priv.copy_mask is not None and priv.copy_mask.any():
        keep = ~priv.copy_mask
        dropped = list(candidate.patients[priv.copy_mask])
        from vugan.components.schema import UnitArrays

        candidate = UnitArrays(*(getattr(candidate, f)[keep] for f in
                                 ("images", "class_ids", "regions", "level_names", "patients")))
        ctx.log(f"evaluate: release filter dropped {len(dropped)} near-copies; judging the filtered set")
        with timer.stage("privacy_filtered", n - len(dropped)):
            priv = privacy.evaluate_privacy(splits["train"], splits["holdout"], candidate, bundle, encoder, pcfg,
                                            seed)
    filt = syn.write_filter(candidate_dir, release_filter, dropped, rule)
    release = {**release, "judged_units": int(len(candidate)), "filtered_units": len(filt["dropped_units"]),
               "candidate_sha256": syn.candidate_digest(candidate_dir)}
    return priv, candidate, release


def audit_canaries(model_dir: Path, bundle, judged, splits: dict, pcfg, seed: int, timer, log):
    """The canary audit (privacy/canary.py) of a model trained with trainer.canaries, on the judged set; None for
    a model without canaries."""
    record = bundle.info.get("canaries") or {}
    if not record.get("enabled"):
        return None
    from vugan.components.evaluator.privacy.canary import canary_audit, load_canaries
    from vugan.components.evaluator.results import CanaryResult

    inserted, held_back = load_canaries(model_dir, record)
    with timer.stage("canary_audit", len(inserted) + len(held_back)):
        result = canary_audit(inserted, held_back, judged, splits["holdout"], bundle, pcfg, seed,
                              dp=bundle.info.get("dp"))
    eps = result["epsilon"]
    log(f"evaluate: canary audit: strongest {result['strongest']['attack']} per-patient AUC "
        f"{result['strongest']['auc']:.3f}; empirical epsilon lower bound {eps['lower_bound']:.2f} "
        f"(accounted {eps['accounted']})")
    return CanaryResult.from_dict(jsonable(result))


def execute(ctx: ExecContext) -> ExecResult:
    from vugan.components.evaluator import core
    from vugan.components.synthesize import release as syn
    from vugan.models.bundle import generate, load_model_bundle

    cfg, pcfg, scfg = ctx.config.evaluator, ctx.config.privacy, ctx.config.synthesize
    privacy = _import_privacy()
    manifest, splits = load_inputs(ctx.inputs["examples"])
    # One generator-variant setting for judging and releasing: synthesize.use_ema.
    bundle = load_model_bundle(ctx.inputs["model"], ema=scfg.use_ema)
    class_names = tuple(manifest["properties"].get("class_names") or bundle.class_names)
    if tuple(bundle.class_names) != class_names:
        raise ValueError(f"model classes {bundle.class_names} differ from the examples' classes {class_names}")
    if tuple(bundle.image_shape) != tuple(splits["train"].images.shape[1:]):
        raise ValueError(f"model image_shape {bundle.image_shape} differs from the examples' "
                         f"{splits['train'].images.shape[1:]}")
    timer = core.StageTimer(ctx.log)
    sample = lambda ids, seed: generate(bundle, ids, seed, cfg.batch_size)  # noqa: E731
    n_draw = int(core.synthetic_class_counts(splits["train"].class_ids, len(class_names), cfg.min_synthetic).sum())
    with timer.stage("generate", n_draw):
        synthetic = core.draw_synthetic(sample, splits["train"], class_names, cfg.min_synthetic, cfg.seed)
    # The release candidate: exactly what synthesize will publish (same variant, seed and count).
    variant = syn.generator_variant(scfg.use_ema, bundle.info)
    model_fp = read_artifact(ctx.inputs["model"], ArtifactType.MODEL)["fingerprint"]
    release = syn.release_spec(model_fp, variant, scfg.seed, scfg.units_per_class, scfg.release_filter)
    candidate_dir = ctx.out_dir / syn.CANDIDATE
    conditioning = bundle.info.get("conditioning") or manifest["properties"].get("conditioning") or "region"
    with timer.stage("stage_candidate", scfg.units_per_class * len(class_names)):
        candidate = syn.stage_candidate(sample, class_names, conditioning, scfg, candidate_dir,
                                        class_prior=bundle.info.get("class_prior"), log=ctx.log)
    inception, skip_reason = inception_or_skip(cfg)
    outcome = core.evaluate_units(splits["train"], splits["holdout"], splits["test"], synthetic, class_names, cfg,
                                  inception=inception, inception_skip_reason=skip_reason, timer=timer)
    evaluation = outcome.evaluation
    evaluation.synthetic.update({"generator": variant, "model_steps": bundle.info.get("steps")})
    encoder = core.attack_encoder(outcome, splits["test"], class_names, cfg, timer)
    priv, judged, release = judge_release(ctx, splits, candidate, candidate_dir, encoder, bundle, release,
                                          scfg.release_filter, timer, privacy)
    # The model's formal guarantee, when trained with DP (trainer.dp), read beside the attacks.
    priv = dataclasses.replace(priv, encoder=encoder.description, dp=bundle.info.get("dp") or {"enabled": False})
    evaluation = dataclasses.replace(evaluation, privacy=priv, release=release,
                                     canary=audit_canaries(ctx.inputs["model"], bundle, judged, splits, pcfg,
                                                           ctx.config.evaluator.seed, timer, ctx.log))
    config = ctx.config.to_dict()
    record = {"config": {k: config[k] for k in ("evaluator", "privacy", "synthesize")},
              "inputs": {k: str(Path(v).resolve()) for k, v in ctx.inputs.items()}}
    facts = {"examples": ctx.inputs["examples"].name, "model": ctx.inputs["model"].name,
             "generator": variant, "seed": cfg.seed, "classes": len(class_names),
             "release candidate": f"{release['judged_units']} units, seed {scfg.seed}"}
    metrics, verdict = judge_and_write(ctx.out_dir, evaluation, judged, splits, synthetic, class_names, cfg, pcfg,
                                       timer, verdict_fields={"release": release}, record=record, facts=facts,
                                       title="vugan evaluation: synthetic vs real vertebral units")
    out = ctx.out_dir
    ctx.log(f"evaluate: verdict {'PASSED' if verdict['passed'] else 'FAILED'} ({verdict['headline']}); "
            f"report {out / 'report.html'}")
    fid = metrics["fidelity"]
    # What publishing (synthesize) reads: the verdict, the release chain and the headline metrics at the precision
    # its datasheet prints. A change that only touches the report (figures, layout) leaves this summary, and so
    # the published dataset, unchanged and cached.
    summary = {"passed": verdict["passed"], "reasons": verdict["reasons"], "release": release,
               "headline": {k: f"{v:.4g}" for k, v in metrics["headline"].items()}}
    return ExecResult(
        summary=summary,
        counts={"synthetic": len(synthetic), "candidate": len(judged), **{s: len(u) for s, u in splits.items()}},
        properties={"verdict": verdict, "fid_ratio": fid["fid_ratio"], "fid_ratio_embedding": fid["fid_ratio_embedding"],
                    "fidelity_encoder": fid["fid_ratio_encoder"],
                    "tstr_balanced_accuracy": metrics["utility"]["tstr_balanced_accuracy"],
                    "trtr_balanced_accuracy": metrics["utility"]["trtr_balanced_accuracy"],
                    "ms_ssim": metrics["diversity"]["ms_ssim"]})
