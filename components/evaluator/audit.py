"""`vugan audit`: judge ANY synthetic set against a preprocess artifact's splits, without the model that made it.

  vugan audit --examples PREPROCESS_DIR --synthetic DIR --out DIR

DIR is either a folder holding ``Split-synthetic/`` TFRecords in the project's schema (what `vugan synthesize`
writes), or a folder of NIfTI units ([H, W, K] like the examples' crops) with a ``manifest.csv`` naming each file's
class (columns ``nifti`` or ``file``, and ``class_name``) or one sub-folder per class name. The audit runs the
fidelity, diversity and utility evaluation, every attack that needs only the released images (distance attacks,
DOMIAS, memorisation and copies) and the release gate, and writes metrics.json, verdict.json and report.html as
the evaluator does. Members are the train split, non-members and the DOMIAS reference the holdout split; the
embedding encoder is trained on the test split.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from vugan.components.evaluator.canonical import canonical_synthetic
from vugan.components.schema import REGIONS, UnitArrays, unit_region
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import ExecContext, ExecResult


def _units(images, class_ids, class_names, ids) -> UnitArrays:
    names = np.array([class_names[c] for c in class_ids], object)
    regions = np.array([n if n in REGIONS else unit_region(n) for n in names], object)
    return UnitArrays(np.asarray(images, np.float32), np.asarray(class_ids, np.int32), regions, names,
                      np.array(ids, object))


def _nifti_list(folder: Path, class_names) -> list[tuple[Path, str]]:
    manifest = folder / "manifest.csv"
    if manifest.exists():
        with open(manifest, newline="") as fh:
            rows = list(csv.DictReader(fh))
        col = "nifti" if rows and "nifti" in rows[0] else "file"
        if not rows or col not in rows[0] or "class_name" not in rows[0]:
            raise ValueError(f"{manifest}: needs columns 'nifti' (or 'file') and 'class_name'")
        return [(folder / r[col], r["class_name"]) for r in rows if r.get(col)]
    out = []
    for cname in class_names:
        sub = folder / cname.replace("/", "-")
        out += [(p, cname) for p in sorted(sub.glob("*.nii*"))]
    if not out:
        raise ValueError(f"{folder}: no Split-synthetic/ TFRecords, no manifest.csv and no NIfTI files in folders "
                         f"named by class ({', '.join(class_names)}); see `vugan audit --help`")
    return out


def load_synthetic(folder: str | Path, class_names, image_shape) -> tuple[UnitArrays, str]:
    """(units, description) of a synthetic set; classes are matched by name to the examples' classes."""
    from vugan.components import schema

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"audit: --synthetic {folder} is not a folder")
    if (folder / "Split-synthetic").is_dir():
        units = schema.load_split(str(folder), "synthetic")
        kind = "Split-synthetic/ TFRecords"
        names = [str(n) if str(n) in class_names else str(r) for n, r in zip(units.level_names, units.regions)]
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise ValueError(f"{folder}: synthetic units of classes {unknown} that the examples do not have "
                             f"({', '.join(class_names)})")
        ids = [class_names.index(n) for n in names]
        units = _units(units.images, ids, class_names, [f"synthetic-{i}" for i in range(len(ids))])
    else:
        import nibabel as nib

        files = _nifti_list(folder, class_names)
        images, ids = [], []
        for path, cname in files:
            if cname not in class_names:
                raise ValueError(f"{path}: class {cname!r} is not one of the examples' ({', '.join(class_names)})")
            images.append(np.asarray(nib.load(str(path)).dataobj, np.float32))
            ids.append(class_names.index(cname))
            if images[-1].shape != tuple(image_shape):
                raise ValueError(f"{path}: shape {images[-1].shape} differs from the examples' units "
                                 f"{tuple(image_shape)} (H, W, K; values in [-1, 1])")
        units = _units(np.stack(images), ids, class_names, [f"synthetic-{i}" for i in range(len(ids))])
        kind = "NIfTI units"
    if len(units) == 0:
        raise ValueError(f"{folder}: the synthetic set is empty")
    units = canonical_synthetic(units)  # the same set in any file or record order gives the same evidence
    if units.images.shape[1:] != tuple(image_shape):
        raise ValueError(f"{folder}: units of shape {units.images.shape[1:]}, the examples' are {tuple(image_shape)}")
    return units, kind


