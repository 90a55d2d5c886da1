"""The evaluator's typed results (components/evaluator/results.py): ``Evaluation.to_dict()`` is exactly the dict the
evaluator built before it had types (same keys, same order, same values), read back by ``from_dict``; the gate's
config keys name metrics through one mapping and an unknown one is a clear error."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from support.examples import class_image
from vugan.components import schema
from vugan.components.evaluator.spec import EvaluatorConfig

# Written by the evaluator before the typed results (outcome.metrics, through the JSON sanitiser) on small_sets().
BEFORE = Path(__file__).parent / "data" / "evaluation_before_typed_results.json"
CFG = EvaluatorConfig(min_synthetic=36, classifier_epochs=2, msssim_pairs=10, swd_projections=16, prdc_k=2,
                      fidelity_bootstrap=20, domain_encoder=False, feature_cache="off", batch_size=64,
                      tstr_size_multiples=(1.0, 3.0))
# Trained classifiers: their numbers may move with the machine (threads, kernels); their layout may not.
MACHINE_DEPENDENT = ("utility.trtr.", "utility.tstr", "utility.learning_curve", "utility.trtr_balanced_accuracy")


def small_sets(shape=(32, 32, 3)):
    def units(n_per_class, seed, prefix):
        rng = np.random.default_rng(seed)
        ids = np.repeat(np.arange(3, dtype=np.int32), n_per_class)
        images = np.stack([class_image(rng, int(c), 3, shape) for c in ids]).astype(np.float32)
        names = np.array([schema.REGIONS[c] for c in ids], object)
        return schema.UnitArrays(images=images, class_ids=ids, regions=names, level_names=names,
                                 patients=np.array([f"{prefix}{i % 4}" for i in range(len(ids))], object))

    return units(12, 1, "tr"), units(6, 2, "ho"), units(6, 3, "te"), units(12, 4, "sy")


def leaves(value, path=""):
    """(path, value) of every leaf, in order; dict keys and their order are part of the path list."""
    if isinstance(value, dict):
        yield path + "{}", list(value)
        for k, v in value.items():
            yield from leaves(v, f"{path}{k}.")
    elif isinstance(value, list):
        yield path + "[]", len(value)
        for i, v in enumerate(value):
            yield from leaves(v, f"{path}{i}.")
    else:
        yield path, value


@pytest.fixture(scope="module")
def evaluation():
    from vugan.components.evaluator import core

    train, holdout, test, synthetic = small_sets()
    return core.evaluate_units(train, holdout, test, synthetic, schema.REGIONS, CFG).evaluation


def test_to_dict_is_the_dict_the_untyped_evaluator_built(evaluation):
    from vugan.components.evaluator.results import jsonable

    before = json.loads(BEFORE.read_text())
    now = json.loads(json.dumps(jsonable(evaluation.to_dict()), allow_nan=False))
    # The one key added since the golden file was written: the class check (quality/class_check.py), placed LAST
    # in the utility block so every key before it keeps its place. Everything else must still match exactly.
    assert list(now["utility"])[-1] == "class_check" and "class_check" not in before["utility"]
    check = now["utility"].pop("class_check")
    assert set(check) == {"accuracy", "per_class", "real_test_accuracy", "generated", "classifier"}
    assert list(check["per_class"]) == list(schema.REGIONS) and check["generated"] == 36
    # And, since "The same scans give the same evidence": how much of the real comparator each fair comparison
    # used (core.comparator_used), beside each comparison of each feature space.
    for name, space in now["fidelity"]["embeddings"].items():
        for comparison, old in ((space, before["fidelity"]["embeddings"][name]),
                                (space["against_holdout"], before["fidelity"]["embeddings"][name]["against_holdout"])):
            assert "comparator" not in old
            used = comparison.pop("comparator")
            assert used["real_patients_compared"] + used["real_patients_left_out"] == used["real_patients_available"]
            assert used["real_units_compared"] == comparison["overall"]["n"]["real"]
    # Issue 22: which features carry each FD against holdout (quality/fd_breakdown.py), beside the comparison's
    # other numbers, in each comparison that has an FD (per-class entries without one have none); never against
    # train.
    for name, space in now["fidelity"]["embeddings"].items():
        assert "fd_breakdown" not in json.dumps(space["overall"]) + json.dumps(space["per_class"])
        for entry in [space["against_holdout"]["overall"], *space["against_holdout"]["per_class"].values()]:
            assert ("fd_breakdown" in entry) == (entry["fd"] is not None), name
            if "fd_breakdown" in entry:
                b = entry.pop("fd_breakdown")
                assert b["mean_term"] + b["covariance_term"] == pytest.approx(entry["fd"], rel=1e-6)
    # Issue 23: the gate's fidelity effect size (quality/two_sample.py), placed LAST in the fidelity block.
    assert list(now["fidelity"])[-1] == "two_sample" and "two_sample" not in before["fidelity"]
    ts = now["fidelity"].pop("two_sample")
    assert ts["space"] == "vu" and set(ts["per_class"]) <= set(schema.REGIONS)
    got, want = list(leaves(now)), list(leaves(before))
    assert [p for p, _ in got] == [p for p, _ in want]  # same keys, same order, same list lengths
    for (path, v), (_, w) in zip(got, want):
        if path.startswith(MACHINE_DEPENDENT) and isinstance(w, float):
            continue
        assert v == (pytest.approx(w, rel=1e-9, abs=1e-12) if isinstance(w, float) else w), path


def test_typed_results_read_by_attribute_and_round_trip(evaluation):
    from vugan.components.evaluator.results import Evaluation, jsonable

    assert evaluation.fidelity.fid_ratio_embedding == "vu"
    assert evaluation.fidelity.fid_ratio == evaluation.fidelity.embeddings["vu"]["against_holdout"]["overall"]["fd_ratio"]
    assert evaluation.utility.tstr_balanced_accuracy == evaluation.utility.tstr["balanced_accuracy"]
    assert "privacy" not in evaluation.to_dict()  # judged later, on the release candidate
    record = jsonable(evaluation.to_dict())
    assert jsonable(Evaluation.from_dict(record).to_dict()) == record
    with pytest.raises(dataclasses.FrozenInstanceError):
        evaluation.fidelity.fid_ratio = 1.0


def test_gate_keys_name_metrics_through_one_mapping(evaluation):
    from vugan.components.evaluator.privacy.spec import PrivacyConfig
    from vugan.components.evaluator.results import GATE_METRICS
    from vugan.pipeline.config import ConfigError, build_section

    assert evaluation.reading("fidelity.frd_ratio") == evaluation.fidelity.frd_ratio
    assert evaluation.reading(PrivacyConfig().tstr_key) == evaluation.utility.tstr_balanced_accuracy
    assert set(GATE_METRICS) >= {PrivacyConfig().fid_ratio_key, PrivacyConfig().frd_ratio_key,
                                 PrivacyConfig().tstr_key}
    with pytest.raises(ValueError, match="not a metric the release gate can read"):
        evaluation.reading("fidelity.embeddings.vu.overall.fd_ratio")
    with pytest.raises(ConfigError, match="privacy.fid_ratio_key.*allowed values"):
        build_section("privacy", PrivacyConfig, {"fid_ratio_key": "fidelity.fid"})


def test_the_headline_reads_every_path_the_release_shows_and_only_those():
    from vugan.components.evaluator.report.headline import READERS
    from vugan.components.synthesize.release.headline import KNOWN_HEADLINES

    assert list(READERS) == list(KNOWN_HEADLINES)
