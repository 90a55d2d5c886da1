"""The ac-GAN networks of the reference study (Sun et al. 2023, pGAN ``fixed_architecture.py``), in Keras 3.

Generator: [noise [N, z], class_ids int [N]] -> one-hot ++ noise -> 1x1 -> ConvT (stride 1, to the base grid)
-> stride-2 ConvT blocks halving the width down to s -> ConvT to K slices, tanh. 4x4 kernels, no bias, ReLU,
optional BatchNorm (off, as in the released weights). Discriminator mirrors it with LeakyReLU(0.2): stride-2
convs from s up to the widest, one conv over the whole base grid down to s features, then two linear heads
(real/fake logit, class logits). Weights start at N(0, 0.02).

Options beyond the study: spectral norm, resize-conv upsampling, minibatch stddev, residual blocks in both networks,
a nonlinear full-resolution output block, two convs per generator block, class-conditional BatchNorm in G, a
linear output clipped only in inference,
and a projection term (a third D output; ``conditional_logits`` turns D's outputs into the class-conditional logit).

At 64x64 the base grid is 4x4 and the widths are 8s-4s-2s-s exactly as in the reference; at 32 or 128 there is
one stride-2 block fewer or more; a non-square size (64x128) starts from a non-square base grid (4x8).
Models know nothing about distribution strategies.
"""
from __future__ import annotations

import dataclasses
import math

import keras
from keras import ops

from vugan.models.conditional_norm import ConditionalBatchNorm
from vugan.models.noise_injection import NoiseInjection

INIT_STD = 0.02


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    image_shape: tuple[int, int, int]  # H, W, K
    num_classes: int
    noise_dim: int = 100
    width: int = 128  # s
    batch_norm: bool = False  # in the generator's hidden blocks (the reference's optional BN)
    d_batch_norm: bool = False  # in the discriminator's hidden blocks
    spectral_norm: bool = False  # discriminator only
    # The study's exact discriminator (configs/reference.toml): biases on the stride-2 blocks after the first
    # (PyTorch's default when BN is off), no activation after the last conv, PyTorch-default (uniform) heads.
    spectral_norm_heads: bool = False  # also the two linear heads (with spectral_norm: every layer of D)
    g_upsample: str = "transpose"  # "transpose" (the study) or "resize" (nearest x2 + 3x3 conv: no checkerboard)
    minibatch_stddev: bool = False  # a minibatch standard-deviation channel before D's last conv (ProGAN)
    d_block_bias: bool = False
    d_feature_activation: bool = True  # LeakyReLU after the last conv (not in the study)
    head_init: str = "normal"  # "normal": N(0, 0.02); "pytorch": nn.Linear's default, U(+-1/sqrt(fan_in))
    # A projection term beside the auxiliary classifier (Miyato & Koyama 2018, arXiv:1802.05637): D gets a third
    # output, per-class scores <embed(c), features>, and the conditional real/fake logit for class y is
    # realfake + scores[:, y] (conditional_logits). The two-output contract stays for every model without it.
    projection: bool = False
    # Residual blocks in both networks (pre-activation, SNGAN/BigGAN style: two 3x3 convs + a 1x1 shortcut,
    # nearest x2 up in G, 2x2 average pool down in D) instead of the study's single 4x4 (de)convs.
    residual: bool = False
    # Real work at full resolution (issue 22): "two_conv" makes the last x2 step an upsampling to `width` channels,
    # BN? + ReLU at H x W, then a 3x3 conv to the K slices; "conv" (the study) goes straight to K slices, so the
    # full-resolution image is one linear map of the previous block's features.
    g_output_block: str = "conv"
    # Convolutions per plain (non-residual) hidden upsampling block: 2 adds a 3x3 conv + BN? + ReLU after each.
    g_block_convs: int = 1
    # Class-conditional BatchNorm in G's hidden blocks (models/conditional_norm.py); needs batch_norm.
    g_conditional_norm: bool = False
    # G's output: "tanh" (the study) or "linear_clip" (identity while training, clipped to [-1, 1] in inference).
    g_output: str = "tanh"
    # Width of D's feature layer (the conv over the base grid that feeds both heads); 0 = s, the study's squeeze of
    # the 8s channels of the last block into s features (issue 22: a bottleneck for the defects D should see).
    d_feature_width: int = 0
    # D's own s (its blocks are s-2s-4s-8s wide); 0 = the generator's width. D wider than G (issue 22): the critic
    # must see defects the generator makes.
    d_width: int = 0
    # Per-pixel noise maps added to G's blocks (models/noise_injection.py; StyleGAN), per-channel strength from 0.
    g_noise_inputs: bool = False

    @property
    def n_up(self) -> int:
        """Number of stride-2 (de)convolutions: the smaller side is 4 * 2**n_up."""
        return int(round(math.log2(min(self.image_shape[:2]) / 4)))

    @property
    def base_grid(self) -> tuple[int, int]:
        h, w = self.image_shape[:2]
        return h >> self.n_up, w >> self.n_up

    def check(self) -> None:
        h, w, k = self.image_shape
        if min(h, w) < 8 or any(x % 4 or (x >> self.n_up) << self.n_up != x for x in (h, w)):
            raise ValueError(f"image size {h}x{w}: each side must be 4 * 2**n (n >= 1) times an integer ratio, "
                             f"e.g. 16, 32, 64, 128 or 64x128")
        if 4 * 2 ** self.n_up != min(h, w):
            raise ValueError(f"image size {h}x{w}: the smaller side must be a power of two >= 8")
        if self.g_output_block not in ("conv", "two_conv"):
            raise ValueError(f"g_output_block {self.g_output_block!r}: use 'conv' or 'two_conv'")
        if self.g_output not in ("tanh", "linear_clip"):
            raise ValueError(f"g_output {self.g_output!r}: use 'tanh' or 'linear_clip'")
        if self.g_block_convs not in (1, 2):
            raise ValueError(f"g_block_convs {self.g_block_convs}: use 1 or 2")
        if self.g_block_convs == 2 and self.residual:
            raise ValueError("g_block_convs = 2 applies to the plain generator; residual blocks already have two convs")
        for name in ("d_feature_width", "d_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} {getattr(self, name)}: use 0 (the default width) or a positive width")
        if self.g_conditional_norm and not self.batch_norm:
            raise ValueError("g_conditional_norm makes the generator's BatchNorm class-conditional: it needs "
                             "generator_batch_norm (or batch_norm)")


