"""Flatness callbacks write their measurements into the epoch logs."""

import csv
import os

import keras
import numpy as np
import pytest

import keras_flat
from keras_flat import callbacks
from keras_flat import hessian

import zoo
from helpers import mlp
from helpers import regression_data


def _model(wrapped, jit):
    inner = mlp(batchnorm=True)
    model = keras_flat.FlatMinimaModel(inner, "sa", rho=0.05, seed=0) if wrapped else inner
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse", jit_compile=jit)
    return model


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("wrapped", [True, False], ids=["flat_minima_model", "keras_model"])
def test_keys_reach_history_and_match_a_direct_measurement(wrapped, jit):
    x, y = regression_data(n=96)
    probe = (x[:64], y[:64])
    trace = callbacks.HessianTrace(probe, num_probes=8, batch_size=32)
    top = callbacks.TopEigenvalue(probe, num_eigenvalues=2, batch_size=32, rtol=1e-5, max_iterations=80)
    model = _model(wrapped, jit)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[trace, top])
    logged = history.history
    for key in ("hessian_trace", "hessian_trace_stderr", "hessian_trace_normalized",
                "top_eigenvalue", "top_eigenvalue_2"):
        assert len(logged[key]) == 2 and np.all(np.isfinite(logged[key])), key
    # The logged values are the trace and eigenvalues of the final model.
    op = hessian.HessianOperator(model, [(x[:32], y[:32]), (x[32:64], y[32:64])])
    direct = hessian.hessian_trace(op, num_probes=8, seed=0)
    assert logged["hessian_trace"][-1] == pytest.approx(direct.value, rel=1e-5)
    assert logged["hessian_trace_stderr"][-1] == pytest.approx(direct.stderr, rel=1e-5)
    # Independent reference: finite differences of a float64 twin's gradient.
    twin = zoo.float64_twin(model.inner if wrapped else model)
    with zoo.float64():
        losses = [(None, keras.losses.MeanSquaredError(), 1.0)]
    grad = zoo.gradient_function(losses, twin, *probe, training=False)
    reference = zoo.finite_difference_hessian(grad, zoo.weights_of(twin))
    assert abs(logged["hessian_trace"][-1] - np.trace(reference)) <= 3 * logged[
        "hessian_trace_stderr"][-1]
    eigenvalues = np.linalg.eigvalsh(reference)[::-1]
    np.testing.assert_allclose([logged["top_eigenvalue"][-1], logged["top_eigenvalue_2"][-1]],
                               eigenvalues[:2], rtol=1e-3)
    assert logged["hessian_trace_normalized"][-1] == pytest.approx(
        logged["hessian_trace"][-1] / op.dimension)


def test_every_n_epochs_logs_nan_in_between_and_csv_logger_sees_the_keys(tmp_path):
    x, y = regression_data(n=64)
    path = os.path.join(tmp_path, "log.csv")
    trace = callbacks.HessianTrace((x, y), num_probes=4, every_n_epochs=2)
    model = _model(True, False)
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0,
                        callbacks=[trace, keras.callbacks.CSVLogger(path)])
    values = history.history["hessian_trace"]
    assert np.isnan(values[0]) and np.isnan(values[2])
    assert np.isfinite(values[1]) and np.isfinite(values[3])
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert float(rows[3]["hessian_trace"]) == pytest.approx(values[3], rel=1e-5)
    assert [h["epoch"] for h in trace.history] == [0, 1, 2, 3]


def test_warm_started_callback_uses_fewer_products_later():
    x, y = regression_data(n=64)
    top = callbacks.TopEigenvalue((x, y), num_eigenvalues=1, rtol=1e-4, max_iterations=100)
    model = _model(True, False)
    model.compile(optimizer=keras.optimizers.SGD(1e-4), loss="mse")
    iterations = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            iterations.append(top.last.iterations)

    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[top, Record()])
    assert iterations[-1] < iterations[0]


def test_callback_arguments_are_validated_at_construction():
    x, y = regression_data(n=16)
    with pytest.raises(ValueError, match=r"`num_probes`.*0"):
        callbacks.HessianTrace((x, y), num_probes=0)
    with pytest.raises(ValueError, match=r"`every_n_epochs`.*0"):
        callbacks.HessianTrace((x, y), every_n_epochs=0)
    with pytest.raises(ValueError, match=r"`estimator`.*'exact'"):
        callbacks.HessianTrace((x, y), estimator="exact")
    with pytest.raises(ValueError, match=r"`num_eigenvalues`.*0"):
        callbacks.TopEigenvalue((x, y), num_eigenvalues=0)
    with pytest.raises(ValueError, match=r"`data` is empty"):
        callbacks.TopEigenvalue((x[:0], y[:0]))
    with pytest.raises(ValueError, match=r"`hvp_method`.*'fd'"):
        callbacks.TopEigenvalue((x, y), hvp_method="fd")
