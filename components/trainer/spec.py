"""Config of the ac-GAN trainer: the networks, the losses and their options, the schedule, the monitoring.

Defaults follow the reference study (pGAN): s = 128, 100-d noise, Adam(1e-4, beta = 0.5/0.999), batch 32, no BN,
no spectral norm, no EMA, no augmentation, no label smoothing, alpha = 1. configs/reference.toml switches on the
study's remaining particulars (weighted class loss normalised by the weights' sum, NLL on softmax, D's biases and
heads, prior-sampled fake labels). Every other option is off by default and switched on per run config.
"""
from __future__ import annotations

import dataclasses

from vugan.components.trainer.dp.spec import DPConfig, validate_dp

F = dataclasses.field
# The names models.augment implements (kept here so that loading a config never imports TensorFlow).
AUGMENTATIONS = ("translation", "cutout", "intensity", "brightness", "contrast")


@dataclasses.dataclass(frozen=True)
class _TrainerFields:
    """The keys before the DP block: schedule, networks, losses and options, data."""

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
    g_output_block: str = F(default="conv", metadata={
        "choices": ("conv", "two_conv"),
        "help": "G's full-resolution stage: 'conv' (the study: the last x2 step goes straight to the K slices, one "
                "linear map at H x W) or 'two_conv' (x2 step to `width` channels, BN?, ReLU, then a 3x3 conv to the "
                "K slices: a nonlinearity at full resolution, against edges drawn as streaks)"})
    g_block_convs: int = F(default=1, metadata={
        "range": (1, 2),
        "help": "convolutions per hidden upsampling block of the plain generator: 2 adds a 3x3 conv + BN? + ReLU "
                "after each x2 step (not with residual, whose blocks have two already)"})
    g_conditional_norm: bool = F(default=False, metadata={
        "help": "class-conditional BatchNorm in G (per-class gain and bias, de Vries et al. 2017 / Miyato & Koyama "
                "2018): the class re-enters every hidden block, not only the input; needs generator_batch_norm"})
    g_output: str = F(default="tanh", metadata={
        "choices": ("tanh", "linear_clip"),
        "help": "G's output: tanh (the study) or linear_clip (identity while training, clipped to [-1, 1] for "
                "samples and export): tanh scales the gradient of a voxel it has pushed to black by 1 - y^2 (0.026 "
                "at the demo generator's median overshoot), so overshoots stick; linear, D sees values below -1 "
                "that no real unit has and pushes them back at full strength"})
    d_width: int = F(default=0, metadata={
        "range": (0, 4096), "help": "the discriminator's own s (blocks s-2s-4s-8s); 0 = width (as wide as G)"})
    d_feature_width: int = F(default=0, metadata={
        "range": (0, 65536),
        "help": "width of D's feature layer, the conv over the base grid whose output feeds both heads; 0 = s (the "
                "study: the 8s channels of the last block squeezed into s features)"})
    g_noise_inputs: bool = F(default=False, metadata={
        "help": "per-pixel Gaussian noise added to every hidden block of G (and to its output when no hidden block "
                "is at full resolution), scaled by a learned per-channel strength that starts at 0 (StyleGAN): fine "
                "texture (scanner noise, trabecular pattern) from noise, not from the 100-d code; each map is seeded "
                "by the example's own noise vector, so the same z gives the same image"})
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
    r1_every: int = F(default=1, metadata={
        "range": (1, 1000),
        "help": "lazy R1 (StyleGAN2): the penalty on every k-th step only, weighted k x r1_gamma, so it costs 1/k "
                "of its compute; 1 = every step"})
    mode_seeking: float = F(default=0.0, metadata={
        "range": (0.0, 100.0), "help": "lambda of the mode-seeking term (MSGAN): G pays 1 / (image distance / noise "
                                       "distance) for same-class pairs of its batch; 0 = off"})
    mode_seeking_pool: int = F(default=1, metadata={
        "range": (1, 64),
        "help": "compare the mode-seeking pair's images after p x p average pooling: pay for different layouts, "
                "not for pixel-scale differences (noise, streaks); 1 = every pixel (MSGAN)"})
    aux_weight: float = F(default=1.0, metadata={"range": (0.0, None), "help": "alpha: weight of the class cross-entropy"})
    d_class_loss_on_fakes: bool = F(default=True, metadata={
        "help": "D's class head also learns the class G was asked for on its fakes (the ac-GAN); false = D's class "
                "loss on real units only, so D's class head is a classifier of real anatomy that G must satisfy, "
                "not one that learns G's stereotypes of each class"})
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
    augment_p: float = F(default=1.0, metadata={
        "range": (0.0, 1.0),
        "help": "probability that each DiffAugment transform applies to an image (StyleGAN2-ADA's p); 1 = always "
                "(DiffAugment); with ada_target > 0, p's starting value"})
    ada_target: float = F(default=0.0, metadata={
        "range": (0.0, 1.0), "exclusive": "hi",
        "help": "adaptive augmentation (StyleGAN2-ADA): after every step p moves up when E[sign D(real)] on the "
                "training batch is above this target (D grows confident on the units it trains on: overfitting) "
                "and down when below; 0.6 in the paper; 0 = p stays at augment_p"})
    ada_kimg: float = F(default=100.0, metadata={
        "range": (0.0, 1e6), "exclusive": "lo",
        "help": "with ada_target: thousands of training images over which p can move from 0 to 1 (500 in the "
                "paper, whose runs are 100x longer)"})
    allow_missing_classes: bool = F(default=False, metadata={
        "help": "train although a class has no training units (prior 0: never generated); off: that is an error"})
    ema: bool = F(default=False, metadata={"help": "keep an EMA of G's weights, used for samples and export"})
    ema_decay: float = F(default=0.999, metadata={"range": (0.0, 1.0), "exclusive": "hi",
                                                  "help": "EMA decay (ramped up over the first steps); 1 would never "
                                                          "move off the random start"})
    ema_kimg: float = F(default=0.0, metadata={
        "range": (0.0, 1e6),
        "help": "EMA half-life in thousands of training images (StyleGAN2-ADA's ema_kimg): decay = 0.5 ** (batch / "
                "(1000 ema_kimg)), the same horizon in images at any batch size; 0 = use ema_decay"})
    d_steps: int = F(default=1, metadata={
        "range": (1, 100), "help": "discriminator steps per generator step, each on its own real batch (under DP "
                                   "each is a DP-SGD step, and epsilon counts them all)"})
    reuse_fakes: bool = F(default=False, metadata={
        "help": "CHANGE OF ALGORITHM (not the study's): G's update reuses the D phase's fakes (same z, classes) "
                "against the updated D, saving one G forward per step; off = fresh noise for G as in the study"})
    # Rates must be > 0 (0, or 1e-400, which reads as 0.0, trains nothing with exit 0); Adam's betas < 1 (its bias
    # correction divides by 1 - beta^t).
    lr_g: float = F(default=1e-4, metadata={"range": (0.0, 1.0), "exclusive": "lo", "help": "generator learning rate"})
    lr_d: float = F(default=1e-4, metadata={"range": (0.0, 1.0), "exclusive": "lo",
                                            "help": "discriminator learning rate (TTUR: differ from lr_g)"})
    beta1: float = F(default=0.5, metadata={"range": (0.0, 1.0), "exclusive": "hi", "help": "Adam beta_1"})
    beta2: float = F(default=0.999, metadata={"range": (0.0, 1.0), "exclusive": "hi", "help": "Adam beta_2"})
    # ---------------------------------------------------------------- data
    class_balanced: bool = F(default=False, metadata={"help": "sample real batches uniformly over classes"})
    mirror_slices: bool = F(default=False, metadata={
        "help": "reverse the slice order of half the real training units (a left-right mirror of the sagittal "
                "stack, anatomy that exists): twice the distinct units for D at no cost; not with dp (its batches "
                "are sampled by the DP pipeline)"})
    shuffle_buffer: int = F(default=10000, metadata={"range": (1, None), "help": "tf.data shuffle buffer (examples)"})


