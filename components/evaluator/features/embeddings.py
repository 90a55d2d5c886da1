"""Feature extractors ("embeddings") the fidelity and privacy metrics run on; the metric math never depends on
which one is used.

Four are provided:
  * ``vu``: the project's fixed, versioned VU feature network ``vu-encoder-v1`` (features/vu_encoder.py, weights
    and card in models/vu_encoder/), trained once on public data, run in exact integer arithmetic so that its
    features are identical on any machine and thread count; its sha256 is checked at load. Distances on it are
    called FD-VU/KD-VU and are the HEADLINE fidelity numbers (the release gate's fidelity rule reads FD-VU).
  * ``inception``: ImageNet InceptionV3 from keras.applications, built with ``weights=None`` and loaded from a
    LOCAL weights file (its sha256 recorded); nothing is ever downloaded. Distances on it are called
    FD-InceptionV3/KD-InceptionV3 ("Keras ImageNet InceptionV3 features"): keras' ImageNet weights are not the
    graph published FIDs use, so the numbers are not FIDs.
  * ``domain`` (optional, evaluator.domain_encoder): the penultimate layer of a small CNN the evaluator trains in
    every run on the real TEST split (never on the units it embeds; see utility.py); named "FD-domain"/"KD-domain".
    It depends on the machine's thread scheduling, so its numbers are not comparable between runs.
  * ``pixel``: the flattened crop itself (used for the sliced Wasserstein distance).

How a K-slice grayscale crop becomes an ImageNet network's input: ALL slices, as three RGB triplets (slice_triplets:
nine slices spread evenly over the K, so the edge slices, where the reference study's artefacts were, are seen),
each resized bilinearly (with antialiasing) to the network's square input size, values kept in [-1, 1] (the range
keras' InceptionV3 ``preprocess_input`` produces); the unit's feature is the mean of its three triplets' pooled
features. The network runs compiled (one tf.function, fixed batch shape).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from vugan.components.evaluator.features.checksum import sha256_file


@dataclasses.dataclass(frozen=True)
class Embedder:
    key: str  # "vu", "inception", "domain", "pixel"
    distance_name: str  # how a Fréchet distance on these features is called in the report: "FID", "FD-domain"
    kernel_name: str  # likewise for the kernel distance: "KID", "KD-domain"
    description: str  # one sentence for metrics.json and the report
    fn: Callable[[np.ndarray], np.ndarray]  # images [n, H, W, K] in [-1, 1] -> features [n, D]
    batch_size: int = 256
    provenance: dict = dataclasses.field(default_factory=dict)  # weights file, sha256, input size ...
    whiten_on_train: bool = False  # whiten features with the real train split (radiomics.whitening) before distances
    # What makes two embedders' features of the same units equal (weights sha256, version, input mapping): real
    # splits' features are cached under it (features/cache.py). Empty: never cached (a per-run learned network).
    cache_identity: str = ""
    # What the features are called, for the per-feature breakdown of the Fréchet distance (quality/fd_breakdown.py):
    # one name per feature (empty: "feature <index>") and consecutive groups (name, width) where the network has
    # blocks of different kinds (empty: none).
    feature_names: tuple[str, ...] = ()
    feature_groups: tuple[tuple[str, int], ...] = ()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features of all ``images``, computed ``batch_size`` at a time (bounded memory)."""
        out = [np.asarray(self.fn(images[s:s + self.batch_size]), np.float32)
               for s in range(0, len(images), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def slice_triplets(k: int) -> np.ndarray:
    """[3, 3] slice indices: nine slices spread evenly over 0..k-1 (repeated when k < 9), in order, as three RGB
    triplets; for k = 9 that is (0, 1, 2), (3, 4, 5), (6, 7, 8)."""
    return np.round(np.linspace(0, k - 1, 9)).astype(int).reshape(3, 3)


def triplets_rgb(images: np.ndarray, size: int) -> np.ndarray:
    """[n, H, W, K] in [-1, 1] -> [3n, size, size, 3] in [-1, 1]: unit i's triplets are rows 3i, 3i+1, 3i+2."""
    import tensorflow as tf

    n, h, w, k = images.shape
    rgb = images[..., slice_triplets(k).ravel()].reshape(n, h, w, 3, 3)  # [n, H, W, triplet, channel]
    rgb = np.moveaxis(rgb, 3, 1).reshape(3 * n, h, w, 3)
    resized = tf.image.resize(tf.constant(rgb, tf.float32), (size, size), method="bilinear", antialias=True)
    return tf.clip_by_value(resized, -1.0, 1.0).numpy()


def inception_embedder(weights_path: str | Path, input_size: int = 299, batch_size: int = 64,
                       expected_sha256: str = "") -> Embedder:
    """InceptionV3 (no top, global average pool: 2048 features) with weights from a local file.

    Raises:
      FileNotFoundError: the weights file does not exist.
      ValueError: ``expected_sha256`` is given and the file's checksum differs.
    """
    import keras

    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluator.inception_weights: {path} does not exist; give a local InceptionV3 "
                                f"(include_top=False) weights file, or leave it empty to skip Inception metrics")
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256.lower():
        raise ValueError(f"evaluator.inception_sha256: {path} has sha256 {digest}, expected {expected_sha256}")
    net = keras.applications.InceptionV3(weights=None, include_top=False, pooling="avg",
                                         input_shape=(input_size, input_size, 3))
    net.load_weights(str(path))
    import tensorflow as tf

    forward = tf.function(lambda x: net(x, training=False), reduce_retracing=True)

    def fn(images: np.ndarray) -> np.ndarray:
        x = triplets_rgb(images, input_size)
        short = -len(x) % (3 * batch_size)  # pad to the one traced shape; a retrace costs seconds
        padded = np.concatenate([x, np.zeros((short, *x.shape[1:]), np.float32)]) if short else x
        feats = forward(tf.constant(padded)).numpy()[:len(x)]
        return feats.reshape(len(images), 3, -1).mean(1)

    return Embedder(
        key="inception", distance_name="FD-InceptionV3", kernel_name="KD-InceptionV3",
        description=(f"Keras ImageNet InceptionV3 features (2048-d pool, mean over three RGB triplets of all "
                     f"slices, each resized to {input_size}x{input_size}); not the standard FID network, so not "
                     f"comparable with published FIDs"),
        fn=fn, batch_size=batch_size, cache_identity=f"inception|{digest}|{input_size}|triplets-v1",
        provenance={"weights_file": str(path.resolve()), "weights_sha256": digest, "input_size": input_size,
                    "input_mapping": "nine slices spread over K as three RGB triplets, bilinear antialiased "
                                     "resize, [-1, 1], features averaged over the triplets; compiled"})


def vu_embedder(batch_size: int = 64, weights_path: str | Path | None = None,
                card_path: str | Path | None = None) -> Embedder:
    """The shipped vu-encoder (default: models/vu_encoder/vu-encoder-v1.*), its sha256 checked against its card.

    Raises:
      vu_encoder.EncoderWeightsError: the weights file or card is missing, or the checksum differs (names the file).
    """
    from vugan.components.evaluator.features import vu_encoder as vu

    weights = Path(weights_path) if weights_path else vu.WEIGHTS_FILE
    card_file = Path(card_path) if card_path else vu.CARD_FILE
    encoder, card = vu.load_encoder(weights, card_file)
    probe = card.get("held_out_patients_linear_probe_balanced_accuracy", {})
    return Embedder(
        key="vu", distance_name="FD-VU", kernel_name="KD-VU",
        description=(f"{card['name']}: {encoder.dim}-d features of the project's fixed VU network, all slices of "
                     f"each z-scored unit: whitened multi-scale texture energies, intensity mean/std and whitened "
                     f"pooled conv features (self-supervised + reconstruction trained on public phantom and "
                     f"../shared/data scans); exact integer arithmetic: identical on any machine"),
        fn=encoder.features, batch_size=batch_size,
        cache_identity=f"vu|{card['name']}|{card['version']}|{card['sha256']}",
        feature_names=encoder.feature_names(), feature_groups=encoder.feature_groups(),
        provenance={"name": card["name"], "version": card["version"], "sha256": card["sha256"],
                    "weights_file": _repo_relative(weights), "dim": encoder.dim,
                    "input_spec": "any crop resampled to 64x64x9 (linear), quantised to round(127 x)",
                    "trained_on": "phantom cohort (seed 1001) + ../shared/data/spine-mri-cohort (in-sample)",
                    "held_out_region_accuracy": probe.get("region"), "held_out_level_accuracy": probe.get("level")})


def _repo_relative(path: Path) -> str:
    root = Path(__file__).resolve().parents[3]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path.resolve())


