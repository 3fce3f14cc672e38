"""SA on a BatchNorm model: the examples' gradient with the clean batch's statistics fixed.

The reference below is written out by hand with plain TensorFlow ops in
float64 (no Keras layer is called): the clean batch gradient differentiates
through the batch statistics; an example's loss normalises by the clean
batch's mean and (biased) variance held fixed.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_flat
from keras_flat import algorithms
from keras_flat import model as model_module
from keras_flat.batch_statistics import BatchStatistics
from keras_flat.batch_statistics import batch_normalization_layers
from keras_flat.oracle import GradientOracle

from helpers import flat_norm
from helpers import mlp
from helpers import np_project_out
from helpers import regression_data

RHO, LR, L2, EPSILON = 0.2, 0.1, 0.01, 1e-3


def _forward(params, x, statistics=None):
    w1, b1, gamma, beta, w2, b2 = params
    h = tf.tanh(x @ w1 + b1)
    if statistics is None:
        mean = tf.reduce_mean(h, 0)
        variance = tf.reduce_mean(tf.square(h - mean), 0)
    else:
        mean, variance = statistics
    z = gamma * (h - mean) / tf.sqrt(variance + EPSILON) + beta
    return z @ w2 + b2, (mean, variance)


def _loss_and_grad(params, x, y, sw, statistics=None):
    params = [tf.constant(p, tf.float64) for p in params]
    with tf.GradientTape() as tape:
        tape.watch(params)
        out, used = _forward(params, tf.constant(x, tf.float64), statistics)
        per_example = tf.reduce_mean(tf.square(out - y), 1)
        loss = tf.reduce_sum(sw * per_example) / len(x) + L2 * tf.reduce_sum(params[0] ** 2)
    return [np.array(g) for g in tape.gradient(loss, params)], used


class Recording(GradientOracle):
    calls = []

    def gradient(self, offset=None, subset=None):
        Recording.calls.append((
            None if offset is None else [np.array(o, np.float64) for o in offset],
            None if subset is None else np.array(subset.indices),
            None if subset is None else subset.statistics,
        ))
        return super().gradient(offset=offset, subset=subset)


def _expected_step(w, x, y, sw, calls):
    g, (mean, variance) = _loss_and_grad(w, x, y, sw)
    (o1, s1, fixed), (o2, s2, _) = calls
    assert o1 is None and fixed is not None and len(s1) == 1
    np.testing.assert_array_equal(s1, s2)
    i = s1
    statistics = (tf.constant(mean), tf.constant(variance))
    g_i, _ = _loss_and_grad(w, x[i], y[i], sw[i], statistics)
    s = [t / flat_norm(g_i) for t in g_i]
    sign = np.sign(sum(np.sum(a * b) for a, b in zip(o2, s)))
    for o, t in zip(o2, s):
        np.testing.assert_allclose(o, sign * RHO * t, rtol=1e-4, atol=1e-6)
    h, _ = _loss_and_grad([a + b for a, b in zip(w, o2)], x[i], y[i], sw[i], statistics)
    return [a + b for a, b in zip(g, np_project_out(h, g))], (mean, variance), fixed


def test_sa_step_on_a_batchnorm_model_equals_the_hand_computed_step(monkeypatch):
    x, y = regression_data(n=16)
    sw = np.linspace(0.5, 1.5, 16).astype("float32")
    inner = mlp(batchnorm=True, regularizer=keras.regularizers.L2(L2))
    model = keras_flat.FlatMinimaModel(inner, algorithms.SharpnessAware(rho=RHO), seed=3)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse", run_eagerly=True)
    w = [np.array(v, np.float64) for v in inner.trainable_variables]
    Recording.calls = []
    monkeypatch.setattr(model_module, "GradientOracle", Recording)
    model.fit(x, y, sample_weight=sw, batch_size=16, epochs=1, shuffle=False, verbose=0)
    update, (mean, variance), fixed = _expected_step(w, x, y, sw, Recording.calls)
    after = [np.array(v, np.float64) for v in inner.trainable_variables]
    for a, b, u in zip(after, w, update):
        np.testing.assert_allclose(a, b - LR * u, rtol=1e-4, atol=1e-6)
    # The statistics recovered from the moving-average update are the batch's.
    bn = inner.layers[1]
    (mean_var, recovered_mean), (var_var, recovered_variance) = fixed
    assert mean_var is bn.moving_mean and var_var is bn.moving_variance
    np.testing.assert_allclose(np.array(recovered_mean), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(recovered_variance), variance, rtol=1e-4, atol=1e-5)
    # It is not the masked whole-batch gradient (which depends on the batch
    # statistics' own derivative): the two directions differ.
    i = Recording.calls[0][1]
    masked, _ = _loss_and_grad(w, x, y, np.where(np.arange(16) == i[0], 16 * sw, 0.0))
    g_i, _ = _loss_and_grad(w, x[i], y[i], sw[i], (tf.constant(mean), tf.constant(variance)))
    assert flat_norm([a - b for a, b in zip(masked, g_i)]) > 1e-3 * flat_norm(g_i)


def test_batch_statistics_layers_are_found_at_any_depth_and_frozen_ones_skipped():
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(3)
            self.norm = keras.layers.BatchNormalization()

        def call(self, x, training=None):
            return self.norm(self.dense(x), training=training)

    frozen = keras.layers.BatchNormalization()
    frozen.trainable = False
    nested = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    block = Block()
    model = keras.Sequential([keras.Input((4,)), block, frozen, nested, keras.layers.Dense(2)])
    found = batch_normalization_layers(model)
    assert sorted(map(id, found)) == sorted([id(block.norm), id(nested.layers[0])])


@pytest.mark.parametrize("kwargs", [{"momentum": 1.0}, {"renorm": True}])
def test_unrecoverable_statistics_fall_back_to_the_masked_batch(kwargs):
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization(**kwargs), keras.layers.Dense(2)])
    model = keras_flat.FlatMinimaModel(inner, "sa")
    x, y = regression_data(n=8)
    statistics = BatchStatistics(inner)
    assert not statistics.recoverable and statistics.fixed() is None
    oracle = GradientOracle(model, tf.constant(x), tf.constant(y), None,
                            model.trainable_variables, seed=tf.constant([1, 2], tf.int64),
                            statistics=statistics)
    subset = oracle.sample_subset(1, tf.constant([3, 4], tf.int64))
    assert subset.masked and subset.statistics is None
