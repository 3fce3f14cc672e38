"""Repeated one-line measurements on a model trace their compiled functions once.

Traces are counted independently of the package: a pass-through layer counts
the Python executions of its `call`, which happen only while a function is
traced (every measurement runs compiled). Results on new data are checked
against closed forms of a linear least-squares model, whose Hessian is
`2 XᵀX / n`.
"""

import logging
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_flat import callbacks
from keras_flat import hessian
from keras_flat import landscape

INPUTS = 4


class Counting(keras.layers.Layer):
    """Identity layer counting how often its Python `call` runs (once per trace)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, x):
        self.calls += 1
        return x


def _linear(hidden=None):
    """`x -> Dense(1)` (or `Dense(hidden) -> Dense(1)`), bias-free, compiled with MSE."""
    layers = [keras.Input((INPUTS,)), Counting()]
    if hidden:
        layers.append(keras.layers.Dense(hidden, use_bias=False))
    layers.append(keras.layers.Dense(1, use_bias=False))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def _calls(model):
    return model.layers[0].calls


def _orthogonal_data(scales, n=32, seed=0):
    """`X = Q diag(scales)` with orthonormal columns Q, so `XᵀX = diag(scales²)`."""
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.normal(size=(n, INPUTS)))[0]
    x = (q * np.asarray(scales)).astype("float32")
    y = rng.normal(size=(n, 1)).astype("float32")
    return x, y


def _closed_form_hessian(x):
    x = np.asarray(x, np.float64)
    return 2.0 * x.T @ x / len(x)


@pytest.fixture
def retracing_warnings():
    """Messages TensorFlow logs about retracing a tf.function, while the test runs."""
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            if "retracing" in record.getMessage():
                messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    logger = tf.get_logger()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def _measure(kind, model, data, steps=1):
    """One one-line call of `kind` on `model` and `data`; returns a comparable array.

    Lanczos takes `steps` products: with 1, every call of a function that is
    retraced at each measurement is a trace, which TensorFlow warns about.
    """
    if kind == "hessian_trace":
        return np.array([hessian.hessian_trace(model, data, num_probes=2).value])
    if kind == "top_eigenvalues":
        return hessian.top_eigenvalues(model, data, num_eigenvalues=1, max_iterations=steps).values
    if kind == "spectral_density":
        return np.sort(hessian.spectral_density(model, data, num_probes=1, num_steps=steps,
                                                grid_size=8).nodes[0])
    if kind == "hvp":
        return hessian.hvp(model, data, tf.ones([INPUTS])).numpy()
    if kind == "exact_hessian":
        return hessian.exact_hessian(model, data)
    direction = np.linspace(-1.0, 1.0, INPUTS)[None, :]
    if kind == "surface_1d":
        return landscape.surface_1d(model, data, direction, resolution=3).loss
    if kind == "surface_2d":
        return landscape.surface_2d(model, data, np.eye(INPUTS)[:2], resolution=3).loss
    if kind == "interpolate":
        return landscape.interpolate(model, _linear(), data, resolution=3).loss
    raise ValueError(kind)


KINDS = ["hessian_trace", "top_eigenvalues", "spectral_density", "hvp", "exact_hessian",
         "surface_1d", "surface_2d", "interpolate"]


@pytest.mark.parametrize("kind", KINDS)
def test_repeated_calls_on_new_data_log_no_retracing_warning(kind, retracing_warnings):
    # TensorFlow warns at most twice per Python function and process, so this
    # catches a regression in a fresh process; the trace count below, always.
    model = _linear()
    for seed in range(6):
        _measure(kind, model, _orthogonal_data(np.arange(1, INPUTS + 1), seed=seed))
    assert retracing_warnings == []


@pytest.mark.parametrize("kind", KINDS)
def test_repeated_calls_on_new_data_trace_no_more(kind):
    model = _linear()
    _measure(kind, model, _orthogonal_data(np.arange(1, INPUTS + 1), seed=0))
    traced = _calls(model)
    assert traced > 0
    for seed in range(1, 4):
        _measure(kind, model, _orthogonal_data(np.arange(1, INPUTS + 1), seed=seed))
    assert _calls(model) == traced


def _closed_form(kind, model, data):
    x, y = data
    h = _closed_form_hessian(x)
    eigenvalues = np.linalg.eigvalsh(h)
    w = np.asarray(model.trainable_variables[0], np.float64).ravel()
    if kind == "hessian_trace":  # H is diagonal, so every Rademacher probe gives tr H.
        return np.array([np.trace(h)])
    if kind == "top_eigenvalues":
        return eigenvalues[-1:]
    if kind == "spectral_density":  # INPUTS Lanczos steps find every eigenvalue.
        return eigenvalues
    if kind == "hvp":
        return h @ np.ones(INPUTS)
    if kind == "exact_hessian":
        return h
    direction = np.linspace(-1.0, 1.0, INPUTS)
    if kind == "surface_1d":
        points = [w + a * direction for a in (-1.0, 0.0, 1.0)]
    elif kind == "surface_2d":
        points = [w + a * np.eye(INPUTS)[0] + b * np.eye(INPUTS)[1]
                  for b in (-1.0, 0.0, 1.0) for a in (-1.0, 0.0, 1.0)]
    else:
        return None
    loss = [np.mean((np.asarray(x, np.float64) @ p - y[:, 0]) ** 2) for p in points]
    return np.reshape(loss, (3, 3)) if kind == "surface_2d" else np.array(loss)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "interpolate"])
def test_a_reused_function_measures_the_new_data(kind):
    model = _linear()
    first = _orthogonal_data([1.0, 2.0, 3.0, 4.0], seed=0)
    second = _orthogonal_data([3.0, 0.5, 2.5, 1.5], seed=1)
    _measure(kind, model, first, steps=INPUTS)
    traced = _calls(model)
    got = _measure(kind, model, second, steps=INPUTS)
    assert _calls(model) == traced  # The function of the first call was reused.
    expected = _closed_form(kind, model, second)
    stale = _closed_form(kind, model, first)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-5 * np.abs(expected).max())
    assert np.abs(stale - expected).max() > 0.1 * np.abs(expected).max()


def test_interpolation_to_a_new_model_reuses_the_function_and_measures_it():
    model, data = _linear(), _orthogonal_data([1.0, 2.0, 3.0, 4.0])
    x, y = (np.asarray(t, np.float64) for t in data)
    w = np.asarray(model.trainable_variables[0], np.float64).ravel()
    landscape.interpolate(model, _linear(), data, resolution=3)
    traced = _calls(model)
    other = _linear()
    line = landscape.interpolate(model, other, data, alphas=[0.5, 1.0])
    assert _calls(model) == traced
    v = np.asarray(other.trainable_variables[0], np.float64).ravel()
    expected = [np.mean((x @ (w + a * (v - w)) - y[:, 0]) ** 2) for a in (0.5, 1.0)]
    np.testing.assert_allclose(line.loss, expected, rtol=1e-5)


def test_a_user_built_operator_shares_the_compiled_functions():
    model = _linear()
    data = _orthogonal_data([1.0, 2.0, 3.0, 4.0])
    first = hessian.HessianOperator(model, data)
    hessian.hessian_trace(first, num_probes=2)
    traced = _calls(model)
    second = hessian.HessianOperator(model, _orthogonal_data([2.0, 1.0, 1.0, 1.0], seed=3))
    estimate = hessian.hessian_trace(second, num_probes=2)
    assert _calls(model) == traced and second.method == first.method
    assert estimate.value == pytest.approx(2.0 * 7.0 / 32, rel=1e-5)
    assert first.tracing_count() == second.tracing_count() > 0


def test_freezing_a_layer_measures_the_new_trainable_set():
    model = _linear(hidden=3)
    x, y = _orthogonal_data([1.0, 2.0, 3.0, 4.0])
    full = hessian.hessian_trace(model, (x, y), num_probes=2)
    assert full.dimension == INPUTS * 3 + 3
    model.layers[1].trainable = False
    frozen = hessian.hessian_trace(model, (x, y), num_probes=9, estimator="hutch++")
    z = np.asarray(x, np.float64) @ np.asarray(model.layers[1].kernel, np.float64)
    assert frozen.dimension == 3
    # With the first layer fixed the model is linear in the second: H = 2 ZᵀZ / n.
    assert frozen.value == pytest.approx(np.trace(_closed_form_hessian(z)), rel=1e-4)
    assert hessian.exact_hessian(model, (x, y)).shape == (3, 3)
    model.layers[1].trainable = True
    again = hessian.hessian_trace(model, (x, y), num_probes=2)
    assert again.dimension == full.dimension and again.value == pytest.approx(full.value)


def test_recompiling_with_another_loss_is_not_served_a_stale_function():
    model = _linear()
    x, y = _orthogonal_data([1.0, 2.0, 3.0, 4.0])
    hessian.hessian_trace(model, (x, y), num_probes=2)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", loss_weights=[3.0])
    est = hessian.hessian_trace(model, (x, y), num_probes=2)
    assert est.value == pytest.approx(3.0 * np.trace(_closed_form_hessian(x)), rel=1e-5)


def test_a_model_compiled_with_a_lambda_is_measured_quietly_and_traced_once():
    model = _linear()
    model.compile(loss=lambda y, p: keras.ops.mean((y - p) ** 2))
    first, second = (_orthogonal_data(s, seed=i) for i, s in
                     enumerate(([1.0, 2.0, 3.0, 4.0], [4.0, 1.0, 1.0, 2.0])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # E.g. Keras's warning on serializing a lambda.
        hessian.hessian_trace(model, first, num_probes=2)
        traced = _calls(model)
        est = hessian.hessian_trace(model, second, num_probes=2)
    assert _calls(model) == traced
    assert est.value == pytest.approx(np.trace(_closed_form_hessian(second[0])), rel=1e-5)


def test_three_callbacks_in_one_fit_trace_each_function_once(retracing_warnings):
    model = _linear()
    x, y = _orthogonal_data([1.0, 2.0, 3.0, 4.0], n=64)
    probe = (x[:32], y[:32])
    counts = {"before": [], "after": []}

    class Count(keras.callbacks.Callback):
        def __init__(self, when):
            super().__init__()
            self.when = when

        def on_epoch_end(self, epoch, logs=None):
            counts[self.when].append(_calls(model))

    flatness = [
        callbacks.HessianTrace(probe, num_probes=4, batch_size=16),
        callbacks.TopEigenvalue(probe, max_iterations=4, batch_size=16),
        callbacks.HessianSpectrum(probe, num_probes=1, num_steps=4, batch_size=16),
    ]
    model.fit(x, y, batch_size=16, epochs=3, verbose=0,
              callbacks=[Count("before"), *flatness, Count("after")])
    assert retracing_warnings == []
    # Epoch 1 traces each function kind once, calling the model on each of the 2 batches:
    # the timing of both methods for "auto" (two products per batch: forward-over-backward
    # calls the model for each, double backward once for both), the Hutchinson loop and
    # the loop of products that Lanczos (of both callbacks) runs in.
    assert counts["after"][0] - counts["before"][0] == (2 + 1 + 1 + 1) * 2
    assert counts["before"][1:] == counts["after"][:-1] == counts["after"][1:]
    # The values are those of the final model: H = 2 XᵀX / n on the probe.
    reference = _closed_form_hessian(probe[0])
    assert flatness[1].last.values[0] == pytest.approx(np.linalg.eigvalsh(reference)[-1],
                                                       rel=1e-4)


def test_callbacks_measure_over_a_layer_frozen_during_training():
    model = _linear(hidden=3)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # Weights stay put.
    x, y = _orthogonal_data([1.0, 2.0, 3.0, 4.0])

    class Freeze(keras.callbacks.Callback):  # After the first epoch's measurements.
        def on_epoch_end(self, epoch, logs=None):
            model.layers[1].trainable = False

    trace = callbacks.HessianTrace((x, y), num_probes=9, estimator="hutch++", batch_size=32)
    top = callbacks.TopEigenvalue((x, y), max_iterations=3, batch_size=32)
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0,
                        callbacks=[trace, top, Freeze()]).history
    assert trace.last.dimension == 3 and top.last.vectors.shape == (1, 3)
    z = np.asarray(x, np.float64) @ np.asarray(model.layers[1].kernel, np.float64)
    reference = _closed_form_hessian(z)  # Over the last layer alone: H = 2 ZᵀZ / n.
    assert history["hessian_trace"][1] == pytest.approx(np.trace(reference), rel=1e-4)
    assert history["hessian_trace_normalized"][1] == pytest.approx(np.trace(reference) / 3,
                                                                   rel=1e-4)
    assert history["top_eigenvalue"][1] == pytest.approx(np.linalg.eigvalsh(reference)[-1],
                                                         rel=1e-4)
