"""`interval`: perturb only on every k-th step, plain steps in between."""

import keras
import numpy as np
import pytest

import keras_flat
from keras_flat import algorithms

from helpers import NumpyMLP
from helpers import flat_norm
from helpers import mlp
from helpers import regression_data

LR = 0.1


class _RecordWeights(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = [[np.array(v, np.float64) for v in self.model.inner.trainable_variables]]

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append([np.array(v, np.float64) for v in self.model.inner.trainable_variables])


def _fit(algorithm, steps, jit=False):
    """`steps` SGD steps on the same full batch; returns (per-step weights, logs)."""
    x, y = regression_data(n=16)
    model = keras_flat.FlatMinimaModel(mlp(), algorithm, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse", jit_compile=jit)
    record = _RecordWeights()
    xs, ys = np.concatenate([x] * steps), np.concatenate([y] * steps)
    history = model.fit(xs, ys, batch_size=len(x), epochs=1, shuffle=False, verbose=0,
                        callbacks=[record])
    return record.weights, history.history, (x, y)


def _sam_step(w, x, y, rho):
    ref = NumpyMLP()
    g = ref.grad(w, x, y)
    eps = [rho * t / flat_norm(g) for t in g]
    return [a - LR * t for a, t in zip(w, ref.grad([a + e for a, e in zip(w, eps)], x, y))]


def _plain_step(w, x, y):
    return [a - LR * t for a, t in zip(w, NumpyMLP().grad(w, x, y))]


@pytest.mark.parametrize("jit", [False, True])
def test_sam_every_second_step_alternates_sam_and_plain_steps(jit):
    rho = 0.3
    weights, logs, (x, y) = _fit(algorithms.SAM(rho=rho, interval=2), steps=4, jit=jit)
    expected = weights[0]
    for step in range(4):
        expected = _sam_step(expected, x, y, rho) if step % 2 == 0 else _plain_step(expected, x, y)
        for a, e in zip(weights[step + 1], expected):
            np.testing.assert_allclose(a, e, atol=1e-5, rtol=1e-5)
    assert logs["perturbed"] == [pytest.approx(0.5)]
    # The SAM steps are not plain steps, so the schedule is visible in the weights.
    plain = _plain_step(weights[0], x, y)
    assert flat_norm([a - b for a, b in zip(weights[1], plain)]) > 1e-4


def test_random_smoothing_perturbs_on_schedule_only():
    weights, logs, (x, y) = _fit(algorithms.RandomSmoothing(rho=0.5, interval=3), steps=6)
    for step in range(6):
        plain = _plain_step(weights[step], x, y)
        gap = flat_norm([a - b for a, b in zip(weights[step + 1], plain)])
        if step % 3 == 0:
            assert gap > 1e-4, step  # A perturbed step.
        else:
            assert gap < 1e-5, step  # A plain step.
    assert logs["perturbed"] == [pytest.approx(2 / 6)]


@pytest.mark.parametrize("tolerance, fraction", [(1e9, 0.5), (0.0, 0.0)])
def test_interval_and_tolerance_must_both_allow_a_perturbation(tolerance, fraction):
    algorithm = algorithms.SharpnessAware(rho=0.1, tolerance=tolerance, interval=2)
    _, logs, _ = _fit(algorithm, steps=4)
    assert logs["perturbed"] == [pytest.approx(fraction)]


def test_the_schedule_survives_save_and_load(tmp_path):
    x, y = regression_data(n=16)
    model = keras_flat.FlatMinimaModel(mlp(), algorithms.SAM(rho=0.2, interval=3), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)  # Steps 0 and 1.
    path = str(tmp_path / "every3.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.algorithm.interval == 3
    history = restored.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0).history
    assert history["perturbed"] == [0.0, 1.0, 0.0, 0.0]  # Steps 2, 3, 4, 5.
