"""Adaptive clipping (Andrew et al. 2021, issue 14): the private count and the geometric update against hand-worked
values; the accounting equals dp-accounting's own for the composed mechanism (a Poisson-sampled pair of Gaussians,
gradient and count, per step), computed here independently with the library's ComposedDpEvent; and real DP runs
move the clip norm in the right direction and record the composed epsilon."""
import json
import math

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
from dp_accounting import rdp

from vugan.components.trainer.dp import accounting as acc
from vugan.components.trainer.dp import per_example as dp
from vugan.components.trainer.dp.plan import plan_dp
from vugan.components.trainer.dp.sampling import TrainUnits
from vugan.components.trainer.component import SPEC
from vugan.pipeline.config import load_config
from support.trainer_runs import TINY

QUIET = ["trainer.image_every=100", "trainer.checkpoint_every=100", "trainer.log_every=1"]


def test_noisy_count_is_centred_over_present_units_only():
    norms = tf.constant([0.5, 2.0, 0.1, 0.0, 3.0])
    occupied = tf.constant([1.0, 1.0, 1.0, 0.0, 0.0])  # the last two slots are empty / padding
    # (1 - 1/2) + (0 - 1/2) + (1 - 1/2) = 0.5; padding counts for nothing even though its norm 0 is <= C.
    assert float(dp.noisy_unclipped_count(norms, occupied, 1.0, 0.0)) == pytest.approx(0.5)
    assert float(dp.noisy_unclipped_count(norms, occupied, 5.0, 0.0)) == pytest.approx(1.5)
    draws = [float(dp.noisy_unclipped_count(norms, occupied, 1.0, 2.0)) for _ in range(400)]
    assert np.mean(draws) == pytest.approx(0.5, abs=0.4) and np.std(draws) == pytest.approx(2.0, rel=0.15)
    assert float(dp.noisy_unclipped_count(norms, occupied, 1.0, 2.0, add_noise=False)) == pytest.approx(0.5)


def test_geometric_update_matches_hand_values():
    # 8 expected units, centred count 3.2 -> unclipped fraction 3.2 / 8 + 0.5 = 0.9; gamma 0.5, lr 0.2:
    # C = 2 * exp(-0.2 * 0.4) = 1.846233
    assert float(dp.geometric_clip_update(2.0, 3.2, 8.0, 0.5, 0.2)) == pytest.approx(2 * math.exp(-0.08), rel=1e-6)
    # all clipped (fraction 0) -> grows by exp(lr * gamma)
    assert float(dp.geometric_clip_update(1.0, -4.0, 8.0, 0.5, 0.2)) == pytest.approx(math.exp(0.1), rel=1e-6)
    assert float(dp.geometric_clip_update(1.0, 0.0, 8.0, 0.5, 0.2)) == pytest.approx(1.0)  # at the quantile


def _composed_epsilon(q, sigma, count_sigma, steps, delta):
    """dp-accounting on the mechanism itself: per step, ONE Poisson sample feeding two Gaussian queries."""
    step = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.ComposedDpEvent(
        [dp_accounting.GaussianDpEvent(sigma), dp_accounting.GaussianDpEvent(count_sigma)]))
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(step, steps))
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("unit, count_noise", [("unit", 0.0), ("patient", 0.0), ("patient", 1.3)])
def test_adaptive_clip_epsilon_equals_dp_accounting_for_the_composed_mechanism(unit, count_noise):
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), 10)  # 40 patients x 10 units
    units = TrainUnits(rng.standard_normal((400, 4, 4, 1)).astype(np.float32), np.zeros(400, np.int32), patients)
    cfg = load_config(None, ["trainer.dp=true", "trainer.batch_size=40", "trainer.dp_noise_multiplier=1.2",
                             f"trainer.dp_unit={unit}", "trainer.dp_adaptive_clip=true",
                             f"trainer.dp_clip_count_noise={count_noise}"]).trainer
    plan = plan_dp(cfg, units, 40, 1)
    q, delta = 0.1, acc.default_delta(40)
    expected_units = q * (40 if unit == "patient" else 400)
    count_std = count_noise or expected_units / 20  # the paper's default m / 20
    assert plan.q == q and plan.expected_units == pytest.approx(expected_units)
    assert plan.count_stddev == pytest.approx(count_std)
    for steps in (1, 50, 500):
        want = _composed_epsilon(q, 1.2, 2 * count_std, steps, delta)  # count: sensitivity 1/2 -> sigma 2 std
        assert plan.epsilon(steps, "rdp") == pytest.approx(want, rel=1e-9)
        # The count costs privacy: more than the gradient alone.
        assert want > acc.compute_epsilon(q, 1.2, steps, delta, "rdp")
    record = plan.record(500, stopped_at_target=False, final_clip=0.7)
    assert record["epsilon_rdp"] == pytest.approx(_composed_epsilon(q, 1.2, 2 * count_std, 500, delta), rel=1e-9)
    assert record["adaptive_clip"]["final_clip_norm"] == 0.7 and "Adaptive clipping" in record["statement"]
    off = plan_dp(load_config(None, ["trainer.dp=true", "trainer.batch_size=40", "trainer.dp_noise_multiplier=1.2",
                                     f"trainer.dp_unit={unit}"]).trainer, units, 40, 1)
    assert off.epsilon(50) == pytest.approx(acc.compute_epsilon(q, 1.2, 50, delta)) and not off.adaptive
    assert off.record(5, False)["adaptive_clip"] is None


