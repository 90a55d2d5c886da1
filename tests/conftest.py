"""Test-wide settings and the fixtures several test modules share.

TensorFlow is set up as the vugan command configures it (pipeline/tf_env.py) and tests are kept off any GPU. The code
is imported as installed (``vugan.*``, `make setup`), never from the repository's top-level folders. Helpers that
tests share live in tests/support/ (no test module imports another); the fixtures built on them are here.

Tiers: tests marked ``slow`` (end-to-end runs, subprocesses that train or evaluate, long training, the notebook,
the real-data runs) run in `make test` only; `make test-quick` runs the rest (``pytest -m "not slow"``).
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
TESTS = Path(__file__).resolve().parent
from vugan.pipeline import tf_env  # noqa: E402

tf_env.configure()  # oneDNN and threads as the vugan command sets them, before any test imports TensorFlow
# The evaluator caches real-split features under $XDG_CACHE_HOME (components/evaluator/features/cache.py): tests
# (and the vugan processes they start, which inherit the environment) use a folder of their own, never the user's.
import tempfile  # noqa: E402

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="vugan-test-cache-")
if str(TESTS) not in sys.path:  # tests/support/ is imported as ``support`` by tests, conftest and bench/
    sys.path.insert(0, str(TESTS))

import pytest  # noqa: E402

from support.examples import make_examples_artifact  # noqa: E402
from support.paths import REAL_DATA  # noqa: E402
from support.pipeline_runs import tiny_run  # noqa: E402

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


# ------------------------------------------------------------------------------------------------ shared fixtures

@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """A tiny Examples artifact, fresh for each module: 3 classes x 8 training units of 5 patients, 16x16x3
    (support/trainer_runs.py names its counts). A module with other needs defines its own ``examples``."""
    return make_examples_artifact(tmp_path_factory.mktemp("ex") / "examples", n_per_class=8, shape=(16, 16, 3))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The session's one end-to-end ``vugan run`` of configs/tiny.toml: (run folder, finished process). Minutes of
    work, so it is built once; tests that change a run work on a copy (support.pipeline_runs.copy_run)."""
    return tiny_run(tmp_path_factory.getbasetemp() / "tiny-e2e")
