"""Test-wide settings: TensorFlow as the vugan command configures it (pipeline/tf_env.py) and tests kept off any GPU.
The code is imported as installed (``vugan.*``, `make setup`), never from the repository's top-level folders."""
import os
import sys
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
ROOT = Path(__file__).resolve().parents[1]
from vugan.pipeline import tf_env  # noqa: E402

tf_env.configure()  # oneDNN and threads as the vugan command sets them, before any test imports TensorFlow
# The evaluator caches real-split features under $XDG_CACHE_HOME (components/evaluator/features/cache.py): tests
# (and the vugan processes they start, which inherit the environment) use a folder of their own, never the user's.
import tempfile  # noqa: E402

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="vugan-test-cache-")
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

REAL_DATA = ROOT.parent / "shared" / "data" / "spine-mri-real"

import pytest  # noqa: E402

# The real scans sit beside the repository (../shared/data), never inside it: a clone made outside this team has
# no such folder, and its `make test` skips the tests that need them, saying why. CI sets
# VUGAN_REQUIRE_REAL_DATA=1 (.ci/run), so there a missing folder fails those tests instead of skipping them.
REQUIRE_REAL_DATA = os.environ.get("VUGAN_REQUIRE_REAL_DATA", "") not in ("", "0")


def real_data_missing_reason() -> str | None:
    if (REAL_DATA / "scans.csv").is_file():
        return None
    return (f"real spine MRI not found: {REAL_DATA / 'scans.csv'} is absent (the data live in ../shared/data beside "
            f"the repository, which a fresh clone does not have)")


def pytest_configure(config):
    config.addinivalue_line("markers", "real_data: needs ../shared/data/spine-mri-real (skipped when absent, "
                                       "fails instead when VUGAN_REQUIRE_REAL_DATA=1)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("real_data") is None:
        return
    reason = real_data_missing_reason()
    if reason is None:
        return
    if REQUIRE_REAL_DATA:
        pytest.fail(f"{reason}; VUGAN_REQUIRE_REAL_DATA is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)
