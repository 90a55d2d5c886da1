"""pipeline/tf_env.py: the process settings the vugan command gives TensorFlow, set before TensorFlow loads."""
import os
import subprocess
import sys
from pathlib import Path

from vugan.pipeline import tf_env

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_fill_only_what_the_user_left_unset():
    env = {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "7"}
    got = tf_env.configure(env)
    assert got["TF_ENABLE_ONEDNN_OPTS"] == "0" and got["TF_NUM_INTRAOP_THREADS"] == "7"  # the user's choice wins
    assert env["TF_NUM_INTEROP_THREADS"] == ("1" if tf_env.usable_cores() <= 4 else "2")
    assert env["OMP_NUM_THREADS"] == str(tf_env.usable_cores())
    assert tf_env.configure({})["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert tf_env.defaults(cores=16)["TF_NUM_INTEROP_THREADS"] == "2"


def test_the_cli_sets_them_before_tensorflow_is_imported():
    """A fresh interpreter: importing the CLI sets oneDNN on and the thread pools, and has not loaded TensorFlow."""
    env = {k: v for k, v in os.environ.items() if k not in tf_env.defaults()}
    code = ("import os, sys; import pipeline.cli; assert 'tensorflow' not in sys.modules; "
            "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], os.environ['TF_NUM_INTRAOP_THREADS'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", str(tf_env.usable_cores())]
