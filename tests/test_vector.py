"""Whole-model vector operations against NumPy."""

import numpy as np
import pytest
import tensorflow as tf

from keras_flat.utils import vector


def _vec(seed, shapes=((3, 4), (4,), (2, 2, 2)), dtype="float32", scale=1.0):
    rng = np.random.default_rng(seed)
    return [tf.constant(scale * rng.normal(size=s), dtype) for s in shapes]


def _flat(v):
    return np.concatenate([np.asarray(t, np.float64).ravel() for t in v])


def test_dot_and_norm_match_numpy_over_the_whole_vector():
    a, b = _vec(0), _vec(1)
    np.testing.assert_allclose(float(vector.dot(a, b)), _flat(a) @ _flat(b), rtol=1e-5)
    np.testing.assert_allclose(float(vector.norm(a)), np.linalg.norm(_flat(a)), rtol=1e-6)
    # Not per tensor: the per-tensor norms differ from the whole-vector norm.
    assert abs(float(vector.norm(a)) - float(vector.norm(a[:1]))) > 1e-3


def test_project_out_is_orthogonal_and_keeps_the_rest():
    h, g = _vec(2), _vec(3)
    v = vector.project_out(h, g)
    fh, fg, fv = _flat(h), _flat(g), _flat(v)
    assert abs(fv @ fg) < 1e-5 * np.linalg.norm(fh) * np.linalg.norm(fg)
    expected = fh - (fh @ fg) / (fg @ fg) * fg
    np.testing.assert_allclose(fv, expected, rtol=1e-5, atol=1e-6)


def test_zero_vector_gives_identity_projection_and_zero_unit_without_nan():
    h = _vec(4)
    zero = [tf.zeros_like(t) for t in h]
    v = vector.project_out(h, zero)
    np.testing.assert_array_equal(_flat(v), _flat(h))
    direction, n = vector.unit(zero)
    assert float(n) == 0.0
    assert np.all(_flat(direction) == 0.0)
    assert float(vector.norm(zero)) == 0.0


@pytest.mark.parametrize("scale", [1e-42, 1e-30, 1e-20, 1e20, 1e30, 1e37])
def test_norm_and_unit_are_finite_at_extreme_magnitudes(scale):
    a = _vec(5, scale=scale)
    expected = np.linalg.norm(_flat(a))
    direction, value = vector.unit(a)
    assert np.all(np.isfinite(_flat(vector.project_out(a, a))))
    if scale < 1e-38:
        # TensorFlow flushes float32 denormals to zero on CPU: the vector is
        # then the zero vector, with zero norm and direction, and no NaN.
        assert float(value) in (0.0, pytest.approx(expected, rel=1e-2))
        assert np.all(np.isfinite(_flat(direction)))
        return
    np.testing.assert_allclose(float(vector.norm(a)), expected, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(_flat(direction)), 1.0, rtol=1e-5)


def test_float16_vectors_are_reduced_in_float32():
    # Squares of 300 overflow float16 (max 65504); the norm must not.
    a = [tf.constant(np.full((10,), 300.0), tf.float16)]
    np.testing.assert_allclose(float(vector.norm(a)), 300.0 * np.sqrt(10), rtol=1e-3)
    v = vector.project_out(a, a)
    assert v[0].dtype == tf.float16
    assert np.all(np.abs(np.asarray(v[0], np.float32)) < 1.0)


def test_sphere_samples_have_the_radius_and_depend_only_on_the_seed():
    like = _vec(6)
    seed = tf.constant([7, 3], tf.int64)
    u = vector.sphere_like(like, seed, radius=0.3)
    np.testing.assert_allclose(np.linalg.norm(_flat(u)), 0.3, rtol=1e-5)
    np.testing.assert_array_equal(_flat(u), _flat(vector.sphere_like(like, seed, 0.3)))
    other = vector.sphere_like(like, tf.constant([7, 4], tf.int64), 0.3)
    assert not np.allclose(_flat(u), _flat(other))


def test_sphere_samples_are_isotropic():
    like = [tf.zeros((3,)), tf.zeros((2,))]
    draw = tf.function(lambda seed: vector.flatten(vector.sphere_like(like, seed)))
    samples = np.stack([
        np.array(draw(tf.constant([1, i], tf.int64))) for i in range(4000)
    ])
    np.testing.assert_allclose(samples.mean(0), 0.0, atol=0.03)
    # E[u u^T] = I / d for the uniform distribution on the sphere.
    np.testing.assert_allclose(samples.T @ samples / len(samples), np.eye(5) / 5, atol=0.02)


def test_rademacher_and_random_sign():
    like = [tf.zeros((1000,))]
    z = _flat(vector.rademacher_like(like, tf.constant([0, 1], tf.int64)))
    assert set(np.unique(z)) == {-1.0, 1.0}
    assert abs(z.mean()) < 0.1
    sign = tf.function(vector.random_sign)
    signs = [float(sign(tf.constant([2, i], tf.int64))) for i in range(400)]
    assert set(signs) == {-1.0, 1.0}
    assert abs(np.mean(signs)) < 0.15


def test_flatten_roundtrip_and_all_finite():
    a = _vec(8)
    back = vector.unflatten(vector.flatten(a), a)
    for x, y in zip(a, back):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert bool(vector.all_finite(a))
    assert not bool(vector.all_finite(a + [tf.constant([np.nan])]))


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="same number of tensors"):
        vector.dot(_vec(0), _vec(0)[:1])


def test_ops_work_under_xla():
    a, b = _vec(9), _vec(10)

    @tf.function(jit_compile=True)
    def f(a, b):
        return vector.project_out(a, b), vector.norm(a)

    v, n = f(a, b)
    np.testing.assert_allclose(_flat(v), _flat(vector.project_out(a, b)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(n), np.linalg.norm(_flat(a)), rtol=1e-6)