def _init():
    return keras.initializers.RandomNormal(0.0, INIT_STD)


def _pytorch_uniform(fan_in: int):
    """torch.nn.Linear / Conv2d default for weights (kaiming_uniform, a = sqrt(5)) and biases: U(+-1/sqrt(fan_in))."""
    limit = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-limit, limit)


class _SpectralNorm:
    """What SpectralNormConv2D and SpectralNormDense share: the power-iteration vector ``vector_u`` (a
    non-trainable weight saved with the layer) and the kernel divided by its largest singular value. A subclass
    names its output width ``_sn_width``."""

    def build(self, input_shape):
        super().build(input_shape)
        self._add_power_vector()

    def _bias_and_activation(self, outputs):
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)  # (width,) broadcasts over the last axis
        return self.activation(outputs) if self.activation is not None else outputs

    def _add_power_vector(self) -> None:
        self.vector_u = self.add_weight(shape=(1, self._sn_width), initializer=keras.initializers.RandomNormal(0, 1),
                                        trainable=False, name="vector_u", aggregation="only_first_replica")

    # The base layer saves only kernel and bias; the power-iteration vector is state too.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built:
            store["vector_u"] = self.vector_u

    def load_own_variables(self, store):
        self._check_load_own_variables = lambda store: None  # the base layer's check expects kernel/bias only
        super().load_own_variables({k: store[k] for k in store.keys() if k != "vector_u"})
        self.vector_u.assign(store["vector_u"])

    def normalized_kernel(self, training=False):
        w = ops.reshape(self.kernel, (-1, self._sn_width))
        u = self.vector_u.value
        v = _l2n(ops.matmul(u, ops.transpose(w)))
        u_new = ops.stop_gradient(_l2n(ops.matmul(v, w)))
        v = ops.stop_gradient(v)
        sigma = ops.sum(ops.matmul(v, w) * u_new)
        if training:
            self.vector_u.assign(u_new)
        return self.kernel / sigma


