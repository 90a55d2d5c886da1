"""trainer.init_from (issue 14: public pre-training, then DP fine-tuning) on real fixture TFRecords and real training
runs: a model of another architecture is refused with the field named; a run started from a model really starts
from its weights and records the model's fingerprint; under DP the record, datasheet and report say that epsilon
covers only the private cohort, and a source trained on the private examples themselves is refused."""
import json

import numpy as np
import pytest

from vugan.components.trainer.component import SPEC
from support.examples import make_examples_artifact
from vugan.models.bundle import load_model_bundle
from vugan.pipeline.artifacts import read_artifact
from vugan.pipeline.config import load_config
from support.trainer_runs import TINY

QUIET = ["trainer.image_every=100", "trainer.checkpoint_every=100", "trainer.log_every=1"]


@pytest.fixture(scope="module")
def public_examples(tmp_path_factory):
    return make_examples_artifact(tmp_path_factory.mktemp("pub") / "examples", n_per_class=8, shape=(16, 16, 3))


@pytest.fixture(scope="module")
def private_examples(tmp_path_factory):
    # Other records (seed), same shape and classes: a different cohort, a different fingerprint.
    return make_examples_artifact(tmp_path_factory.mktemp("priv") / "examples", n_per_class=8, shape=(16, 16, 3),
                                  seed=7)


@pytest.fixture(scope="module")
def pretrained(public_examples, tmp_path_factory):
    """A 3-step ordinary run on the public examples, with EMA: the model later runs start from."""
    out = tmp_path_factory.mktemp("pre") / "model"
    cfg = load_config(None, TINY + QUIET + ["trainer.steps=3", "trainer.ema=true", "trainer.lr_d=0.01",
                                            "trainer.lr_g=0.01"])
    SPEC.run(cfg, {"examples": public_examples}, out, log=lambda _: None)
    return out


def _run(examples, out, extra):
    cfg = load_config(None, TINY + QUIET + extra)
    lines = []
    manifest = SPEC.run(cfg, {"examples": examples}, out, log=lines.append)
    return manifest, lines


def _weights(model):
    return [w.numpy() for w in model.weights]


@pytest.mark.parametrize("setting, field, theirs, ours", [
    ("trainer.width=5", "width", "4", "5"),
    ("trainer.noise_dim=12", "noise_dim", "16", "12"),
    ("trainer.spectral_norm=true", "spectral_norm", "False", "True"),
    ("trainer.g_upsample=resize", "g_upsample", "'transpose'", "'resize'"),
    ("trainer.generator_batch_norm=true", "batch_norm", "False", "True"),
])
def test_init_from_refuses_another_architecture_naming_the_field(pretrained, private_examples, tmp_path, setting,
                                                                  field, theirs, ours):
    out = tmp_path / "model"
    with pytest.raises(ValueError, match=rf"field '{field}' \(model: {theirs}, this run: {ours}"):
        _run(private_examples, out, ["trainer.steps=1", f"trainer.init_from={pretrained}", setting])
    assert not (out / "model_info.json").exists()  # refused before anything was trained or written


def test_init_from_refuses_another_image_shape_or_class_set(pretrained, tmp_path):
    bigger = make_examples_artifact(tmp_path / "ex32", n_per_class=4, shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"field 'image_shape' \(model: \(16, 16, 3\), this run: \(32, 32, 3\)"):
        _run(bigger, tmp_path / "m1", ["trainer.steps=1", f"trainer.init_from={pretrained}"])
    two = make_examples_artifact(tmp_path / "ex2", n_per_class=4, shape=(16, 16, 3),
                                 class_names=("cervical", "lumbar"))
    with pytest.raises(ValueError, match=r"field 'num_classes' \(model: 3, this run: 2"):
        _run(two, tmp_path / "m2", ["trainer.steps=1", f"trainer.init_from={pretrained}"])


def test_a_run_started_from_a_model_starts_from_its_weights(pretrained, private_examples, tmp_path):
    source = load_model_bundle(pretrained, ema=False)
    source_ema = load_model_bundle(pretrained, ema=True).generator
    # Zero training steps: what is exported is exactly where the run started.
    manifest, lines = _run(private_examples, tmp_path / "zero",
                           ["trainer.steps=0", "trainer.ema=true", f"trainer.init_from={pretrained}"])
    started = load_model_bundle(tmp_path / "zero", ema=False)
    for name, got, want in (("generator", started.generator, source.generator),
                            ("discriminator", started.discriminator, source.discriminator),
                            ("generator_ema", load_model_bundle(tmp_path / "zero").generator, source_ema)):
        for g, w in zip(_weights(got), _weights(want), strict=True):
            np.testing.assert_array_equal(g, w, err_msg=name)
    # Control: the same config without init_from starts elsewhere (the source's 3 steps at lr 0.01 moved it).
    _run(private_examples, tmp_path / "fresh", ["trainer.steps=0", "trainer.ema=true"])
    fresh = load_model_bundle(tmp_path / "fresh", ema=False)
    assert max(np.abs(a - b).max() for a, b in zip(_weights(fresh.discriminator), _weights(source.discriminator))) > 1e-3
    # The run records what it started from: the source artifact's payload fingerprint.
    fingerprint = read_artifact(pretrained)["fingerprint"]
    info = json.loads((tmp_path / "zero" / "model_info.json").read_text())
    assert info["init_from"]["fingerprint"] == fingerprint == manifest["properties"]["init_from"]["fingerprint"]
    assert info["arch"]["width"] == 4 and info["arch"]["image_shape"] == [16, 16, 3]
    assert json.loads((tmp_path / "fresh" / "model_info.json").read_text())["init_from"] is None
    assert any(f"fingerprint {fingerprint}" in line for line in lines)
    # Training on from there moves the weights (the optimizers start fresh and really step).
    _run(private_examples, tmp_path / "two", ["trainer.steps=2", f"trainer.init_from={pretrained}"])
    moved = load_model_bundle(tmp_path / "two", ema=False).discriminator
    assert max(np.abs(a - b).max() for a, b in zip(_weights(moved), _weights(source.discriminator))) > 0