def domain_embedder(classifier, batch_size: int = 256, trained_on: str = "real train split") -> Embedder:
    """The ``embedding`` layer of a classifier from utility.py (a TrainedClassifier)."""
    net = classifier.embedder()

    def fn(images: np.ndarray) -> np.ndarray:
        return net(images, training=False).numpy()

    dim = int(net.outputs[0].shape[-1])
    return Embedder(
        key="domain", distance_name="FD-domain", kernel_name="KD-domain",
        description=(f"{dim}-d penultimate layer of a small CNN trained by the evaluator on the {trained_on} "
                     f"to predict the class; all K slices as channels; not comparable with published FIDs"),
        fn=fn, batch_size=batch_size,
        provenance={"trained_on": trained_on, "dim": dim, "best_epoch": classifier.best_epoch,
                    "val_balanced_accuracy": classifier.val_balanced_accuracy})


def pixel_embedder(batch_size: int = 1024) -> Embedder:
    return Embedder(key="pixel", distance_name="FD-pixel", kernel_name="KD-pixel",
                    description="the crop itself, all slices, flattened (values in [-1, 1])",
                    fn=lambda images: images.reshape(len(images), -1), batch_size=batch_size)


def radiomics_embedder(batch_size: int = 256) -> Embedder:
    """Network-free radiomics features (quality/radiomics.py); the Fréchet distance on them is the FRD."""
    from vugan.components.evaluator.quality import radiomics

    return Embedder(
        key="radiomics", distance_name="FRD", kernel_name="KD-radiomics",
        description=(f"{len(radiomics.FEATURE_NAMES)} radiomics features per unit ({radiomics.FEATURES_VERSION}: raw "
                     f"mean and s.d.; first order, sharpness, GLCM and GLRLM on {radiomics.LEVELS} fixed grey levels "
                     f"and Fourier texture of the contrast-normalised unit; log band powers and x/y balance of the "
                     f"spectrum; all slices), whitened with the real train split; no network"),
        fn=radiomics.radiomics_features, batch_size=batch_size, whiten_on_train=True,
        cache_identity=f"radiomics|{radiomics.FEATURES_VERSION}|{radiomics.LEVELS}",
        # ZCA whitening (radiomics.whitening) keeps each whitened feature the closest to its raw one: the names hold.
        feature_names=tuple(radiomics.FEATURE_NAMES),
        provenance={"features": ", ".join(radiomics.FEATURE_NAMES), "version": radiomics.FEATURES_VERSION,
                    "grey_levels": radiomics.LEVELS, "contrast_normalisation": f"unit z-score / "
                    f"{radiomics.NORMALISED_SD:g}, clipped to [-1, 1]",
                    "whitened_on": f"real train split (z-score, then ZCA with eigenvalue floor "
                                   f"{radiomics.WHITENING_FLOOR:g})"})
