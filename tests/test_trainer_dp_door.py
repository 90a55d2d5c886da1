"""DP behind one door (issue 21): the ac-GAN runs whatever discriminator phase it is handed, the ordinary one by
default; gan_model.py imports nothing of DP; the DP keys keep their place in [trainer] (config.toml order and the
config fingerprint), and the training loop asks a mode instead of branching on DP."""
import ast
import dataclasses

import numpy as np

from vugan.components.trainer.spec import TrainerConfig
from support.paths import ROOT
from support.trainer_runs import TINY

TRAINER = ROOT / "components" / "trainer"


def _tiny_gan(discriminator_phase=None, d_steps=1):
    from vugan.components.trainer.data import ExamplesInfo
    from vugan.components.trainer import core
    from vugan.pipeline.config import load_config

    cfg = load_config(None, TINY + [f"trainer.d_steps={d_steps}"]).trainer
    info = ExamplesInfo(root=None, image_shape=(16, 16, 3), class_names=("a", "b", "c"), conditioning="region",
                        train_files=(), class_counts=(3, 3, 2), skipped=())
    return core.build_gan(cfg, info, global_batch=8, discriminator_phase=discriminator_phase)


def _batch(rows, seed=0):
    rng = np.random.default_rng(seed)
    return {"images": rng.uniform(-1, 1, (rows, 16, 16, 3)).astype(np.float32),
            "labels": rng.integers(0, 3, rows).astype(np.int32),
            "z_d": rng.standard_normal((rows, 16)).astype(np.float32),
            "d_fake_labels": rng.integers(0, 3, rows).astype(np.int32),
            "z_g": rng.standard_normal((rows, 16)).astype(np.float32),
            "g_labels": rng.integers(0, 3, rows).astype(np.int32)}


class CountingPhase:
    """A stand-in D phase: records the real batches it is given and reports their size as its scalar."""

    def __init__(self):
        self.rows = []

    def __call__(self, gan, batch):
        import tensorflow as tf

        self.rows.append(int(batch["images"].shape[0]))
        return {"d_loss": tf.constant(float(len(self.rows)))}

    def end_of_step(self, gan, scalars):
        return {**scalars, "ended": 1.0}

    def checkpoint_state(self):
        return {}


def test_the_injected_discriminator_phase_runs_once_per_d_step_on_its_own_slice():
    phase = CountingPhase()
    gan = _tiny_gan(phase, d_steps=2)
    scalars = gan.train_step(_batch(16))  # 2 D batches of 8 rows; G uses the first 8 rows of z_g
    assert phase.rows == [8, 8]
    assert float(scalars["d_loss"]) == (1.0 + 2.0) / 2  # the D phases' scalars are averaged
    assert "g_loss" in scalars  # then the ordinary G phase
    assert gan.discriminator_phase.end_of_step(gan, {})["ended"] == 1.0


def test_the_ordinary_discriminator_phase_is_the_default_and_keeps_no_state():
    from vugan.components.trainer.gan_model import OrdinaryDiscriminatorPhase

    gan = _tiny_gan()
    assert isinstance(gan.discriminator_phase, OrdinaryDiscriminatorPhase)
    assert gan.discriminator_phase.checkpoint_state() == {}
    before = [w.numpy().copy() for w in gan.discriminator.trainable_weights]
    scalars = gan.train_step(_batch(8))
    assert {"d_loss", "d_real_acc", "cls_acc_real", "g_loss"} <= set(scalars)
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, gan.discriminator.trainable_weights))


def test_gan_model_and_the_training_loop_import_nothing_of_dp():
    for name in ("gan_model.py", "core.py", "mode.py", "data.py"):
        tree = ast.parse((TRAINER / name).read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if ".dp" in m or m.endswith("dp")], (name, imported)


def test_dp_keys_keep_their_place_in_the_trainer_section():
    """config.toml writes [trainer] in field order and the run cache fingerprints it: the DP keys, declared in
    dp/spec.py, sit where they always did, between the data keys and the hardware keys."""
    from vugan.components.trainer.dp.spec import DPConfig

    names = [f.name for f in dataclasses.fields(TrainerConfig)]
    dp_names = [f.name for f in dataclasses.fields(DPConfig)]
    start = names.index("dp")
    assert names[start - 1] == "shuffle_buffer" and names[start + len(dp_names)] == "cpu_replicas"
    assert names[start:start + len(dp_names)] == dp_names
    # 64 + the three canary keys (last: trainer.canaries) + issue 22's g_output_block, g_block_convs,
    # g_conditional_norm, g_output and d_auc_holdout + its d_width, d_feature_width, r1_every, d_class_loss_on_fakes,
    # ema_kimg, mirror_slices, augment_p, ada_target, ada_kimg, g_noise_inputs and mode_seeking_pool
    assert len(names) == 83 and len(dp_names) == 16


def test_the_ordinary_mode_changes_nothing_and_a_dp_plan_is_the_phase_settings():
    from vugan.components.trainer.dp.plan import DPPlan
    from vugan.components.trainer.dp.spec import DPSettings
    from vugan.components.trainer.mode import OrdinaryTraining
    from vugan.pipeline.config import load_config

    cfg = load_config(None, TINY).trainer
    mode = OrdinaryTraining()
    assert mode.discriminator_phase() is None and mode.last_step(cfg, print) == cfg.steps
    assert mode.log_values(5) == {} and mode.record(5, cfg, print) is None and mode.describe() is None
    # One dataclass of the D phase's settings; the plan adds only the sampler's and the accountant's fields.
    setting_names = {f.name for f in dataclasses.fields(DPSettings)}
    plan_only = {f.name for f in dataclasses.fields(DPPlan)} - setting_names
    assert issubclass(DPPlan, DPSettings) and not plan_only & setting_names
    assert {"q", "delta", "capacity", "shards", "accountant"} <= plan_only
