"""trainer.dp_fake_clip_group = "patient" (issue 14): in per-patient DP the fake half is clipped in pseudo-patients
of the mean units per patient, so both halves enter D's update on one scale (about B / k clipped units of norm
<= C each, instead of B fakes against B / k patients)."""
import json

import numpy as np
import pytest

from vugan.components.trainer.dp.discriminator_phase import DPDiscriminatorPhase
from vugan.components.trainer.dp.spec import DPSettings
from vugan.components.trainer.component import SPEC
from vugan.pipeline.config import load_config
from support.trainer_runs import BATCH, N_PATIENTS, N_UNITS, QUIET, TINY, gan_and_batches


def test_grouped_fake_clip_bounds_each_group_like_a_patient(examples):
    cfg = load_config(None, TINY).trainer
    gan, batches = gan_and_batches(examples, cfg, DPSettings(1e-3, 0.0, BATCH, None))
    fake = gan.generator([batches[0]["z_d"], batches[0]["labels"]], training=False)
    labels, d_vars = batches[0]["labels"], gan.discriminator.trainable_variables

    def fake_grads(clip_norm, group):
        phase = DPDiscriminatorPhase(DPSettings(clip_norm, 0.0, BATCH, 4, fake_group_size=group))
        return np.concatenate([np.ravel(g) for g in phase.fake_half(gan, fake, labels, d_vars).grads])

    unclipped = fake_grads(1e6, 1)
    # A clip that never binds: grouping changes nothing (a group's gradient is the sum of its rows').
    np.testing.assert_allclose(fake_grads(1e6, 4), unclipped, rtol=1e-4, atol=1e-7)
    c = 1e-3
    assert np.linalg.norm(unclipped) > 10 * c  # far above the bound, so clipping binds everywhere
    # 8 fakes in 2 groups of 4: at most 2 C / 8 (as 2 patients' real half), against up to 8 C / 8 per example.
    grouped = fake_grads(c, 4)
    assert np.linalg.norm(grouped) <= 2 * c / BATCH * (1 + 1e-5)
    # Each of the 2 groups is clipped to exactly C here, so the sum has norm > C / 8 unless they cancel.
    assert float(np.dot(grouped, unclipped)) > 0


def test_per_patient_run_clips_fakes_in_groups_of_the_mean_patient(examples, tmp_path):
    out = tmp_path / "model"
    cfg = load_config(None, TINY + QUIET + ["trainer.steps=2", "trainer.log_every=1", "trainer.dp=true",
                                            "trainer.dp_fake_clip_group=patient"])
    SPEC.run(cfg, {"examples": examples}, out, log=lambda _: None)
    dp = json.loads((out / "model_info.json").read_text())["dp"]
    assert dp["fake_clip_group_size"] == round(N_UNITS / N_PATIENTS) == 5 and dp["steps"] == 2
    with pytest.raises(ValueError, match="dp_fake_clip_group = 'patient' needs dp_unit = 'patient'"):
        load_config(None, ["trainer.dp=true", "trainer.dp_unit=unit", "trainer.dp_sampling=shuffle",
                           "trainer.dp_fake_clip_group=patient"]).trainer.validate()
