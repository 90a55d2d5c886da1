"""TensorFlow's process-wide settings, made BEFORE TensorFlow is imported (it reads them once, at load time).

Why each one:
- ``TF_ENABLE_ONEDNN_OPTS=1``: this TensorFlow wheel leaves oneDNN's CPU kernels off unless the variable is set
  before import; with them a generator forward+backward at s = 128 takes about 80 ms instead of 382 ms.
- ``TF_NUM_INTRAOP_THREADS`` = the cores this process may run on (``sched_getaffinity``, not the host's count,
  so a container or ``taskset`` limit is respected), ``TF_NUM_INTEROP_THREADS`` = 1 on up to 4 cores: one
  convolution already uses every core, so running two independent ops at once only oversubscribes them.
- ``OMP_NUM_THREADS`` likewise, for builds whose oneDNN uses OpenMP.
- ``TF_CPP_MIN_LOG_LEVEL=2``: keep TensorFlow's C++ info lines off the console.

Every value is a default: a variable the user set wins (``TF_ENABLE_ONEDNN_OPTS=0`` turns oneDNN off again).
Used by the ``vugan`` command (pipeline/cli.py), the bench scripts and tests/conftest.py.
"""
from __future__ import annotations

import os
import sys
import warnings


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def defaults(cores: int | None = None) -> dict[str, str]:
    cores = usable_cores() if cores is None else cores
    return {
        "TF_ENABLE_ONEDNN_OPTS": "1",
        "TF_NUM_INTRAOP_THREADS": str(cores),
        "TF_NUM_INTEROP_THREADS": "1" if cores <= 4 else "2",
        "OMP_NUM_THREADS": str(cores),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def configure(environ=None) -> dict[str, str]:
    """Set the defaults the user has not set; return the settings in force. Warns when TensorFlow is already
    loaded (then they cannot take effect in this process)."""
    environ = os.environ if environ is None else environ
    if "tensorflow" in sys.modules and environ is os.environ:
        missing = [k for k in defaults() if k not in environ]
        if missing:
            warnings.warn(f"vugan.pipeline.tf_env.configure() called after TensorFlow was imported: {', '.join(missing)} "
                          f"cannot take effect in this process; call it first", RuntimeWarning, stacklevel=2)
    for key, value in defaults().items():
        environ.setdefault(key, value)
    return {key: environ[key] for key in defaults()}
