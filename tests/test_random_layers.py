"""Random layers draw the same numbers in the perturbed passes as in the clean one.

With augmentation inside the model (RandomFlip, RandomRotation), Dropout and
GaussianNoise, every registered rule at zero radius takes exactly plain
Keras's step: the perturbed pass sees the clean pass's batch, images, masks
and noise. A rule with a `center` option (SA) is centred, so that its
zero-radius correction is zero; a future rule is covered with no test edited.
"""

import inspect

import keras
import numpy as np
import pytest

import keras_flat
from keras_flat.algorithms import registry

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
PERTURBING = [n for n in keras_flat.algorithms.names() if registry.entry(n).cls.perturbs]


def _model():
    init = keras.initializers.GlorotUniform
    return keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.RandomFlip(seed=1),
        keras.layers.RandomRotation(0.2, seed=2),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu", kernel_initializer=init(3)),
        keras.layers.Dropout(0.5, seed=4),
        keras.layers.GaussianNoise(0.1, seed=5),
        keras.layers.Dense(3, kernel_initializer=init(6)),
    ])


def _data(n=24):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6, 6, 1)).astype("float32")
    return x, rng.integers(0, 3, size=n)


def _zero_radius(name):
    parameters = inspect.signature(registry.entry(name).cls).parameters
    kwargs = {key: 0.0 for key in ("rho", "sigma") if key in parameters}
    assert kwargs, f"{name} has no radius argument"
    if "center" in parameters:
        kwargs["center"] = True
    return registry.entry(name).cls(**kwargs)


def _train(inner, algorithm=None, wrap=True):
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=0) if wrap else inner
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    model.fit(*_data(), batch_size=8, epochs=1, shuffle=False, verbose=0)
    return [np.array(v) for v in inner.trainable_variables]


@pytest.fixture(scope="module")
def plain_weights():
    keras.utils.set_random_seed(0)
    return _train(_model(), wrap=False)


# One rule per kind of perturbation (gradient ascent, sphere, examples, filter-wise
# noise, triggered) by default; every other registered rule in the slow suite.
DEFAULT_SUITE = ("sam", "rs", "sa", "rwp", "aesam")


@pytest.mark.parametrize("name", [
    n if n in DEFAULT_SUITE else pytest.param(n, marks=pytest.mark.slow) for n in PERTURBING])
def test_every_rule_at_zero_radius_takes_the_plain_step(name, plain_weights):
    keras.utils.set_random_seed(0)
    weights = _train(_model(), _zero_radius(name))
    for a, b in zip(weights, plain_weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
