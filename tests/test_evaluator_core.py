"""core.evaluate_units on arrays: a faithful synthetic set scores near the real baseline, a collapsed one is
caught (high FD ratio, mode-collapse warning, worse utility); the synthetic draw follows the training prior."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vugan.components import schema
from vugan.components.evaluator import core
from vugan.components.evaluator.spec import EvaluatorConfig
from support.examples import class_image

SHAPE = (32, 32, 3)
CFG = EvaluatorConfig(min_synthetic=60, classifier_epochs=10, msssim_pairs=60, swd_projections=64, prdc_k=3,
                      kid_block_size=1000, batch_size=64)


def units(n_per_class: int, seed: int, prefix: str, collapsed: bool = False) -> schema.UnitArrays:
    rng = np.random.default_rng(seed)
    images, ids, patients = [], [], []
    for c in range(3):
        first = class_image(rng, c, 3, SHAPE)
        for i in range(n_per_class):
            # A collapsed generator: the same unit per class with almost no variation.
            img = first + rng.normal(0, 0.005, SHAPE).astype(np.float32) if collapsed else class_image(rng, c, 3, SHAPE)
            images.append(img)
            ids.append(c)
            patients.append(f"{prefix}{i % 6}")
    ids = np.array(ids, np.int32)
    return schema.UnitArrays(images=np.stack(images).astype(np.float32), class_ids=ids,
                             regions=np.array([schema.REGIONS[c] for c in ids], object),
                             level_names=np.array([schema.REGIONS[c] for c in ids], object),
                             patients=np.array(patients, object))


@pytest.fixture(scope="module")
def real():
    return units(30, 1, "tr"), units(12, 2, "ho"), units(12, 3, "te")


@pytest.fixture(scope="module")
def outcomes(real):
    """(faithful, collapsed) metrics: the faithful set comes from the same process as the real units."""
    train, holdout, test = real
    good = core.evaluate_units(train, holdout, test, units(30, 4, "sy"), schema.REGIONS, CFG).metrics
    bad = core.evaluate_units(train, holdout, test, units(30, 5, "sy", collapsed=True), schema.REGIONS, CFG).metrics
    return good, bad


def test_synthetic_draw_follows_training_prior_and_minimum():
    train_ids = np.array([0] * 10 + [1] * 30 + [2] * 20)
    counts = core.synthetic_class_counts(train_ids, 3, min_total=600)
    assert counts.tolist() == [100, 300, 200]
    # Fewer requested than the train split has: per class as many as train.
    assert core.synthetic_class_counts(train_ids, 3, min_total=1).tolist() == [10, 30, 20]
    # Largest-remainder rounding keeps the total exact.
    assert core.synthetic_class_counts(np.array([0, 1, 1]), 3, min_total=100).sum() == 100
    train = units(4, 0, "p")
    calls = []

    def gen(ids, seed):
        calls.append(seed)
        return np.zeros((len(ids), *SHAPE), np.float32)

    syn = core.draw_synthetic(gen, train, schema.REGIONS, min_total=30, seed=7)
    assert calls == [7] and len(syn) == 30 and np.bincount(syn.class_ids).tolist() == [10, 10, 10]
    assert set(syn.regions) == set(schema.REGIONS)


def test_faithful_synthetic_beats_collapsed_on_every_axis(outcomes):
    good, bad = outcomes

    g_fd, b_fd = good["fidelity"]["embeddings"]["domain"]["overall"], bad["fidelity"]["embeddings"]["domain"]["overall"]
    # Same generative process as the real data: within a small factor of the real-vs-real baseline.
    assert g_fd["fd_ratio"] < 3.0
    assert b_fd["fd_ratio"] > 2 * g_fd["fd_ratio"]
    assert bad["fidelity"]["pixel"]["overall"]["swd_ratio"] > good["fidelity"]["pixel"]["overall"]["swd_ratio"]
    # Collapsed set: low recall/coverage (variety not covered).
    assert b_fd["prdc"]["coverage"] < g_fd["prdc"]["coverage"]
    # The headline (and the gate's rule) is FD-VU, the fixed vu-encoder; it too tells the collapsed set apart.
    g_vu, b_vu = good["fidelity"]["embeddings"]["vu"]["overall"], bad["fidelity"]["embeddings"]["vu"]["overall"]
    assert good["fidelity"]["fid_ratio_embedding"] == "vu"
    assert g_vu["fd_ratio"] < 3.0 and b_vu["fd_ratio"] > 2 * g_vu["fd_ratio"]
    assert b_vu["prdc"]["coverage"] < g_vu["prdc"]["coverage"]
    assert good["fidelity"]["fid_ratio_encoder"]["name"] == "vu-encoder-v1"
    # The gate reads the fair ratio against HOLDOUT patients, with its patient-bootstrap interval.
    g_ho = good["fidelity"]["embeddings"]["vu"]["against_holdout"]["overall"]
    assert good["fidelity"]["fid_ratio"] == g_ho["fd_ratio"] and good["fidelity"]["fid_ratio_reference"] == "holdout"
    assert g_ho["fd_ratio_ci"][0] < g_ho["fd_ratio"] < g_ho["fd_ratio_ci"][1]
    # Both comparators have the same patients and units: pseudo-patients mirror the real comparator's.
    for o in (g_fd, g_ho):
        assert o["n"]["synthetic"] == o["n"]["real"] and o["n"]["synthetic_patients"] == o["n"]["real_patients"]
    # The network-free FRD sees the collapse too.
    g_frd, b_frd = (m["fidelity"]["embeddings"]["radiomics"]["against_holdout"]["overall"] for m in (good, bad))
    assert b_frd["fd_ratio"] > 2 * g_frd["fd_ratio"] and good["fidelity"]["frd_ratio"] == g_frd["fd_ratio"]
    # Inception was not configured: reported as skipped, never replaced.
    assert "inception" in good["fidelity"]["skipped"] and "inception" not in good["fidelity"]["embeddings"]

    assert not good["diversity"]["mode_collapse_warning"]
    assert bad["diversity"]["mode_collapse_warning"]
    assert bad["diversity"]["ms_ssim"]["synthetic"] > 0.9 > good["diversity"]["ms_ssim"]["synthetic"]

    u = good["utility"]
    assert u["trtr"]["balanced_accuracy"] > 0.8 and u["tstr"]["balanced_accuracy"] > 0.8
    assert u["tstr_balanced_accuracy"] == u["tstr"]["balanced_accuracy"]
    assert set(u["tstr"]["per_class_auc"]) == set(schema.REGIONS)
    assert u["reference_study"]["tstr"]["balanced_accuracy"] == 0.830
    # The class check (a real-trained classifier labels the synthetic units): discs of three radii are told apart
    # on real test units and on faithful synthetic ones, every synthetic unit scored.
    check = u["class_check"]
    assert check["real_test_accuracy"] > 0.9 and check["accuracy"] > 0.9 and check["generated"] == 90
    assert list(check["per_class"]) == list(schema.REGIONS)
    # Per-class numbers exist for every class, with their own baselines.
    for name in schema.REGIONS:
        pc = good["fidelity"]["embeddings"]["domain"]["per_class"][name]
        assert pc["fd_baseline"] > 0 and pc["n"]["synthetic"] == pc["n"]["real"] == 12


def test_matched_subsample_copies_holdout_class_counts():
    rng = np.random.default_rng(0)
    syn = np.repeat([0, 1, 2], [50, 50, 50])
    idx = core.matched_subsample(syn, np.array([0, 0, 2, 2, 2]), rng)
    assert np.bincount(syn[idx], minlength=3).tolist() == [2, 0, 3]
    assert len(np.unique(idx)) == len(idx)


def test_classifier_model_selection_never_sees_test_units(real):
    from vugan.components.evaluator.quality import utility

    train, _, _ = real
    rng = np.random.default_rng(0)
    tr, va = utility.validation_split(len(train), train.patients.astype(str), 0.2, rng)
    # Patient-disjoint validation slice, carved from the training source only.
    assert not set(train.patients[tr]) & set(train.patients[va])
    assert len(tr) + len(va) == len(train)
    s = dataclasses.replace(utility.ClassifierSettings(), epochs=2)
    clf = utility.train_classifier(train.images, train.class_ids, 3, s, seed=0, groups=train.patients.astype(str))
    assert clf.val_size == len(va) and clf.train_size == len(tr) and 1 <= clf.best_epoch <= 2
