"""Config of the ac-GAN trainer: the networks, the losses and their options, the schedule, the monitoring.

Defaults are the reference study's (pGAN): s = 128, 100-d noise, Adam(1e-4, beta = 0.5/0.999), batch 32, no BN,
no spectral norm, no EMA, no augmentation, no label smoothing, unweighted class loss with alpha = 1.
Every option is off by default and switched on per run config.
"""
from __future__ import annotations

import dataclasses

F = dataclasses.field
# The names models.augment implements (kept here so that loading a config never imports TensorFlow).
AUGMENTATIONS = ("translation", "cutout", "intensity")


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
    spectral_norm: bool = F(default=False, metadata={"help": "spectral normalisation of the discriminator's convolutions"})
    # ---------------------------------------------------------------- losses and options
    aux_weight: float = F(default=1.0, metadata={"range": (0.0, None), "help": "alpha: weight of the class cross-entropy"})
    class_weighted_loss: bool = F(default=False, metadata={"help": "weight the class loss by inverse training frequency"})
    label_smoothing: float = F(default=0.0, metadata={"range": (0.0, 0.5), "help": "one-sided: real target becomes 1 - value"})
    diffaugment: str = F(default="", metadata={
        "help": "comma list of differentiable augmentations for D's inputs: translation, cutout, intensity"})
    ema: bool = F(default=False, metadata={"help": "keep an EMA of G's weights, used for samples and export"})
    ema_decay: float = F(default=0.999, metadata={"range": (0.0, 1.0), "help": "EMA decay (ramped up over the first steps)"})
    lr_g: float = F(default=1e-4, metadata={"range": (0.0, 1.0), "help": "generator learning rate"})
    lr_d: float = F(default=1e-4, metadata={"range": (0.0, 1.0), "help": "discriminator learning rate (TTUR: differ from lr_g)"})
    beta1: float = F(default=0.5, metadata={"range": (0.0, 1.0), "help": "Adam beta_1"})
    beta2: float = F(default=0.999, metadata={"range": (0.0, 1.0), "help": "Adam beta_2"})
    # ---------------------------------------------------------------- data
    class_balanced: bool = F(default=False, metadata={"help": "sample real batches uniformly over classes"})
    shuffle_buffer: int = F(default=10000, metadata={"range": (1, None), "help": "tf.data shuffle buffer (examples)"})
    # ---------------------------------------------------------------- hardware
    cpu_replicas: int = F(default=1, metadata={"range": (1, 64),
                                               "help": "with no GPU, split the CPU into N logical devices (tests multi-replica code)"})
    mixed_precision: bool = F(default=False, metadata={"help": "bfloat16 compute on GPU (ignored on CPU)"})
    xla: bool = F(default=False, metadata={"help": "XLA-compile the per-replica train step"})
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
        if self.batch_size % self.cpu_replicas:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by cpu_replicas {self.cpu_replicas}")
