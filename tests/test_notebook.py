"""notebooks/explore_run.ipynb executes top to bottom (nbclient, a real kernel) against the session's tiny run."""
from __future__ import annotations

import json
import os

import pytest

from support.paths import ROOT

# slow tier: executes the notebook in a real kernel against the tiny end-to-end run
pytestmark = pytest.mark.slow


def test_notebook_runs_against_a_run(tiny, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    run_dir, _ = tiny
    nb = nbformat.read(ROOT / "notebooks" / "explore_run.ipynb", as_version=4)
    monkeypatch.setenv("VUGAN_RUN_DIR", str(run_dir))  # the kernel inherits this process's environment
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []) if out.get("output_type") == "stream")
    summary = json.loads(text.split("NOTEBOOK_SUMMARY ", 1)[1].splitlines()[0])
    from vugan.pipeline.artifacts import read_artifact

    syn = read_artifact(run_dir / "synthesize")
    assert summary["units"] == syn["counts"]["units"]
    assert summary["classes"] == syn["properties"]["class_names"]
    assert summary["generate_dtype"] == "uint8"
    assert summary["generate_shape"][0] == 6 * len(summary["classes"])
    assert summary["generate_shape"][1:] == syn["properties"]["image_shape"]
    assert str(run_dir) in text and "signatures: ['generate', 'serving_default']" in text
    # The grids were drawn (image outputs), not just printed.
    images = sum(1 for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
                 if "image/png" in out.get("data", {}))
    assert images >= 3  # synthetic, real and SavedModel grids
    assert os.environ["VUGAN_RUN_DIR"] == str(run_dir)
