"""Friendly-SAM (Li et al., CVPR 2024, arXiv 2403.12350) against NumPy.

The rule, as the paper and its official code state it: with `m` an
exponential moving average of the past batch gradients (`m = g_1` after the
first step, then `m ← λ·m + (1 - λ)·g`), a step ascends along
`d = g - σ·m`, normalised to radius ρ (`d = g` on the first step), and the
optimizer applies the gradient at `w + ρ·d/‖d‖`. Each expected step is
assembled from the float64 NumPy gradient of `helpers.NumpyMLP`.
"""

import keras
import numpy as np
import pytest

import keras_flat
from keras_flat import algorithms

from helpers import NumpyMLP
from helpers import flat_norm
from helpers import mlp
from helpers import regression_data

LR, L2 = 0.1, 0.01


def _expected_weights(w, x, y, rho, sigma, decay, steps, interval=1):
    ref = NumpyMLP(l2=L2)
    average = None
    for step in range(steps):
        g = ref.grad(w, x, y)
        update = g
        if step % interval == 0:
            d = g if average is None else [a - sigma * b for a, b in zip(g, average)]
            assert flat_norm(d) > 0
            update = ref.grad([a + rho * b / flat_norm(d) for a, b in zip(w, d)], x, y)
        average = g if average is None else [decay * a + (1 - decay) * b
                                             for a, b in zip(average, g)]
        w = [a - LR * u for a, u in zip(w, update)]
    return w


@pytest.mark.parametrize("sigma, decay, interval", [(1.0, 0.9, 1), (0.6, 0.5, 2)])
def test_friendly_sam_steps_as_the_paper_states(sigma, decay, interval):
    rho, steps = 0.3, 4
    x, y = regression_data(n=16)
    inner = mlp(regularizer=keras.regularizers.L2(L2))
    w = [np.array(v, np.float64) for v in inner.trainable_variables]
    rule = algorithms.FriendlySAM(rho=rho, full_gradient_weight=sigma, ema_decay=decay,
                                  interval=interval)
    model = keras_flat.FlatMinimaModel(inner, rule, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
    expected = _expected_weights(w, x, y, rho, sigma, decay, steps, interval)
    for actual, wanted in zip(inner.trainable_variables, expected):
        np.testing.assert_allclose(np.array(actual), wanted, atol=2e-5, rtol=2e-5)


def test_without_the_average_friendly_sam_is_sam():
    x, y = regression_data(n=16)
    trained = []
    for rule in (algorithms.FriendlySAM(rho=0.3, full_gradient_weight=0.0),
                 algorithms.SAM(rho=0.3)):
        inner = mlp()
        model = keras_flat.FlatMinimaModel(inner, rule, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        trained.append([np.array(v) for v in inner.trainable_variables])
    for a, b in zip(*trained):
        np.testing.assert_allclose(a, b, atol=1e-6)
