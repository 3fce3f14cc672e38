"""`loss=` takes what `compile` takes: names, Loss objects, configs, callables.

References are closed forms: for `mean((Xw - y)²)` the Hessian is
`2 XᵀX / n`, and for softmax regression with cross-entropy it is
`mean_i (x_i x_iᵀ) ⊗ (diag(p_i) - p_i p_iᵀ)`.
"""

import keras
import numpy as np
import pytest

from keras_flat import callbacks
from keras_flat import hessian
from keras_flat import landscape


def _linear(outputs=1, activation=None):
    return keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(outputs, use_bias=False, activation=activation,
                           kernel_initializer=keras.initializers.RandomNormal(seed=0)),
    ])


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    return x, y


def _mse_hessian(x, sample_weight=None):
    x = np.asarray(x, np.float64)
    sw = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    return 2.0 * x.T @ (sw[:, None] * x) / len(x)


@pytest.mark.parametrize("loss", [
    "mse", "mean_squared_error", "MeanSquaredError", keras.losses.MeanSquaredError(),
    {"class_name": "MeanSquaredError", "config": {}},
], ids=["mse", "function_name", "class_name", "instance", "config"])
def test_mean_squared_error_by_any_name_has_the_closed_form_hessian(loss):
    model = _linear()  # Not compiled: the loss comes from `loss=` alone.
    x, y = _data()
    expected = _mse_hessian(x)
    np.testing.assert_allclose(hessian.exact_hessian(model, (x, y), loss=loss), expected,
                               rtol=1e-5, atol=1e-6)
    # Hutch++ with 3d products sketches the whole space: the trace is exact.
    est = hessian.hessian_trace(model, (x, y), num_probes=12, estimator="hutch++", loss=loss)
    assert est.value == pytest.approx(np.trace(expected), rel=1e-5)


def test_a_loss_name_weights_examples_like_compile():
    x, y = _data()
    sw = np.linspace(0.0, 2.0, len(x)).astype("float32")
    got = hessian.exact_hessian(_linear(), (x, y, sw), loss="mse")
    np.testing.assert_allclose(got, _mse_hessian(x, sw), rtol=1e-5, atol=1e-6)


def test_sparse_categorical_crossentropy_by_name_has_the_softmax_regression_hessian():
    model = _linear(outputs=3, activation="softmax")
    x, _ = _data()
    labels = np.random.default_rng(1).integers(0, 3, size=len(x))
    got = hessian.exact_hessian(model, (x, labels), loss="sparse_categorical_crossentropy")
    logits = np.asarray(x, np.float64) @ np.asarray(model.layers[0].kernel, np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = np.mean([np.kron(np.outer(xi, xi), np.diag(pi) - np.outer(pi, pi))
                        for xi, pi in zip(np.asarray(x, np.float64), p)], axis=0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_a_callback_measures_the_named_loss_instead_of_the_compiled_one():
    model = _linear()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mae")  # Weights stay put.
    x, y = _data()
    trace = callbacks.HessianTrace((x, y), loss="mse", estimator="hutch++", num_probes=12,
                                   batch_size=32)
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[trace])
    expected = np.trace(_mse_hessian(x))  # MAE's Hessian would be zero almost everywhere.
    assert history.history["hessian_trace"][0] == pytest.approx(expected, rel=1e-5)


def test_landscape_functions_take_a_loss_name():
    model = _linear()
    x, y = _data()
    w = np.asarray(model.layers[0].kernel, np.float64).ravel()
    d = np.array([1.0, -1.0, 0.5, 0.0])
    line = landscape.surface_1d(model, (x, y), d[None, :], resolution=3, loss="mse")
    expected = [np.mean((np.asarray(x, np.float64) @ (w + a * d) - y[:, 0]) ** 2)
                for a in (-1.0, 0.0, 1.0)]
    np.testing.assert_allclose(line.loss, expected, rtol=1e-5)
    other = _linear()
    other.layers[0].kernel.assign(np.zeros((4, 1)))
    ends = landscape.interpolate(model, other, (x, y), alphas=[1.0], loss="mean_squared_error")
    assert ends.loss[0] == pytest.approx(np.mean(y.astype(np.float64) ** 2), rel=1e-5)


def test_an_unknown_loss_is_named_with_what_is_allowed():
    model = _linear()
    x, y = _data()
    allowed = r"a loss name \(e\.g\. 'mse'.*keras\.losses\.Loss.*callable"
    with pytest.raises(ValueError, match=r"`loss`.*'nope'") as info:
        hessian.hessian_trace(model, (x, y), loss="nope")
    assert info.match(allowed)
    with pytest.raises(TypeError, match=r"`loss` must be a loss name.*Received: loss=3 of type int"):
        hessian.HessianOperator(model, (x, y), loss=3)
    with pytest.raises(ValueError, match=r"`loss`.*'nope'"):
        callbacks.TopEigenvalue((x, y), loss="nope")  # At construction, before fit.
    with pytest.raises(ValueError, match=r"`loss`.*'nope'"):
        landscape.surface_1d(model, (x, y), np.ones((1, 4)), loss="nope")