@keras.saving.register_keras_serializable(package="vugan")
class SpectralNormConv2D(_SpectralNorm, keras.layers.Conv2D):
    """Conv2D whose kernel is divided by its largest singular value (Miyato et al. 2018, arXiv:1802.05957).

    One power iteration per training call, as in the paper. Unlike ``keras.layers.SpectralNormalization`` this
    never overwrites the trainable kernel (the normalised kernel is used on the fly), and the power-iteration
    vector is a non-trainable weight with ``only_first_replica`` aggregation so that it can be updated inside a
    MirroredStrategy replica context (every replica computes the same value).
    """

    @property
    def _sn_width(self) -> int:
        return self.filters

    def call(self, inputs, training=False):
        outputs = self.convolution_op(inputs, ops.cast(self.normalized_kernel(training), inputs.dtype))
        return self._bias_and_activation(outputs)


@keras.saving.register_keras_serializable(package="vugan")
class SpectralNormDense(_SpectralNorm, keras.layers.Dense):
    """Dense whose kernel is divided by its largest singular value; as SpectralNormConv2D (one power iteration
    per training call, the vector a non-trainable weight saved with the layer)."""

    @property
    def _sn_width(self) -> int:
        return self.units

    def call(self, inputs, training=False):
        outputs = ops.matmul(inputs, ops.cast(self.normalized_kernel(training), inputs.dtype))
        return self._bias_and_activation(outputs)


@keras.saving.register_keras_serializable(package="vugan")
class MinibatchStdDev(keras.layers.Layer):
    """Append one channel: the standard deviation of each feature over the batch, averaged over features and
    positions (Karras et al. 2018, arXiv:1710.10196). D sees how varied a batch is, so a generator that makes
    one image per class is easy to call fake. Couples the examples of a batch: the trainer calls D on the real
    and on the fake batch separately when D has this layer (as with BatchNorm)."""

    def call(self, x):
        x32 = ops.cast(x, "float32")
        std = ops.sqrt(ops.var(x32, axis=0) + 1e-8)  # [H, W, C]
        value = ops.cast(ops.mean(std), x.dtype)
        shape = ops.shape(x)
        return ops.concatenate([x, ops.ones((shape[0], shape[1], shape[2], 1), x.dtype) * value], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)


@keras.saving.register_keras_serializable(package="vugan")
class ClipInInference(keras.layers.Layer):
    """G's "linear_clip" output: the identity while training, clipped to [-1, 1] in inference (samples, export).

    Why not tanh: a voxel tanh has pushed to -0.97 or below gets its gradient scaled by 1 - y^2 <= 0.06 (measured
    on the demo generator: the saturated voxels' pre-tanh median is -2.5, a factor 0.026), so once G overshoots to
    black, D's push back barely reaches it. Linear while training, an overshoot below -1 is a value no real unit
    has, D can call it fake, and the correction arrives at full strength; the clip keeps every exported image in
    the data's range."""

    def call(self, x, training=None):
        return x if training else ops.clip(x, -1.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def _l2n(x, eps=1e-12):
    return x / ops.sqrt(ops.maximum(ops.sum(x * x), eps))


def build_generator(cfg: ArchConfig) -> keras.Model:
    cfg.check()
    h, w, k = cfg.image_shape
    noise = keras.Input((cfg.noise_dim,), name="noise", dtype="float32")
    class_ids = keras.Input((), name="class_ids", dtype="int32")
    # Reference order: one-hot class code first, then the noise (103 = 3 + 100).
    one_hot = keras.layers.CategoryEncoding(cfg.num_classes, output_mode="one_hot", name="one_hot")(class_ids)
    x = keras.layers.Concatenate(name="code")([one_hot, noise])
    x = keras.layers.Reshape((1, 1, cfg.num_classes + cfg.noise_dim), name="to_1x1")(x)
    codes = (class_ids, noise)
    conv = dict(use_bias=False, kernel_initializer=_init())
    x = keras.layers.Conv2DTranspose(cfg.width * 2 ** (cfg.n_up - 1), cfg.base_grid, strides=1, padding="valid",
                                     name="convt_0", **conv)(x)
    if cfg.residual:
        # Pre-activation blocks take convt_0's raw output; BN + ReLU come first inside each block and before the
        # output layer.
        for i in range(1, cfg.n_up):
            x = _g_residual_block(x, cfg.width * 2 ** (cfg.n_up - 1 - i), cfg, i, conv, codes)
        x = _g_block_end(x, cfg, cfg.n_up, codes)
    else:
        x = _g_block_end(x, cfg, 0, codes)
        for i in range(1, cfg.n_up):
            filters = cfg.width * 2 ** (cfg.n_up - 1 - i)
            x = _g_block_end(_g_upsample(x, filters, cfg, i, conv), cfg, i, codes)
            if cfg.g_block_convs == 2:
                x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv_{i}b", **conv)(x)
                x = _g_block_end(x, cfg, f"{i}b", codes)
    if cfg.g_output_block == "two_conv":
        # ReLU at H x W: edges are made by a nonlinear function of the features, not interpolated by one linear map.
        x = _g_upsample(x, cfg.width, cfg, cfg.n_up, conv)
        x = _g_block_end(x, cfg, f"{cfg.n_up}_full", codes)
        x = keras.layers.Conv2D(k, 3, padding="same", name="to_slices", **conv)(x)
    else:
        x = _g_upsample(x, k, cfg, cfg.n_up, conv)
        if cfg.g_noise_inputs:  # no hidden block at full resolution: the pixel-scale texture enters here
            x = NoiseInjection(_noise_stream("out"), name="noise_out")([x, noise])
    # float32 output even under a mixed-precision policy: the loss and the exported images want full precision.
    if cfg.g_output == "linear_clip":
        images = ClipInInference(dtype="float32", name="images")(x)
    else:
        images = keras.layers.Activation("tanh", dtype="float32", name="images")(x)
    return keras.Model([noise, class_ids], images, name="generator")


def _g_upsample(x, filters: int, cfg: ArchConfig, i: int, conv: dict):
    """x2 upsampling: the study's 4x4 stride-2 transposed conv, or nearest-neighbour resize then a 3x3 conv
    ("resize", Odena et al. 2016, Distill "Deconvolution and checkerboard artifacts"): a stride-2 4x4 kernel
    covers output pixels unevenly, which is where the checkerboard texture of the generated units comes from."""
    if cfg.g_upsample == "resize":
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"up_{i}")(x)
        return keras.layers.Conv2D(filters, 3, padding="same", name=f"convt_{i}", **conv)(x)
    if cfg.g_upsample != "transpose":
        raise ValueError(f"g_upsample {cfg.g_upsample!r}: use 'transpose' or 'resize'")
    return keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", name=f"convt_{i}", **conv)(x)


