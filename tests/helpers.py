"""Small models and reference computations shared by the tests."""

import functools

import keras
import numpy as np
import tensorflow as tf

import keras_flat
from keras_flat.algorithms.oracle import GradientOracle
from keras_flat.backend.tensorflow.evaluation import BatchEvaluation
from keras_flat.utils.batch_statistics import batchnorm_layers
from keras_flat.utils.structure import describe_parameters


def mlp(inputs=4, hidden=5, outputs=2, activation="tanh", batchnorm=False,
        regularizer=None, seed=0):
    """A small Sequential MLP with deterministic initial weights."""
    init = keras.initializers.GlorotUniform(seed=seed)
    layers = [keras.Input((inputs,)),
              keras.layers.Dense(hidden, activation=activation,
                                 kernel_initializer=init,
                                 bias_initializer=keras.initializers.RandomNormal(
                                     stddev=0.1, seed=seed + 1),
                                 kernel_regularizer=regularizer)]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(
        outputs, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed + 3)))
    return keras.Sequential(layers)


def regression_data(n=64, inputs=4, outputs=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs)).astype("float32")
    w = rng.normal(size=(inputs, outputs)).astype("float32")
    y = np.tanh(x @ w).astype("float32") + 0.1 * rng.normal(size=(n, outputs)).astype("float32")
    return x, y


def make_oracle(model, x, y, sample_weight, seed=None, cls=GradientOracle):
    """A `GradientOracle` of a compiled `FlatMinimaModel` on one batch, outside a step.

    Wired as `FlatMinimaModel.train_step` wires its own, at the current
    weights, with no loss scaling and no forward state.
    """
    variables = model.trainable_variables
    return cls(BatchEvaluation(model, variables), x, y, sample_weight, variables, seed=seed,
               optimizer=model.optimizer, parameters=describe_parameters(model),
               masked_subsets=bool(batchnorm_layers(model, include_frozen=False)))


def weights(model):
    return [np.array(v) for v in model.weights]


def copy_weights(source, target):
    target.set_weights(source.get_weights())


def v1_model(a, b):
    """V1 of docs/algorithms.md: f(a, b) = (a*b - 1)^2 as two bias-free Dense(1)."""
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(1, use_bias=False,
                           kernel_initializer=keras.initializers.Constant(a)),
        keras.layers.Dense(1, use_bias=False,
                           kernel_initializer=keras.initializers.Constant(b)),
    ])
    return model


def v1_state(model):
    a = float(np.array(model.inner.layers[0].kernel)[0, 0])
    b = float(np.array(model.inner.layers[1].kernel)[0, 0])
    return a, b


def train_v1(algorithm, steps, lr, seed, a=2.0, b=0.5, **kwargs):
    """Trains V1 for `steps` single-example steps; returns (a, b)."""
    model = keras_flat.FlatMinimaModel(v1_model(a, b), algorithm, seed=seed, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse",
                  steps_per_execution=50)
    x = np.ones((steps, 1), "float32")
    model.fit(x, x, batch_size=1, epochs=1, shuffle=False, verbose=0)
    return v1_state(model)


class NumpyMLP:
    """Independent float64 forward/backward of `mlp(...)` with MSE loss.

    Matches Keras's `loss="mse"` with `sum_over_batch_size` reduction and
    optional sample weights, plus an optional L2 kernel regularizer on the
    first layer.
    """

    def __init__(self, l2=0.0):
        self.l2 = l2

    def loss_and_grad(self, params, x, y, sample_weight=None):
        w1, b1, w2, b2 = [np.asarray(p, np.float64) for p in params]
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        n, outputs = y.shape
        sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
        h = np.tanh(x @ w1 + b1)
        out = h @ w2 + b2
        per_example = np.mean((out - y) ** 2, axis=1)
        loss = np.sum(sw * per_example) / n + self.l2 * np.sum(w1 ** 2)
        dout = 2.0 * sw[:, None] * (out - y) / (n * outputs)
        gw2 = h.T @ dout
        gb2 = dout.sum(0)
        dz = (dout @ w2.T) * (1.0 - h ** 2)
        gw1 = x.T @ dz + 2.0 * self.l2 * w1
        gb1 = dz.sum(0)
        return loss, [gw1, gb1, gw2, gb2]

    def grad(self, params, x, y, sample_weight=None):
        return self.loss_and_grad(params, x, y, sample_weight)[1]


def flat_norm(tensors):
    return float(np.sqrt(sum(np.sum(np.asarray(t, np.float64) ** 2) for t in tensors)))


def flat_dot(a, b):
    return float(sum(np.sum(np.asarray(x, np.float64) * np.asarray(y, np.float64))
                     for x, y in zip(a, b)))


def np_project_out(h, g):
    gn = flat_norm(g)
    if gn == 0:
        return [np.asarray(t, np.float64) for t in h]
    c = flat_dot(h, g) / gn ** 2
    return [np.asarray(a, np.float64) - c * np.asarray(b, np.float64) for a, b in zip(h, g)]


def load_example(name):
    """Imports examples/<name>.py as a module."""
    import importlib.util
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def mirrored_strategy():
    """The one MirroredStrategy over the logical CPUs of conftest, per process.

    TensorFlow gives each MirroredStrategy its own collective keys starting
    from the same values, so a second strategy on the same devices collides
    with the first's cached collectives: every test shares this one.
    """
    from conftest import NUM_LOGICAL_CPUS

    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(NUM_LOGICAL_CPUS)])
