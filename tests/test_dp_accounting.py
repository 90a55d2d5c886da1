"""Privacy accounting and Poisson sampling (components/trainer/dp/accounting.py, sampling.py)."""
import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp
from scipy import stats

from vugan.components.trainer.dp import accounting as acc
from vugan.components.trainer.dp import sampling

Q, SIGMA, STEPS, DELTA = 64 / 10_000, 1.1, 3125, 1e-5  # the stack-notes example


def reference_epsilon(accountant, q=Q, sigma=SIGMA, steps=STEPS, delta=DELTA):
    """dp_accounting's own computation, written out without our wrapper."""
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    accountant.compose(event, steps)
    return accountant.get_epsilon(delta)


def test_epsilon_matches_dp_accounting_and_stack_notes():
    eps_rdp = acc.compute_epsilon(Q, SIGMA, STEPS, DELTA, "rdp")
    eps_pld = acc.compute_epsilon(Q, SIGMA, STEPS, DELTA, "pld")
    assert eps_rdp == pytest.approx(reference_epsilon(rdp.RdpAccountant()), rel=1e-9)
    assert eps_pld == pytest.approx(reference_epsilon(pld.PLDAccountant()), rel=1e-9)
    assert round(eps_rdp, 2) == 1.84 and round(eps_pld, 2) == 1.67
    other = dict(q=0.02, sigma=0.8, steps=500, delta=1e-6)
    assert acc.compute_epsilon(0.02, 0.8, 500, 1e-6) == pytest.approx(
        reference_epsilon(rdp.RdpAccountant(), **other), rel=1e-9)


def test_pld_grid_is_the_default_for_practical_runs_and_coarser_only_where_epsilon_is_huge():
    # The stack-notes run: epsilon 1.8 over 3,125 steps, far below 0.1 per step -> dp-accounting's default grid
    # (and the test above: the same epsilon as the library's own PLDAccountant()).
    assert acc.pld_grid(Q, SIGMA, STEPS, DELTA) == acc.PLD_DEFAULT_GRID == 1e-4
    # Adaptive clipping with a tiny count noise: effective sigma 0.25, 3 steps, epsilon ~47 (RDP). The default grid
    # takes ~30 s here; ours is 1e-3 x 47 / 3 ~ 0.016 and takes well under a second.
    q, sigma, steps = 1 / 3, 0.25, 3
    eps_rdp = acc.compute_epsilon(q, sigma, steps, DELTA, "rdp")
    grid = acc.pld_grid(q, sigma, steps, DELTA)
    assert grid == pytest.approx(1e-3 * eps_rdp / steps)
    eps = acc.compute_epsilon(q, sigma, steps, DELTA, "pld")
    finer = reference_epsilon(pld.PLDAccountant(value_discretization_interval=1e-3), q, sigma, steps, DELTA)
    # Pessimistic rounding: a coarser grid never reports less, and at most about steps x grid more.
    assert finer <= eps <= finer + steps * grid
    assert eps < eps_rdp


def test_epsilon_grows_with_steps_and_shrinks_with_noise():
    eps = [acc.compute_epsilon(Q, SIGMA, s, DELTA) for s in (0, 10, 100, 1000, 10_000)]
    assert eps[0] == 0.0 and all(a < b for a, b in zip(eps, eps[1:]))
    assert acc.compute_epsilon(Q, 2.0, 1000, DELTA) < acc.compute_epsilon(Q, 1.0, 1000, DELTA)


@pytest.mark.parametrize("bad", [dict(q=0.0), dict(q=1.5), dict(noise_multiplier=0.0), dict(delta=1.0)])
def test_invalid_parameters_are_rejected(bad):
    args = {**dict(q=Q, noise_multiplier=SIGMA, steps=10, delta=DELTA), **bad}
    with pytest.raises(ValueError):
        acc.compute_epsilon(**args)
    with pytest.raises(ValueError, match="accountant"):
        acc.compute_epsilon(Q, SIGMA, 10, DELTA, "moments")


def test_steps_for_target_epsilon_is_the_last_step_within_target():
    # The stack-notes run reaches RDP epsilon 1.8358 at 3125 steps, so a 1.84 budget lasts a little longer.
    n = acc.steps_for_epsilon(1.84, Q, SIGMA, DELTA)
    assert acc.compute_epsilon(Q, SIGMA, n, DELTA) <= 1.84 < acc.compute_epsilon(Q, SIGMA, n + 1, DELTA)
    assert STEPS <= n < 3300
    by_target = [acc.steps_for_epsilon(t, Q, SIGMA, DELTA) for t in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(by_target, by_target[1:]))
    assert acc.steps_for_epsilon(1.0, Q, 2 * SIGMA, DELTA) > by_target[1]  # more noise buys more steps
    assert acc.steps_for_epsilon(1e-4, Q, SIGMA, DELTA) == 0             # not even one step fits
    assert acc.steps_for_epsilon(50.0, Q, SIGMA, DELTA, max_steps=1000) == 1000


def test_steps_for_target_epsilon_with_pld_is_consistent():
    q, sigma, target = 0.05, 3.0, 0.5
    n = acc.steps_for_epsilon(target, q, sigma, DELTA, accountant="pld", max_steps=2000)
    assert acc.compute_epsilon(q, sigma, n, DELTA, "pld") <= target < acc.compute_epsilon(q, sigma, n + 1, DELTA, "pld")
    assert n > acc.steps_for_epsilon(target, q, sigma, DELTA, accountant="rdp")  # PLD is the tighter bound


