"""The preprocess job as an Apache Beam graph: scan tasks -> unit records in per-split TFRecord shards.

Graph (every step labelled):
  CreateScans -> ExtractUnits (one DoFn call per scan; tagged outputs units / dead / summary)
    units   -> WriteSplits (per split: EncodeRecords -> WriteToTFRecord, gzip, data-SSSSS-of-NNNNN.tfrecord.gz)
            -> WritePreviews (a few units per class, deterministic choice -> previews/<class>.png)
    dead    -> WriteDeadLetters (dead_letters.jsonl, one JSON object a line; an empty file when all went well)
    summary -> WriteStats (one merged dict -> stats.json)
All file writes go through Beam's FileSystems, so an output under gs:// works the same on Dataflow.

:func:`pipeline_options` resolves the runner options (DirectRunner defaults from config, Dataflow packaging),
:func:`build_pipeline` adds the graph to a pipeline without running it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from vugan.components import schema
from vugan.components.preprocess.manifest import ScanTask
from vugan.components.preprocess.units import preview_png, process_scan
from vugan.components.preprocess.spec import PreprocessConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
UNITS, DEAD, SUMMARY = "units", "dead", "summary"


# --------------------------------------------------------------------------------------------- options

def pipeline_options(cfg: PreprocessConfig, beam_args: Sequence[str] = ()) -> PipelineOptions:
    """Beam options from the command line, completed from config.

    DirectRunner (the default): ``direct_num_workers`` / ``direct_running_mode`` from config unless given.
    DataflowRunner: workers need this project installed; unless ``--setup_file``, ``--sdk_location`` or
    ``--extra_package`` is given, ``--setup_file`` is set to the project's ``pyproject.toml`` (Beam builds an
    sdist from it and installs it on each worker).
    """
    args = list(beam_args)

    def given(flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in args)

    options = PipelineOptions(args)
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    if runner in ("DirectRunner", "direct", "BundleBasedDirectRunner", "SwitchingDirectRunner"):
        if not given("--direct_num_workers"):
            args.append(f"--direct_num_workers={cfg.direct_num_workers}")
        if not given("--direct_running_mode"):
            args.append(f"--direct_running_mode={cfg.direct_running_mode}")
    elif "Dataflow" in runner:
        if not (given("--setup_file") or given("--sdk_location") or given("--extra_package")
                or given("--extra_packages")):
            args.append(f"--setup_file={PROJECT_ROOT / 'pyproject.toml'}")
    options = PipelineOptions(args)
    options.view_as(SetupOptions).save_main_session = False  # the DoFns live in importable modules
    return options


def unknown_beam_flags(args: Sequence[str]) -> list[str]:
    """The arguments that are no Beam pipeline option (a typo such as ``--confg`` must not pass silently)."""
    from apache_beam.options import pipeline_options as po

    parser = po._BeamArgumentParser(allow_abbrev=False)  # the parser PipelineOptions itself builds
    for cls in {str(c): c for c in po.PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    _, unknown = parser.parse_known_args(list(args))
    return unknown


# --------------------------------------------------------------------------------------------- transforms

class _ExtractUnitsFn(beam.DoFn):
    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg

    def process(self, task: ScanTask):
        result = process_scan(task, self.cfg)
        by_split_region: dict = {}
        for record, _ in result.records:
            key = f"{task.split}/{record.region}"
            by_split_region[key] = by_split_region.get(key, 0) + 1
            yield beam.pvalue.TaggedOutput(UNITS, (task.split, record))
        for dead in result.dead_letters:
            yield beam.pvalue.TaggedOutput(DEAD, dead)
        yield beam.pvalue.TaggedOutput(SUMMARY, {
            "scans_in": 1, "scans_ok": int(result.ok), "scans_failed": int(not result.ok),
            "vus_found": result.units_found, "vus_written": len(result.records),
            "vus_rejected": sum(1 for d in result.dead_letters if d["unit"]), "by_split_region": by_split_region,
            "notes": dict(result.notes)})


class ExtractUnits(beam.PTransform):
    """ScanTask -> tagged outputs: units (split, UnitRecord), dead (dict), summary (per-scan counts)."""

    def __init__(self, cfg: PreprocessConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, tasks):
        # Reshuffle so that multi-worker runners spread the (few, heavy) scans instead of fusing them.
        return (tasks
                | "Reshuffle" >> beam.Reshuffle()
                | "CutUnits" >> beam.ParDo(_ExtractUnitsFn(self.cfg)).with_outputs(UNITS, DEAD, SUMMARY))


class WriteSplits(beam.PTransform):
    """(split, UnitRecord) -> gzip TFRecord shards under ``Split-<split>/``, one sink per split."""

    def __init__(self, out_dir: str, num_shards: int):
        super().__init__()
        self.out_dir, self.num_shards = out_dir, num_shards

    def expand(self, units):
        results = {}
        for split in schema.SPLITS:
            results[split] = (
                units
                | f"Select-{split}" >> beam.Filter(lambda item, s=split: item[0] == s)
                | f"Encode-{split}" >> beam.Map(lambda item: schema.encode(item[1]))
                | f"Write-{split}" >> beam.io.WriteToTFRecord(
                    os.path.join(schema.split_dir(self.out_dir, split), "data"),
                    file_name_suffix=".tfrecord.gz", num_shards=self.num_shards,
                    compression_type=beam.io.filesystem.CompressionTypes.GZIP))
        return results


def _write_bytes(path: str, data: bytes) -> None:
    # FileSystems.create makes local parent folders itself (and object stores have none): no racy mkdirs.
    with FileSystems.create(path) as fh:
        fh.write(data)


def _preview_key(record: schema.UnitRecord) -> str:
    # A content-free, deterministic choice of preview units (same units on every run with the same salt).
    return hashlib.sha256(f"{record.scan}/{record.level_name}".encode()).hexdigest()


class WritePreviews(beam.PTransform):
    """A few units per class -> ``previews/<class>.png`` (rows: units; columns: their K slices)."""

    def __init__(self, out_dir: str, cfg: PreprocessConfig):
        super().__init__()
        self.out_dir, self.cfg = out_dir, cfg

    def expand(self, units):
        names = schema.class_names(self.cfg.conditioning, self.cfg.unit)
        n = self.cfg.preview_units
        out_dir = self.out_dir

        def write(item):
            class_id, picked = item
            picked = sorted(picked, key=lambda x: x[0])
            safe = names[class_id].replace("/", "-")
            _write_bytes(os.path.join(out_dir, "previews", f"{safe}.png"), preview_png([p[1] for p in picked]))
            return safe

        return (units
                | "KeyByClass" >> beam.Map(lambda item: (item[1].class_id, (_preview_key(item[1]), item[1].image)))
                | "PickPerClass" >> beam.combiners.Top.PerKey(max(n, 1), key=lambda x: x[0])
                | "RenderPng" >> beam.Map(write))


class _MergeSummaries(beam.CombineFn):
    def create_accumulator(self):
        return {"scans_in": 0, "scans_ok": 0, "scans_failed": 0, "vus_found": 0, "vus_written": 0,
                "vus_rejected": 0, "by_split_region": {}, "notes": {}}

    def add_input(self, acc, s):
        for k in ("scans_in", "scans_ok", "scans_failed", "vus_found", "vus_written", "vus_rejected"):
            acc[k] += s[k]
        for key in ("by_split_region", "notes"):
            for k, v in s[key].items():
                acc[key][k] = acc[key].get(k, 0) + v
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            self.add_input(out, a)
        return out

    def extract_output(self, acc):
        nested: dict = {}
        for key, v in sorted(acc["by_split_region"].items()):
            split, region = key.split("/")
            nested.setdefault(split, {})[region] = v
        return {**{k: v for k, v in acc.items() if k not in ("by_split_region", "notes")}, "by_split_region": nested,
                # What was left out or not recognised, scans counted per kind (DICOM localisers, unknown labels).
                "notes": dict(sorted(acc["notes"].items()))}


class WriteReports(beam.PTransform):
    """Dead letters -> ``dead_letters.jsonl``; per-scan summaries -> ``stats.json``."""

    def __init__(self, out_dir: str, extra_stats: dict, manifest_dead: Sequence[dict] = ()):
        super().__init__()
        self.out_dir, self.extra_stats, self.manifest_dead = out_dir, extra_stats, list(manifest_dead)

    def expand(self, outputs):
        dead, summary = outputs
        # Rows the manifest checks rejected before any work join the scans' dead letters in one file.
        planned = dead.pipeline | "ManifestDeadLetters" >> beam.Create(self.manifest_dead)
        dead = (dead, planned) | "AllDeadLetters" >> beam.Flatten()
        out_dir, extra = self.out_dir, self.extra_stats
        (dead
         | "DeadToJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
         | "WriteDeadLetters" >> beam.io.WriteToText(os.path.join(out_dir, "dead_letters"),
                                                     file_name_suffix=".jsonl", shard_name_template=""))
        return (summary
                | "MergeSummaries" >> beam.CombineGlobally(_MergeSummaries())
                | "WriteStats" >> beam.Map(lambda s: _write_bytes(
                    os.path.join(out_dir, "stats.json"),
                    (json.dumps({**s, **extra}, indent=2, sort_keys=True) + "\n").encode())))


# --------------------------------------------------------------------------------------------- graph

def build_pipeline(p: beam.Pipeline, tasks: Sequence[ScanTask], cfg: PreprocessConfig, out_dir: str,
                   extra_stats: dict | None = None, manifest_dead: Sequence[dict] = ()) -> None:
    """Add the whole preprocess graph to ``p`` (nothing runs until ``p.run()``)."""
    extracted = (p
                 | "CreateScans" >> beam.Create(list(tasks))
                 | "ExtractUnits" >> ExtractUnits(cfg))
    units = extracted[UNITS]
    _ = units | "WriteSplits" >> WriteSplits(out_dir, cfg.shards_per_split)
    if cfg.preview_units > 0:
        _ = units | "WritePreviews" >> WritePreviews(out_dir, cfg)
    _ = (extracted[DEAD], extracted[SUMMARY]) | "WriteReports" >> WriteReports(out_dir, extra_stats or {},
                                                                               manifest_dead)


def make_pipeline(tasks: Sequence[ScanTask], cfg: PreprocessConfig, out_dir: str,
                  beam_args: Sequence[str] = (), extra_stats: dict | None = None,
                  manifest_dead: Sequence[dict] = ()) -> beam.Pipeline:
    """A ready-to-run (not yet run) pipeline with options resolved from ``beam_args`` and config."""
    p = beam.Pipeline(options=pipeline_options(cfg, beam_args))
    build_pipeline(p, tasks, cfg, out_dir, extra_stats, manifest_dead)
    return p