@pytest.mark.slow  # a real DP run (3 steps, a few seconds; was minutes before the PLD grid followed epsilon)
@pytest.mark.parametrize("start, grows", [(1e-3, True), (1e3, False)])
def test_adaptive_clip_moves_towards_the_norms_in_a_real_run(examples, tmp_path, start, grows):
    """Per-unit Poisson DP run, 3 steps: a clip far below every norm grows by about exp(lr * gamma) per step, one far
    above shrinks; the record's epsilon is the composed mechanism's."""
    out = tmp_path / "model"
    cfg = load_config(None, TINY + QUIET + [
        "trainer.steps=3", "trainer.dp=true", "trainer.dp_unit=unit", "trainer.dp_noise_multiplier=1.5",
        f"trainer.dp_clip_norm={start}", "trainer.dp_adaptive_clip=true", "trainer.dp_clip_count_noise=0.01",
        "trainer.dp_clip_lr=0.5"])
    SPEC.run(cfg, {"examples": examples}, out, log=lambda _: None)
    from vugan.components.trainer.callbacks import read_stats
    rows = read_stats(out / "stats.jsonl")
    clips = [start] + [r["dp_clip_norm"] for r in rows]
    steps = np.diff(np.log(clips))
    assert (steps > 0).all() if grows else (steps < 0).all(), clips
    # Hand-worked: with all n realised units clipped (or none), the centred count is -n/2 (or +n/2), so the
    # fraction is 1/2 -+ n / (2 M) with M = 8 expected units, and log C moves by lr * n / (2 M), lr = 0.5, up to
    # the count noise (std 0.01: 5 std = lr * 0.05 / M in log C).
    n = np.array([r["dp_batch_size"] for r in rows])
    np.testing.assert_allclose(np.abs(steps), 0.5 * n / 16, atol=0.5 * 0.05 / 8)
    dp_rec = json.loads((out / "model_info.json").read_text())["dp"]
    assert dp_rec["adaptive_clip"]["final_clip_norm"] == pytest.approx(clips[-1], rel=1e-6)
    q, delta = 8 / 24, acc.default_delta(5)
    assert dp_rec["epsilon_rdp"] == pytest.approx(_composed_epsilon(q, 1.5, 0.02, 3, delta), rel=1e-9)


@pytest.mark.slow  # a trainer process on 2 replicas
def test_adaptive_clip_sums_the_count_over_two_replicas(examples, tmp_path):
    """Under MirroredStrategy (2 logical CPUs) the update uses the GLOBAL count: log C moves by lr * n / (2M) with n
    the realised rows of both replicas (one replica's count alone would give about half)."""
    from vugan.components.trainer.callbacks import read_stats
    from support.trainer_runs import run_cli, sets

    out = tmp_path / "two"
    overrides = TINY + QUIET + ["trainer.steps=2", "trainer.cpu_replicas=2", "trainer.dp=true", "trainer.dp_unit=unit",
                                "trainer.dp_accountant=rdp", "trainer.dp_clip_norm=0.001",
                                "trainer.dp_adaptive_clip=true", "trainer.dp_clip_count_noise=0.01",
                                "trainer.dp_clip_lr=0.5"]
    proc = run_cli(["--examples", str(examples), "--out", str(out), *sets(overrides)])
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert "2 replica(s) x 4" in output
    rows = read_stats(out / "stats.jsonl")
    clips = [1e-3] + [r["dp_clip_norm"] for r in rows]
    n = np.array([r["dp_batch_size"] for r in rows])
    np.testing.assert_allclose(np.diff(np.log(clips)), 0.5 * n / 16, atol=0.5 * 0.05 / 8)
