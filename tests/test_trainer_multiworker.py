"""Two real `vugan train` workers on localhost (TF_CONFIG, MultiWorkerMirroredStrategy over gRPC, CPU) train the
same model as one worker with the same global batch: equal losses at every step and equal final weights within
float tolerance (only the order of the gradient sums differs)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vugan.components.trainer.callbacks import read_stats
from support.examples import make_examples_artifact
from vugan.models.bundle import load_model_bundle

# slow tier: two trainer processes, one per worker, and a single-worker reference run
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["trainer.width=4", "trainer.batch_size=8", "trainer.noise_dim=16", "trainer.steps=4",
             "trainer.log_every=1", "trainer.image_every=100", "trainer.checkpoint_every=2", "trainer.ema=true",
             "trainer.diffaugment='translation,cutout'", "trainer.lr_d=0.001", "trainer.lr_g=0.001"]


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def train(examples, out, tf_config=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    args = [sys.executable, "-m", "vugan.components.trainer.run", "--examples", str(examples), "--out", str(out)]
    for o in OVERRIDES:
        args += ["--set", o]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_workers_train_like_one_with_the_same_global_batch(tmp_path):
    examples = make_examples_artifact(tmp_path / "examples", n_per_class=8, shape=(16, 16, 3), num_shards=2)
    one = train(examples, tmp_path / "one")
    output, _ = one.communicate(timeout=300)
    assert one.returncode == 0, output

    workers = [f"localhost:{p}" for p in free_ports(2)]
    procs = [train(examples, tmp_path / f"worker{i}",
                   {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text
    # Each worker holds one replica of the two; the global batch of 8 is split 4 + 4.
    assert all("2 replica(s) x 4" in text for text in outputs), outputs[0]

    r1 = read_stats(tmp_path / "one" / "stats.jsonl")
    for w in range(2):
        rw = read_stats(tmp_path / f"worker{w}" / "stats.jsonl")
        assert [r["step"] for r in rw] == [1, 2, 3, 4]
        for a, b in zip(r1, rw):  # global-batch scalars: summed over the two workers' rows
            for key in ("d_loss", "g_loss", "d_cls_loss", "g_cls_loss", "d_real_acc", "cls_acc_fake"):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (w, a["step"], key)
    # Final weights (G, G_ema, D) of both workers equal the single worker's within float tolerance. Had the two
    # workers drawn the same noise or augmentation (repeated keys), or read the same rows, they would not.
    for ema in (False, True):
        ref = load_model_bundle(tmp_path / "one", ema=ema)
        for w in range(2):
            got = load_model_bundle(tmp_path / f"worker{w}", ema=ema)
            for m_ref, m_got in ((ref.generator, got.generator), (ref.discriminator, got.discriminator)):
                for x, y in zip(m_ref.get_weights(), m_got.get_weights()):
                    np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6)
    # The weights did move (lr 1e-3, 4 steps): agreement is not the trivial one of untrained networks.
    first = read_stats(tmp_path / "one" / "stats.jsonl")
    assert first[0]["d_loss"] != first[-1]["d_loss"]
