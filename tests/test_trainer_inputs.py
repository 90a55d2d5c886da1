"""Bad input is refused before training, with the file and the problem named (one corrupt record is skipped)."""
import gzip
import shutil

import pytest
import tensorflow as tf

from vugan.components import schema
from vugan.components.trainer.data import DataError, inspect_examples, make_dataset, resolve_image_shape
from support.examples import make_examples_artifact, make_records
from vugan.pipeline.artifacts import ArtifactType, write_artifact
from vugan.pipeline.cli import main


@pytest.fixture()
def examples(tmp_path):
    return make_examples_artifact(tmp_path / "examples", n_per_class=3, shape=(16, 16, 2), num_shards=1)


def train_file(root):
    return schema.shard_files(str(root), "train")[0]


def rewrite(path, records):
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for r in records:
            w.write(r)


def _as_preprocess_wrote_it(root, train_records: int) -> None:
    """Mark the rewritten shards as the artifact (with its train record count): the unreadable records came from
    preprocess, not from a change after it (which inspect_examples refuses by the count)."""
    from vugan.pipeline.artifacts import read_artifact

    manifest = read_artifact(root)
    counts = {**manifest["counts"], "train": train_records}
    write_artifact(root, artifact_type=ArtifactType.EXAMPLES, producer="preprocess", config_fingerprint="fixture",
                   counts=counts, properties={**manifest["properties"], "splits": counts})


def test_good_examples_are_counted(examples):
    info = inspect_examples(examples)
    assert info.class_counts == (3, 3, 3) and info.image_shape == (16, 16, 2) and not info.skipped


def test_configured_shape_differs_from_artifact():
    with pytest.raises(DataError, match=r"trainer.image_shape is \[32, 32, 2\].*artifact has image_shape \[16, 16, 2\]"):
        resolve_image_shape((32, 32, 2), [16, 16, 2])
    assert resolve_image_shape("auto", [16, 16, 2]) == (16, 16, 2)


def test_cli_reports_shape_mismatch_and_exits_2(examples, tmp_path, capsys):
    rc = main(["train", "--examples", str(examples), "--out", str(tmp_path / "m"), "--set", "trainer.image_shape=[64, 64, 2]"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "[64, 64, 2]" in err and "[16, 16, 2]" in err


def test_record_of_another_shape_names_the_file(examples):
    path = train_file(examples)
    good = list(tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator())
    odd = make_records(1, (8, 8, 2), schema.REGIONS, 1, "train")[0]
    rewrite(path, good + [odd])
    with pytest.raises(DataError, match=rf"{path} record {len(good)}: image shape \[8, 8, 2\]"):
        inspect_examples(examples)


def test_empty_train_split(examples):
    shutil.rmtree(schema.split_dir(str(examples), "train"))
    with pytest.raises(DataError, match="no training shards.*train split is empty"):
        inspect_examples(examples)


def test_class_without_training_examples(tmp_path):
    root = make_examples_artifact(tmp_path / "ex", n_per_class=2, shape=(16, 16, 2))
    props = {"image_shape": [16, 16, 2], "class_names": ["cervical", "thoracic", "lumbar", "sacral"],
             "conditioning": "region", "unit": "disc", "splits": {}}
    write_artifact(root, artifact_type=ArtifactType.EXAMPLES, producer="preprocess", config_fingerprint="x",
                   properties=props)
    with pytest.raises(DataError, match="class 'sacral' has no training examples"):
        inspect_examples(root)
    # A cohort that truly lacks a class trains when asked to; the absent class gets prior 0 and weight 0.
    info = inspect_examples(root, allow_missing_classes=True)
    assert info.class_counts[3] == 0 and info.class_prior[3] == 0.0 and sum(info.class_prior) == pytest.approx(1.0)
    from vugan.models.losses import inverse_frequency_weights
    weights = inverse_frequency_weights(info.class_counts)
    assert weights[3] == 0.0 and weights[0] == pytest.approx(1.0)


def test_one_corrupt_record_is_skipped_and_reported_two_are_an_error(examples):
    path = train_file(examples)
    good = list(tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator())
    rewrite(path, good[:4] + [b"\x08garbage-not-an-example"] + good[4:])
    _as_preprocess_wrote_it(examples, train_records=len(good) + 1)
    info = inspect_examples(examples)
    assert info.num_train == 9 and info.skipped == (f"{path} record 4: not a tf.train.Example",)
    # The training pipeline leaves it out too: one epoch (9 examples) has every class three times.
    batch = next(iter(make_dataset(info, global_batch=9, noise_dim=4, seed=0, class_balanced=False,
                                   shuffle_buffer=100)))
    assert sorted(batch["labels"].numpy().tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    rewrite(path, [b"\x08garbage"] + good + [b"\x08garbage"])
    _as_preprocess_wrote_it(examples, train_records=len(good) + 2)
    with pytest.raises(DataError, match=rf"{path} record {len(good) + 1}: not a tf.train.Example"):
        inspect_examples(examples)


def test_truncated_shard_names_the_file(examples):
    path = train_file(examples)
    raw = gzip.decompress(open(path, "rb").read())
    with open(path, "wb") as fh:
        fh.write(gzip.compress(raw[: len(raw) // 2]))  # cut in the middle of a record
    with pytest.raises(DataError, match=rf"{path}: corrupt TFRecord file"):
        inspect_examples(examples)


def test_data_position_resumes_the_same_stream(examples):
    """Starting at example 2 * 4 gives exactly the third batch (images, noise, labels) of a fresh stream."""
    info = inspect_examples(examples)
    kw = dict(global_batch=4, noise_dim=4, seed=5, class_balanced=False, shuffle_buffer=100)
    fresh = list(make_dataset(info, **kw).take(3))
    resumed = next(iter(make_dataset(info, start_example=8, **kw)))
    for key in ("images", "labels", "z_d", "z_g", "g_labels"):
        assert (resumed[key].numpy() == fresh[2][key].numpy()).all(), key
    assert not (fresh[0]["z_d"].numpy() == fresh[1]["z_d"].numpy()).all()


def test_class_balanced_sampling_is_uniform(tmp_path):
    root = make_examples_artifact(tmp_path / "ex", n_per_class=4, shape=(16, 16, 2), num_shards=1)
    path = train_file(root)
    recs = list(tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator())
    cervical = [r for r in recs if schema.decode(r).class_id == 0]
    rewrite(path, [r for r in recs if schema.decode(r).class_id != 0] + cervical[:1])  # counts 1, 4, 4
    _as_preprocess_wrote_it(root, train_records=9)
    info = inspect_examples(root)
    assert info.class_counts == (1, 4, 4)
    batch = next(iter(make_dataset(info, global_batch=900, noise_dim=2, seed=0, class_balanced=True,
                                   shuffle_buffer=10)))
    counts = [(batch["labels"].numpy() == c).sum() for c in range(3)]
    assert all(240 < n < 360 for n in counts), counts  # ~300 each, not 100 / 400 / 400
    # The generator's classes follow the training prior (1/9, 4/9, 4/9), not the balanced batch.
    g_counts = [(batch["g_labels"].numpy() == c).sum() for c in range(3)]
    assert 60 < g_counts[0] < 150 and all(320 < n < 480 for n in g_counts[1:]), g_counts
