"""Config of the evaluator: fidelity, diversity and utility ([evaluator]). Privacy: privacy/spec.py ([privacy])."""
from __future__ import annotations

import dataclasses

F = dataclasses.field


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
    min_synthetic: int = F(default=1000, metadata={
        "range": (1, 10**7),
        "help": "synthetic units drawn at least; per class at least as many as the real train split has"})
    seed: int = F(default=0, metadata={"range": (0, 2**31 - 1),
                                       "help": "seed of the synthetic draw, subsampling, pairs and classifiers"})
    batch_size: int = F(default=256, metadata={"range": (1, 65536),
                                               "help": "images per batch for generation and feature extraction"})
    inception_weights: str = F(default="", metadata={
        "help": "local InceptionV3 include_top=False weights file; empty: the Keras ImageNet InceptionV3 "
                "distances (FD/KD-InceptionV3) are SKIPPED"})
    inception_sha256: str = F(default="", metadata={
        "help": "expected sha256 of inception_weights; empty: not checked (the digest is recorded either way)"})
    inception_input_size: int = F(default=299, metadata={
        "range": (75, 512), "help": "square input size of InceptionV3 (299 as published; 75 is the minimum)"})
    inception_batch_size: int = F(default=64, metadata={"range": (1, 4096), "help": "images per Inception batch"})
    feature_cache: str = F(default="auto", metadata={
        "help": "folder caching the REAL splits' features of the fixed embedders (VU encoder, Inception, radiomics) by "
                "content sha256 and embedder identity (features/cache.py): 'auto' = $XDG_CACHE_HOME/vugan/features "
                "or ~/.cache/vugan/features; '' or 'off' = no cache. It holds features of real units (no "
                "identifiers): keep it on the machine with the scans"})
    domain_encoder: bool = F(default=True, metadata={
        "help": "also report FD-domain/KD-domain on a small CNN trained in this run on the real TEST split (never "
                "on the units it embeds; reused by the privacy attacks); its numbers depend on the machine, the "
                "headline FD-VU does not"})
    prdc_k: int = F(default=5, metadata={"range": (1, 100),
                                         "help": "k of the k-NN balls in precision/recall/density/coverage"})
    nn_block_size: int = F(default=1024, metadata={
        "range": (16, 65536), "help": "rows per block of nearest-neighbour distance computations (bounds memory)"})
    kid_block_size: int = F(default=1000, metadata={"range": (8, 100000), "help": "largest KID block"})
    fidelity_bootstrap: int = F(default=200, metadata={
        "range": (0, 100000), "help": "patient-bootstrap resamples of every FD ratio's 95% interval (0: no interval)"})
    swd_projections: int = F(default=256, metadata={"range": (1, 100000),
                                                    "help": "random directions of the sliced Wasserstein distance"})
    msssim_pairs: int = F(default=500, metadata={"range": (1, 10**6), "help": "MS-SSIM pairs sampled per class"})
    msssim_scales: int = F(default=3, metadata={"range": (1, 5), "help": "MS-SSIM scales (3 suits 64x64)"})
    msssim_filter_size: int = F(default=7, metadata={"range": (1, 11), "help": "MS-SSIM Gaussian filter size"})
    mode_collapse_margin: float = F(default=0.05, metadata={
        "range": (0.0, 1.0), "help": "warn when synthetic MS-SSIM exceeds real by more than this"})
    classifier_epochs: int = F(default=12, metadata={"range": (1, 1000),
                                                     "help": "epochs of the TSTR/TRTR classifier"})
    classifier_batch_size: int = F(default=64, metadata={"range": (1, 65536), "help": "classifier batch size"})
    classifier_width: int = F(default=16, metadata={"range": (1, 512),
                                                    "help": "channels of the classifier's first conv"})
    tstr_size_multiples: tuple[float, ...] = F(default=(1.0, 2.0, 5.0), metadata={
        "help": "TSTR learning curve: also train on synthetic subsets of these multiples of the real training size "
                "(1 = like for like with TRTR); a multiple needing more units than were drawn is reported as such"})
    classifier_val_fraction: float = F(default=0.15, metadata={
        "range": (0.0, 0.9),
        "help": "share of the TRAINING source held out for model selection (never the test split)"})
    grid_units: int = F(default=6, metadata={"range": (1, 64), "help": "units per class in the report's image grids"})
