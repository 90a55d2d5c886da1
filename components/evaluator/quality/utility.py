"""Utility: train a small CNN on one source (synthetic: TSTR, or real train: TRTR), test it on the real TEST split.

Model selection (the epoch whose weights are kept) looks only at a validation slice carved out of the training
source: patient-disjoint for real data, random for synthetic. The test split is touched once, after training.
(The reference study chose its epoch on the test set; that inflates both numbers, so we do not.)
The holdout split is never used here: it is the privacy evaluator's non-member set.

The same network, trained on the real train split, doubles as the evaluator's domain encoder: its
``embedding`` layer (the penultimate one) gives the features of "FD-domain" and the privacy attacks.
"""
from __future__ import annotations

import dataclasses

import numpy as np

EMBEDDING_LAYER = "embedding"


@dataclasses.dataclass(frozen=True)
class ClassifierSettings:
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 1e-3
    width: int = 16  # channels of the first conv; doubled twice
    embedding_dim: int = 64
    val_fraction: float = 0.15

    @classmethod
    def from_config(cls, cfg) -> "ClassifierSettings":
        """The evaluator's classifiers (TSTR/TRTR, the domain encoder) as [evaluator] configures them."""
        return cls(epochs=cfg.classifier_epochs, batch_size=cfg.classifier_batch_size, width=cfg.classifier_width,
                   val_fraction=cfg.classifier_val_fraction)


@dataclasses.dataclass
class TrainedClassifier:
    model: object  # keras.Model: images [N, H, W, K] -> class probabilities [N, C]
    n_classes: int
    best_epoch: int  # 1-based
    val_balanced_accuracy: float | None
    train_size: int
    val_size: int

    def predict(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return predict(self.model, images, batch_size).astype(np.float64)

    def embedder(self):
        """A keras model images -> the penultimate (``embedding``) layer's activations."""
        import keras

        return keras.Model(self.model.input, self.model.get_layer(EMBEDDING_LAYER).output)


def predict(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Direct batched calls: keras' ``predict`` retraces a tf.function for every new input size, which costs
    more than the prediction itself on the small sets used here."""
    out = [np.asarray(model(images[s:s + batch_size], training=False))
           for s in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def build_classifier(input_shape: tuple[int, int, int], n_classes: int, s: ClassifierSettings):
    """Three strided conv blocks, global average pooling, a dense ``embedding`` layer, softmax head."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = inputs
    for mult in (1, 2, 4):
        x = layers.Conv2D(s.width * mult, 3, strides=2, padding="same", activation="relu")(x)
        x = layers.Conv2D(s.width * mult, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(s.embedding_dim, activation="relu", name=EMBEDDING_LAYER)(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def validation_split(n: int, groups: np.ndarray | None, fraction: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx). With ``groups`` (patient ids) whole groups go to validation, so that no patient
    is on both sides; at least one group/unit is held out when there are at least two."""
    if groups is None:
        order = rng.permutation(n)
        n_val = max(1, int(round(fraction * n))) if n >= 2 else 0
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    unique = rng.permutation(np.unique(groups))
    n_val = max(1, int(round(fraction * len(unique)))) if len(unique) >= 2 else 0
    val_mask = np.isin(groups, unique[:n_val])
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def train_classifier(images: np.ndarray, labels: np.ndarray, n_classes: int, settings: ClassifierSettings,
                     seed: int, groups: np.ndarray | None = None) -> TrainedClassifier:
    """Fit with class-balanced weights; keep the weights of the epoch with the best validation balanced
    accuracy (ties: the earlier epoch). The validation slice comes from ``images`` only."""
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    tr, va = validation_split(len(labels), groups, settings.val_fraction, rng)
    model = build_classifier(images.shape[1:], n_classes, settings)
    counts = np.bincount(labels[tr], minlength=n_classes)
    # Inverse-frequency weights (as the reference study's data.weights): minority regions count as much.
    class_weight = np.array([len(tr) / (n_classes * counts[c]) if counts[c] else 0.0 for c in range(n_classes)],
                            np.float32)
    n_steps = settings.epochs * -(-len(tr) // max(min(settings.batch_size, len(tr)), 1))
    # Tracing the step costs seconds; below ~100 steps running it eagerly is cheaper overall.
    step = _train_step(model, keras.optimizers.Adam(settings.learning_rate), compiled=n_steps >= 100)
    best = {"score": -1.0, "epoch": 0, "weights": model.get_weights()}
    for epoch in range(1, settings.epochs + 1):
        for b in _epoch_batches(tr, settings.batch_size, rng):
            step(images[b], labels[b].astype(np.int32), class_weight[labels[b]])
        if len(va):
            score = balanced_accuracy(labels[va], predict(model, images[va]).argmax(1))
        else:
            score = float(epoch)  # nothing to select on: keep the last epoch
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "weights": model.get_weights()}
    model.set_weights(best["weights"])
    return TrainedClassifier(model=model, n_classes=n_classes, best_epoch=best["epoch"],
                             val_balanced_accuracy=best["score"] if len(va) else None,
                             train_size=len(tr), val_size=len(va))


def _epoch_batches(indices: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled pass over ``indices`` in equal batches; the last one is topped up with random other indices so
    the step function is traced for a single shape (tracing costs seconds, a step milliseconds)."""
    size = min(batch_size, len(indices))
    order = rng.permutation(indices)
    short = -len(order) % size
    if short:
        order = np.concatenate([order, rng.choice(indices, short, replace=False)])
    return [np.sort(order[s:s + size]) for s in range(0, len(order), size)]


def _train_step(model, optimizer, compiled: bool = True):
    """One class-weighted cross-entropy Adam step; a plain loop is several times faster here than repeated
    ``fit(epochs=1)`` calls (which rebuild their data pipeline each time)."""
    import keras
    import tensorflow as tf

    def step(x, y, w):
        with tf.GradientTape() as tape:
            per_unit = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True))
            loss = tf.reduce_sum(w * per_unit) / tf.maximum(tf.reduce_sum(w), 1e-8)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return tf.function(step, reduce_retracing=True) if compiled else step


# ----------------------------------------------------------------------------------------------- scores

def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes present in ``y_true`` of the recall of that class (chance = 1 / #classes)."""
    classes = np.unique(y_true)
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in classes]))


def per_class_auc(y_true: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...]) -> dict[str, float | None]:
    """One-vs-rest ROC AUC per class; None where the test split lacks positives or negatives of a class."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for c, name in enumerate(class_names):
        positives = y_true == c
        out[name] = float(roc_auc_score(positives, probs[:, c])) if 0 < positives.sum() < len(y_true) else None
    return out


def classification_scores(y_true: np.ndarray, probs: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """Balanced accuracy, macro AUC (mean of the defined per-class AUCs), per-class AUC, confusion matrix."""
    y_pred = probs.argmax(1)
    aucs = per_class_auc(y_true, probs, class_names)
    defined = [v for v in aucs.values() if v is not None]
    n = len(class_names)
    confusion = np.zeros((n, n), int)
    np.add.at(confusion, (y_true, y_pred), 1)
    return {
        "balanced_accuracy": balanced_accuracy(y_true, y_pred),
        "macro_auc": float(np.mean(defined)) if defined else None,
        "per_class_auc": aucs,
        "confusion": confusion.tolist(),  # rows: true class, columns: predicted class
        "test_size": int(len(y_true)),
    }
