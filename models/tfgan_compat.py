"""The one place that imports tensorflow-gan.

tensorflow-gan 2.1.0 subclasses ``tf.estimator`` classes at import time, and TF >= 2.16 no longer ships
``tf.estimator``. Its losses and eval functions need none of that, so we install stand-in namespaces whose
classes raise if anyone instantiates them, then import tfgan. The stand-ins must go in AFTER
``import tensorflow_probability``, because that import replaces the ``tf.compat.v1`` object
(shared/docs/stack-notes.md). Everything in vugan reaches tfgan through ``from models.tfgan_compat import tfgan``.
"""
from __future__ import annotations

import types

import tensorflow as tf
import tensorflow_probability  # noqa: F401  (must precede the stand-ins: it replaces tf.compat.v1)


def _stand_in(qualname: str) -> type:
    class StandIn:
        def __init__(self, *args, **kwargs):
            raise RuntimeError(f"{qualname} is a stand-in so that tensorflow_gan imports on TF 2.16+; "
                               f"the estimator API does not exist in this TensorFlow")

    StandIn.__name__ = StandIn.__qualname__ = qualname.rsplit(".", 1)[-1]
    return StandIn


class _EstimatorNamespace(types.SimpleNamespace):
    """Any attribute asked for becomes a stand-in class (tfgan only subclasses or names them)."""

    def __init__(self, prefix: str, **kw):
        super().__init__(**kw)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        value = _stand_in(f"{self._prefix}.{item}")
        setattr(self, item, value)
        return value


def _install_stand_ins() -> None:
    if not hasattr(tf, "estimator"):
        tf.estimator = _EstimatorNamespace("tf.estimator", tpu=_EstimatorNamespace("tf.estimator.tpu"))
    v1 = tf.compat.v1
    if not hasattr(v1, "estimator"):
        v1.estimator = _EstimatorNamespace("tf.compat.v1.estimator",
                                           tpu=_EstimatorNamespace("tf.compat.v1.estimator.tpu"))


_install_stand_ins()

import tensorflow_gan as tfgan  # noqa: E402

# tf.compat.v1.losses reduction that keeps one loss per example (we reduce over the GLOBAL batch ourselves).
NO_REDUCTION = tf.compat.v1.losses.Reduction.NONE

__all__ = ["tfgan", "NO_REDUCTION"]
