"""Where things are: the repository root, the venv's console scripts, the real scans beside the repository."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's console scripts: vugan, saved_model_cli
# The real scans sit beside the repository (../shared/data), never inside it (tests/conftest.py guards their use).
REAL_DATA = ROOT.parent / "shared" / "data" / "spine-mri-real"
