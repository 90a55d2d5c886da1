"""Training data: check the examples artifact before anything is built, then a deterministic tf.data pipeline.

Every element carries all the randomness of its training step (the discriminator's and the generator's noise,
the generator's class, the DiffAugment draws), drawn with stateless ops keyed on (seed, example index). So the
data position alone
determines what a step sees: a resumed run skips to the checkpointed position and continues exactly, and
splitting a batch across replicas does not change which noise goes with which example.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf

from vugan.components import schema
from vugan.models.augment import DRAWS, GATES
from vugan.pipeline.artifacts import ArtifactType, read_artifact


class DataError(ValueError):
    """The examples cannot be trained on; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class ExamplesInfo:
    root: Path
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    conditioning: str
    train_files: tuple[str, ...]
    class_counts: tuple[int, ...]
    skipped: tuple[str, ...]  # "<file> record <i>: <reason>" of unreadable records left out

    @property
    def num_train(self) -> int:
        return sum(self.class_counts)

    @property
    def class_prior(self) -> tuple[float, ...]:
        return tuple(c / self.num_train for c in self.class_counts)


def resolve_image_shape(configured, artifact_shape) -> tuple[int, int, int]:
    """The model's image shape: the artifact's when configured 'auto', else the configured one, which must agree."""
    artifact_shape = tuple(int(x) for x in artifact_shape)
    if configured == "auto":
        return artifact_shape
    configured = tuple(int(x) for x in configured)
    if configured != artifact_shape:
        raise DataError(f"trainer.image_shape is {list(configured)} but the examples artifact has image_shape "
                        f"{list(artifact_shape)}; set trainer.image_shape = \"auto\" or preprocess at that size")
    return configured


def inspect_examples(root, configured_shape="auto", max_skipped: int = 1,
                     allow_missing_classes: bool = False) -> ExamplesInfo:
    """Read the manifest and scan every training record once (shape, class id, integrity), before training.

    Up to ``max_skipped`` unreadable records are skipped and reported; more than that is an error, as is a
    record whose shape differs, an empty split or a class without any training example.
    """
    root = Path(root)
    manifest = read_artifact(root, ArtifactType.EXAMPLES)
    props = manifest["properties"]
    for key in ("image_shape", "class_names"):
        if key not in props:
            raise DataError(f"{root / 'artifact.json'}: property {key!r} is missing; rerun preprocess")
    image_shape = resolve_image_shape(configured_shape, props["image_shape"])
    class_names = tuple(props["class_names"])
    files = tuple(schema.shard_files(str(root), "train"))
    if not files:
        raise DataError(f"{schema.split_dir(str(root), 'train')}: no training shards ({schema.SHARD_GLOB}); "
                        f"the train split is empty")
    counts = np.zeros(len(class_names), np.int64)
    skipped: list[str] = []
    for path in files:
        for index, raw in enumerate(_records(path)):
            problem, class_id = _check_record(raw, image_shape, len(class_names))
            if problem is None:
                counts[class_id] += 1
                continue
            if problem.startswith("image shape"):
                raise DataError(f"{path} record {index}: {problem}; expected {list(image_shape)} (from the "
                                f"model config / artifact)")
            skipped.append(f"{path} record {index}: {problem}")
            if len(skipped) > max_skipped:
                raise DataError(f"{path} record {index}: {problem} ({len(skipped)} unreadable records; at most "
                                f"{max_skipped} may be skipped)")
    try:
        schema.check_record_count(str(root), manifest, "train", int(counts.sum()) + len(skipped))
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if counts.sum() == 0:
        raise DataError(f"{schema.split_dir(str(root), 'train')}: the train split holds no usable record")
    empty = [class_names[c] for c in range(len(class_names)) if counts[c] == 0]
    if empty and not allow_missing_classes:
        raise DataError(f"{schema.split_dir(str(root), 'train')}: class {empty[0]!r} has no training examples "
                        f"(counts {dict(zip(class_names, counts.tolist()))}); an ac-GAN needs every class. If the "
                        f"cohort truly lacks that class (e.g. lumbar-only scans), pass "
                        f"--set trainer.allow_missing_classes=true: absent classes then get prior 0 and are never "
                        f"generated")
    return ExamplesInfo(root, image_shape, class_names, props.get("conditioning", ""), files,
                        tuple(int(c) for c in counts), tuple(skipped))


def _records(path: str):
    try:
        yield from tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator()
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as exc:
        raise DataError(f"{path}: corrupt TFRecord file ({exc.message.splitlines()[0]})") from None


