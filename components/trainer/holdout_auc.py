"""D's real/fake AUC on un-augmented held-out units (trainer.d_auc_holdout, issue 22 item 2).

D's training losses are measured on DiffAugmented training units, so they cannot tell a D that separates real
from fake in general from one that has memorised the training set. Scoring units D never trained on (the Examples
artifact's holdout split; never the test split) against as many fresh fakes, both without augmentation, gives
that check: 0.5 = D cannot tell them apart, 1 = every held-out real unit scores above every fake.

Held-out units and fakes are fixed for the whole run (the first N holdout records, noise from the run's seed), so
the curve over steps moves only because the networks do. Both networks run in inference mode: nothing here
changes a weight, a BatchNorm statistic or a spectral-norm vector, so a run with the probe trains exactly as one
without it.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from vugan.components import schema
from vugan.models import acgan

NOISE_SEED_OFFSET = 54321  # the probe's own noise stream, apart from the sample grid's (seed + 12345)
CHUNK = 64  # D and G see the probe in chunks, so a large N does not need one large batch


def real_fake_auc(real_scores, fake_scores) -> float:
    """Area under the ROC curve of "real" vs "fake" scores: P(real > fake) + P(real == fake) / 2 (Mann-Whitney)."""
    real = np.asarray(real_scores, np.float64).reshape(-1, 1)
    fake = np.asarray(fake_scores, np.float64).reshape(1, -1)
    if real.size == 0 or fake.size == 0:
        raise ValueError("real_fake_auc needs at least one real and one fake score")
    return float(np.mean((real > fake) + 0.5 * (real == fake)))


def read_holdout_units(root, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` units of the holdout split (shards in name order): images [n', H, W, K], class ids [n']."""
    if not schema.shard_files(str(root), "holdout"):
        raise ValueError(f"trainer.d_auc_holdout needs held-out units: {schema.split_dir(str(root), 'holdout')} has "
                         f"no shards ({schema.SHARD_GLOB}); set trainer.d_auc_holdout = 0 or preprocess with a "
                         "holdout split")
    units = schema.load_split(str(root), "holdout", limit=n)
    return units.images.astype(np.float32), units.class_ids.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class HoldoutAUCProbe:
    """Fixed held-out real units, their classes and the fakes' noise; called with the GAN, returns the AUC."""

    images: np.ndarray  # [N, H, W, K]
    class_ids: np.ndarray  # [N]; the fakes are made for the same classes, so class mix is not a cue
    noise: np.ndarray  # [N, noise_dim]

    @classmethod
    def from_examples(cls, info, n: int, noise_dim: int, seed: int) -> "HoldoutAUCProbe":
        images, class_ids = read_holdout_units(info.root, n)
        noise = np.random.default_rng(seed + NOISE_SEED_OFFSET).standard_normal((len(images), noise_dim))
        return cls(images, class_ids, noise.astype(np.float32))

    def __call__(self, gan) -> float:
        real, fake = [], []
        for i in range(0, len(self.images), CHUNK):
            ids = self.class_ids[i:i + CHUNK]
            # G as it is exported (inference-mode BatchNorm), D without DiffAugment: what the issue asks to watch.
            fakes = gan.generator([self.noise[i:i + CHUNK], ids], training=False)
            real.append(self._logits(gan.discriminator, self.images[i:i + CHUNK], ids))
            fake.append(self._logits(gan.discriminator, fakes, ids))
        return real_fake_auc(np.concatenate(real), np.concatenate(fake))

    @staticmethod
    def _logits(discriminator, images, class_ids) -> np.ndarray:
        outputs = discriminator(images, training=False)
        # The logit D is trained on: with a projection term it is conditional on the class.
        return np.asarray(acgan.conditional_logits(outputs, class_ids)[0], np.float32)[:, 0]