def test_noise_multiplier_for_target_epsilon_inverts_compute_epsilon():
    sigma = acc.noise_multiplier_for_epsilon(1.84, Q, STEPS, DELTA)
    assert sigma == pytest.approx(1.1, abs=0.01)  # the stack-notes run sits on the curve
    assert acc.compute_epsilon(Q, sigma, STEPS, DELTA) <= 1.84


def test_default_delta_is_well_below_one_over_n():
    assert acc.default_delta(24) == 1e-5
    assert acc.default_delta(10**6) == pytest.approx(1e-7)
    for n in (1, 24, 10**4, 10**7):
        assert acc.default_delta(n) < 1 / n


def test_privacy_statement_names_unit_and_sampling():
    patient = acc.privacy_statement(Q, SIGMA, STEPS, DELTA, clip_norm=1.0)
    assert round(patient.epsilon_rdp, 2) == 1.84 and round(patient.epsilon_pld, 2) == 1.67
    assert "(1.67, 1.0e-05)-DP per patient" in patient.sentence() and "shuffled" not in patient.sentence()
    unit = acc.privacy_statement(Q, SIGMA, 100, DELTA, 1.0, unit="unit", sampling="shuffle", with_pld=False)
    assert unit.epsilon_pld is None and "per unit" in unit.sentence()
    assert "not a proof" in unit.sentence() and "group" in unit.sentence()
    assert unit.to_dict()["statement"] == unit.sentence()
    with pytest.raises(ValueError):
        acc.privacy_statement(Q, SIGMA, 10, DELTA, 1.0, unit="scan")


def test_batch_capacities():
    k = sampling.poisson_batch_capacity(10_000, Q, overflow_prob=1e-12)
    assert stats.binom.sf(k, 10_000, Q) <= 1e-12 < stats.binom.sf(k - 1, 10_000, Q)
    # Two patients of 1 and 2 units, q = 1/2: batch sizes 0, 1, 2, 3 each with probability 1/4, so
    # P(size > 1) = 1/2, P(size > 2) = 1/4: capacity 2 at overflow 0.3, 3 at overflow 0.1.
    assert sampling.group_batch_capacity([1, 2], 0.5, overflow_prob=0.3) == 2
    assert sampling.group_batch_capacity([1, 2], 0.5, overflow_prob=0.1) == 3
    # Patients of one unit each are plain Poisson; patients of 5 units are 5 x Binomial(#patients, q).
    assert sampling.group_batch_capacity([1] * 10_000, Q) == k
    assert sampling.group_batch_capacity([5] * 2000, Q) == 5 * sampling.poisson_batch_capacity(2000, Q)


def test_poisson_sample_includes_each_unit_independently_with_probability_q():
    rng = np.random.default_rng(0)
    n, q, draws = 200, 0.1, 2000
    counts = np.zeros(n)
    sizes = []
    for _ in range(draws):
        idx, mask = sampling.poisson_sample(rng, n, q, capacity=60)
        assert idx.shape == mask.shape == (60,)
        real = idx[mask == 1]
        assert len(set(real)) == real.size and np.all(idx[mask == 0] == 0)
        counts[real] += 1
        sizes.append(real.size)
    # Batch size ~ Binomial(200, 0.1): mean 20, sd 4.24; over 2000 draws the mean's s.e. is 0.095.
    assert np.mean(sizes) == pytest.approx(20, abs=0.5) and np.std(sizes) == pytest.approx(4.24, rel=0.1)
    # Each unit's inclusion count ~ Binomial(2000, 0.1): mean 200, sd 13.4.
    assert np.abs(counts - 200).max() < 6 * 13.4
    idx, mask = sampling.poisson_sample(rng, 100, 0.9, capacity=10)  # overflow: truncated to capacity
    assert mask.sum() == 10 and len(set(idx)) == 10


def test_poisson_sample_groups_takes_whole_patients_with_dense_local_ids():
    rng = np.random.default_rng(1)
    patient_of_unit = np.repeat([7, 3, 9, 4, 11], [2, 3, 1, 4, 2])
    picked = []
    for _ in range(400):
        idx, mask, local = sampling.poisson_sample_groups(rng, patient_of_unit, 0.3, capacity=12)
        real = mask == 1
        patients = patient_of_unit[idx[real]]
        for p in set(patients):  # every unit of a sampled patient is there, with one local id per patient
            assert set(idx[real][patients == p]) == set(np.flatnonzero(patient_of_unit == p))
            assert len(set(local[real][patients == p])) == 1
        assert sorted(set(local[real])) == list(range(len(set(patients))))
        picked.append(len(set(patients)))
    # Number of patients per batch ~ Binomial(5, 0.3): mean 1.5, s.e. over 400 draws 0.05.
    assert np.mean(picked) == pytest.approx(1.5, abs=0.2)
    idx, mask, local = sampling.poisson_sample_groups(rng, patient_of_unit, 1.0, capacity=5)
    assert mask.sum() <= 5 and mask.sum() >= 4  # overflow: whole patients dropped until the batch fits
