"""A skipped non-finite step changes nothing, and copies no weight or slot to get there."""

import keras
import numpy as np
import pytest

import keras_flat
from keras_flat.backend.tensorflow import guard

from helpers import mlp
from helpers import regression_data


def _state(model):
    return [np.array(v) for v in model.weights + model.optimizer.variables]


def _model(optimizer, jit=False, algorithm="sam"):
    inner = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(6, activation="tanh"),
        keras.layers.BatchNormalization(), keras.layers.Dropout(0.2), keras.layers.Dense(2)])
    model = keras_flat.FlatMinimaModel(inner, algorithm, rho=0.1, seed=0)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit)
    return model


@pytest.mark.parametrize("optimizer, jit", [
    (lambda: keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.5), False),
    (lambda: keras.optimizers.SGD(0.1, momentum=0.9, gradient_accumulation_steps=2), False),
    (lambda: keras.optimizers.Adam(0.01), True),
], ids=["adam-ema", "sgd-accumulation", "adam-xla"])
def test_a_skipped_step_leaves_weights_slots_iterations_and_statistics_bit_identical(
        optimizer, jit, monkeypatch):
    protected = []
    original = guard.StepGuard.__init__

    def recording(self, variables):
        original(self, variables)
        protected.extend(self.variables)

    monkeypatch.setattr(guard.StepGuard, "__init__", recording)
    x, y = regression_data(n=48)
    bad = x.copy()
    bad[20] = np.nan  # The second batch of three.
    model = _model(optimizer(), jit)
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0)
    before = _state(model)
    history = model.fit(bad[16:32], y[16:32], batch_size=16, epochs=1, verbose=0)
    assert history.history["skipped_steps"] == [1.0]
    for a, b in zip(before, _state(model)):
        np.testing.assert_array_equal(a, b)
    # The next finite step is applied as usual.
    model.fit(x[32:], y[32:], batch_size=16, epochs=1, verbose=0)
    # Two micro-steps applied (one update with gradient accumulation).
    assert int(model.optimizer.iterations) == 2 // (model.optimizer.gradient_accumulation_steps or 1)
    changed = [not np.array_equal(a, b) for a, b in zip(before, _state(model))]
    assert sum(changed) > len(model.inner.trainable_variables)
    # Only what the forward pass writes was snapshotted: BatchNorm statistics,
    # the Dropout seed and the step's seed counter (two integers), no weight
    # and no optimizer variable.
    bn, dropout = model.inner.layers[1], model.inner.layers[2]
    expected = {id(bn.moving_mean), id(bn.moving_variance), id(dropout.seed_generator.state),
                id(model.seed_generator.state)}
    assert protected and {id(v) for v in protected} == expected


def test_forward_state_leaves_out_frozen_weights():
    frozen = keras.layers.Dense(5)
    inner = keras.Sequential([keras.Input((4,)), frozen, keras.layers.BatchNormalization(),
                              keras.layers.Dense(2)])
    frozen.trainable = False
    bn = inner.layers[1]
    assert {id(v) for v in guard.forward_state(inner)} == {
        id(bn.moving_mean), id(bn.moving_variance)}
    assert any(v is frozen.kernel for v in inner.non_trainable_variables)


def test_the_plain_wrapper_draws_no_random_numbers():
    x, y = regression_data(n=32)
    model = keras_flat.FlatMinimaModel(mlp(), None, seed=4)
    model.compile(optimizer="sgd", loss="mse")
    start = np.array(model.seed_generator.state)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_array_equal(np.array(model.seed_generator.state), start)
