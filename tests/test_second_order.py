"""Exact second derivatives through normalization layers, and clear failures.

References are closed forms and central finite differences of the float64
gradient (`zoo.gradient_function`), never the package's own Hessian.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_flat import callbacks
from keras_flat import hessian
from keras_flat.hessian import exact

import zoo

L = keras.layers


def _moments_hook():
    from keras.src.backend.tensorflow import nn

    return nn._compute_moments


def _float64_model(make_layers, inputs=4, loss=None):
    """A compiled Sequential model in float64; `make_layers()` builds its layers."""
    with zoo.float64():
        model = keras.Sequential([keras.Input((inputs,))] + make_layers())
        loss = loss or keras.losses.MeanSquaredError()
        model.compile(loss=loss)
    return model, [(None, loss, 1.0)]


def _data(n=16, inputs=4, outputs=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, inputs)), rng.normal(size=(n, outputs))


def _bias_shift(model, layer_name, mask=1.0):
    parts = [np.broadcast_to(mask, v.shape) if v.path.endswith(f"{layer_name}/bias")
             else np.zeros(v.shape) for v in model.trainable_variables]
    u = zoo.flatten(parts)
    return u / np.linalg.norm(u)


@pytest.mark.parametrize("method", hessian.HVP_METHODS)
def test_layernorm_hessian_vanishes_where_the_loss_is_flat(method):
    # Shifting every pre-LayerNorm bias equally leaves the output unchanged.
    init = keras.initializers.RandomNormal(stddev=0.5, seed=1)
    model, losses = _float64_model(lambda: [
        L.Dense(6, bias_initializer=init, name="pre"), L.LayerNormalization(),
        L.Dense(3, name="post")])
    x, y = _data()
    u = _bias_shift(model, "pre")
    grad = zoo.gradient_function(losses, model, x, y, training=False)
    w = zoo.weights_of(model)
    reference = zoo.finite_difference_hessian(grad, w)
    scale = np.abs(reference).max()
    assert np.abs(reference @ u).max() < 1e-8 * scale  # The direction is null.
    op = hessian.HessianOperator(model, (x, y), hvp_method=method)
    assert np.abs(op.matvec_flat(u).numpy()).max() < 1e-10 * scale
    full = hessian.exact_hessian(model, (x, y))
    np.testing.assert_allclose(full, reference, atol=1e-7 * scale)
    assert np.abs(full @ u).max() < 1e-10 * scale


@pytest.mark.parametrize("case", ["group_norm", "layer_norm_rms", "batch_norm_training"])
def test_normalization_hessians_match_finite_differences(case):
    init = keras.initializers.RandomNormal(stddev=0.5, seed=2)
    norm = {"group_norm": lambda: L.GroupNormalization(groups=2),
            "layer_norm_rms": lambda: L.LayerNormalization(rms_scaling=True),
            "batch_norm_training": L.BatchNormalization}[case]
    model, losses = _float64_model(lambda: [L.Dense(6, bias_initializer=init), norm(),
                                            L.Activation("tanh"), L.Dense(3)])
    training = case == "batch_norm_training"
    x, y = _data(seed=3)
    grad = zoo.gradient_function(losses, model, x, y, training=training)
    reference = zoo.finite_difference_hessian(grad, zoo.weights_of(model))
    got = hessian.exact_hessian(model, (x, y), training=training)
    np.testing.assert_allclose(got, reference, atol=1e-7 * np.abs(reference).max())


def test_the_context_makes_moments_exact_and_restores_keras():
    # d²var(x)/dx_i dx_j = 2(δ_ij - 1/n)/n; TensorFlow's moments give 2δ_ij/n.
    n = 5
    x = tf.constant(np.random.default_rng(0).normal(size=n))
    closed_form = 2 * (np.eye(n) - 1.0 / n) / n

    def hessian_of_variance():
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                _, variance = keras.ops.moments(x, axes=[0])
            g = inner.gradient(variance, x)
        return outer.jacobian(g, x).numpy()

    original = _moments_hook()
    np.testing.assert_allclose(hessian_of_variance(), 2 * np.eye(n) / n, atol=1e-12)
    with exact.exact_second_derivatives():
        with exact.exact_second_derivatives():  # Re-entrant.
            assert _moments_hook() is exact.exact_moments
        assert exact.is_active()
        np.testing.assert_allclose(hessian_of_variance(), closed_form, atol=1e-12)
    assert _moments_hook() is original and not exact.is_active()
    with pytest.raises(KeyError):  # Restored on error too.
        with exact.exact_second_derivatives():
            raise KeyError("boom")
    assert _moments_hook() is original and not exact.is_active()
    # Values and first derivatives are bit-for-bit those of TensorFlow's moments.
    y = tf.constant(np.random.default_rng(1).normal(size=(4, 6)), tf.float32)
    for axes in ([0], [1], [0, 1]):
        for keepdims in (False, True):
            expected = tf.nn.moments(y, axes, keepdims=keepdims)
            got = exact.exact_moments(y, axes, keepdims)
            for a, b in zip(got, expected):
                np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_measurements_leave_keras_as_they_found_it():
    model, _ = _float64_model(lambda: [L.Dense(4), L.LayerNormalization(), L.Dense(3)])
    original = _moments_hook()
    x, y = _data()
    hessian.hessian_trace(model, (x, y), num_probes=2)
    hessian.exact_hessian(model, (x, y))
    assert _moments_hook() is original and not exact.is_active()


def test_a_missing_keras_hook_fails_loudly_naming_the_keras_version(monkeypatch):
    from keras.src.backend.tensorflow import nn

    monkeypatch.delattr(nn, "_compute_moments")
    model, _ = _float64_model(lambda: [L.Dense(3)])
    with pytest.raises(RuntimeError, match=rf"Keras {keras.__version__} has no such hook"):
        hessian.hessian_trace(model, _data(), num_probes=2)


def test_tracing_outside_the_context_is_refused():
    model, _ = _float64_model(lambda: [L.Dense(3)])
    op = hessian.HessianOperator(model, _data())
    x, y = _data()
    with pytest.raises(RuntimeError, match="outside exact_second_derivatives"):
        op.batch_loss(tf.constant(x), tf.constant(y), None)


class _FirstOrderOnly(L.Layer):
    """x², with a gradient TensorFlow is told not to differentiate again."""

    def call(self, x):
        @tf.custom_gradient
        def square(x):
            def grad(dy):
                return dy * tf.raw_ops.PreventGradient(input=2 * x, message="first order only")
            return x * x, grad
        return square(x)


def _rounding():
    return L.Lambda(lambda t: tf.round(t), name="rounding")


def _numpy():
    return L.Lambda(lambda t: tf.ensure_shape(
        tf.numpy_function(lambda a: a, [t], t.dtype), t.shape), name="numpy_identity")


CULPRITS = {"rounding": _rounding, "numpy_identity": _numpy,
            "first_order_only": lambda: _FirstOrderOnly(name="first_order_only")}


@pytest.mark.parametrize("culprit, method", [
    ("rounding", "auto"), ("numpy_identity", "auto"), ("first_order_only", "auto"),
    ("rounding", "forward_over_backward"), ("first_order_only", "forward_over_backward"),
    ("rounding", "double_backward"), ("first_order_only", "double_backward")])
def test_a_model_that_cannot_be_differentiated_twice_names_the_layer(culprit, method):
    layer = CULPRITS[culprit]
    model, _ = _float64_model(lambda: [L.Dense(4, name="before"), layer(),
                                       L.Dense(3, name="after")])
    x, y = _data()
    with pytest.raises(hessian.NotTwiceDifferentiableError, match=rf"layer.*'{culprit}'"):
        hessian.hessian_trace(model, (x, y), num_probes=2, hvp_method=method)
    if method == "auto":
        with pytest.raises(hessian.NotTwiceDifferentiableError, match=culprit):
            hessian.exact_hessian(model, (x, y))
        top = callbacks.TopEigenvalue((x, y))
        top.set_model(model)
        with pytest.raises(hessian.NotTwiceDifferentiableError, match=culprit):
            top.on_epoch_end(0, {})


def test_an_explicit_method_that_fails_says_so_and_auto_uses_the_other():
    with zoo.float64():
        model = keras.Sequential([keras.Input((5, 2)), L.LSTM(3), L.Dense(3)])
        loss = keras.losses.MeanSquaredError()
        model.compile(loss=loss)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 5, 2)), rng.normal(size=(8, 3))
    v = rng.normal(size=sum(int(np.prod(w.shape)) for w in model.trainable_variables))
    with pytest.raises(ValueError, match=r"method='forward_over_backward' failed on model "
                                         r".*Try hvp_method='double_backward'"):
        hessian.hvp(model, (x, y), v, hvp_method="forward_over_backward")
    grad = zoo.gradient_function([(None, loss, 1.0)], model, x, y, training=False)
    reference = zoo.finite_difference_hvp(grad, zoo.weights_of(model), v)
    for method in ("auto", "double_backward"):
        got = hessian.hvp(model, (x, y), v, hvp_method=method)
        np.testing.assert_allclose(got, reference, atol=1e-7 * np.abs(reference).max())
    op = hessian.HessianOperator(model, (x, y))
    estimate = hessian.hessian_trace(op, num_probes=4)  # Default arguments work.
    assert np.isfinite(estimate.value)
    assert op.method == "double_backward" and "forward_over_backward" in op.failures
