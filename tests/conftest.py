"""Test-wide settings: TensorFlow as the vugan command configures it (pipeline/tf_env.py), keep tests off any GPU, and make the repo importable."""
import os
import sys
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from pipeline import tf_env  # noqa: E402

tf_env.configure()  # oneDNN and threads as the vugan command sets them, before any test imports TensorFlow
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

REAL_DATA = ROOT.parent / "shared" / "data" / "spine-mri-real"
