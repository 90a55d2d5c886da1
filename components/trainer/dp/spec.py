"""The differential-privacy keys of the trainer's config (docs/dp.md) and the rules they must satisfy.

They stay ``trainer.dp*`` keys of the one ``[trainer]`` section: the trainer's config fingerprint (the run cache)
and the resolved config.toml hash the section's keys in order, so ``TrainerConfig`` inherits ``DPConfig`` at the
place these keys always held (after the data keys, before the hardware keys) rather than nesting them or moving
them to a section of their own. Only this file declares them; the rest of the DP code reads them here or from the
plan (``plan.py``). No TensorFlow: loading a config must stay cheap.
"""
from __future__ import annotations

import dataclasses

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class DPConfig:
    """``trainer.dp`` and ``trainer.dp_*``: DP-SGD of the discriminator's real-data gradient (off by default)."""
    dp: bool = F(default=False, metadata={
        "help": "DP-SGD on the discriminator's real-data gradient (the generator is private by post-processing)"})
    dp_noise_multiplier: float = F(default=1.1, metadata={
        "range": (0.0, 100.0), "help": "sigma: noise std / clip norm (0 = clipping only, no privacy: epsilon = inf)"})
    dp_clip_norm: float = F(default=1.0, metadata={"range": (1e-6, 1e6), "help": "L2 bound C per privacy unit"})
    dp_delta: float = F(default=0.0, metadata={
        "range": (0.0, 0.1), "help": "0 = min(1e-5, 0.1 / #training patients); must be < 1 / #training patients"})
    dp_target_epsilon: float = F(default=0.0, metadata={
        "range": (0.0, 100.0), "help": "0 = none; else stop training when the next step would exceed it"})
    dp_unit: str = F(default="patient", metadata={
        "choices": ("patient", "unit"), "help": "privacy unit: a patient (patient sampling + per-patient clipping) "
                                                "or a vertebral unit (per-example clipping; weaker per patient)"})
    dp_sampling: str = F(default="poisson", metadata={
        "choices": ("poisson", "shuffle"),
        "help": "poisson: true Poisson sampling (what the accountant assumes); shuffle: shuffled fixed batches "
                "accounted as Poisson (unit only)"})
    dp_accountant: str = F(default="pld", metadata={
        "choices": ("rdp", "pld"),
        "help": "accountant of the stop rule and the final statement (RDP is logged per step)"})
    dp_clip_fake: bool = F(default=True, metadata={
        "help": "also clip the fake half's per-example gradients to dp_clip_norm (no noise: no real data), so both "
                "halves enter D's update on one scale once clipping binds; costs a second per-example pass"})
    dp_adaptive_clip: bool = F(default=False, metadata={
        "help": "adaptive clipping (Andrew et al. 2021): the clip norm, starting at dp_clip_norm, follows the "
                "dp_clip_quantile of the privacy units' gradient norms, from a noised count; accounted"})
    dp_clip_quantile: float = F(default=0.5, metadata={
        "range": (0.0, 1.0), "help": "adaptive clipping: target fraction of units whose gradient is NOT clipped"})
    dp_clip_lr: float = F(default=0.2, metadata={
        "range": (0.0, 10.0), "help": "adaptive clipping: geometric step C <- C exp(-lr (unclipped frac - quantile))"})
    dp_clip_count_noise: float = F(default=0.0, metadata={
        "range": (0.0, 1e6), "help": "adaptive clipping: noise std on the count of unclipped units; 0 = expected "
                                     "privacy units per step / 20 (the paper's choice)"})
    dp_fake_clip_group: str = F(default="example", metadata={
        "choices": ("example", "patient"),
        "help": "with dp_clip_fake: clip each fake example, or (dp_unit = 'patient') groups of fakes of the mean "
                "units per patient, so that both halves have as many clipped units of norm <= C per step"})
    dp_views: int = F(default=1, metadata={
        "range": (1, 16), "help": "augmented views of each unit (real and fake) whose D losses are averaged before "
                                  "clipping: one clipped gradient per unit, so free in privacy; needs diffaugment"})
    dp_per_example: str = F(default="vmap", metadata={
        "choices": ("vmap", "jacobian"), "help": "how per-example gradients are vectorised (dp/per_example.py)"})


