"""``vugan preprocess``: MRI volumes listed in a scans.csv -> vertebral-unit crops (the Examples artifact).

  vugan preprocess --manifest scans.csv --out DIR [--config FILE] [--set preprocess.k=v] [Beam options]

Beam options pass through unchanged, e.g. ``--runner DataflowRunner --project P --region R
--temp_location gs://B/tmp`` runs the same job on Dataflow (the project is shipped to workers through
``--setup_file pyproject.toml`` unless you give ``--setup_file``/``--sdk_location``/``--extra_package``).
In ``vugan run`` the manifest comes from ``options["manifest"]`` or ``config.run.manifest``.
"""
from __future__ import annotations

import json
import os
import shutil

from vugan.components import schema
from vugan.components.preprocess import beam_pipeline
from vugan.components.preprocess.manifest import plan, resolve_salt
from vugan.pipeline.artifacts import ArtifactType
from vugan.pipeline.component import ExecContext, ExecResult

def _clear_previous(out_dir: str) -> None:
    # A rerun into the same folder must not leave shards of an earlier run with another shard count.
    for name in [f"Split-{s}" for s in schema.SPLITS] + ["previews"]:
        shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)
    for name in ("stats.json", "dead_letters.jsonl"):
        if os.path.exists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))


def build_job(config, manifest: str, out_dir: str, beam_args=()):
    """Plan the job and build its Beam pipeline without running it: (pipeline, description).

    Reads the manifest (so a bad one fails here), assigns splits and pseudonyms, resolves the runner options
    (``beam_pipeline.pipeline_options``). ``pipeline.run()`` does the work.
    """
    cfg = config.preprocess
    salt, salt_source = resolve_salt(cfg)
    planned = plan(str(manifest), cfg, salt)  # fails here, before any work, on a bad manifest
    tasks = planned.tasks
    patients = {s: len({t.patient for t in tasks if t.split == s}) for s in schema.SPLITS}
    h, w = cfg.image_size
    describe = {"image_shape": [h, w, cfg.slices], "unit": cfg.unit, "conditioning": cfg.conditioning,
                "salt_source": salt_source, "patients_by_split": patients, "scans": len(tasks), **planned.counts}
    pipeline = beam_pipeline.make_pipeline(tasks, cfg, str(out_dir), list(beam_args),
                                           extra_stats={k: v for k, v in describe.items() if k != "scans"},
                                           manifest_dead=planned.dead_letters)
    return pipeline, describe


def execute(ctx: ExecContext) -> ExecResult:
    cfg = ctx.config.preprocess
    manifest = ctx.options.get("manifest") or ctx.config.run.manifest
    if not manifest:
        raise ValueError("preprocess: no manifest; pass --manifest scans.csv or set run.manifest in the config")
    out_dir = str(ctx.out_dir)
    beam_args = list(ctx.options.get("beam_args") or ctx.options.get("extra_args") or [])
    pipeline, describe = build_job(ctx.config, manifest, out_dir, beam_args)
    ctx.log(f"preprocess: {describe['manifest_rows']} manifest rows: {describe.pop('scans')} scans, "
            f"{describe['rows_rejected']} rejected, {describe['rows_duplicate_dropped']} duplicates of one patient "
            f"dropped; patients per split {describe['patients_by_split']}, salt from {describe['salt_source']}")
    _clear_previous(out_dir)
    pipeline.run().wait_until_finish()

    with open(os.path.join(out_dir, "stats.json")) as fh:
        stats = json.load(fh)
    splits = {s: sum(stats["by_split_region"].get(s, {}).values()) for s in schema.SPLITS}
    ctx.log(f"preprocess: {stats['vus_written']} units written {splits}, {stats['vus_rejected']} rejected, "
            f"{stats['scans_failed']} of {stats['scans_in']} scans failed (see dead_letters.jsonl)")
    for key, n in stats.get("notes", {}).items():
        ctx.log(f"preprocess: note: {key.replace('_', ' ')}: {n} scan(s) (stats.json 'notes')")
    counts = {k: stats[k] for k in ("scans_in", "scans_ok", "scans_failed", "vus_written", "vus_rejected")}
    counts.update({k: describe[k] for k in ("manifest_rows", "rows_rejected", "rows_duplicate_dropped")})
    counts.update({f"vus_{s}": n for s, n in splits.items()})
    properties = {**describe, "class_names": list(schema.class_names(cfg.conditioning, cfg.unit)),
                  "splits": splits, "slice_spacing_mm": cfg.slice_spacing_mm,
                  "by_split_region": stats["by_split_region"],
                  # Whether scans flagged BurnedInAnnotation = YES were used, and how many: the datasheet says so.
                  "burned_in_annotation": {"accepted": cfg.accept_burned_in,
                                           "scans": stats.get("notes", {}).get("burned_in_annotation_accepted", 0)}}
    return ExecResult(counts=counts, properties=properties)
