"""The shipped vu-encoder (components/evaluator/features/vu_encoder.py, models/vu_encoder/): its file and card agree,
a changed file is refused by name, its integer arithmetic is exact, any crop size maps onto the input spec, and two
real `vugan evaluate` processes of the same model, one pinned to one core, give identical FD-VU, KD-VU and PRDC.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vugan.components.evaluator.features import vu_encoder as vu
from vugan.components.evaluator.features.checksum import sha256_file
from vugan.components.evaluator.features.embeddings import vu_embedder
from support.examples import make_examples_artifact
from support.model_artifacts import make_model_artifact
from support.paths import ROOT


def test_shipped_weights_match_their_card_and_are_small():
    card = vu.read_card()
    assert card["name"] == "vu-encoder-v1" and card["file"] == vu.WEIGHTS_FILE.name
    assert sha256_file(vu.WEIGHTS_FILE) == card["sha256"]
    assert vu.WEIGHTS_FILE.stat().st_size < 2 * 2**20
    probe = card["held_out_patients_linear_probe_balanced_accuracy"]
    assert probe["region"] > 0.9  # on patients the network never saw (3 classes: chance 0.33)
    emb = vu_embedder()
    assert (emb.key, emb.distance_name, emb.kernel_name) == ("vu", "FD-VU", "KD-VU")
    assert emb.provenance["sha256"] == card["sha256"] and emb.provenance["version"] == "v1"


def test_sha256_file_hashes_every_block_of_a_file_larger_than_one_read(tmp_path):
    data = bytes(range(256)) * (4096 + 1) + b"tail"  # 1 MiB + 260 bytes: two reads, the second short
    (tmp_path / "w.bin").write_bytes(data)
    assert sha256_file(tmp_path / "w.bin") == hashlib.sha256(data).hexdigest()
    (tmp_path / "w.bin").write_bytes(data[:-1] + b"!")  # the last byte alone changes the digest
    assert sha256_file(str(tmp_path / "w.bin")) != hashlib.sha256(data).hexdigest()


def test_an_altered_weights_file_is_refused_naming_it(tmp_path):
    weights, card = tmp_path / vu.WEIGHTS_FILE.name, tmp_path / vu.CARD_FILE.name
    shutil.copy(vu.CARD_FILE, card)
    data = bytearray(vu.WEIGHTS_FILE.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(vu.EncoderWeightsError, match="sha256") as err:
        vu_embedder(weights_path=weights, card_path=card)
    assert str(weights) in str(err.value) and "restore" in str(err.value)
    with pytest.raises(vu.EncoderWeightsError, match="does not exist"):
        vu_embedder(weights_path=tmp_path / "missing.npz", card_path=card)


def test_features_are_exact_grid_values_independent_of_batching():
    rng = np.random.default_rng(0)
    x = np.tanh(rng.standard_normal((7, 64, 64, 9))).astype(np.float32)
    enc, _ = vu.load_encoder()
    together = enc.features(x)
    one_by_one = np.concatenate([enc.features(x[i:i + 1]) for i in range(len(x))])
    assert together.shape == (7, enc.dim)
    assert np.array_equal(together, one_by_one)  # no batch-dependent reduction anywhere
    assert np.array_equal(together * vu.FEATURE_GRID, np.rint(together * vu.FEATURE_GRID))
    # Every stage's activations are integers: sums of integer products, exact in float64 in any order.
    z, mean, std = vu.normalised_input(vu.quantised_input(x))
    assert np.array_equal(z, np.rint(z)) and np.abs(z).max() <= 127
    assert np.allclose(mean, x.mean((1, 2, 3)), atol=0.01) and np.allclose(std, x.std((1, 2, 3)), atol=0.01)
    acts = enc.stage_activations(z)
    assert [a.shape[1:] for a in acts] == [(32, 32, 24), (16, 16, 48), (8, 8, 64), (4, 4, 96)]
    for a in acts:
        assert np.array_equal(a, np.rint(a)) and a.min() >= 0 and a.max() <= vu.ACTIVATION_MAX
    # The same convolution summed in a scrambled order gives the same integers (what makes threads irrelevant).
    cols = vu._patches(z[:2])
    flat = cols.reshape(-1, cols.shape[-1])
    order = rng.permutation(flat.shape[1])
    assert np.array_equal(flat @ enc.kernels[0], flat[:, order] @ enc.kernels[0][order])


def test_any_crop_size_maps_onto_the_input_spec():
    spec = (vu.INPUT_SPEC["height"], vu.INPUT_SPEC["width"], vu.INPUT_SPEC["slices"])
    x = np.linspace(-1, 1, 64 * 64 * 9, dtype=np.float32).reshape(1, *spec)
    assert np.array_equal(vu.quantised_input(x), np.rint(x.astype(np.float64) * 127))  # the spec passes as is
    for shape in ((16, 16, 3), (96, 80, 11), (64, 64, 1)):
        q = vu.quantised_input(np.full((2, *shape), 0.5, np.float32))
        assert q.shape == (2, *spec) and np.all(q == 64)  # round(0.5 x 127): a constant stays constant
    ramp = np.broadcast_to(np.linspace(-1, 1, 32)[None, :, None, None], (1, 32, 32, 9)).astype(np.float32)
    q = vu.quantised_input(ramp)[0, :, 0, 0]
    assert np.all(np.diff(q) >= 0) and q[0] == -127 and q[-1] == 127  # a ramp stays a monotone ramp
    with pytest.raises(ValueError, match="expected images"):
        vu.quantised_input(np.zeros((64, 64, 9)))


FAST = ["evaluator.min_synthetic=45", "evaluator.classifier_epochs=1", "evaluator.msssim_pairs=10",
        "evaluator.swd_projections=8", "evaluator.prdc_k=3", "evaluator.domain_encoder=true",
        "privacy.enabled=false", "evaluator.feature_cache=off"]  # each process embeds the real splits itself


@pytest.mark.slow  # two evaluator processes
def test_two_evaluations_one_pinned_to_one_core_give_identical_fd_vu_kd_vu_prdc(tmp_path):
    """The Must-show of issue 12: separate `vugan evaluate` processes of one model, the second under
    `taskset -c 0` (TensorFlow and BLAS then run one thread), agree on every FD-VU, KD-VU and PRDC number."""
    if not shutil.which("taskset"):
        pytest.fail("taskset (util-linux) is needed to pin a process to one core")
    examples = make_examples_artifact(tmp_path / "examples", n_per_class=12, shape=(16, 16, 3), holdout_per_class=6)
    model = make_model_artifact(tmp_path / "model")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_NUM_", "OMP_"))}
    results = []
    for name, prefix in (("all_cores", []), ("one_core", ["taskset", "-c", "0"])):
        out = tmp_path / name
        args = prefix + [sys.executable, "-m", "vugan.pipeline.cli", "evaluate", "--config", str(ROOT / "configs/tiny.toml"),
                         "--examples", str(examples), "--model", str(model), "--out", str(out)]
        for s in FAST:
            args += ["--set", s]
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        results.append(json.loads((out / "metrics.json").read_text()))
    a, b = results
    assert os.cpu_count() == 1 or a["config"] == b["config"]
    vu_a, vu_b = a["fidelity"]["embeddings"]["vu"], b["fidelity"]["embeddings"]["vu"]
    assert vu_a["overall"]["fd"] is not None and vu_a["overall"]["prdc"] is not None
    assert vu_a == vu_b  # every FD-VU, KD-VU and PRDC number, overall and per class, to the last bit
    assert a["fidelity"]["fid_ratio"] == b["fidelity"]["fid_ratio"] == vu_a["against_holdout"]["overall"]["fd_ratio"]
    assert a["fidelity"]["fid_ratio_encoder"]["sha256"] == vu.read_card()["sha256"]
