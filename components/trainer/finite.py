"""Training stops at the first non-finite loss, with a clear error, before that step's checkpoint is saved.

A NaN or infinite loss means the weights are already NaN or about to be; going on would write a model of NaN
weights and exit 0 (it once did with trainer.lr_g = nan). The trainer keeps each step's losses as tensors and
checks them in one host read at every log, image or checkpoint step, so the hot path has no per-step sync and the
error still names the first bad step.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

LOSSES = ("d_loss", "g_loss")  # the scalars checked


class NonFiniteLossError(ValueError):
    """The loss became NaN or infinite; the message names the step, the losses and what to try."""


def check_steps(steps: list[tuple[int, dict]], checkpoint_every: int) -> None:
    """:func:`check_losses` for each ``(step, scalars)`` in order: the first non-finite step raises.

    The losses of all the steps are stacked on the device and read back together (one transfer, not one per
    scalar), and only a step found bad is looked at on its own.
    """
    if not steps:
        return
    keys = [k for k in LOSSES if k in steps[0][1]]
    if not keys:
        return
    table = tf.stack([scalars[k] for _, scalars in steps for k in keys]).numpy()  # float32 losses
    bad = ~np.isfinite(table.reshape(len(steps), len(keys))).all(axis=1)
    if bad.any():
        step, scalars = steps[int(np.argmax(bad))]
        check_losses(step, scalars, checkpoint_every)


def check_losses(step: int, scalars: dict, checkpoint_every: int) -> None:
    """Raise :class:`NonFiniteLossError` when ``d_loss`` or ``g_loss`` at ``step`` is not finite."""
    values = {k: float(scalars[k]) for k in LOSSES if k in scalars}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if not bad:
        return
    shown = ", ".join(f"{k} {v}" for k, v in values.items())
    saved = (step - 1) // checkpoint_every * checkpoint_every
    kept = f"checkpoints up to step {saved} are kept" if saved > 0 else "no checkpoint was written"
    raise NonFiniteLossError(
        f"trainer: the loss is not finite at step {step} ({shown}); training stopped before saving this step "
        f"({kept}, no model was exported). Lower trainer.lr_g / trainer.lr_d, or check the Examples for extreme "
        f"values")
