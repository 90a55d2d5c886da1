"""The identity-keeping transforms (components/evaluator/privacy/identity_transforms.py), against hand-worked arrays."""
import numpy as np
import pytest

from vugan.components.evaluator.privacy import identity_transforms as T


def _unit():
    # one unit, 3x4 plane, 2 slices: slice 0 holds 0..11 / 10, slice 1 its negative
    plane = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    return np.stack([plane, -plane], -1)[None]


def test_a_shift_moves_the_plane_and_repeats_the_border():
    x = _unit()
    down = T.shifted(x, 1, 0)
    np.testing.assert_allclose(down[0, :, :, 0], [[0, .1, .2, .3], [0, .1, .2, .3], [.4, .5, .6, .7]])
    right = T.shifted(x, 0, -1)  # one column to the left
    np.testing.assert_allclose(right[0, 0, :, 0], [.1, .2, .3, .3])
    np.testing.assert_allclose(right[..., 1], -right[..., 0])  # every slice moves alike
    with pytest.raises(ValueError, match="not smaller than the plane"):
        T.shifted(x, 3, 0)


def test_reversal_and_flips_are_their_own_inverse_and_move_what_they_say():
    x = _unit()
    np.testing.assert_array_equal(T.slices_reversed(x)[..., 0], x[..., 1])
    np.testing.assert_array_equal(T.flipped(x, "rows")[0, 0, :, 0], x[0, 2, :, 0])
    np.testing.assert_array_equal(T.flipped(x, "cols")[0, :, 0, 0], x[0, :, 3, 0])
    for f in (T.slices_reversed, lambda a: T.flipped(a, "rows"), lambda a: T.flipped(a, "cols")):
        np.testing.assert_array_equal(f(f(x)), x)
    with pytest.raises(ValueError):
        T.flipped(x, "slices")


def test_remaps_keep_the_order_of_intensities_and_the_range():
    x = np.linspace(-1, 1, 9, dtype=np.float32)[None, None, None, :]
    lin = T.remapped(x, gain=0.7, offset=0.15)
    np.testing.assert_allclose(lin[0, 0, 0, [0, 4, 8]], [-0.55, 0.15, 0.85], atol=1e-6)
    gam = T.remapped(x, gamma=2.0)  # ((x + 1) / 2) ** 2 * 2 - 1: -1 -> -1, 0 -> -0.5, 1 -> 1
    np.testing.assert_allclose(gam[0, 0, 0, [0, 4, 8]], [-1.0, -0.5, 1.0], atol=1e-6)
    for y in (lin, gam, T.remapped(x, gain=3.0)):
        assert np.all(np.diff(y.ravel()) >= 0) and y.min() >= -1 and y.max() <= 1
    with pytest.raises(ValueError, match="monotone"):
        T.remapped(x, gain=-1.0)


def test_a_pasted_centre_slice_is_the_sources_and_the_rest_the_targets():
    a, b = _unit(), np.zeros((1, 3, 4, 3), np.float32)
    src = np.stack([a[..., 0], a[..., 1], a[..., 0]], -1)
    out = T.centre_slice_pasted(src, b)
    np.testing.assert_array_equal(out[..., 1], src[..., 1])
    assert not out[..., 0].any() and not out[..., 2].any() and not b.any()
    with pytest.raises(ValueError, match="differ in shape"):
        T.centre_slice_pasted(a, b)


def test_every_copy_disguise_changes_the_unit_but_keeps_its_shape():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    for name, disguise in T.COPY_DISGUISES.items():
        y = disguise(x)
        assert y.shape == x.shape and y.dtype == np.float32, name
        assert not np.allclose(y, x), name
