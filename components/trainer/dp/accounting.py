"""Privacy accounting for DP-SGD training of the discriminator: epsilon by RDP and PLD, and the statement.

The accountant is Google's `dp_accounting` (RDP: Mironov 2017 / Mironov et al. 2019 for the subsampled Gaussian;
PLD: Koskela et al. 2020, Doroshenko et al. 2022). One DP-SGD step is a Poisson-subsampled Gaussian mechanism with
sampling rate q and noise multiplier sigma; `steps` of them compose. The guarantee is (epsilon, delta)-DP under
add/remove-one of a privacy UNIT: a patient when gradients are clipped per patient and patients are sampled, a
vertebral unit (crop) when only per-example clipping is used. A patient with k units then only has the weaker group
guarantee, so every statement carries its unit.

Sampling: the accountant models Poisson sampling (each unit in each step independently with probability q). Shuffled
fixed-size batches are commonly accounted as if Poisson with q = batch / N; that is the usual practice but not a proof
(shuffling can be less private than the Poisson number suggests), and the statement says so. The honest option is true
Poisson sampling in the input pipeline (sampling.py), with batches padded to a fixed capacity and masked.
"""
from __future__ import annotations

import dataclasses
import enum
import functools

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp

ACCOUNTANTS = ("rdp", "pld")


class Sampling(enum.StrEnum):
    POISSON = "poisson"   # each unit independently with probability q per step (what the accountant models)
    SHUFFLE = "shuffle"   # shuffled fixed-size batches, accounted as Poisson with q = batch / N


class PrivacyUnit(enum.StrEnum):
    PATIENT = "patient"   # per-patient clipping + patient sampling
    UNIT = "unit"         # per-example (vertebral-unit) clipping only


def dp_sgd_event(q: float, noise_multiplier: float, steps: int) -> dp_accounting.DpEvent:
    """The DpEvent of `steps` DP-SGD steps: a Poisson-subsampled Gaussian, self-composed."""
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)


def effective_noise_multiplier(*noise_multipliers: float) -> float:
    """One Gaussian mechanism equivalent to several run on the same sample: (sum_i sigma_i^-2)^-1/2.

    Each Gaussian query of sensitivity s with noise std sigma * s is, after scaling to unit noise, a query of
    sensitivity 1 / sigma; releasing them together is one vector Gaussian mechanism of sensitivity
    sqrt(sum_i sigma_i^-2). Adaptive clipping (Andrew et al. 2021, Theorem 1) runs two per step, the clipped
    gradient sum and the clipped-count query, on the same Poisson sample, so one DP-SGD step is a Poisson-sampled
    Gaussian with this multiplier (what dp-accounting's RDP accountant does for a ComposedDpEvent of Gaussians).
    """
    if not noise_multipliers or min(noise_multipliers) <= 0:
        raise ValueError(f"noise multipliers must be > 0, got {noise_multipliers}")
    return float(sum(s ** -2.0 for s in noise_multipliers) ** -0.5)


def _make_accountant(accountant: str, pld_grid_step: float = 1e-4) -> dp_accounting.PrivacyAccountant:
    if accountant == "rdp":
        return rdp.RdpAccountant()
    if accountant == "pld":
        return pld.PLDAccountant(value_discretization_interval=pld_grid_step)
    raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


