"""Property-based tests of the whole-vector operations (hypothesis)."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_flat.utils import vector

DTYPES = {"float16": tf.float16, "bfloat16": tf.bfloat16, "float32": tf.float32}
# Largest magnitude whose square sums stay meaningful for each dtype's range.
LIMITS = {"float16": 6e4, "bfloat16": 1e38, "float32": 1e38}
EPS = {"float16": 1e-2, "bfloat16": 4e-2, "float32": 1e-5}

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3)


@st.composite
def vectors(draw, dtype_name, min_tensors=1):
    limit = LIMITS[dtype_name]
    exponent = draw(st.integers(-30 if dtype_name != "float16" else -6, int(np.log10(limit)) - 1))
    scale = 10.0 ** exponent
    tensors = []
    for _ in range(draw(st.integers(min_tensors, 4))):
        shape = draw(st.lists(st.integers(1, 5), min_size=0, max_size=2))
        size = int(np.prod(shape)) if shape else 1
        values = draw(st.lists(
            st.one_of(st.just(0.0), st.floats(-1.0, 1.0, allow_nan=False, width=32)),
            min_size=size, max_size=size))
        array = (np.array(values, np.float64) * scale).reshape(shape)
        tensors.append(tf.constant(array.astype(np.float32), dtype=DTYPES[dtype_name]))
    return tensors


def _flat(tensors):
    return np.concatenate([np.asarray(tf.cast(t, tf.float64)).ravel() for t in tensors])


def _finite(tensors):
    return np.all(np.isfinite(_flat(tensors)))


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_projection_is_orthogonal_and_finite(dtype):
    @settings(max_examples=60, deadline=None)
    @given(st.data())
    def check(data):
        g = data.draw(vectors(dtype))
        h = _like(data, g, dtype)
        v = vector.project_out(h, g)
        assert _finite(v)
        fg, fv, fh = _flat(g), _flat(v), _flat(h)
        if np.linalg.norm(fg) == 0:
            np.testing.assert_array_equal(fv, fh)  # Identity for a zero direction.
            return
        direction = fg / np.linalg.norm(fg)
        assert abs(fv @ direction) <= EPS[dtype] * max(np.linalg.norm(fh), 1e-300) * 4

    check()


def _like(data, g, dtype):
    """A random vector with the same shapes as `g` and its own scale."""
    exponent = data.draw(st.integers(-6, 3))
    out = []
    for t in g:
        size = int(np.prod(t.shape)) if t.shape.rank else 1
        values = data.draw(st.lists(st.floats(-1.0, 1.0, width=32), min_size=size, max_size=size))
        out.append(tf.constant((np.array(values) * 10.0 ** exponent).reshape(t.shape).astype(np.float32),
                               dtype=DTYPES[dtype]))
    return out


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_norm_and_unit_vector_handle_any_magnitude(dtype):
    @settings(max_examples=80, deadline=None)
    @given(st.data())
    def check(data):
        t = data.draw(vectors(dtype))
        direction, value = vector.unit(t)
        expected = np.linalg.norm(_flat(t))
        assert np.isfinite(float(value)) and _finite(direction)
        if expected == 0:
            assert float(value) == 0.0 and np.all(_flat(direction) == 0)
            return
        assert float(value) == pytest.approx(expected, rel=1e-5)
        assert np.linalg.norm(_flat(direction)) == pytest.approx(1.0, rel=EPS[dtype] * 2)
        assert float(vector.norm(t)) == pytest.approx(expected, rel=1e-5)

    check()


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_sphere_samples_have_unit_norm(dtype):
    @settings(max_examples=40, deadline=None)
    @given(st.data(), st.integers(0, 2**31 - 1), st.floats(1e-3, 1e3))
    def check(data, seed, radius):
        like = data.draw(vectors(dtype))
        u = vector.sphere_like(like, tf.constant([seed, 7], tf.int64), radius)
        assert [x.dtype for x in u] == [x.dtype for x in like]
        assert np.linalg.norm(_flat(u)) == pytest.approx(radius, rel=EPS[dtype] * 2)

    check()


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_sphere_samples_have_zero_mean_and_isotropic_second_moment(seed):
    like = [tf.zeros((3,)), tf.zeros((1,))]
    draw = tf.function(lambda s: vector.flatten(vector.sphere_like(like, s)))
    samples = np.stack([np.array(draw(tf.constant([seed, i], tf.int64))) for i in range(2000)])
    np.testing.assert_allclose(samples.mean(0), 0.0, atol=0.06)
    np.testing.assert_allclose(samples.T @ samples / len(samples), np.eye(4) / 4, atol=0.03)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_random_sign_is_symmetric(seed):
    sign = tf.function(vector.random_sign)
    signs = np.array([float(sign(tf.constant([seed, i], tf.int64))) for i in range(1000)])
    assert set(signs) <= {-1.0, 1.0}
    assert abs(signs.mean()) < 0.12  # > 3.5 standard deviations for a fair coin.
