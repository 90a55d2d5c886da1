"""The wheel: everything installs under the one `vugan` namespace, nothing generic lands in site-packages, and the
installed command works from a venv that has never seen the repository.

The wheel is built for real (setuptools, no build isolation: no download) and installed for real into a fresh
venv. Only its third-party dependencies are borrowed from the project's own venv (a path entry, so nothing is
downloaded and the project's editable install is not visible there).
"""
from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the tracked tree, so no build/ or egg-info folder is left in the checkout.
    src = out / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((ROOT / rel).read_bytes())
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = (out / "dist").glob("vugan-*.whl")
    return whl


def test_wheel_holds_only_the_vugan_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"vugan", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for module in ("vugan/pipeline/cli.py", "vugan/components/schema.py", "vugan/models/acgan.py",
                   "vugan/components/evaluator/features/vu_encoder.py",
                   # the fixed feature network ships with the code (its sha256 is checked against its card)
                   "vugan/models/vu_encoder/vu-encoder-v1.npz", "vugan/models/vu_encoder/vu-encoder-v1.json"):
        assert module in names, module
    assert not any(n.startswith(("vugan/tests/", "vugan/bench/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "vugan = vugan.pipeline.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_wheel_installs_into_a_clean_venv_and_runs(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Third-party packages from the project's venv as a plain path entry: its .pth files (the editable install of
    # this checkout) are not processed there, so only the wheel's code is importable as vugan.
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    dependency_dirs = [p for p in sys.path if p.endswith("site-packages")] or site.getsitepackages()
    Path(purelib, "zz_dependencies.pth").write_text("\n".join(dependency_dirs) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    away = tmp_path / "elsewhere"
    away.mkdir()

    def run(*args, timeout=600):
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, cwd=away)

    where = run(str(py), "-c", "import vugan.pipeline.cli as c; print(c.__file__)")
    assert where.returncode == 0, where.stderr[-2000:]
    assert where.stdout.strip().startswith(purelib), where.stdout  # the wheel's copy, not this checkout
    for generic in ("pipeline", "components", "models"):
        proc = run(str(py), "-c", f"import {generic}")
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, (generic, proc.stderr[-500:])
    helped = run(str(venv / "bin" / "vugan"), "--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "phantom" in helped.stdout and "audit" in helped.stdout
    made = run(str(venv / "bin" / "vugan"), "phantom", "--out", str(tmp_path / "phantom"), "--patients", "2",
               "--seed", "3")
    assert made.returncode == 0, made.stderr[-3000:]
    assert (tmp_path / "phantom" / "scans.csv").is_file() and (tmp_path / "phantom" / "artifact.json").is_file()
