"""MS-SSIM diversity: pairs are cross-patient for real units, so a patient's near-identical neighbours cannot
raise the real value and hide a collapsed generator."""
import numpy as np

from vugan.components.evaluator.quality import diversity

SETTINGS = diversity.MsSsimSettings(scales=2, filter_size=5, pairs_per_class=300)


def test_sample_pairs_with_groups_never_pairs_one_group():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), 5)  # 6 patients of 5 units
    i, j = diversity.sample_pairs(len(groups), 40, rng, groups)
    assert len(i) == 40
    assert np.all(groups[i] != groups[j]) and np.all(i != j)
    # the large-set path (rejection sampling) keeps the same rule
    big = np.repeat(np.arange(50), 40)
    i, j = diversity.sample_pairs(len(big), 100, rng, big)
    assert len(i) == 100 and np.all(big[i] != big[j])
    # one patient only: no cross-patient pair exists
    i, j = diversity.sample_pairs(5, 10, rng, np.zeros(5, int))
    assert len(i) == 0


def test_cross_patient_pairs_lower_real_ms_ssim_when_patients_repeat_themselves():
    rng = np.random.default_rng(1)
    base = rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)  # 8 patients, each one look
    units = np.repeat(base, 6, axis=0) + rng.normal(0, 0.02, (48, 32, 32, 3)).astype(np.float32)
    patients = np.repeat(np.arange(8), 6)
    labels = np.zeros(48, int)
    any_pairs = diversity.mean_pairwise_ms_ssim(units, labels, SETTINGS, 0)[0]
    cross = diversity.mean_pairwise_ms_ssim(units, labels, SETTINGS, 0, groups=patients)[0]
    same_only = float(diversity.ms_ssim_pairs(units[0:5], units[1:6], SETTINGS).mean())
    assert same_only > 0.9  # neighbours of one patient are near copies
    # about 11% of all pairs are same-patient (8 x 15 of 1,128), each near 1: they add about 0.1
    assert cross < 0.05 and any_pairs - cross > 0.07
    report = diversity.diversity_report(units, labels, units, labels, ("a",), SETTINGS, 0.05, 0,
                                        real_patients=patients)
    assert report["real_pairs"] == "cross-patient only"
    assert abs(report["ms_ssim"]["real"] - cross) < 1e-6
