"""configs/dataflow.toml: the Dataflow options it documents resolve for the DataflowRunner (Beam's own validator
agrees), and the preprocess job graph builds for gs:// paths without running (no cloud access here)."""
from __future__ import annotations

import re

from support.paths import ROOT


def _beam_args() -> list[str]:
    text = (ROOT / "configs" / "dataflow.toml").read_text()
    block = text.split("# beam-options:", 1)[1].split("# end", 1)[0]
    return re.findall(r"--\S+", block)


def test_dataflow_config_loads_with_cloud_paths():
    from vugan.pipeline.config import load_config

    config = load_config(ROOT / "configs" / "dataflow.toml")
    assert config.run.manifest.startswith("gs://")
    assert config.trainer.mixed_precision and config.trainer.batch_size >= 64  # the GPU settings
    args = _beam_args()
    assert "--runner=DataflowRunner" in args and any(a.startswith("--temp_location=gs://") for a in args)


def test_preprocess_options_resolve_and_graph_builds():
    import apache_beam as beam  # noqa: F401
    from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions, StandardOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

    from vugan.components.preprocess import beam_pipeline
    from vugan.components.preprocess.manifest import ScanTask
    from vugan.pipeline.config import load_config

    config = load_config(ROOT / "configs" / "dataflow.toml")
    args = _beam_args()
    options = beam_pipeline.pipeline_options(config.preprocess, args)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.project, cloud.region) == ("my-gcp-project", "europe-west4")
    assert cloud.temp_location.startswith("gs://")
    # Workers get the project through its packaging; DirectRunner-only settings are not added.
    assert options.view_as(SetupOptions).setup_file == str(ROOT / "pyproject.toml")
    assert "direct_num_workers" not in " ".join(options.get_all_options(drop_default=True))

    tasks = [ScanTask(row=1, scan="s1", patient="p1", split="train", image="gs://b/scans/1.nii.gz",
                      mask="gs://b/labels/1_vert.nii.gz"),
             ScanTask(row=2, scan="s2", patient="p2", split="test", image="gs://b/scans/2.nii.gz",
                      centroids="gs://b/ctd/2.json")]
    p = beam_pipeline.make_pipeline(tasks, config.preprocess, "gs://my-vugan-bucket/runs/00001/preprocess", args)
    assert type(p.runner).__name__ == "DataflowRunner"
    assert PipelineOptionsValidator(p.options, p.runner).validate() == []
    proto = p.to_runner_api()  # the graph as Dataflow would receive it; nothing ran
    labels = {t.unique_name.split("/")[0] for t in proto.components.transforms.values()}
    assert {"CreateScans", "ExtractUnits", "WriteSplits", "WriteReports"} <= labels


def test_a_broken_dataflow_setup_fails_at_build_time():
    import pytest

    from vugan.components.preprocess import beam_pipeline
    from vugan.pipeline.config import load_config

    config = load_config(ROOT / "configs" / "dataflow.toml")
    args = [a for a in _beam_args() if not a.startswith(("--temp_location", "--staging_location"))]
    # Beam validates Dataflow options when the pipeline object is made: a local temp_location is refused there,
    # long before anything would be submitted.
    with pytest.raises(ValueError, match="temp_location"):
        beam_pipeline.make_pipeline([], config.preprocess, "gs://b/out", args + ["--temp_location=/tmp/x"])