def test_dp_fine_tuning_says_epsilon_covers_only_the_private_cohort(pretrained, private_examples,
                                                                    public_examples, tmp_path):
    from vugan.components.evaluator.report.privacy_sections import dp_section
    from vugan.components.synthesize.datasheet import dp_lines

    dp_args = ["trainer.steps=2", "trainer.dp=true", "trainer.dp_noise_multiplier=1.5",
               f"trainer.init_from={pretrained}"]
    manifest, _ = _run(private_examples, tmp_path / "dp", dp_args)
    dp = json.loads((tmp_path / "dp" / "model_info.json").read_text())["dp"]
    fingerprint = read_artifact(pretrained)["fingerprint"]
    assert dp["enabled"] and dp["init_from_fingerprint"] == fingerprint
    assert "covers only the private cohort" in dp["pretraining_note"] and fingerprint in dp["pretraining_note"]
    assert dp["pretraining_note"] in "\n".join(dp_lines(dp))
    assert "covers only the private cohort" in dp_section(dp, {}).explanation
    # Without init_from there is no such line.
    _run(private_examples, tmp_path / "dp0", dp_args[:-1])
    plain = json.loads((tmp_path / "dp0" / "model_info.json").read_text())["dp"]
    assert plain["pretraining_note"] is None and "covers only" not in "\n".join(dp_lines(plain))
    # A source trained on the private examples themselves is no public start: refused under DP.
    with pytest.raises(ValueError, match="trained on this run's own examples"):
        _run(public_examples, tmp_path / "dp_same", dp_args)


def test_fine_tuning_trains_only_the_named_discriminator_layers(pretrained, private_examples, tmp_path):
    source = load_model_bundle(pretrained, ema=False)
    heads = ("realfake_logits", "class_logits")
    _run(private_examples, tmp_path / "heads", ["trainer.steps=2", "trainer.dp=true", "trainer.dp_noise_multiplier=1.5",
                                                f"trainer.init_from={pretrained}",
                                                "trainer.d_trainable_layers=" + ",".join(heads)])
    tuned = load_model_bundle(tmp_path / "heads", ema=False)
    moved, kept = set(), set()
    for layer in source.discriminator.layers:
        if not layer.weights:
            continue
        after = tuned.discriminator.get_layer(layer.name)
        # Spectral norm's power-iteration vector moves on every training call, frozen or not: kernels only.
        pairs = [(a, b) for a, b in zip(after.weights, layer.weights) if "vector_u" not in a.path]
        (moved if any(np.abs(a.numpy() - b.numpy()).max() > 0 for a, b in pairs) else kept).add(layer.name)
    assert moved == set(heads) and kept  # the conv layers kept the public weights exactly
    assert any(np.abs(a - b).max() > 0 for a, b in zip(_weights(tuned.generator), _weights(source.generator)))
    trained = json.loads((tmp_path / "heads" / "model_info.json").read_text())["discriminator_trained"]
    head_parameters = sum(int(np.prod(w.shape)) for n in heads for w in source.discriminator.get_layer(n).weights)
    assert trained["layers"] == list(heads) and trained["parameters"] == head_parameters
    assert trained["of_parameters"] > head_parameters


def test_fine_tuning_layers_are_checked_by_name_and_need_init_from(pretrained, private_examples, tmp_path):
    with pytest.raises(ValueError, match=r"'conv_9' is not a discriminator layer with weights; choose from conv_0"):
        _run(private_examples, tmp_path / "m1", ["trainer.steps=1", f"trainer.init_from={pretrained}",
                                                 "trainer.d_trainable_layers=conv_9,class_logits"])
    with pytest.raises(ValueError, match=r"d_trainable_layers = 'class_logits' needs trainer.init_from"):
        _run(private_examples, tmp_path / "m2", ["trainer.steps=1", "trainer.d_trainable_layers=class_logits"])
    assert not (tmp_path / "m1" / "model_info.json").exists() and not (tmp_path / "m2" / "model_info.json").exists()
