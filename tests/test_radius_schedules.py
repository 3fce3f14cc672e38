"""Radii that change over training (GSAM's rule, schedules of rho and sigma) against NumPy.

Each expected step is assembled by hand from the float64 NumPy gradient of
`helpers.NumpyMLP` and the formulas of the papers: GSAM's Algorithm 1,
`rho_t = rho_min + (rho_max - rho_min)(lr_t - lr_min)/(lr_max - lr_min)`,
and the schedules' own closed forms.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_flat
from keras_flat import algorithms
from keras_flat.algorithms.pieces import radius
from keras_flat.utils import rng

from helpers import NumpyMLP
from helpers import flat_norm
from helpers import mlp
from helpers import np_project_out
from helpers import regression_data

L2 = 0.01
SEED = 3
# A warm-up then a decay: the learning rate of steps 0, 1, 2, 3.
RATES = [0.05, 0.1, 0.075, 0.025]


def _model(algorithm, learning_rate, jit_compile=False):
    x, y = regression_data(n=16)
    inner = mlp(regularizer=keras.regularizers.L2(L2))
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=SEED)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse",
                  jit_compile=jit_compile)
    params = [np.array(v, np.float64) for v in inner.trainable_variables]
    return model, x, y, params


def _rates():
    return keras.optimizers.schedules.PiecewiseConstantDecay([0, 1, 2], RATES)


def _train(model, x, y, steps):
    model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0)
    return [np.array(v, np.float64) for v in model.inner.trainable_variables]


def _assert_close(actual, expected, atol=2e-5):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=2e-5)


def _sam_gradient(w, x, y, rho):
    ref = NumpyMLP(l2=L2)
    g = ref.grad(w, x, y)
    n = flat_norm(g)
    return g, ref.grad([a + rho * d / n for a, d in zip(w, g)], x, y)


def _gsam_step(w, x, y, rho, alpha, lr):
    g, h = _sam_gradient(w, x, y, rho)
    return [a - lr * (b - alpha * c) for a, b, c in zip(w, h, np_project_out(g, h))]


@pytest.mark.parametrize("peak", [None, 0.1])
def test_gsam_radius_follows_the_learning_rate(peak):
    rho_max, rho_min, alpha = 0.4, 0.1, 0.3
    if peak is None:  # The default: lr_max is the largest learning rate so far.
        rule = algorithms.GSAM(rho=rho_max, rho_min=rho_min, gap_weight=alpha)
    else:  # The official ProportionScheduler, with the peak given.
        rule = algorithms.GSAM(rho=radius.FollowLearningRate(rho_max, rho_min,
                                                             learning_rate_max=peak),
                               alpha=alpha)
    model, x, y, w = _model(rule, _rates())
    radii = []
    for step, lr in enumerate(RATES):
        lr_max = max(RATES[:step + 1]) if peak is None else peak
        rho = rho_min + (rho_max - rho_min) * (lr - 0.0) / (lr_max - 0.0)
        radii.append(rho)
        w = _gsam_step(w, x, y, rho, alpha, lr)
    # The radius falls with the learning rate (and, without a given peak,
    # stays at rho_max through the warm-up).
    assert radii[-1] < radii[2] < rho_max
    _assert_close(_train(model, x, y, len(RATES)), w)


def test_gsam_radius_is_constant_with_a_constant_learning_rate():
    rho, alpha, lr = 0.3, 0.2, 0.1
    model, x, y, w = _model(algorithms.GSAM(rho=rho, gap_weight=alpha), lr)
    for _ in range(2):
        w = _gsam_step(w, x, y, rho, alpha, lr)
    _assert_close(_train(model, x, y, 2), w)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_sam_radius_may_be_a_schedule_of_the_step(jit_compile):
    steps, lr = 3, 0.1
    decay = keras.optimizers.schedules.PolynomialDecay(0.3, decay_steps=steps,
                                                       end_learning_rate=0.1)
    model, x, y, w = _model(algorithms.SAM(rho=decay), lr, jit_compile=jit_compile)
    for step in range(steps):
        rho = (0.3 - 0.1) * (1 - step / steps) + 0.1
        _, h = _sam_gradient(w, x, y, rho)
        w = [a - lr * b for a, b in zip(w, h)]
    _assert_close(_train(model, x, y, steps), w)


def test_rwp_sigma_may_be_a_schedule_of_the_step():
    lr, weight = 0.1, 0.5
    decay = keras.optimizers.schedules.PolynomialDecay(0.3, decay_steps=2,
                                                       end_learning_rate=0.1)
    model, x, y, w = _model(algorithms.RWP(sigma=decay, perturbed_weight=weight), lr)
    ref = NumpyMLP(l2=L2)
    for step, sigma in enumerate([0.3, 0.2]):
        stream = rng.fold_in(tf.constant([SEED, step], tf.int64), 5)
        flat = np.array(rng.normal([sum(t.size for t in w)], stream), np.float64)
        normals = np.split(flat, np.cumsum([t.size for t in w])[:-1])
        noise = []
        for t, z in zip(w, normals):
            if t.ndim < 2:
                noise.append(np.zeros_like(t))
                continue
            norms = np.sqrt(np.sum(t ** 2, axis=0, keepdims=True))
            noise.append(sigma * norms * z.reshape(t.shape))
        g = ref.grad(w, x, y)
        h = ref.grad([a + e for a, e in zip(w, noise)], x, y)
        w = [a - lr * ((1 - weight) * b + weight * c) for a, b, c in zip(w, g, h)]
    _assert_close(_train(model, x, y, 2), w)


def test_a_scheduled_rule_round_trips_through_its_config_and_a_saved_model(tmp_path):
    rule = algorithms.GSAM(rho=0.4, rho_min=0.1)
    assert algorithms.get(algorithms.serialize(rule)) == rule
    decay = keras.optimizers.schedules.CosineDecay(0.3, decay_steps=10)
    sam = algorithms.SAM(rho=decay)
    rebuilt = algorithms.get(sam.get_config())
    assert rebuilt == sam and isinstance(rebuilt.rho, keras.optimizers.schedules.CosineDecay)
    model, x, y, _ = _model(rule, _rates())
    _train(model, x, y, 2)
    path = str(tmp_path / "gsam.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.algorithm == rule
    peak = [np.array(v) for v in loaded.algorithm_state.weights
            if "learning_rate_max" in v.path]
    np.testing.assert_allclose(peak, [0.1])  # The largest rate of steps 0 and 1.


def test_radius_arguments_are_checked():
    with pytest.raises(TypeError, match=r"Argument `rho` must be .*Received: rho='big'"):
        algorithms.SAM(rho="big")
    with pytest.raises(ValueError, match="rho_min"):
        algorithms.GSAM(rho=0.1, rho_min=0.2)
    with pytest.raises(ValueError, match="rho_min` applies to a number"):
        algorithms.GSAM(rho=keras.optimizers.schedules.CosineDecay(0.1, 10), rho_min=0.0)
    with pytest.raises(ValueError, match="minimum"):
        radius.FollowLearningRate(0.1, 0.2)
    with pytest.raises(ValueError, match="learning_rate_max"):
        radius.FollowLearningRate(0.1, 0.0, learning_rate_max=0.0)