def _check(q: float, noise_multiplier: float, delta: float) -> None:
    if not 0.0 < q <= 1.0:
        raise ValueError(f"sampling rate q must be in (0, 1], got {q}")
    if noise_multiplier <= 0.0:
        raise ValueError(f"noise_multiplier must be > 0 (sigma = 0 gives no privacy), got {noise_multiplier}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def compute_epsilon(q: float, noise_multiplier: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """Epsilon after `steps` DP-SGD steps with sampling rate q and noise multiplier sigma, at the given delta.

    RDP is fast (the per-step curve is cached, so any number of steps costs microseconds) and slightly loose; PLD is
    tighter and takes ~0.5 s for thousands of steps. Zero steps spend nothing (epsilon 0).
    """
    _check(q, noise_multiplier, delta)
    if steps <= 0:
        return 0.0
    if accountant == "rdp":
        # RDP composes additively: `steps` steps have steps x the one-step curve, which is what RdpAccountant's
        # compose(event, steps) computes too; the conversion to (epsilon, delta) is the library's own function.
        orders, one_step = _rdp_one_step(float(q), float(noise_multiplier))
        eps, _ = rdp.rdp_privacy_accountant.compute_epsilon(orders, int(steps) * one_step, delta)
        return float(eps)
    acc = _make_accountant(accountant, pld_grid(q, noise_multiplier, steps, delta))
    acc.compose(dp_sgd_event(q, noise_multiplier, int(steps)))
    return float(acc.get_epsilon(delta))


PLD_DEFAULT_GRID = 1e-4  # dp-accounting's own default value_discretization_interval


def pld_grid(q: float, noise_multiplier: float, steps: int, delta: float) -> float:
    """The PLD accountant's grid step: the library default, coarser only where epsilon is large.

    Why: the PLD grid spans the privacy-loss range at a fixed step, and with little noise that range grows like
    1 / sigma^2: at sigma 0.02 (adaptive clipping with a tiny count noise) the default grid takes minutes for 3 steps.
    The pessimistic PLD rounds each step's loss UP by less than one grid step, so the epsilon it reports stays an
    upper bound, above the exact one by about steps x grid at most. A grid of 1e-3 x epsilon_RDP / steps keeps that
    excess under 0.1% of the RDP bound (itself >= the PLD epsilon's true value), and leaves every run whose
    epsilon_RDP / steps is below 0.1 (all practical DP runs) on the default grid."""
    eps_rdp = compute_epsilon(q, noise_multiplier, steps, delta, "rdp")
    return max(PLD_DEFAULT_GRID, 1e-3 * eps_rdp / max(int(steps), 1))


@functools.lru_cache(maxsize=64)
def _rdp_one_step(q: float, noise_multiplier: float) -> tuple[np.ndarray, np.ndarray]:
    acc = rdp.RdpAccountant()
    acc.compose(dp_sgd_event(q, noise_multiplier, 1))
    # dp-accounting 0.6.0 keeps the curve in these attributes (no public getter); the tests check the result
    # against RdpAccountant.get_epsilon, so a change in a future version fails loudly rather than silently.
    return acc._orders.copy(), acc._rdp.copy()


def steps_for_epsilon(target_epsilon: float, q: float, noise_multiplier: float, delta: float,
                      accountant: str = "rdp", max_steps: int = 10**7) -> int:
    """Largest number of steps whose epsilon is <= target_epsilon (0 if one step already exceeds it).

    Epsilon grows with the number of steps, so this gallops (1, 2, 4, ...) to bracket the answer and then bisects:
    O(log steps) accountant calls. Returns `max_steps` when even that many stay within the target.
    """
    _check(q, noise_multiplier, delta)
    if target_epsilon <= 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")

    def within(steps: int) -> bool:
        return compute_epsilon(q, noise_multiplier, steps, delta, accountant) <= target_epsilon

    if not within(1):
        return 0
    lo = 1
    if accountant != "rdp":
        # PLD is the tighter bound, so the (cheap) RDP answer is almost always within target too: start there and
        # save most of the slow PLD evaluations.
        guess = steps_for_epsilon(target_epsilon, q, noise_multiplier, delta, "rdp", max_steps)
        lo = guess if guess > 1 and within(guess) else 1
    hi = 2 * lo  # invariant: within(lo) and (hi > max_steps or not within(hi))
    while hi <= max_steps and within(hi):
        lo, hi = hi, hi * 2
    if hi > max_steps:
        if within(max_steps):
            return max_steps
        hi = max_steps
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if within(mid) else (lo, mid)
    return lo


def noise_multiplier_for_epsilon(target_epsilon: float, q: float, steps: int, delta: float,
                                 accountant: str = "rdp", tol: float = 1e-3) -> float:
    """Smallest noise multiplier (to within tol) that keeps `steps` steps within target_epsilon."""
    if target_epsilon <= 0 or steps <= 0:
        raise ValueError("target_epsilon and steps must be > 0")
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: _make_accountant(accountant),
        lambda sigma: dp_sgd_event(q, sigma, int(steps)),
        target_epsilon, delta,
        bracket_interval=dp_accounting.LowerEndpointAndGuess(0.1, 1.0), tol=tol))


def default_delta(num_units: int) -> float:
    """A delta well below 1 / (number of privacy units): min(1e-5, 0.1 / n).

    delta >= 1/n would allow a mechanism that publishes one unit's data outright; a tenth of that, capped at the
    customary 1e-5, keeps the failure probability small for both tiny and large cohorts.
    """
    if num_units <= 0:
        raise ValueError(f"num_units must be > 0, got {num_units}")
    return min(1e-5, 0.1 / num_units)


@dataclasses.dataclass(frozen=True)
class PrivacyStatement:
    """What the run can claim; written into model_info.json / the report as `to_dict()` and `sentence()`."""

    epsilon_rdp: float
    epsilon_pld: float | None
    delta: float
    steps: int
    q: float
    noise_multiplier: float
    clip_norm: float
    unit: str
    sampling: str

    def sentence(self) -> str:
        eps = self.epsilon_pld if self.epsilon_pld is not None else self.epsilon_rdp
        which = "PLD" if self.epsilon_pld is not None else "RDP"
        text = (f"({eps:.2f}, {self.delta:.1e})-DP per {self.unit} ({which} accountant; RDP gives "
                f"{self.epsilon_rdp:.2f}) for the discriminator and, by post-processing, the generator, after "
                f"{self.steps} DP-SGD steps with sampling rate q = {self.q:.4g}, noise multiplier {self.noise_multiplier}"
                f", clip norm {self.clip_norm}, under add/remove of one {self.unit}.")
        if self.sampling == Sampling.SHUFFLE:
            text += (" Batches were shuffled, fixed-size batches accounted as Poisson sampling with q = batch / N: "
                     "the common practice, not a proof; true Poisson sampling makes the number exact.")
        if self.unit == PrivacyUnit.UNIT:
            text += (" Clipping was per vertebral unit, so a patient with k units has only the weaker k-fold "
                     "group guarantee (epsilon about k times larger, delta much larger).")
        return text

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "statement": self.sentence()}


def privacy_statement(q: float, noise_multiplier: float, steps: int, delta: float, clip_norm: float,
                      unit: str = PrivacyUnit.PATIENT, sampling: str = Sampling.POISSON,
                      with_pld: bool = True) -> PrivacyStatement:
    """Epsilon by both accountants (PLD optional, it is the slower one) bundled with the assumptions behind it."""
    unit, sampling = PrivacyUnit(unit), Sampling(sampling)
    eps_pld = compute_epsilon(q, noise_multiplier, steps, delta, "pld") if with_pld else None
    return PrivacyStatement(compute_epsilon(q, noise_multiplier, steps, delta, "rdp"), eps_pld, delta, int(steps),
                            float(q), float(noise_multiplier), float(clip_norm), str(unit), str(sampling))