@dataclasses.dataclass(frozen=True)
class TrainerConfig(DPConfig, _TrainerFields):
    """The ``[trainer]`` section. Its keys, in config.toml order: ``_TrainerFields``', the DP keys (``DPConfig``,
    declared in dp/spec.py), then those below (dataclasses collect base fields in reverse MRO order)."""

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
    d_auc_holdout: int = F(default=0, metadata={
        "range": (0, 100000),
        "help": "every log_every steps, log d_auc_holdout: the AUC of D's real/fake logit on the first N held-out "
                "units (the examples' holdout split, never test) vs N fresh fakes of the same classes, both without "
                "DiffAugment, G and D in inference mode (0.5: D cannot tell them apart; near 1 while the training "
                "losses look balanced: D memorises). Allowed with dp: it reads no training unit and changes no "
                "weight. 0 = off"})
    checkpoint_every: int = F(default=200, metadata={"range": (1, None), "help": "steps between checkpoints"})
    keep_checkpoints: int = F(default=3, metadata={"range": (1, 1000), "help": "checkpoints kept (the last k)"})
    # ------------------------------------------- canaries (trainer/canaries.py; last: the keys before keep their place)
    canaries: int = F(default=0, metadata={
        "range": (0, 10000),
        "help": "public canary patients for the canary audit: an even number N of whole patients from "
                "canary_examples, N/2 inserted into training like any patient, N/2 held back; 0 = off"})
    canary_examples: str = F(default="", metadata={
        "help": "with canaries: an Examples artifact made from a PHANTOM cohort (`vugan phantom`, then `vugan "
                "preprocess` with the same [preprocess] settings), whose patients are public by construction"})
    canary_seed: int = F(default=0, metadata={"range": (0, 2**31 - 1),
                                              "help": "seed of which canary patients are inserted and held back"})

    @property
    def augment_probability_set(self) -> bool:
        """augment_p < 1 or ADA: DiffAugment's transforms apply with a probability, not always."""
        return self.augment_p < 1.0 or self.ada_target > 0

    @property
    def adaptive_augment(self) -> bool:
        """DiffAugment with an application probability: the gate draws and p are needed."""
        return bool(self.diffaugment.strip()) and self.augment_probability_set

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
        validate_dp(self)
        validate_canaries(self)
        if self.augment_probability_set and not self.diffaugment.strip():
            raise ValueError("trainer.augment_p / ada_target set the probability of DiffAugment's transforms: name "
                             "them in trainer.diffaugment (e.g. 'translation,cutout')")
        if self.adaptive_augment and self.dp:
            raise ValueError("trainer.augment_p < 1 and ada_target apply to ordinary training; set augment_p = 1 "
                             "and ada_target = 0 with dp")
        if not self.d_class_loss_on_fakes and self.dp:
            raise ValueError("trainer.d_class_loss_on_fakes = false is not implemented for DP's discriminator phase; "
                             "set it to true with dp")
        if self.mirror_slices and self.dp:
            raise ValueError("trainer.mirror_slices applies to ordinary training; DP runs sample their own batches: "
                             "set mirror_slices = false with dp")
        if self.reuse_fakes and (self.dp or self.d_steps > 1):
            raise ValueError("reuse_fakes needs d_steps = 1 and no DP (one D phase whose fakes G reuses)")
        if self.adversarial_loss == "hinge" and self.label_smoothing:
            raise ValueError("label_smoothing applies to the bce loss only; set it to 0 with adversarial_loss = 'hinge'")
        if self.g_conditional_norm and not (self.generator_batch_norm or self.batch_norm):
            raise ValueError("g_conditional_norm makes the generator's BatchNorm class-conditional: set "
                             "generator_batch_norm = true too")
        if self.g_block_convs == 2 and self.residual:
            raise ValueError("g_block_convs = 2 is for the plain generator; residual blocks already have two convs")
        if isinstance(self.xla, str) and self.xla != "auto":
            raise ValueError(f"xla {self.xla!r}: use true, false or 'auto'")
        if self.batch_size % self.cpu_replicas:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by cpu_replicas {self.cpu_replicas}")


def validate_canaries(cfg) -> None:
    """trainer.canaries needs its phantom examples, and an even count (half inserted, half held back)."""
    if cfg.canaries and not cfg.canary_examples:
        raise ValueError(f"trainer.canaries = {cfg.canaries} needs trainer.canary_examples: the folder of an Examples "
                         "artifact made from a phantom cohort (`vugan phantom`, then `vugan preprocess`)")
    if cfg.canaries % 2 or cfg.canaries == 1:
        raise ValueError(f"trainer.canaries = {cfg.canaries}: use an even number (half inserted, half held back), "
                         "or 0 to train without canaries")