def _g_residual_block(x, filters: int, cfg: ArchConfig, i: int, conv: dict, codes):
    """BN? -> ReLU -> nearest x2 -> 3x3 conv -> BN? -> ReLU -> 3x3 conv, plus nearest x2 -> 1x1 conv of the input."""
    h = _g_block_end(x, cfg, f"{i}a", codes)
    h = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"res_up_{i}")(h)
    h = keras.layers.Conv2D(filters, 3, padding="same", name=f"res_conv_{i}a", **conv)(h)
    h = _g_block_end(h, cfg, f"{i}b", codes)
    h = keras.layers.Conv2D(filters, 3, padding="same", name=f"res_conv_{i}b", **conv)(h)
    skip = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"res_skip_up_{i}")(x)
    skip = keras.layers.Conv2D(filters, 1, name=f"res_skip_{i}", **conv)(skip)
    return keras.layers.Add(name=f"res_add_{i}")([h, skip])


def _g_block_end(x, cfg: ArchConfig, i, codes):
    """Norm (plain or class-conditional), per-pixel noise (g_noise_inputs), ReLU. ``codes``: (class_ids, noise)."""
    class_ids, noise = codes
    if cfg.batch_norm and cfg.g_conditional_norm:
        x = ConditionalBatchNorm(cfg.num_classes, name=f"cbn_{i}")([x, class_ids])
    elif cfg.batch_norm:
        x = keras.layers.BatchNormalization(gamma_initializer=keras.initializers.RandomNormal(1.0, INIT_STD),
                                            name=f"bn_{i}")(x)
    if cfg.g_noise_inputs:
        x = NoiseInjection(_noise_stream(i), name=f"noise_{i}")([x, noise])
    return keras.layers.ReLU(name=f"relu_{i}")(x)


def _noise_stream(block) -> int:
    """A distinct seed stream per block name ("3", "3b", "4_full", "out"): its characters' codes, positionally."""
    return sum((k + 1) * ord(ch) for k, ch in enumerate(str(block)))


