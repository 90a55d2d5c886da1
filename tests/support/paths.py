"""Where things are: the repository root, the venv's console scripts, the real scans beside the repository."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's console scripts: vugan, saved_model_cli
# The real scans sit beside the repository (../shared/data), never inside it (tests/conftest.py guards their use).
REAL_DATA = ROOT.parent / "shared" / "data" / "spine-mri-real"
COHORT_MANIFEST = ROOT.parent / "shared" / "data" / "spine-mri-cohort" / "scans.csv"  # 58 patients, three sources


def real_cohort_manifest() -> Path:
    """The 58-patient cohort's manifest; skips the calling test when it is absent, or fails it under
    VUGAN_REQUIRE_REAL_DATA=1 (CI must never pass by skipping the real data)."""
    import os

    import pytest

    if not COHORT_MANIFEST.is_file():
        reason = f"real cohort not found: {COHORT_MANIFEST} is absent"
        if os.environ.get("VUGAN_REQUIRE_REAL_DATA", "") not in ("", "0"):
            pytest.fail(f"{reason}; VUGAN_REQUIRE_REAL_DATA is set, so this is a failure, not a skip")
        pytest.skip(reason)
    return COHORT_MANIFEST
