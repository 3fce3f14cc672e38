"""Properties every registered algorithm has.

Each test runs for every name in `keras_flat.algorithms.names()`, with the
registry's default arguments or the tests' `reference.arguments` (every argument set to a
non-default value): an algorithm registered in one place is covered here with
no test edited.
"""

import inspect
import os

import keras
import numpy as np
import pytest

import keras_flat
from keras_flat import algorithms
from keras_flat.algorithms import registry

from helpers import mirrored_strategy
from helpers import mlp
from helpers import regression_data
from reference import arguments as rule_arguments

NAMES = algorithms.names()
PERTURBING = [n for n in NAMES if registry.entry(n).cls.perturbs]


def _algorithm(name, kind="defaults"):
    entry = registry.entry(name)
    return rule_arguments.build(entry) if kind == "test" else entry.build()


def _model(algorithm, seed=0, lr=0.05, momentum=0.9, jit=False, batchnorm=True, **compile_kw):
    model = keras_flat.FlatMinimaModel(mlp(batchnorm=batchnorm, seed=seed), algorithm, seed=3)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=momentum), loss="mse",
                  jit_compile=jit, **compile_kw)
    return model


def _fit(model, x, y, epochs=1, batch_size=16):
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)


def _values(variables):
    return [np.array(v) for v in variables]


def _assert_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def plain_statistics():
    """BatchNorm statistics after 100 plain steps at learning rate 0."""
    x, y = regression_data(n=100)
    model = _model(None, lr=0.0, steps_per_execution=10)
    _fit(model, x, y, epochs=10, batch_size=10)
    bn = model.inner.layers[1]
    return np.array(bn.moving_mean), np.array(bn.moving_variance)


@pytest.mark.parametrize("name", NAMES)
def test_learning_rate_zero_moves_nothing_but_batchnorm_statistics_as_plain(
        name, plain_statistics):
    x, y = regression_data(n=100)
    model = _model(_algorithm(name, "test"), lr=0.0, steps_per_execution=10)
    start = _values(model.inner.trainable_variables)
    _fit(model, x, y, epochs=10, batch_size=10)  # 100 steps.
    _assert_identical(_values(model.inner.trainable_variables), start)
    bn = model.inner.layers[1]
    np.testing.assert_array_equal(np.array(bn.moving_mean), plain_statistics[0])
    np.testing.assert_array_equal(np.array(bn.moving_variance), plain_statistics[1])


@pytest.mark.parametrize("name", NAMES)
def test_zero_gradient_gives_finite_steps(name):
    # All-zero weights and targets: the loss and every gradient are exactly 0.
    x, _ = regression_data(n=32)
    model = _model(_algorithm(name), lr=0.1, batchnorm=False)
    for v in model.inner.trainable_variables:
        v.assign(np.zeros(v.shape, "float32"))
    history = _fit(model, x, np.zeros((32, 2), "float32"), epochs=2, batch_size=32).history
    assert history["grad_norm"][0] == 0.0
    assert np.all(np.isfinite(history["loss"])) and np.all(np.isfinite(history["perturbed"]))
    assert history["skipped_steps"] == [0.0, 0.0]
    for v in model.weights:
        assert np.all(np.isfinite(np.array(v))), v.path


@pytest.mark.parametrize("name", NAMES)
def test_config_names_every_constructor_argument(name):
    algorithm = _algorithm(name, "test")
    parameters = set(inspect.signature(type(algorithm)).parameters)
    config = algorithm.get_config()
    assert parameters <= set(config)
    assert set(config) - parameters == {"name"} and config["name"] == name


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip_gives_the_same_training(name):
    x, y = regression_data(n=64)
    original = _algorithm(name, "test")
    copies = [type(original).from_config(original.get_config()),
              algorithms.get(algorithms.serialize(original)),
              algorithms.get(original.get_config())]
    reference = _model(original)
    _fit(reference, x, y, epochs=2)
    for copy in copies:
        assert copy is not original and copy == original
        model = _model(copy)
        _fit(model, x, y, epochs=2)
        _assert_identical(_values(model.inner.weights), _values(reference.inner.weights))
    if name != "none":  # The non-default arguments matter, so a lost one would show.
        default = _model(_algorithm(name))
        _fit(default, x, y, epochs=2)
        assert not all(np.array_equal(a, b) for a, b in zip(
            _values(default.inner.weights), _values(reference.inner.weights)))


@pytest.mark.parametrize("name", NAMES)
def test_save_load_and_resume_is_exact(name, tmp_path):
    x, y = regression_data(n=64)
    uninterrupted = _model(_algorithm(name, "test"))
    _fit(uninterrupted, x, y, epochs=3)
    model = _model(_algorithm(name, "test"))
    _fit(model, x, y, epochs=2)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.algorithm == model.algorithm
    _assert_identical(_values(loaded.weights), _values(model.weights))
    loaded.fit(x, y, batch_size=16, epochs=3, initial_epoch=2, shuffle=False, verbose=0)
    _assert_identical(_values(loaded.weights), _values(uninterrupted.weights))


@pytest.mark.distributed
@pytest.mark.parametrize("name", NAMES)
def test_mirrored_global_mode_equals_one_device(name):
    x, y = regression_data(n=64)
    single = _model(_algorithm(name), batchnorm=False)
    _fit(single, x, y, epochs=1, batch_size=32)
    with mirrored_strategy().scope():
        mirrored = _model(_algorithm(name), batchnorm=False)
    _fit(mirrored, x, y, epochs=1, batch_size=32)
    for a, b in zip(_values(single.inner.weights), _values(mirrored.inner.weights)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_xla_equals_no_xla(name):
    x, y = regression_data(n=64)
    plain = _model(_algorithm(name, "test"))
    compiled = _model(_algorithm(name, "test"), jit=True)
    for model in (plain, compiled):
        _fit(model, x, y, epochs=1)
    for a, b in zip(_values(plain.weights), _values(compiled.weights)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_batch_is_skipped_without_a_trace(name):
    x, y = regression_data(n=48)
    x[16] = np.nan  # The second of three batches.
    model = _model(_algorithm(name, "test"))
    history = _fit(model, x, y).history
    assert history["skipped_steps"] == [1.0]
    reference = _model(_algorithm(name, "test"))
    _fit(reference, x[:16], y[:16])
    _fit(reference, x[32:], y[32:])
    assert int(model.optimizer.iterations) == int(reference.optimizer.iterations) == 2
    for a, b in zip(model.weights + model.optimizer.variables,
                    reference.weights + reference.optimizer.variables):
        if a.path.endswith("planned_steps"):  # One fit against two.
            continue
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-7,
                                   err_msg=a.path)
