"""mixed_float16 and mixed_bfloat16 with every algorithm."""

import keras
import numpy as np
import pytest

import keras_flat

from helpers import mlp
from helpers import regression_data
from helpers import train_v1

ETA, RHO, STEPS = 0.02, 0.3, 300


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def policy(request):
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name, rate", [("rs", 2 * ETA * RHO**2), ("sa", 4 * ETA * RHO**2)])
def test_v1_imbalance_decays_at_the_predicted_rate(policy, name, rate):
    # Start just off the minima curve (ab = 1.04): in 16-bit compute an
    # exactly zero loss would leave SA only its jitter to find a direction.
    a0, b0 = 2.0, 0.52
    imbalance0 = a0**2 - b0**2
    rates = []
    for seed in range(2):
        a, b = train_v1(name, STEPS, ETA, seed, a=a0, b=b0, rho=RHO)
        rates.append(np.log((a * a - b * b) / imbalance0) / STEPS)
    assert np.mean(rates) == pytest.approx(np.log(1 - rate), rel=0.25)


@pytest.mark.parametrize("name", ["none", "rs", "sa", "sam", "asam"])
def test_every_algorithm_trains_under_mixed_precision(policy, name):
    x, y = regression_data(n=64)
    model = keras_flat.FlatMinimaModel(mlp(), name if name != "none" else None, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.inner.layers[0].compute_dtype == policy.split("_")[1]
    history = model.fit(x, y, batch_size=16, epochs=6, verbose=0).history
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert history["skipped_steps"] == [0.0] * 6
    for v in model.trainable_variables:
        assert v.dtype == "float32" and np.all(np.isfinite(np.array(v)))


@pytest.mark.parametrize("name", ["rs", "sa", "sam"])
def test_overflowing_step_is_skipped_and_weights_stay_finite(policy, name):
    x, y = regression_data(n=32)
    model = keras_flat.FlatMinimaModel(mlp(), name, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0)
    before = [np.array(v) for v in model.trainable_variables]
    if policy == "mixed_float16":
        scale = float(np.array(model.optimizer.dynamic_scale))
        # A finite loss whose scaled gradient overflows float16 (max 65504).
        bad_x, bad_y = x[16:], y[16:] * 1e4
    else:
        bad_x = np.where(np.arange(16)[:, None] == 3, np.inf, x[16:]).astype("float32")
        bad_y = y[16:]
    history = model.fit(bad_x, bad_y, batch_size=16, epochs=1, verbose=0).history
    assert history["skipped_steps"] == [1.0]
    for a, b in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(a, np.array(b))
    if policy == "mixed_float16":  # The loss scale went down, as Keras does it.
        assert float(np.array(model.optimizer.dynamic_scale)) == scale / 2
    history = model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0).history
    assert history["skipped_steps"] == [0.0]
    assert all(np.all(np.isfinite(np.array(v))) for v in model.trainable_variables)


@pytest.mark.parametrize("scaled", [
    lambda: keras.optimizers.SGD(0.1, momentum=0.9, loss_scale_factor=8.0),
    lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, momentum=0.9)),
], ids=["loss_scale_factor", "LossScaleOptimizer"])
@pytest.mark.parametrize("name", ["sam", "sa"])
def test_loss_scaling_leaves_the_float32_steps_unchanged(scaled, name):
    # The rule sees true-scale gradients and the optimizer applies its update:
    # a power-of-two scale, put on and taken off once each way, changes nothing.
    x, y = regression_data(n=32)
    trained = []
    for optimizer in (keras.optimizers.SGD(0.1, momentum=0.9), scaled()):
        model = keras_flat.FlatMinimaModel(mlp(), name, seed=0)
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        trained.append([np.array(v) for v in model.trainable_variables])
    for a, b in zip(*trained):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
