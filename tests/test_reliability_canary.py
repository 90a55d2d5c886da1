"""The canary audit (issue 23, item 4): public canary patients trained beside the cohort, and the attacks scored on
them (components/trainer/canaries.py, components/evaluator/privacy/canary.py).

* training with ``trainer.canaries``: the inserted canaries are training patients (real TFRecords, a real training
  step; under DP the accountant counts them), the held-back ones are not, and the model records which (hashed);
* the audit: a memorising model singles out its inserted canaries and gives an empirical epsilon lower bound > 0;
  a fresh (untrained) model does not; the gate FAILS when the bound exceeds the accounted epsilon;
* the epsilon bound against hand-worked values.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from support.examples import class_image, make_examples_artifact
from support.privacy_controls import blob_cohort, leaky_synthetic, memorising_bundle, take
from support.trainer_runs import TINY

from vugan.components import schema
from vugan.pipeline.artifacts import ArtifactType, write_artifact

SHAPE = (16, 16, 3)


def make_canary_examples(root, n_patients: int, units_per_patient: int = 3, seed: int = 7):
    """An Examples artifact of ``n_patients`` phantom-like patients ("canary{i}", never a training patient's name),
    written as preprocess writes one (gzip TFRecord shards per split, artifact.json with the record counts)."""
    rng = np.random.default_rng(seed)
    records = {split: [] for split in schema.SPLITS}
    for p in range(n_patients):
        split = schema.SPLITS[p % 3]
        for u in range(units_per_patient):
            c = u % 3
            records[split].append(schema.encode(schema.UnitRecord(
                image=class_image(rng, c, 3, SHAPE), level_name="L4/L5", upper_code=23, lower_code=24,
                region=schema.REGIONS[c], class_id=c, patient=f"canary{p}", scan=f"canary-scan{p}")))
    for split, recs in records.items():
        schema.write_shards(recs, schema.split_dir(str(root), split), num_shards=1)
    counts = {s: len(r) for s, r in records.items()}
    write_artifact(root, artifact_type=ArtifactType.EXAMPLES, producer="preprocess", config_fingerprint="canary",
                   counts=counts, properties={"image_shape": list(SHAPE), "class_names": list(schema.REGIONS),
                                              "conditioning": "region", "unit": "disc", "splits": counts})
    return root


def _patients_in(files) -> set[str]:
    return {r.patient for r in schema.iter_records(files)}


# ------------------------------------------------------------------------------------------------ training

@pytest.mark.slow  # a real training run (one step; about 20 s on 2 cores with graph building)
@pytest.mark.parametrize("dp", [False, True], ids=["ordinary", "dp"])
def test_inserted_canaries_are_trained_on_and_held_back_ones_are_not(tmp_path, dp):
    from vugan.components.trainer.canaries import patient_fingerprint
    from vugan.components.trainer.component import SPEC
    from vugan.pipeline.config import load_config

    examples = make_examples_artifact(tmp_path / "examples", n_per_class=8, shape=SHAPE)
    canary_root = make_canary_examples(tmp_path / "canary_examples", n_patients=6)
    overrides = TINY + ["trainer.steps=1", "trainer.log_every=1", "trainer.image_every=1",
                        "trainer.checkpoint_every=1", "trainer.canaries=4",
                        f"trainer.canary_examples='{canary_root}'", "trainer.canary_seed=3"]
    if dp:
        overrides += ["trainer.dp=true", "trainer.dp_unit='patient'", "trainer.dp_noise_multiplier=1.0",
                      "trainer.dp_delta=1e-3"]
    out = tmp_path / "model"
    SPEC.run(load_config(None, overrides), {"examples": examples}, out, log=lambda m: None)

    info = json.loads((out / "model_info.json").read_text())
    record = info["canaries"]
    assert record["enabled"] and record["patients"] == 4 and len(record["inserted"]) == len(record["held_back"]) == 2
    inserted = _patients_in(sorted(str(p) for p in (out / "canaries" / "inserted").glob("*.tfrecord.gz")))
    held_back = _patients_in(sorted(str(p) for p in (out / "canaries" / "held_back").glob("*.tfrecord.gz")))
    assert not inserted & held_back and inserted | held_back <= {f"canary{i}" for i in range(6)}
    # The model records its canaries by fingerprint only: no canary's name travels in model_info.json.
    assert sorted(patient_fingerprint(p) for p in inserted) == sorted(record["inserted"])
    assert sorted(patient_fingerprint(p) for p in held_back) == sorted(record["held_back"])
    assert "canary0" not in (out / "model_info.json").read_text()
    # A real training step ran on the training units PLUS the inserted canaries' units, none of the held-back ones.
    assert json.loads((out / "stats.jsonl").read_text().splitlines()[-1])["step"] == 1
    assert sum(info["class_counts"]) == 24 + record["inserted_units"] == 24 + 3 * len(inserted)
    if dp:  # the accountant's patients: the 5 of the cohort and the 2 inserted canaries, each clipped as one
        assert info["dp"]["num_patients"] == 5 + 2
        assert info["dp"]["num_units"] == 24 + record["inserted_units"]
    # The held-back canaries' draw is by seed over the SET of canary patients: the same seed draws the same ones.
    from vugan.components.trainer.canaries import split_canaries

    assert split_canaries([f"canary{i}" for i in reversed(range(6))], 4, 3) == (sorted(inserted), sorted(held_back))


def test_canaries_need_an_even_count_and_their_examples(tmp_path):
    from vugan.pipeline.config import load_config

    with pytest.raises(ValueError, match="canary_examples"):
        load_config(None, ["trainer.canaries=4"])
    with pytest.raises(ValueError, match="even number"):
        load_config(None, ["trainer.canaries=3", "trainer.canary_examples='x'"])


def test_a_canary_that_is_a_training_patient_is_refused(tmp_path):
    from vugan.components.trainer.canaries import CanaryError
    from vugan.components.trainer.component import SPEC
    from vugan.pipeline.config import load_config

    examples = make_examples_artifact(tmp_path / "examples", n_per_class=8, shape=SHAPE)
    # The same artifact as its own canaries: every canary patient is a training patient.
    cfg = load_config(None, TINY + ["trainer.steps=1", "trainer.canaries=2", f"trainer.canary_examples='{examples}'"])
    with pytest.raises(CanaryError, match="also training patients"):
        SPEC.run(cfg, {"examples": examples}, tmp_path / "model", log=lambda m: None)


# ------------------------------------------------------------------------------------------------ the bound

def test_epsilon_bound_against_hand_worked_values():
    from vugan.components.evaluator.privacy.canary import (best_eps_lower_bound, clopper_pearson, eps_ceiling,
                                                           eps_lower_bound)

    # 0 of 10 and 10 of 10 at 95%: the exact bounds are 1 - 0.025^(1/10) = 0.30850 and 0.025^(1/10) = 0.69150.
    assert clopper_pearson(0, 10, 0.05) == pytest.approx((0.0, 0.308497), abs=1e-5)
    assert clopper_pearson(10, 10, 0.05) == pytest.approx((0.691503, 1.0), abs=1e-5)
    # 5 of 10: the textbook interval [0.187086, 0.812914].
    assert clopper_pearson(5, 10, 0.05) == pytest.approx((0.187086, 0.812914), abs=1e-5)
    # Perfect separation of 10 vs 10 at one threshold: log(0.69150 / 0.30850) = 0.80712; with delta 0.1:
    # log(0.59150 / 0.30850) = 0.65097.
    assert eps_lower_bound(10, 10, 0, 10, 0.0, 0.05) == pytest.approx(0.80712, abs=1e-4)
    assert eps_lower_bound(10, 10, 0, 10, 0.1, 0.05) == pytest.approx(0.65097, abs=1e-4)
    # Chance (5 of 10 either side): no evidence, 0.
    assert eps_lower_bound(5, 10, 5, 10, 0.0, 0.05) == 0.0
    # Over thresholds: 20 vs 20 perfectly separated, 40 distinct scores, so 80 (threshold, direction) tests at
    # 0.05 / 80 each: the bound is log(q / (1 - q)) with q = (0.05 / 160)^(1/20) = 0.66797: 0.69892.
    q = (0.05 / 160) ** (1 / 20)
    best = best_eps_lower_bound(np.arange(20, 40), np.arange(20), 0.0, 0.05)
    assert best["tests"] == 80 and best["tp"] == 20 and best["fp"] == 0
    assert best["eps_lb"] == pytest.approx(math.log(q / (1 - q)), abs=1e-6) == pytest.approx(0.69892, abs=1e-4)
    # The ceiling: perfect separation with two scores, so 4 tests at 0.05 / 4: q = (0.05 / 8)^(1/20) = 0.77588,
    # log(q / (1 - q)) = 1.24181. No attack on 20 vs 20 canaries can show more.
    assert eps_ceiling(20, 20, 0.0, 0.05) == pytest.approx(1.24181, abs=1e-4)
    # An attack is read in its own direction: one that ranks the members LOWEST shows nothing (flipping it after
    # seeing the canaries would be a test chosen on the data).
    assert best_eps_lower_bound(np.arange(20), np.arange(20, 40), 0.0, 0.05)["eps_lb"] == 0.0
    # Interleaved (no signal): 0.
    assert best_eps_lower_bound(np.arange(0, 40, 2), np.arange(1, 40, 2), 0.0, 0.05)["eps_lb"] == 0.0


# ------------------------------------------------------------------------------------------------ the audit

def _canary_cohort():
    pool = blob_cohort(40, 3, size=16, slices=3, seed=11, prefix="canary")
    ids = np.unique(pool.patients.astype(str))
    inserted_ids = set(ids[::2])
    is_in = np.array([p in inserted_ids for p in pool.patients.astype(str)])
    reference = blob_cohort(10, 3, size=16, slices=3, seed=12, prefix="real")
    return take(pool, np.nonzero(is_in)[0]), take(pool, np.nonzero(~is_in)[0]), reference


def _cfg(**kw):
    from vugan.components.evaluator.privacy.spec import PrivacyConfig

    return dataclasses.replace(PrivacyConfig(), bootstrap=50, pbb_steps=30, pbb_max_patients=5, **kw)


def test_a_memorising_model_singles_out_its_canaries_and_bounds_epsilon_above_zero():
    from vugan.components.evaluator.privacy.canary import canary_audit

    inserted, held_back, reference = _canary_cohort()
    bundle = memorising_bundle(inserted, 3)
    synthetic = leaky_synthetic(inserted, 120, noise=0.02, seed=0)
    audit = canary_audit(inserted, held_back, synthetic, reference, bundle, _cfg(), seed=0)
    assert audit["patients"]["inserted"] == audit["patients"]["held_back"] == 20
    logan = audit["attacks"]["logan_realfake"]
    assert logan["auc"] == 1.0 and logan["tpr_at_1pct_fpr"] == 1.0
    assert audit["attacks"]["pixel.fbb_nearest"]["auc"] == 1.0
    # The reconstruction attack scores every canary, not the gate's pbb_max_patients (5) a side.
    assert audit["attacks"]["pbb_reconstruction"]["n_members"] == audit["attacks"]["pbb_reconstruction"]["n_nonmembers"] == 20
    eps = audit["epsilon"]
    assert 0 < eps["lower_bound"] <= eps["ceiling"]
    assert eps["accounted"] is None and not eps["exceeds_accounted"]


def test_a_fresh_model_does_not_single_out_its_canaries():
    """An untrained ac-GAN (the trainer's own networks, random weights) and a synthetic set of fresh patients: no
    attack separates inserted from held-back canaries, and the bound is 0."""
    from vugan.components.evaluator.privacy.canary import canary_audit
    from vugan.components.trainer import core
    from vugan.components.trainer.data import ExamplesInfo
    from vugan.pipeline.config import load_config

    inserted, held_back, reference = _canary_cohort()
    cfg = load_config(None, TINY).trainer
    info = ExamplesInfo(root=None, image_shape=SHAPE, class_names=schema.REGIONS, conditioning="region",
                        train_files=(), class_counts=(1, 1, 1), skipped=())
    gan = core.build_gan(cfg, info, global_batch=8)
    import types

    bundle = types.SimpleNamespace(generator=gan.generator, discriminator=gan.discriminator,
                                   noise_dim=cfg.noise_dim, class_names=schema.REGIONS, image_shape=SHAPE)
    fresh = blob_cohort(30, 3, size=16, slices=3, seed=13, prefix="fresh")
    dp = {"enabled": True, "epsilon": 8.0, "delta": 1e-5, "unit": "patient"}
    audit = canary_audit(inserted, held_back, fresh, reference, bundle, _cfg(), seed=0, dp=dp)
    assert audit["epsilon"]["lower_bound"] == 0.0
    for name, a in audit["attacks"].items():
        lo, hi = a["auc_ci"]
        assert a["epsilon_bound"]["eps_lb"] == 0.0, name
        assert lo <= 0.5 + 0.2 and hi >= 0.5 - 0.2, (name, a["auc"], a["auc_ci"])
    assert audit["epsilon"]["accounted"] == 8.0 and not audit["epsilon"]["exceeds_accounted"]


def _evaluation_with(canary: dict):
    from vugan.components.evaluator.results import CanaryResult, Evaluation

    return Evaluation(counts={}, class_names=[], synthetic={}, fidelity=None, diversity=None, utility=None,
                      canary=CanaryResult.from_dict(canary))


def test_the_gate_notes_the_audit_and_fails_when_the_bound_exceeds_the_accounted_epsilon():
    from vugan.components.evaluator.gate import release_gate
    from vugan.components.evaluator.privacy.canary import canary_audit
    from vugan.components.evaluator.privacy.spec import PrivacyConfig
    from vugan.components.evaluator.results import Evaluation, jsonable

    inserted, held_back, reference = _canary_cohort()
    bundle = memorising_bundle(inserted, 3)
    synthetic = leaky_synthetic(inserted, 120, noise=0.02, seed=0)
    cfg = _cfg(pbb_enabled=False)
    # A model that claims epsilon 0.1 yet lets the attacks single out every canary: the claim is refuted.
    claimed = {"enabled": True, "epsilon": 0.1, "delta": 1e-5, "unit": "patient"}
    refuted = jsonable(canary_audit(inserted, held_back, synthetic, reference, bundle, cfg, seed=0, dp=claimed))
    assert refuted["epsilon"]["exceeds_accounted"]
    verdict = release_gate(_evaluation_with(refuted), PrivacyConfig())
    lines = [r for r in verdict.reasons if "canary audit" in r]
    assert len(lines) == 1 and lines[0].startswith("FAIL: ") and "EXCEEDS the accounted epsilon 0.10" in lines[0]
    # The same audit against an honest claim is a NOTE; metrics.json round trip keeps the record.
    honest = jsonable(canary_audit(inserted, held_back, synthetic, reference, bundle, cfg, seed=0,
                                   dp={**claimed, "epsilon": 50.0}))
    evaluation = Evaluation.from_dict(json.loads(json.dumps(_evaluation_with(honest).to_dict())))
    assert evaluation.canary.epsilon["accounted"] == 50.0
    lines = [r for r in release_gate(evaluation, PrivacyConfig()).reasons if "canary audit" in r]
    assert len(lines) == 1 and lines[0].startswith("NOTE: ") and "within the accounted epsilon 50.00" in lines[0]