def validate_dp(cfg) -> None:
    """The DP rules of a trainer config ``cfg`` (a ``TrainerConfig``, which is a ``DPConfig``): with ``trainer.dp``
    no option may put real data outside the clipped, noised gradient or make the accounting wrong; without it no
    DP-only mechanism may be switched on.

    Raises:
      ValueError: naming the key at fault.
    """
    if not cfg.dp:
        if cfg.dp_adaptive_clip:
            raise ValueError("trainer.dp_adaptive_clip needs trainer.dp = true (it adapts the DP clip norm)")
        return
    for name, value, allowed in (("adversarial_loss", cfg.adversarial_loss, "bce"),
                                 ("projection", cfg.projection, False),
                                 ("r1_gamma", cfg.r1_gamma, 0.0), ("minibatch_stddev", cfg.minibatch_stddev, False)):
        if value != allowed:
            raise ValueError(f"trainer.dp with {name} = {value!r}: the DP discriminator step supports "
                             f"{name} = {allowed!r} only (minibatch_stddev couples real examples; the DP step calls D "
                             f"without the projection term's classes)")
    if cfg.class_loss != "cross_entropy":
        raise ValueError("trainer.dp with class_loss = 'nll_softmax': the DP discriminator step implements "
                         "cross_entropy only")
    if cfg.class_loss_normalization == "weight_sum":
        raise ValueError("trainer.dp with class_loss_normalization = 'weight_sum': the normaliser would depend "
                         "on the real batch's labels; use 'batch'")
    if cfg.batch_norm:
        raise ValueError("trainer.dp with trainer.batch_norm: BatchNorm in the discriminator mixes real examples "
                         "and its moving statistics are un-noised real-data state; use spectral_norm or none "
                         "(generator_batch_norm is fine)")
    if cfg.dp_fake_clip_group == "patient" and not (cfg.dp_unit == "patient" and cfg.dp_clip_fake):
        raise ValueError("trainer.dp_fake_clip_group = 'patient' needs dp_unit = 'patient' and dp_clip_fake = "
                         "true (it matches the fake half's clipping to the real half's per-patient clipping)")
    if cfg.dp_views > 1 and not cfg.diffaugment.strip():
        raise ValueError(f"trainer.dp_views = {cfg.dp_views} needs trainer.diffaugment (without augmentation "
                         "the views are identical)")
    if cfg.dp_sampling == "shuffle":
        if cfg.dp_unit == "patient":
            raise ValueError("trainer.dp_unit = 'patient' needs dp_sampling = 'poisson' (shuffled batches are "
                             "not made of whole patients)")
        if cfg.class_balanced:
            raise ValueError("trainer.dp_sampling = 'shuffle' with class_balanced: a rare class's units are "
                             "sampled more often than q = batch / N; use dp_sampling = 'poisson'")


@dataclasses.dataclass(frozen=True)
class DPSettings:
    """What the private discriminator phase (discriminator_phase.py) needs, per step: the clip, the noise, the
    constant normaliser, the privacy groups, and adaptive clipping. ``plan.DPPlan`` extends it with what the
    sampler and the accountant agree on, so a plan is handed to the phase as it is."""

    clip_norm: float  # C; with adaptive clipping the starting norm
    noise_multiplier: float  # sigma: the noise std on the clipped sum is sigma * C
    normalizer: float  # the GLOBAL expected number of real examples per step (never the realised count)
    num_groups: int | None  # patient slots per replica batch (its capacity) with per-patient clipping, else None
    method: str = "vmap"  # how per-example gradients are vectorised (per_example.PER_EXAMPLE_METHODS)
    clip_fake: bool = True  # clip the fake half per example to the same norm (no noise: it holds no real data)
    # Adaptive clipping (Andrew et al. 2021): count_stddev > 0 turns it on; clip_norm is then the starting norm.
    count_stddev: float = 0.0  # noise std on the centred count of unclipped units (sensitivity 1/2)
    expected_units: float = 0.0  # GLOBAL expected privacy units per step (the count's constant denominator)
    clip_quantile: float = 0.5
    clip_lr: float = 0.2
    fake_group_size: int = 1  # fakes clipped in groups of this many (per-patient mode: the mean units per patient)
    views: int = 1  # augmented views of each example whose losses are averaged BEFORE clipping (free in privacy)

    @property
    def adaptive(self) -> bool:
        return self.count_stddev > 0
