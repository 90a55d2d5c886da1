"""The networks' architecture of a trainer config: ``trainer.*`` keys and the data's shape -> ``acgan.ArchConfig``.

Its own module because both the training loop (core.py) and the init_from check (init_from.py, which rebuilds a
source model's architecture from its config.toml) need it, and core imports init_from.
"""
from __future__ import annotations

from vugan.components.trainer.spec import TrainerConfig
from vugan.models import acgan


def arch_config(cfg: TrainerConfig, info) -> acgan.ArchConfig:
    """``info``: anything with the data's ``image_shape`` and ``class_names`` (an ``ExamplesInfo``)."""
    return acgan.ArchConfig(image_shape=info.image_shape, num_classes=len(info.class_names),
                            noise_dim=cfg.noise_dim, width=cfg.width,
                            batch_norm=cfg.batch_norm or cfg.generator_batch_norm,
                            d_batch_norm=cfg.batch_norm, spectral_norm=cfg.spectral_norm,
                            spectral_norm_heads=cfg.spectral_norm_heads, g_upsample=cfg.g_upsample, minibatch_stddev=cfg.minibatch_stddev,
                            d_block_bias=cfg.d_block_bias, d_feature_activation=cfg.d_feature_activation,
                            head_init=cfg.head_init, projection=cfg.projection, residual=cfg.residual,
                            g_output_block=cfg.g_output_block, g_block_convs=cfg.g_block_convs,
                            g_conditional_norm=cfg.g_conditional_norm, g_output=cfg.g_output,
                            d_feature_width=cfg.d_feature_width, d_width=cfg.d_width,
                            g_noise_inputs=cfg.g_noise_inputs)
