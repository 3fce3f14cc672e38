"""Fine-tuning: the trainable set changes between fits, for every registered rule.

The standard recipe (train a head on a frozen backbone; unfreeze it,
recompile, fit again; freeze it again) changes the variables an algorithm's
state is sized by. For every name in the registry (a future rule is covered
with no test edited), both directions train; the training after a change
equals that of a wrapper built afresh on the same weights (its state created
for the new variables); and the model saves and loads.
"""

import os

import keras
import numpy as np
import pytest

import keras_flat
from keras_flat.algorithms import registry

from reference import arguments as rule_arguments

NAMES = keras_flat.algorithms.names()
# The rules with per-variable state (LookSAM's direction, ARWP's sums, AE-SAM's
# statistics) and the paper's SA run by default; the others in the slow suite.
DEFAULT_SUITE = ("looksam", "arwp", "aesam", "sa", "sam")
CASES = [n if n in DEFAULT_SUITE else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32") + (x[:, 2] > 1).astype("int32")
    return x, y


def _model(seed=0):
    init = keras.initializers.GlorotUniform
    backbone = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, activation="tanh", kernel_initializer=init(seed)),
        keras.layers.Dense(8, activation="tanh", kernel_initializer=init(seed + 1)),
    ], name="backbone")
    head = keras.layers.Dense(3, kernel_initializer=init(seed + 2), name="head")
    return keras.Sequential([keras.Input((6,)), backbone, head]), backbone


def _wrap(inner, name):
    entry = registry.entry(name)
    model = keras_flat.FlatMinimaModel(inner, rule_arguments.build(entry), seed=5)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    return model


def _fit(model, x, y):
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)


def _assert_fresh_wrapper_agrees(model, inner, backbone, name, x, y):
    """After the change, `model` trains as a new wrapper on the same weights does."""
    twin, twin_backbone = _model()
    twin_backbone.trainable = backbone.trainable
    twin.set_weights(inner.get_weights())
    fresh = _wrap(twin, name)
    fresh.seed_generator.state.assign(np.array(model.seed_generator.state))
    _fit(model, x, y)
    _fit(fresh, x, y)
    assert len(model.algorithm_state.weights) == len(fresh.algorithm_state.weights)
    for a, b in zip(inner.weights, twin.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-7,
                                   err_msg=a.path)


@pytest.mark.parametrize("name", CASES)
def test_unfreezing_and_freezing_rebuild_the_rule_state(name, tmp_path):
    x, y = _data()
    inner, backbone = _model()
    backbone.trainable = False
    model = _wrap(inner, name)
    _fit(model, x, y)
    for trainable, count in ((True, 6), (False, 2)):
        backbone.trainable = trainable
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
        _assert_fresh_wrapper_agrees(model, inner, backbone, name, x, y)
        assert len(inner.trainable_variables) == count

    path = os.path.join(tmp_path, "tuned.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.compiled
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=a.path)


def test_state_follows_the_variables_the_loss_reaches():
    """A trainable variable without a gradient is left out of a step, and of its state."""
    x, y = _data()
    inputs = keras.Input((6,))
    unused = keras.layers.Dense(5, name="unused")(inputs)  # First among the variables.
    used = keras.layers.Dense(3, name="used")(inputs)
    inner = keras.Model(inputs, {"used": used, "unused": unused})
    model = keras_flat.FlatMinimaModel(inner, keras_flat.algorithms.LookSAM(interval=2), seed=0)
    model.compile("sgd", {"used": LOSS})
    before = np.array(inner.get_layer("unused").kernel)
    model.fit(x, {"used": y}, batch_size=16, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(np.array(inner.get_layer("unused").kernel), before)
    stored = {v.path: np.array(v) for v in model.algorithm_state.weights
              if "direction" in v.path}
    assert sorted(v.shape for v in stored.values()) == [(3,), (5,), (6, 3), (6, 5)]
    nonzero = [v for v in stored.values() if np.any(v)]
    # `used`'s kernel and bias hold one unit vector; `unused`'s stay zero.
    assert sorted(v.shape for v in nonzero) == [(3,), (6, 3)]
    np.testing.assert_allclose(np.sqrt(sum(np.sum(v ** 2) for v in nonzero)), 1.0, rtol=1e-5)
