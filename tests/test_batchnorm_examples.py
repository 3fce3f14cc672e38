"""SA on a BatchNorm model: the examples' share of the batch loss.

The reference below is written out by hand with plain TensorFlow ops in
float64 (no Keras layer is called): the clean batch gradient differentiates
through the batch statistics, and so does an example's gradient, taken on the
whole batch with zero weight on the other examples.
"""

import keras
import numpy as np
import tensorflow as tf

import keras_flat
from keras_flat import algorithms
from keras_flat.algorithms.oracle import GradientOracle
from keras_flat.training import model as model_module
from keras_flat.utils.batch_statistics import batchnorm_layers

from helpers import flat_norm
from helpers import mlp
from helpers import np_project_out
from helpers import regression_data

RHO, LR, L2, EPSILON = 0.2, 0.1, 0.01, 1e-3


def _forward(params, x):
    w1, b1, gamma, beta, w2, b2 = params
    h = tf.tanh(x @ w1 + b1)
    mean = tf.reduce_mean(h, 0)
    variance = tf.reduce_mean(tf.square(h - mean), 0)
    z = gamma * (h - mean) / tf.sqrt(variance + EPSILON) + beta
    return z @ w2 + b2


def _loss_and_grad(params, x, y, sw):
    params = [tf.constant(p, tf.float64) for p in params]
    with tf.GradientTape() as tape:
        tape.watch(params)
        out = _forward(params, tf.constant(x, tf.float64))
        per_example = tf.reduce_mean(tf.square(out - y), 1)
        loss = tf.reduce_sum(sw * per_example) / len(x) + L2 * tf.reduce_sum(params[0] ** 2)
    return [np.array(g) for g in tape.gradient(loss, params)]


class Recording(GradientOracle):
    calls = []

    def gradient(self, offset=None, subset=None):
        Recording.calls.append((
            None if offset is None else [np.array(o, np.float64) for o in offset],
            None if subset is None else np.array(subset.indices),
            None if subset is None else subset.masked,
        ))
        return super().gradient(offset=offset, subset=subset)


def _expected_step(w, x, y, sw, calls):
    g = _loss_and_grad(w, x, y, sw)
    (o1, s1, masked), (o2, s2, _) = calls
    assert o1 is None and masked and len(s1) == 1
    np.testing.assert_array_equal(s1, s2)
    # The example's share of the batch loss: weight n on it, zero elsewhere.
    share = np.where(np.arange(len(x)) == s1[0], len(x) * sw, 0.0)
    g_i = _loss_and_grad(w, x, y, share)
    s = [t / flat_norm(g_i) for t in g_i]
    sign = np.sign(sum(np.sum(a * b) for a, b in zip(o2, s)))
    for o, t in zip(o2, s):
        np.testing.assert_allclose(o, sign * RHO * t, rtol=1e-4, atol=1e-6)
    h = _loss_and_grad([a + b for a, b in zip(w, o2)], x, y, share)
    return [a + b for a, b in zip(g, np_project_out(h, g))]


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
    update = _expected_step(w, x, y, sw, Recording.calls)
    after = [np.array(v, np.float64) for v in inner.trainable_variables]
    for a, b, u in zip(after, w, update):
        np.testing.assert_allclose(a, b - LR * u, rtol=1e-4, atol=1e-6)


def test_batch_statistics_are_found_at_any_depth_and_frozen_layers_skipped():
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
    found = batchnorm_layers(model, include_frozen=False)
    assert {id(layer) for layer in found} == {id(block.norm), id(nested.layers[0])}
    assert len(batchnorm_layers(model, include_frozen=True)) == 3
    block.norm.trainable = False
    nested.trainable = False
    # Frozen layers normalise per example.
    assert batchnorm_layers(model, include_frozen=False) == []
    assert len(batchnorm_layers(model, include_frozen=True)) == 3
