"""DP-SGD in the trainer (docs/dp.md) on real fixture TFRecords: epsilon in stats.jsonl / model_info / the artifact
equals the accountant's for the run's q, sigma, steps and delta; a target epsilon stops training at
steps_for_epsilon; with no noise and a clip norm that never binds the DP step reproduces the ordinary step; the
patient-level Poisson sampler takes patients whole; per-patient DP runs on 2 replicas."""
import json
import math

import numpy as np
import pytest

from vugan.components.trainer.callbacks import read_stats
from vugan.components.trainer.component import SPEC
from vugan.components.trainer.dp import accounting as acc
from vugan.pipeline.config import load_config
from support.trainer_runs import BATCH, N_PATIENTS, N_UNITS, QUIET, TINY, gan_and_batches, run_cli, sets


@pytest.fixture(scope="module")
def dp_model(examples, tmp_path_factory):
    """A 3-step per-patient DP run (Poisson sampling of patients, sigma 1.5, C 0.5): (folder, manifest, log)."""
    out = tmp_path_factory.mktemp("dp") / "model"
    cfg = load_config(None, TINY + QUIET + ["trainer.steps=3", "trainer.log_every=1", "trainer.dp=true",
                                            "trainer.dp_noise_multiplier=1.5", "trainer.dp_clip_norm=0.5"])
    lines = []
    manifest = SPEC.run(cfg, {"examples": examples}, out, log=lines.append)
    return out, manifest, lines


