"""The class check (components/evaluator/quality/class_check.py) on units built so the answer is known: each class is
bright in its own corner, so a classifier fitted on real units names correct synthetic units (1.0), swapped ones
never (0.0), half-swapped ones half the time; a class the train split lacks is None, a class with no synthetic unit
is left out. Also: block means by hand, the utility block and report row that carry it."""
from __future__ import annotations

import numpy as np
import pytest

from vugan.components import schema
from vugan.components.evaluator.quality.class_check import CLASSIFIER, block_means, class_check
from vugan.components.evaluator.results import UtilityResult

NAMES = schema.REGIONS  # cervical, thoracic, lumbar
CORNERS = ((slice(0, 4), slice(0, 4)), (slice(0, 4), slice(12, 16)), (slice(12, 16), slice(0, 4)))


def units(looks: list[int], labels: list[int] | None = None, seed: int = 0, shape=(16, 16, 2)) -> schema.UnitArrays:
    """One unit per entry of ``looks``: noise, plus +1 in the corner of the class it looks like; labelled
    ``labels`` (default: what it looks like)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 0.1, (len(looks), *shape)).astype(np.float32)
    for i, c in enumerate(looks):
        images[(i, *CORNERS[c])] += 1.0
    ids = np.array(looks if labels is None else labels, np.int32)
    names = np.array([NAMES[c] for c in ids], object)
    return schema.UnitArrays(images=images, class_ids=ids, regions=names, level_names=names,
                             patients=np.array([f"p{i}" for i in range(len(ids))], object))


def each(n: int, classes=(0, 1, 2)) -> list[int]:
    return [c for c in classes for _ in range(n)]


@pytest.fixture(scope="module")
def real():
    return units(each(10), seed=1), units(each(4), seed=2)


def test_block_means_by_hand():
    # One unit, 4x4, two slices; 2x2 cells: each cell is the mean of a 2x2 block, per slice, in (row, col, slice)
    # order.
    first = np.array([[0, 2, 4, 4], [2, 0, 4, 4], [1, 1, 8, 0], [1, 1, 0, 8]], np.float32)
    images = np.stack([first, -first], axis=-1)[None]
    got = block_means(images, cells=2)
    assert got.shape == (1, 8)
    np.testing.assert_allclose(got[0], [1, -1, 4, -4, 1, -1, 4, -4])
    # One cell per pixel: the pixels themselves.
    np.testing.assert_allclose(block_means(images, cells=4), images.reshape(1, -1))
    with pytest.raises(ValueError, match="3x3 equal blocks"):
        block_means(images, cells=3)


def test_correct_synthetic_units_score_one_and_the_real_ceiling_is_one(real):
    train, test = real
    got = class_check(train, test, units(each(5), seed=3), NAMES)
    assert got == {"accuracy": 1.0, "per_class": {"cervical": 1.0, "thoracic": 1.0, "lumbar": 1.0},
                   "real_test_accuracy": 1.0, "generated": 15, "classifier": CLASSIFIER}
    # Deterministic: the same units give the same numbers.
    assert class_check(train, test, units(each(5), seed=3), NAMES) == got


def test_swapped_labels_score_zero_and_half_swapped_score_half(real):
    train, test = real
    looks = each(4)
    swapped = class_check(train, test, units(looks, [(c + 1) % 3 for c in looks], seed=4), NAMES)
    assert swapped["accuracy"] == 0.0 and set(swapped["per_class"].values()) == {0.0}
    assert swapped["real_test_accuracy"] == 1.0  # the ceiling does not depend on the synthetic set
    # Cervical all right (4 units); thoracic: 2 look thoracic, 2 look lumbar (4 units); no lumbar unit: left out.
    half = class_check(train, test, units([0, 0, 0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1, 1, 1], seed=5), NAMES)
    assert half["per_class"] == {"cervical": 1.0, "thoracic": 0.5}
    assert half["accuracy"] == 6 / 8 and half["generated"] == 8


def test_a_class_missing_from_train_is_none_not_zero(real):
    _, test = real
    train = units(each(10, classes=(0, 1)), seed=6)
    got = class_check(train, test, units(each(3), seed=7), NAMES)
    # The classifier cannot name lumbar: unknown, and its units are not counted as wrong.
    assert got["per_class"] == {"cervical": 1.0, "thoracic": 1.0, "lumbar": None}
    assert got["accuracy"] == 1.0 and got["generated"] == 6
    # classes_present narrows what is scored (e.g. the non-zero prior).
    only = class_check(train, test, units(each(3), seed=7), NAMES, classes_present=[1])
    assert only["per_class"] == {"thoracic": 1.0} and only["generated"] == 3


def test_no_classifier_says_why(real):
    _, test = real
    one_class = class_check(units(each(5, classes=(0,)), seed=8), test, units(each(2), seed=9), NAMES)
    assert one_class["accuracy"] is None and one_class["real_test_accuracy"] is None
    assert one_class["per_class"] == {"cervical": None, "thoracic": None, "lumbar": None}
    assert "fewer than two classes" in one_class["missing"]
    odd = class_check(units(each(3), shape=(24, 24, 1)), units(each(1), shape=(24, 24, 1)),
                      units(each(1), shape=(24, 24, 1)), NAMES)
    assert odd["accuracy"] is None and "24x24" in odd["missing"]


def _utility(**extra) -> UtilityResult:
    return UtilityResult(target="region", classes=list(NAMES), trtr={}, tstr={}, model_selection="", reference_study={},
                         tstr_balanced_accuracy=0.5, trtr_balanced_accuracy=0.6, learning_curve=[],
                         tstr_equal_size=None, tstr_equal_size_balanced_accuracy=None, **extra)


def test_utility_block_carries_it_last_and_only_when_set(real):
    check = class_check(*real, units(each(2), seed=10), NAMES)
    with_check = _utility(class_check=check).to_dict()
    assert list(with_check)[-1] == "class_check" and with_check["class_check"] == check
    assert UtilityResult.from_dict(with_check).class_check == check
    # A metrics.json written before the check reads back and writes out without it (no null key appears).
    before = _utility().to_dict()
    assert "class_check" not in before and UtilityResult.from_dict(before).to_dict() == before


def test_report_row_shows_score_per_class_and_ceiling():
    from vugan.components.evaluator.report.sections import class_check_table

    html = class_check_table({"accuracy": 0.75, "per_class": {"cervical": 1.0, "thoracic": 0.5, "lumbar": None},
                              "real_test_accuracy": 0.967, "generated": 8, "classifier": CLASSIFIER})
    assert html.count("<tr>") == 2  # header and one row
    assert "0.750" in html and "0.967" in html and "cervical 1.00 / thoracic 0.50 / lumbar n/a" in html