def _check_record(raw: bytes, image_shape, num_classes: int) -> tuple[str | None, int]:
    try:
        ex = tf.train.Example.FromString(raw)
    except Exception:  # protobuf DecodeError: garbage bytes inside a valid TFRecord frame
        return "not a tf.train.Example", -1
    ft = ex.features.feature
    try:
        shape = tuple(int(ft[k].int64_list.value[0]) for k in (schema.HEIGHT, schema.WIDTH, schema.SLICES))
        class_id = int(ft[schema.CLASS_ID].int64_list.value[0])
        nbytes = len(ft[schema.IMAGE].bytes_list.value[0])
    except (IndexError, KeyError):
        return "missing image, shape or class_id feature", -1
    if shape != tuple(image_shape):
        return f"image shape {list(shape)}", -1
    if nbytes != 4 * int(np.prod(shape)):
        return f"image has {nbytes} bytes, expected {4 * int(np.prod(shape))}", -1
    if not 0 <= class_id < num_classes:
        return f"class_id {class_id} outside 0..{num_classes - 1}", -1
    return None, class_id


def make_dataset(info: ExamplesInfo, *, global_batch: int, noise_dim: int, seed: int, class_balanced: bool,
                 shuffle_buffer: int, start_example: int = 0, d_fake_labels: bool = False,
                 augment: bool = False, mirror_slices: bool = False, augment_gates: bool = False
                 ) -> tf.data.Dataset:
    """Endless batches of {images, labels, z_d, z_g, g_labels}, starting at example ``start_example``; with
    ``d_fake_labels`` (DP training, or the study's prior-drawn fake classes) also the D phase's own fake classes;
    with ``augment`` the DiffAugment draws ``aug`` [3, DRAWS] of the example's three D inputs (real, D-phase fake,
    G-phase fake), with ``augment_gates`` followed by the gate draws of an application probability p [3, GATES]
    (drawn on their own key, so that the transforms' draws are the same with p as without). With ``mirror_slices`` half the real units (a stateless draw per example) come with their slice
    order reversed."""
    ds = tf.data.TFRecordDataset(list(info.train_files), compression_type="GZIP")
    ds = ds.map(schema.parse_fn(info.image_shape), num_parallel_calls=tf.data.AUTOTUNE)
    if info.skipped:
        ds = ds.ignore_errors()  # only the records inspect_examples counted and reported
    ds = ds.cache()
    buffer = min(shuffle_buffer, info.num_train)
    if class_balanced:
        per_class = [ds.filter(lambda x, y, c=c: tf.equal(y, c)).shuffle(buffer, seed=seed + c).repeat()
                     for c in range(len(info.class_names))]
        ds = tf.data.Dataset.sample_from_datasets(per_class, seed=seed, stop_on_empty_dataset=False)
    else:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate().skip(start_example)
    log_prior = tf.math.log(tf.constant([info.class_prior], tf.float32))

    def with_randomness(index, example):
        image, label = example
        key = lambda stream: tf.stack([tf.constant(seed, tf.int64) * 8 + stream, index])  # noqa: E731
        if mirror_slices:  # reversed slice order = the stack mirrored left-right: anatomy that exists
            flip = tf.random.stateless_uniform([], seed=key(5)) < 0.5
            image = tf.where(flip, tf.reverse(image, axis=[-1]), image)
        element = {
            "images": image,
            "labels": label,
            "z_d": tf.random.stateless_normal([noise_dim], seed=key(0)),
            "z_g": tf.random.stateless_normal([noise_dim], seed=key(1)),
            # The generator phase's classes follow the training class prior.
            "g_labels": tf.cast(tf.random.stateless_categorical(log_prior, 1, seed=key(2))[0, 0], tf.int32),
        }
        if d_fake_labels:  # under DP the D phase's fakes must not reuse the real batch's labels: drawn like g_labels
            element["d_fake_labels"] = tf.cast(tf.random.stateless_categorical(log_prior, 1, seed=key(3))[0, 0],
                                               tf.int32)
        if augment:
            element["aug"] = tf.random.stateless_uniform([3, DRAWS], seed=key(4))
            if augment_gates:
                gates = tf.random.stateless_uniform([3, GATES], seed=key(6))
                element["aug"] = tf.concat([element["aug"], gates], axis=-1)
        return element

    ds = ds.map(with_randomness, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(global_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    # Several workers: each computes this same global stream and keeps its own rows of every global batch (DATA
    # sharding after the strategy's rebatch). Sharding by FILE would restart the example index, and with it the
    # noise keys, on every worker, and make the data order depend on the worker count.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)