def test_per_patient_dp_run_records_the_accountants_epsilon(dp_model):
    out, manifest, lines = dp_model
    q, delta = BATCH / N_UNITS, acc.default_delta(N_PATIENTS)
    rows = read_stats(out / "stats.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:  # every log line carries epsilon after that many steps (RDP)
        assert r["dp_epsilon"] == pytest.approx(acc.compute_epsilon(q, 1.5, r["step"], delta, "rdp"), rel=1e-9)
        assert 0 <= r["d_real_acc"] <= 1 and 0 <= r["cls_acc_real"] <= 1 and np.isfinite(r["d_loss"])
        # units = patients here. A Poisson draw can hold no patient at all ((2/3)^5 = 13% a step with q = 1/3 and 5
        # patients): the sampler is keyed by a per-run secret now, so this test cannot pin a non-empty draw.
        assert 0 <= r["dp_clipped_frac"] <= 1 and 0 <= r["dp_units"] <= N_PATIENTS
        assert (r["dp_units"] == 0) == (r["dp_batch_size"] == 0)  # no patient drawn <=> no real row
    assert rows[0]["dp_epsilon"] < rows[1]["dp_epsilon"] < rows[2]["dp_epsilon"]
    dp = json.loads((out / "model_info.json").read_text())["dp"]
    assert dp["enabled"] and dp["unit"] == "patient" and dp["sampling"] == "poisson" and dp["steps"] == 3
    assert dp["q"] == pytest.approx(q) and dp["delta"] == delta < 1 / N_PATIENTS
    assert dp["epsilon_rdp"] == pytest.approx(acc.compute_epsilon(q, 1.5, 3, delta, "rdp"), rel=1e-9)
    assert dp["epsilon_pld"] == pytest.approx(acc.compute_epsilon(q, 1.5, 3, delta, "pld"), rel=1e-6)
    assert dp["epsilon"] == dp["epsilon_pld"]  # the default accountant is PLD
    assert "per patient" in dp["statement"] and dp["class_prior"] == "public"
    assert manifest["properties"]["dp"]["epsilon"] == dp["epsilon"]
    assert any("DP: (" in line and "per patient" in line for line in lines)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tb = EventAccumulator(str(out / "logs"), size_guidance={"tensors": 0}).Reload()
    assert "dp_epsilon" in tb.Tags()["tensors"]


def test_report_and_datasheet_quote_the_trainers_record(dp_model):
    """The evaluator's report section and the synthetic datasheet read model_info.json "dp" (via the bundle)."""
    from vugan.components.evaluator.report.privacy_sections import dp_section
    from vugan.components.synthesize.datasheet import dp_lines
    from vugan.models.bundle import load_model_bundle

    dp = load_model_bundle(dp_model[0]).info["dp"]
    strongest = {"unit": {"auc": 0.61}, "patient": {"auc": 0.55}}
    section = dp_section(dp, strongest)
    html_text = section.explanation + section.body_html
    assert f"{dp['epsilon']:.2f}" in html_text and "per patient" in html_text and "0.610" in html_text
    assert "not</b> trained with differential privacy" in dp_section({"enabled": False}, strongest).explanation
    sheet = "\n".join(dp_lines(dp))
    assert f"{dp['epsilon']:.2f} (PLD)" in sheet and "patient" in sheet and "post-processing" in sheet
    assert "not trained with differential privacy" in dp_lines({"enabled": False})[0]


def test_target_epsilon_stops_training_at_steps_for_epsilon(examples, tmp_path):
    """Per-unit clipping with shuffled batches (the other sampling path); the target sits between 2 and 3 steps."""
    q, sigma, delta = BATCH / N_UNITS, 2.0, acc.default_delta(N_PATIENTS)
    target = (acc.compute_epsilon(q, sigma, 2, delta) + acc.compute_epsilon(q, sigma, 3, delta)) / 2
    expected = acc.steps_for_epsilon(target, q, sigma, delta, "rdp")
    assert expected == 2
    out = tmp_path / "model"
    cfg = load_config(None, TINY + QUIET + [
        "trainer.steps=6", "trainer.log_every=1", "trainer.dp=true", "trainer.dp_unit=unit",
        "trainer.dp_sampling=shuffle", "trainer.dp_accountant=rdp", f"trainer.dp_noise_multiplier={sigma}",
        f"trainer.dp_target_epsilon={target}"])
    lines = []
    manifest = SPEC.run(cfg, {"examples": examples}, out, log=lines.append)
    assert manifest["counts"]["steps"] == expected
    assert [r["step"] for r in read_stats(out / "stats.jsonl")] == [1, 2]
    dp = json.loads((out / "model_info.json").read_text())["dp"]
    assert dp["stopped_at_target_epsilon"] is True and dp["max_steps_for_target"] == expected
    assert dp["epsilon"] == dp["epsilon_rdp"] <= target < acc.compute_epsilon(q, sigma, 3, delta)
    assert "per unit" in dp["statement"] and "not a proof" in dp["statement"]  # says what it does not cover
    assert any("stopped at step 2 of 6" in line for line in lines)


def test_dp_step_without_noise_or_binding_clip_reproduces_the_ordinary_step(examples):
    """Same seed, same batches: DP with sigma = 0 and C = 1e6 is the ordinary D update computed per example, so
    d_loss trajectories and weights agree to float rounding; a binding clip norm makes them differ."""
    from vugan.components.trainer.dp.spec import DPSettings

    cfg = load_config(None, TINY + ["trainer.lr_d=0.01"]).trainer
    runs = {}
    for name, settings in (("plain", None), ("dp", DPSettings(1e6, 0.0, float(BATCH), None)),
                           ("clipped", DPSettings(1e-3, 0.0, float(BATCH), None))):
        gan, batches = gan_and_batches(examples, cfg, settings)
        losses = [float(gan.train_step(b)["d_loss"]) for b in batches]
        runs[name] = (losses, [v.numpy() for v in gan.discriminator.trainable_variables])
    (plain, w_plain), (dp, w_dp), (clipped, w_clipped) = runs["plain"], runs["dp"], runs["clipped"]
    np.testing.assert_allclose(dp, plain, rtol=1e-5)
    # Weights: Adam moves each weight by about lr * g / (|g| + eps), so for a near-zero gradient a float-rounding
    # difference between the per-example sum and the batched gradient shows as a small fraction of lr (seen:
    # 1.7e-5 = 0.2% of lr on one bias). Allow 1% of lr per step; the binding clip below moves weights by far more.
    diff = lambda ws: max(float(np.abs(a - b).max()) for a, b in zip(ws, w_plain))  # noqa: E731
    assert diff(w_dp) < 0.01 * cfg.lr_d * 3
    print(f"max weight difference: DP(sigma=0, C=1e6) {diff(w_dp):.2e}, DP(C=1e-3) {diff(w_clipped):.2e}")
    assert diff(w_clipped) > 0.3 * cfg.lr_d
    assert clipped[0] == pytest.approx(plain[0], rel=1e-5)  # same weights at step 1; the updates differ
    assert clipped[2] != pytest.approx(plain[2], rel=1e-4)


def test_patient_poisson_batches_take_patients_whole(examples):
    from vugan.components.trainer.data import inspect_examples
    from vugan.components.trainer.dp import plan as dp_plan, sampling

    units = sampling.load_train_units(inspect_examples(examples))
    assert len(units.labels) == N_UNITS and units.num_patients == N_PATIENTS
    cfg = load_config(None, TINY + ["trainer.dp=true"]).trainer
    plan = dp_plan.plan_dp(cfg, units, BATCH, replicas=2)
    assert plan.normalizer == BATCH and plan.q == pytest.approx(BATCH / N_UNITS)
    stream = sampling.poisson_batches(plan, units, replicas=2, per_replica_batch=4, noise_dim=16, seed=0,
                                      class_prior=[1 / 3] * 3)
    sizes = []
    for _ in range(40):  # 20 steps x 2 replicas
        b = next(stream)
        real = b["mask"] > 0
        rows_patients = {}
        for image, local in zip(b["images"][real], b["patient"][real]):
            # Which training unit is this row? (the fixture's images are all distinct)
            unit = int(np.flatnonzero((units.images == image).all(axis=(1, 2, 3)))[0])
            rows_patients.setdefault(int(local), set()).add(unit)
        for members in rows_patients.values():
            patient = {int(units.patients[u]) for u in members}
            assert len(patient) == 1  # one local slot = one patient ...
            assert members == set(np.flatnonzero(units.patients == patient.pop()).tolist())  # ... taken whole
        sizes.append(int(real.sum()))
        assert b["z_d"].shape == (4, 16) and b["d_fake_labels"].shape == (4,)
    # On average a step takes q * N_units = the global batch of units (over both replicas).
    assert 0.5 * BATCH < sum(sizes) / 20 < 1.5 * BATCH


def test_invalid_dp_settings_are_rejected():
    with pytest.raises(ValueError, match="BatchNorm"):
        load_config(None, ["trainer.dp=true", "trainer.batch_norm=true"])
    with pytest.raises(ValueError, match="poisson"):
        load_config(None, ["trainer.dp=true", "trainer.dp_sampling=shuffle"])  # dp_unit defaults to patient


@pytest.mark.slow  # a trainer process on 2 replicas
def test_per_patient_dp_runs_on_two_replicas(examples, tmp_path):
    """With spectral norm: its power-iteration vector must not be stored inside the per-example map, where a
    MirroredStrategy variable update fails (merge_call)."""
    out = tmp_path / "two"
    overrides = TINY + QUIET + ["trainer.steps=2", "trainer.log_every=1", "trainer.cpu_replicas=2", "trainer.dp=true",
                                "trainer.dp_accountant=rdp", "trainer.spectral_norm=true"]
    proc = run_cli(["--examples", str(examples), "--out", str(out), *sets(overrides)])
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert "2 replica(s) x 4" in output and "per patient" in output
    rows = read_stats(out / "stats.jsonl")
    q, delta = BATCH / N_UNITS, acc.default_delta(N_PATIENTS)
    assert rows[-1]["dp_epsilon"] == pytest.approx(acc.compute_epsilon(q, 1.1, 2, delta), rel=1e-9)
    assert all(math.isfinite(r["d_loss"]) and 0 <= r["d_real_acc"] <= 1 for r in rows)


def _discriminator_weights(out):
    import keras
    model = keras.saving.load_model(out / "discriminator.keras", compile=False)
    return np.concatenate([np.ravel(w) for w in model.get_weights()])


def test_dp_noise_and_sampling_cannot_be_replayed_from_the_configured_seed(examples, tmp_path):
    """trainer.seed is written to config.toml: two DP runs with the same config must still draw different noise
    and batches (a per-run secret), while two non-private runs with the same config stay identical."""
    def run(name, extra):
        cfg = load_config(None, TINY + QUIET + ["trainer.steps=2", "trainer.log_every=1", *extra])
        SPEC.run(cfg, {"examples": examples}, tmp_path / name, log=lambda m: None)
        return _discriminator_weights(tmp_path / name)

    dp = ["trainer.dp=true", "trainer.dp_noise_multiplier=20.0"]
    a, b = run("dp_a", dp), run("dp_b", dp)
    plain_a, plain_b = run("plain_a", []), run("plain_b", [])
    assert np.max(np.abs(plain_a - plain_b)) < 1e-6  # the control: same seed, same non-private run
    assert np.max(np.abs(a - b)) > 1e-4  # two Adam steps of lr 1e-4 on independent noise
    note = json.loads((tmp_path / "dp_a" / "model_info.json").read_text())["dp"]["randomness_note"]
    assert "not by trainer.seed" in note


def test_clip_fake_bounds_each_fake_examples_gradient_like_a_real_ones(examples):
    """With clip_fake the fake half's D gradient is the mean of per-example gradients clipped to C (so its norm is
    at most C); with a clip norm that never binds it equals the ordinary fake-half gradient."""
    import tensorflow as tf

    from vugan.components.trainer.dp.discriminator_phase import DPDiscriminatorPhase
    from vugan.components.trainer.dp.spec import DPSettings

    cfg = load_config(None, TINY).trainer
    gan, batches = gan_and_batches(examples, cfg, DPSettings(1e-3, 0.0, BATCH, None))
    fake = gan.generator([batches[0]["z_d"], batches[0]["labels"]], training=False)
    d_vars = gan.discriminator.trainable_variables

    def fake_grads(clip_norm, clip_fake):
        phase = DPDiscriminatorPhase(DPSettings(clip_norm, 0.0, BATCH, None, clip_fake=clip_fake))
        return np.concatenate([np.ravel(g) for g in phase.fake_half(gan, fake, batches[0]["labels"], d_vars).grads])

    unclipped, loose = fake_grads(1e-3, False), fake_grads(1e6, True)
    tight = fake_grads(1e-3, True)
    assert np.linalg.norm(unclipped) > 1e-2  # the ordinary fake gradient is far above the bound here
    np.testing.assert_allclose(loose, unclipped, rtol=1e-4, atol=1e-7)
    assert np.linalg.norm(tight) <= 1e-3 * (1 + 1e-5)  # mean of BATCH rows each of norm <= C
    # Each row scaled by C / |g_i| <= 1: the clipped mean still points the same way as the unclipped one.
    assert float(np.dot(tight, unclipped)) > 0
    tf.keras.backend.clear_session()


@pytest.mark.parametrize("dp", [True, False])
def test_d_steps_take_k_discriminator_steps_per_generator_step(examples, tmp_path, dp):
    """trainer.d_steps = 3: D's optimizer steps 3 times per training step on 3 batches, G's once; under DP epsilon
    counts every D step (3 x 2 = 6 DP-SGD steps)."""
    import tensorflow as tf

    cfg = load_config(None, TINY + QUIET + ["trainer.steps=2", "trainer.log_every=1", "trainer.d_steps=3",
                                            *(["trainer.dp=true", "trainer.dp_accountant=rdp"] if dp else [])])
    out = tmp_path / "model"
    SPEC.run(cfg, {"examples": examples}, out, log=lambda m: None)
    ckpt = tf.train.load_checkpoint(str(out / "checkpoints"))
    value = {k.split("/")[0]: ckpt.get_tensor(k) for k in ckpt.get_variable_to_shape_map()
             if k.endswith("_iterations/.ATTRIBUTES/VARIABLE_VALUE") or k.startswith(("step/", "examples_seen/"))}
    assert (value["d_optimizer"], value["g_optimizer"], value["step"]) == (6, 2, 2)
    assert value["examples_seen"] == 2 * 3 * BATCH
    record = json.loads((out / "model_info.json").read_text())["dp"]
    if dp:
        q, delta = BATCH / N_UNITS, acc.default_delta(N_PATIENTS)
        assert [r["dp_epsilon"] for r in read_stats(out / "stats.jsonl")] == pytest.approx(
            [acc.compute_epsilon(q, 1.1, 3 * s, delta) for s in (1, 2)], rel=1e-9)
        assert record["steps"] == 6 and record["training_steps"] == 2 and "after 6 DP-SGD steps" in record["statement"]
    else:
        assert record == {"enabled": False}
