"""Where things are: the repository root, the venv's console scripts, the real scans beside the repository."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's console scripts: vugan, saved_model_cli
# The real scans sit beside the repository (../shared/data), never inside it (tests/conftest.py guards their use).
REAL_DATA = ROOT.parent / "shared" / "data" / "spine-mri-real"
COHORT_MANIFEST = ROOT.parent / "shared" / "data" / "spine-mri-cohort" / "scans.csv"  # 58 patients, three sources
# spine-mri-cohort + spine-mri-cervical: 64 patients, 65 scans, all three regions (configs/three-regions.toml)
THREE_REGIONS_MANIFEST = ROOT.parent / "shared" / "data" / "spine-mri-three-regions" / "scans.csv"


def real_cohort_manifest() -> Path:
    """The 58-patient cohort's manifest; skips the calling test when it is absent, or fails it under
    VUGAN_REQUIRE_REAL_DATA=1 (CI must never pass by skipping the real data)."""
    return _required(COHORT_MANIFEST, "real cohort")


def three_regions_manifest() -> Path:
    """The 64-patient three-region manifest; skips or fails the calling test like :func:`real_cohort_manifest`."""
    return _required(THREE_REGIONS_MANIFEST, "three-region real cohort")


def _required(manifest: Path, what: str) -> Path:
    import os

    import pytest

    if not manifest.is_file():
        reason = f"{what} not found: {manifest} is absent"
        if os.environ.get("VUGAN_REQUIRE_REAL_DATA", "") not in ("", "0"):
            pytest.fail(f"{reason}; VUGAN_REQUIRE_REAL_DATA is set, so this is a failure, not a skip")
        pytest.skip(reason)
    return manifest
