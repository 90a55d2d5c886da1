"""The trainer's small test settings, its command run as a process, and a GAN with real batches of the shared
``examples`` fixture (tests/conftest.py) for the trainer and DP tests."""
from __future__ import annotations

import os
import subprocess
import sys

from support.paths import ROOT

# A network small enough for a CPU step in well under a second.
TINY = ["trainer.width=4", "trainer.batch_size=8", "trainer.noise_dim=16"]
QUIET = ["trainer.image_every=100", "trainer.checkpoint_every=100"]
# The ``examples`` fixture: 3 classes x 8 training units = 24 units of 5 patients (p0..p2: 6 units each, p3, p4: 3
# each); BATCH is TINY's batch size.
N_UNITS, N_PATIENTS, BATCH = 24, 5, 8


def run_cli(args, **kw):
    """``python -m vugan.components.trainer.run`` as a process, stdout and stderr merged (for kill and resume)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "vugan.components.trainer.run", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def gan_and_batches(examples, cfg, dp_settings):
    """The trainer's own ACGAN and three real fixture batches (with the D-phase fakes' labels set to the real
    labels, the one thing the DP step draws differently by design)."""
    from vugan.components.trainer import core
    from vugan.components.trainer.data import inspect_examples, make_dataset
    from vugan.components.trainer.dp.discriminator_phase import DPDiscriminatorPhase

    info = inspect_examples(examples)
    # What the trainer injects from a DPPlan (None: the ordinary D phase).
    gan = core.build_gan(cfg, info, global_batch=BATCH,
                         discriminator_phase=DPDiscriminatorPhase(dp_settings) if dp_settings else None)
    ds = make_dataset(info, global_batch=BATCH, noise_dim=cfg.noise_dim, seed=0, class_balanced=False,
                      shuffle_buffer=100)
    batches = [{**b, "d_fake_labels": b["labels"]} for b in ds.take(3)]
    return gan, batches