def _digest(units: UnitArrays) -> str:
    h = hashlib.sha256(np.ascontiguousarray(units.images).tobytes())
    h.update(np.ascontiguousarray(units.class_ids).tobytes())
    return h.hexdigest()


def execute(ctx: ExecContext) -> ExecResult:
    from vugan.components.evaluator import core
    from vugan.components.evaluator.privacy.attacks import evaluate_privacy
    from vugan.components.evaluator.run import inception_or_skip, judge_and_write, load_inputs

    cfg, pcfg = ctx.config.evaluator, ctx.config.privacy
    manifest, splits = load_inputs(ctx.inputs["examples"])
    class_names = tuple(manifest["properties"].get("class_names") or ())
    if not class_names:
        raise ValueError(f"{ctx.inputs['examples']}: the Examples artifact names no class_names")
    synthetic, kind = load_synthetic(ctx.options["synthetic"], class_names, splits["train"].images.shape[1:])
    ctx.log(f"audit: {len(synthetic)} synthetic units ({kind}) against {len(splits['train'])} train / "
            f"{len(splits['holdout'])} holdout / {len(splits['test'])} test units")
    timer = core.StageTimer(ctx.log)
    inception, skip_reason = inception_or_skip(cfg)
    outcome = core.evaluate_units(splits["train"], splits["holdout"], splits["test"], synthetic, class_names, cfg,
                                  inception=inception, inception_skip_reason=skip_reason, timer=timer)
    evaluation, digest = outcome.evaluation, _digest(synthetic)
    evaluation.synthetic.update({"generator": "unknown (audited set)", "source": str(ctx.options["synthetic"]),
                                 "format": kind, "sha256": digest})
    encoder = core.attack_encoder(outcome, splits["test"], class_names, cfg, timer)
    with timer.stage("privacy", len(splits["train"]) + len(splits["holdout"]) + len(synthetic)):
        priv = evaluate_privacy(splits["train"], splits["holdout"], synthetic, None, encoder, pcfg, cfg.seed)
    priv = dataclasses.replace(priv, encoder=encoder.description,
                               dp={"enabled": False, "note": "an audited set carries no DP guarantee of its own"})
    audited = {"synthetic": str(Path(ctx.options["synthetic"]).resolve()), "format": kind,
               "units": len(synthetic), "sha256": digest}
    config = ctx.config.to_dict()
    record = {"config": {k: config[k] for k in ("evaluator", "privacy")},
              "inputs": {"examples": str(Path(ctx.inputs["examples"]).resolve()), "synthetic": audited["synthetic"]}}
    facts = {"examples": ctx.inputs["examples"].name, "synthetic": Path(ctx.options["synthetic"]).name,
             "format": kind, "units": len(synthetic), "classes": len(class_names)}
    metrics, verdict = judge_and_write(ctx.out_dir, dataclasses.replace(evaluation, privacy=priv), synthetic, splits,
                                       synthetic, class_names, cfg, pcfg, timer, verdict_fields={"audited": audited},
                                       record=record, facts=facts,
                                       title="vugan audit: a synthetic set judged against real vertebral units")
    ctx.log(f"audit: verdict {'PASSED' if verdict['passed'] else 'FAILED'} ({verdict['headline']}); "
            f"report {ctx.out_dir / 'report.html'}")
    return ExecResult(counts={"synthetic": len(synthetic), **{s: len(u) for s, u in splits.items()}},
                      properties={"verdict": verdict, "audited": verdict["audited"]},
                      summary={"passed": verdict["passed"], "reasons": verdict["reasons"]})