def build_discriminator(cfg: ArchConfig) -> keras.Model:
    cfg.check()
    images = keras.Input(cfg.image_shape, name="images", dtype="float32")
    Conv = SpectralNormConv2D if cfg.spectral_norm else keras.layers.Conv2D
    conv = dict(use_bias=False, kernel_initializer=_init())
    width = cfg.d_width or cfg.width
    x = images
    for i in range(cfg.n_up if cfg.residual else 0):
        x = _d_residual_block(x, width * 2 ** i, Conv, conv, i)
    if cfg.residual:
        x = keras.layers.LeakyReLU(0.2, name="lrelu_res")(x)
    for i in range(0 if cfg.residual else cfg.n_up):
        block = dict(conv)
        if cfg.d_block_bias and i > 0:  # the study's first and last convs have no bias, the others do
            block.update(use_bias=True, bias_initializer=_pytorch_uniform(16 * x.shape[-1]))
        x = Conv(width * 2 ** i, 4, strides=2, padding="same", name=f"conv_{i}", **block)(x)
        if cfg.d_batch_norm and i > 0:  # the reference never normalises the first block
            x = keras.layers.BatchNormalization(gamma_initializer=keras.initializers.RandomNormal(1.0, INIT_STD),
                                                name=f"bn_{i}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"lrelu_{i}")(x)
    if cfg.minibatch_stddev:
        x = MinibatchStdDev(name="minibatch_stddev")(x)
    # One conv over the whole base grid: the reference's Conv(8s -> s, 4x4, stride 1) to a length-s vector.
    features = cfg.d_feature_width or width
    x = Conv(features, cfg.base_grid, strides=1, padding="valid", name=f"conv_{cfg.n_up}", **conv)(x)
    if cfg.d_feature_activation:
        x = keras.layers.LeakyReLU(0.2, name=f"lrelu_{cfg.n_up}")(x)
    x = keras.layers.Flatten(name="features")(x)
    if cfg.head_init == "pytorch":
        dense = dict(kernel_initializer=_pytorch_uniform(features), bias_initializer=_pytorch_uniform(features),
                     dtype="float32")
    elif cfg.head_init == "normal":
        dense = dict(kernel_initializer=_init(), dtype="float32")
    else:
        raise ValueError(f"head_init {cfg.head_init!r}: use 'normal' or 'pytorch'")
    Dense = SpectralNormDense if cfg.spectral_norm and cfg.spectral_norm_heads else keras.layers.Dense
    realfake = Dense(1, name="realfake_logits", **dense)(x)
    class_logits = Dense(cfg.num_classes, name="class_logits", **dense)(x)
    outputs = [realfake, class_logits]
    if cfg.projection:
        # The class embedding of the projection term: row c of the kernel is embed(c); no bias (realfake has it).
        outputs.append(Dense(cfg.num_classes, name="projection_scores",
                             **{**dense, "use_bias": False, "bias_initializer": "zeros"})(x))
    return keras.Model(images, outputs, name="discriminator")


def _d_residual_block(x, filters: int, Conv, conv: dict, i: int):
    """LReLU -> 3x3 conv -> LReLU -> 3x3 conv -> 2x2 avg pool, plus 1x1 conv -> avg pool of the input; the first
    block (i = 0) has no activation in front, as it sees the image (SNGAN's optimised first block)."""
    h = x if i == 0 else keras.layers.LeakyReLU(0.2, name=f"res_lrelu_{i}a")(x)
    h = Conv(filters, 3, padding="same", name=f"res_conv_{i}a", **conv)(h)
    h = keras.layers.LeakyReLU(0.2, name=f"res_lrelu_{i}b")(h)
    h = Conv(filters, 3, padding="same", name=f"res_conv_{i}b", **conv)(h)
    h = keras.layers.AveragePooling2D(2, name=f"res_pool_{i}")(h)
    skip = keras.layers.AveragePooling2D(2, name=f"res_skip_pool_{i}")(x)
    skip = Conv(filters, 1, name=f"res_skip_{i}", **conv)(skip)
    return keras.layers.Add(name=f"res_add_{i}")([h, skip])


def conditional_logits(outputs, class_ids):
    """(real/fake logit [N, 1] for the given classes, class logits [N, C]) from D's outputs: with a projection
    term, realfake + scores[:, class_ids]; without one, realfake as it is. Every caller of D goes through this."""
    realfake, class_logits = outputs[0], outputs[1]
    if len(outputs) > 2:
        scores = ops.cast(outputs[2], realfake.dtype)
        one_hot = ops.one_hot(ops.cast(class_ids, "int32"), ops.shape(scores)[-1], dtype=realfake.dtype)
        realfake = realfake + ops.sum(scores * one_hot, axis=-1, keepdims=True)
    return realfake, class_logits
