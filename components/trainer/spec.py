"""Config of the ac-GAN trainer: the networks, the losses and their options, the schedule, the monitoring.

Defaults follow the reference study (pGAN): s = 128, 100-d noise, Adam(1e-4, beta = 0.5/0.999), batch 32, no BN,
no spectral norm, no EMA, no augmentation, no label smoothing, alpha = 1. configs/reference.toml switches on the
study's remaining particulars (weighted class loss normalised by the weights' sum, NLL on softmax, D's biases and
heads, prior-sampled fake labels). Every other option is off by default and switched on per run config.
"""
from __future__ import annotations

import dataclasses

F = dataclasses.field
# The names models.augment implements (kept here so that loading a config never imports TensorFlow).
AUGMENTATIONS = ("translation", "cutout", "intensity", "brightness", "contrast")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    steps: int = F(default=1000, metadata={"range": (0, 10**9), "help": "total generator steps"})
    batch_size: int = F(default=32, metadata={"range": (1, 65536), "help": "global batch size"})
    seed: int = F(default=0, metadata={"range": (0, 2**31 - 1),
                                       "help": "seed of the weights, the data order and the noise"})
    # ---------------------------------------------------------------- networks
    image_shape: str | tuple[int, ...] = F(default="auto", metadata={
        "help": "'auto' (take H, W, K from the examples artifact) or [H, W, K]; a mismatch with the data is an error"})
    width: int = F(default=128, metadata={"range": (1, 4096), "help": "s: widths are 8s-4s-2s-s at 64x64 (s=128 in the reference)"})
    noise_dim: int = F(default=100, metadata={"range": (1, 4096), "help": "length of the generator's noise vector"})
    batch_norm: bool = F(default=False, metadata={"help": "BatchNorm in hidden blocks of both networks (off in the reference)"})
    generator_batch_norm: bool = F(default=False, metadata={
        "help": "BatchNorm in the generator only (DCGAN-style); helps small widths, whose N(0, 0.02) start is tiny"})
    spectral_norm: bool = F(default=False, metadata={"help": "spectral normalisation of the discriminator's convolutions"})
    spectral_norm_heads: bool = F(default=False, metadata={
        "help": "with spectral_norm, also D's two linear heads (then every D layer is normalised)"})
    g_upsample: str = F(default="transpose", metadata={
        "choices": ("transpose", "resize"),
        "help": "G's x2 upsampling: 4x4 stride-2 transposed conv (the study) or nearest resize + 3x3 conv (no "
                "checkerboard texture)"})
    minibatch_stddev: bool = F(default=False, metadata={
        "help": "append a minibatch standard-deviation channel before D's last conv (ProGAN; against collapse)"})
    projection: bool = F(default=False, metadata={
        "help": "a projection term beside the auxiliary classifier (Miyato & Koyama 2018): D's real/fake logit "
                "for class y gains <embed(y), features>; not with dp"})
    residual: bool = F(default=False, metadata={
        "help": "residual blocks in G and D (two 3x3 convs + 1x1 shortcut; nearest up / average-pool down) "
                "instead of the study's single 4x4 (de)convolutions"})
    d_block_bias: bool = F(default=False, metadata={
        "help": "biases on D's stride-2 blocks after the first (the study's layout: configs/reference.toml)"})
    d_feature_activation: bool = F(default=True, metadata={
        "help": "LeakyReLU after D's last conv (false in the study)"})
    head_init: str = F(default="normal", metadata={
        "choices": ("normal", "pytorch"), "help": "D's heads: N(0, 0.02), or PyTorch's nn.Linear default (the study)"})
    init_from: str = F(default="", metadata={
        "help": "folder of a trained model (a `vugan train` output) whose G and D weights start this run (public "
                "pre-training, then fine-tuning); its architecture must match; '' = random start"})
    d_trainable_layers: str = F(default="", metadata={
        "help": "with init_from: comma list of the discriminator layers fine-tuning trains (e.g. "
                "'conv_3,realfake_logits,class_logits'); the others keep the pre-trained weights, frozen. Under DP "
                "the noise grows with sqrt(#trained D parameters) while the clipped signal does not "
                "(docs/dp.md); '' = every layer"})
    # ---------------------------------------------------------------- losses and options
    adversarial_loss: str = F(default="bce", metadata={
        "choices": ("bce", "hinge"),
        "help": "bce: the study's non-saturating GAN loss; hinge: max(0, 1 -+ D) for D, -D for G"})
    r1_gamma: float = F(default=0.0, metadata={
        "range": (0.0, 1e4), "help": "R1 penalty gamma/2 |grad_x D(x)|^2 on D's (augmented) real input; 0 = off"})
    mode_seeking: float = F(default=0.0, metadata={
        "range": (0.0, 100.0), "help": "lambda of the mode-seeking term (MSGAN): G pays 1 / (image distance / noise "
                                       "distance) for same-class pairs of its batch; 0 = off"})
    aux_weight: float = F(default=1.0, metadata={"range": (0.0, None), "help": "alpha: weight of the class cross-entropy"})
    class_weighted_loss: bool = F(default=False, metadata={"help": "weight the class loss by inverse training frequency"})
    class_loss: str = F(default="cross_entropy", metadata={
        "choices": ("cross_entropy", "nll_softmax"),
        "help": "cross_entropy (-log p), or the study's NLLLoss on softmax probabilities (-p; reference.toml only)"})
    class_loss_normalization: str = F(default="batch", metadata={
        "choices": ("batch", "weight_sum"),
        "help": "divide the weighted class loss by the batch size, or by the sum of the batch's weights (the study)"})
    fake_labels: str = F(default="real_batch", metadata={
        "choices": ("real_batch", "prior"),
        "help": "classes of the D phase's fakes: the real batch's labels, or drawn from the training prior (the "
                "study; always so under DP)"})
    label_smoothing: float = F(default=0.0, metadata={"range": (0.0, 0.5), "help": "one-sided: real target becomes 1 - value"})
    diffaugment: str = F(default="", metadata={
        "help": "comma list of differentiable augmentations for D's inputs: " + ", ".join(AUGMENTATIONS)})
    allow_missing_classes: bool = F(default=False, metadata={
        "help": "train although a class has no training units (prior 0: never generated); off: that is an error"})
    ema: bool = F(default=False, metadata={"help": "keep an EMA of G's weights, used for samples and export"})
    ema_decay: float = F(default=0.999, metadata={"range": (0.0, 1.0), "help": "EMA decay (ramped up over the first steps)"})
    d_steps: int = F(default=1, metadata={
        "range": (1, 100), "help": "discriminator steps per generator step, each on its own real batch (under DP "
                                   "each is a DP-SGD step, and epsilon counts them all)"})
    reuse_fakes: bool = F(default=False, metadata={
        "help": "CHANGE OF ALGORITHM (not the study's): G's update reuses the D phase's fakes (same z, classes) "
                "against the updated D, saving one G forward per step; off = fresh noise for G as in the study"})
    lr_g: float = F(default=1e-4, metadata={"range": (0.0, 1.0), "help": "generator learning rate"})
    lr_d: float = F(default=1e-4, metadata={"range": (0.0, 1.0), "help": "discriminator learning rate (TTUR: differ from lr_g)"})
    beta1: float = F(default=0.5, metadata={"range": (0.0, 1.0), "help": "Adam beta_1"})
    beta2: float = F(default=0.999, metadata={"range": (0.0, 1.0), "help": "Adam beta_2"})
    # ---------------------------------------------------------------- data
    class_balanced: bool = F(default=False, metadata={"help": "sample real batches uniformly over classes"})
    shuffle_buffer: int = F(default=10000, metadata={"range": (1, None), "help": "tf.data shuffle buffer (examples)"})
    # ---------------------------------------------------------------- differential privacy (docs/dp.md)
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
        "choices": ("vmap", "jacobian"), "help": "how per-example gradients are vectorised (models/dp.py)"})
    # ---------------------------------------------------------------- hardware
    cpu_replicas: int = F(default=1, metadata={"range": (1, 64),
                                               "help": "with no GPU, split the CPU into N logical devices (tests multi-replica code)"})
    mixed_precision: bool = F(default=False, metadata={"help": "bfloat16 compute on GPU (ignored on CPU)"})
    xla: bool | str = F(default="auto", metadata={
        "help": "XLA-compile the per-replica train step: true, false or 'auto' (on with a GPU; off on CPU, where "
                "oneDNN without XLA measured faster: bench/train.py)"})
    # ---------------------------------------------------------------- monitoring and checkpoints
    log_every: int = F(default=10, metadata={"range": (1, None), "help": "steps between scalar logs (TensorBoard, stats.jsonl, console)"})
    image_every: int = F(default=200, metadata={"range": (1, None), "help": "steps between per-class sample grids"})
    samples_per_class: int = F(default=4, metadata={"range": (1, 64), "help": "columns of the sample grid"})
    checkpoint_every: int = F(default=200, metadata={"range": (1, None), "help": "steps between checkpoints"})
    keep_checkpoints: int = F(default=3, metadata={"range": (1, 1000), "help": "checkpoints kept (the last k)"})

    def validate(self) -> None:
        if isinstance(self.image_shape, str):
            if self.image_shape != "auto":
                raise ValueError(f"image_shape {self.image_shape!r}: use 'auto' or [H, W, K]")
        elif len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape {list(self.image_shape)}: expected [H, W, K] of positive integers")
        for name in (p.strip() for p in self.diffaugment.split(",") if p.strip()):
            if name not in AUGMENTATIONS:
                raise ValueError(f"diffaugment {name!r} is unknown; allowed: {', '.join(AUGMENTATIONS)}")
        if self.d_trainable_layers.strip() and not self.init_from:
            raise ValueError(f"trainer.d_trainable_layers = {self.d_trainable_layers!r} needs trainer.init_from: the "
                             "frozen layers would keep their random initial weights")
        if self.dp:
            self._validate_dp()
        elif self.dp_adaptive_clip:
            raise ValueError("trainer.dp_adaptive_clip needs trainer.dp = true (it adapts the DP clip norm)")
        if self.reuse_fakes and (self.dp or self.d_steps > 1):
            raise ValueError("reuse_fakes needs d_steps = 1 and no DP (one D phase whose fakes G reuses)")
        if self.adversarial_loss == "hinge" and self.label_smoothing:
            raise ValueError("label_smoothing applies to the bce loss only; set it to 0 with adversarial_loss = 'hinge'")
        if isinstance(self.xla, str) and self.xla != "auto":
            raise ValueError(f"xla {self.xla!r}: use true, false or 'auto'")
        if self.batch_size % self.cpu_replicas:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by cpu_replicas {self.cpu_replicas}")

    def _validate_dp(self) -> None:
        """Options that would put real data outside the clipped, noised gradient, or make the accounting wrong."""
        for name, value, allowed in (("adversarial_loss", self.adversarial_loss, "bce"),
                                     ("projection", self.projection, False),
                                     ("r1_gamma", self.r1_gamma, 0.0), ("minibatch_stddev", self.minibatch_stddev, False)):
            if value != allowed:
                raise ValueError(f"trainer.dp with {name} = {value!r}: the DP discriminator step supports "
                                 f"{name} = {allowed!r} only (minibatch_stddev couples real examples; the DP step calls D "
                                 f"without the projection term's classes)")
        if self.class_loss != "cross_entropy":
            raise ValueError("trainer.dp with class_loss = 'nll_softmax': the DP discriminator step implements "
                             "cross_entropy only")
        if self.class_loss_normalization == "weight_sum":
            raise ValueError("trainer.dp with class_loss_normalization = 'weight_sum': the normaliser would depend "
                             "on the real batch's labels; use 'batch'")
        if self.batch_norm:
            raise ValueError("trainer.dp with trainer.batch_norm: BatchNorm in the discriminator mixes real examples "
                             "and its moving statistics are un-noised real-data state; use spectral_norm or none "
                             "(generator_batch_norm is fine)")
        if self.dp_fake_clip_group == "patient" and not (self.dp_unit == "patient" and self.dp_clip_fake):
            raise ValueError("trainer.dp_fake_clip_group = 'patient' needs dp_unit = 'patient' and dp_clip_fake = "
                             "true (it matches the fake half's clipping to the real half's per-patient clipping)")
        if self.dp_views > 1 and not self.diffaugment.strip():
            raise ValueError(f"trainer.dp_views = {self.dp_views} needs trainer.diffaugment (without augmentation "
                             "the views are identical)")
        if self.dp_sampling == "shuffle":
            if self.dp_unit == "patient":
                raise ValueError("trainer.dp_unit = 'patient' needs dp_sampling = 'poisson' (shuffled batches are "
                                 "not made of whole patients)")
            if self.class_balanced:
                raise ValueError("trainer.dp_sampling = 'shuffle' with class_balanced: a rare class's units are "
                                 "sampled more often than q = batch / N; use dp_sampling = 'poisson'")
