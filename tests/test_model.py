"""FlatMinimaModel train_step semantics, model kinds, compilation and saving."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_flat
from keras_flat import algorithms

from helpers import NumpyMLP
from helpers import flat_norm
from helpers import mlp
from helpers import regression_data

ALGORITHMS = {
    "none": lambda: None,
    "rs": lambda: algorithms.RandomSmoothing(rho=0.2),
    "sa": lambda: algorithms.SharpnessAware(rho=0.1, examples=2),
    "sam": lambda: algorithms.SAM(rho=0.1),
    "asam": lambda: algorithms.ASAM(rho=0.3),
    "sa_every2": lambda: algorithms.SharpnessAware(rho=0.1, examples=2, interval=2),
}


def _compile(model, lr=0.05, momentum=0.0, jit=False, **kwargs):
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=momentum),
                  loss="mse", metrics=["mae"], jit_compile=jit, **kwargs)
    return model


def _trainable(model):
    return [np.array(v) for v in model.trainable_variables]


def _assert_all_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ---- Weights are never changed by a perturbed pass ----------------------


# Covered for every registered rule in the default suite by tests/test_invariants.py;
# these older per-rule variants run in the slow suite.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["rs", "sa", "sam", "asam", "sa_every2"])
def test_learning_rate_zero_leaves_weights_bit_identical(name):
    x, y = regression_data(n=100)
    inner = mlp(batchnorm=True)
    start = _trainable(inner)
    algorithm = ALGORITHMS[name]()
    model = _compile(keras_flat.FlatMinimaModel(inner, algorithm, seed=1), lr=0.0)
    history = model.fit(x, y, batch_size=10, epochs=10, shuffle=False, verbose=0)
    # 100 steps, each perturbed (every second one with interval=2)...
    assert history.history["perturbed"] == [1.0 / algorithm.interval] * 10
    _assert_all_equal(_trainable(inner), start)  # ...and not one bit moved.


# Covered for every registered rule in the default suite by tests/test_invariants.py;
# these older per-rule variants run in the slow suite.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["rs", "sa", "sam", "asam", "sa_every2"])
def test_batchnorm_statistics_follow_the_clean_pass_only(name):
    x, y = regression_data(n=60)
    plain_inner, inner = mlp(batchnorm=True), mlp(batchnorm=True)
    plain = _compile(keras_flat.FlatMinimaModel(plain_inner, None), lr=0.0)
    model = _compile(keras_flat.FlatMinimaModel(inner, ALGORITHMS[name](), seed=1), lr=0.0)
    for m in (plain, model):
        m.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
    bn, plain_bn = inner.layers[1], plain_inner.layers[1]
    initial_mean = np.zeros(bn.moving_mean.shape)
    assert not np.allclose(np.array(bn.moving_mean), initial_mean)  # Updated...
    # ...exactly as by one plain step per step, never by the perturbed pass.
    np.testing.assert_array_equal(np.array(bn.moving_mean), np.array(plain_bn.moving_mean))
    np.testing.assert_array_equal(np.array(bn.moving_variance),
                                  np.array(plain_bn.moving_variance))


def test_plain_wrapper_matches_keras_fit_exactly():
    x, y = regression_data(n=64)
    reference, inner = mlp(batchnorm=True), mlp(batchnorm=True)
    _compile(reference, momentum=0.9)
    reference.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    model = _compile(keras_flat.FlatMinimaModel(inner, None), momentum=0.9)
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    _assert_all_equal([np.array(w) for w in inner.weights],
                      [np.array(w) for w in reference.weights])


@pytest.mark.parametrize("name", ["rs", "sa"])
def test_tolerance_zero_reproduces_plain_training_exactly(name):
    x, y = regression_data(n=64)
    reference, inner = mlp(), mlp()
    _compile(reference, momentum=0.9)
    reference.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    base = ALGORITHMS[name]()
    algorithm = type(base)(**{**base.arguments, "tolerance": 0.0})
    model = _compile(keras_flat.FlatMinimaModel(inner, algorithm, seed=2), momentum=0.9)
    history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert history.history["perturbed"] == [0.0, 0.0, 0.0]
    _assert_all_equal(_trainable(inner), _trainable(reference))


# ---- Logs -----------------------------------------------------------------


def test_logs_report_clean_loss_gradient_norm_and_perturbed_fraction():
    x, y = regression_data(n=16)
    inner = mlp()
    w = [np.array(v, np.float64) for v in inner.trainable_variables]
    loss, g = NumpyMLP().loss_and_grad(w, x, y)
    model = _compile(keras_flat.FlatMinimaModel(inner, "sam", rho=0.5), lr=0.1)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert set(history) == {"loss", "mae", "grad_norm", "perturbed", "skipped_steps"}
    assert history["skipped_steps"] == [0.0]
    assert history["loss"][0] == pytest.approx(loss, rel=1e-5)  # Clean, not perturbed.
    assert history["grad_norm"][0] == pytest.approx(flat_norm(g), rel=1e-5)
    assert history["perturbed"] == [1.0]
    evaluation = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(evaluation) == {"loss", "mae"}


class BatchLogs(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(dict(logs))


def test_tolerance_switch_perturbs_exactly_the_steps_with_small_gradients():
    x, y = regression_data(n=160)
    probe = _compile(keras_flat.FlatMinimaModel(mlp(), None), lr=0.0)
    norms = BatchLogs()
    probe.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[norms])
    # Keras reports running means; recover each step's own gradient norm.
    running = [log["grad_norm"] for log in norms.logs]
    per_step = [running[0]] + [(k + 1) * running[k] - k * running[k - 1]
                               for k in range(1, len(running))]
    tolerance = float(np.median(per_step))
    expected = np.mean(np.array(per_step) <= tolerance)
    assert 0.3 <= expected <= 0.7
    model = _compile(keras_flat.FlatMinimaModel(mlp(), "rs", rho=0.1, tolerance=tolerance), lr=0.0)
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert history.history["perturbed"][0] == pytest.approx(expected)


# ---- Model kinds, inputs, jit ------------------------------------------------


def _functional():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(5, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2)(hidden))


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(5, activation="tanh")
        self.dropout = keras.layers.Dropout(0.0)
        self.out = keras.layers.Dense(2)

    def call(self, inputs, training=False):
        return self.out(self.dropout(self.hidden(inputs), training=training))


def _dict_input():
    a, b = keras.Input((3,), name="a"), keras.Input((1,), name="b")
    merged = keras.layers.Concatenate()([a, b])
    return keras.Model({"a": a, "b": b}, keras.layers.Dense(2)(
        keras.layers.Dense(5, activation="tanh")(merged)))


KINDS = {
    "sequential": lambda: mlp(),
    "unbuilt_sequential": lambda: keras.Sequential(
        [keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)]),
    "functional": _functional,
    "subclassed": Subclassed,
    "dict_input": _dict_input,
}


def _inputs(kind, x):
    return {"a": x[:, :3], "b": x[:, 3:]} if kind == "dict_input" else x


def _manual_sam_step(inner, x, y, rho, lr):
    """Independent SAM step: assign the ascent, take the gradient, restore."""
    variables = inner.trainable_variables

    def gradient():
        with tf.GradientTape() as tape:
            loss = keras.losses.mean_squared_error(y, inner(x, training=True))
            loss = tf.reduce_mean(loss)
        return tape.gradient(loss, variables)

    g = gradient()
    norm = tf.sqrt(sum(tf.reduce_sum(t * t) for t in g))
    saved = [tf.identity(v) for v in variables]
    for v, t in zip(variables, g):
        v.assign_add(rho * t / norm)
    g_adv = gradient()
    for v, s, t in zip(variables, saved, g_adv):
        v.assign(s - lr * t)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_model_kind_takes_the_reference_sam_step(kind):
    x, y = regression_data(n=32)
    inputs = _inputs(kind, x)
    inner, reference = KINDS[kind](), KINDS[kind]()
    inner(inputs), reference(inputs)
    reference.set_weights(inner.get_weights())
    model = _compile(keras_flat.FlatMinimaModel(inner, "sam", rho=0.2), lr=0.1)
    model.fit(inputs, y, batch_size=32, epochs=1, verbose=0)
    _manual_sam_step(reference, inputs, y, rho=0.2, lr=0.1)
    for a, b in zip(_trainable(inner), _trainable(reference)):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("kind", ["unbuilt_sequential", "subclassed", "dict_input"])
@pytest.mark.parametrize("name", ["rs", "sa"])
def test_every_model_kind_trains_with_the_paper_algorithms(kind, name):
    x, y = regression_data(n=64)
    inputs = _inputs(kind, x)
    model = _compile(keras_flat.FlatMinimaModel(KINDS[kind](), ALGORITHMS[name](), seed=0), lr=0.1)
    history = model.fit(inputs, y, batch_size=16, epochs=8, verbose=0).history
    assert history["perturbed"] == [1.0] * 8
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    predictions = model.predict(inputs, verbose=0)
    np.testing.assert_allclose(predictions, model.inner.predict(inputs, verbose=0))


# Covered for every registered rule in the default suite by tests/test_invariants.py;
# these older per-rule variants run in the slow suite.
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_jit_compile_gives_the_same_weights(name):
    x, y = regression_data(n=64)
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(7)
        model = _compile(keras_flat.FlatMinimaModel(mlp(batchnorm=True), ALGORITHMS[name](), seed=3),
                         momentum=0.9, jit=jit)
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        results.append(_trainable(model))
    # Float32 rounding differs between XLA and TensorFlow kernels; over 12
    # steps (BatchNorm over SA's 2-example subsets amplifies it) it stays
    # below 1e-5, while a different random draw would differ by ~1e-2.
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sample_weights_enter_the_perturbed_pass():
    x, y = regression_data(n=32)
    sw = np.where(np.arange(32) < 16, 1.0, 0.0).astype("float32")
    finals = []
    for weights in (sw, None):
        model = _compile(keras_flat.FlatMinimaModel(mlp(), "sam", rho=0.5), lr=0.1)
        model.fit(x, y, sample_weight=weights, batch_size=32, epochs=1, verbose=0)
        finals.append(_trainable(model))
    assert flat_norm([a - b for a, b in zip(*finals)]) > 1e-3


# ---- Seeds and serialization -----------------------------------------------


def _train(name, seed, epochs=2):
    x, y = regression_data(n=64)
    model = _compile(keras_flat.FlatMinimaModel(mlp(), ALGORITHMS[name](), seed=seed), momentum=0.9)
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return _trainable(model)


@pytest.mark.parametrize("name", ["rs", "sa"])
def test_same_seed_same_weights_and_other_seed_other_weights(name):
    _assert_all_equal(_train(name, 11), _train(name, 11))
    assert flat_norm([a - b for a, b in zip(_train(name, 11), _train(name, 12))]) > 1e-6


def test_config_roundtrip_keeps_the_algorithm_and_seed():
    model = keras_flat.FlatMinimaModel(mlp(), "sa", rho=0.3, examples=2, seed=5, name="flat")
    config = model.get_config()
    clone = keras_flat.FlatMinimaModel.from_config(config)
    assert clone.algorithm == model.algorithm
    assert clone.seed == 5 and clone.name == "flat"
    assert keras_flat.FlatMinimaModel(mlp(), "rs").get_config()["seed"] is not None


# Covered for every registered rule in the default suite by tests/test_invariants.py;
# these older per-rule variants run in the slow suite.
@pytest.mark.slow
@pytest.mark.compat
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_save_load_restores_everything_and_training_continues_identically(name, tmp_path):
    x, y = regression_data(n=64)
    uninterrupted = _compile(keras_flat.FlatMinimaModel(mlp(batchnorm=True), ALGORITHMS[name](), seed=4),
                             momentum=0.9)
    uninterrupted.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0)

    model = _compile(keras_flat.FlatMinimaModel(mlp(batchnorm=True), ALGORITHMS[name](), seed=4),
                     momentum=0.9)
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is keras_flat.FlatMinimaModel
    assert loaded.algorithm == model.algorithm
    np.testing.assert_array_equal(np.array(loaded.seed_generator.state),
                                  np.array(model.seed_generator.state))
    assert int(loaded.optimizer.iterations) == 8
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    loaded.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(loaded.inner.weights, uninterrupted.inner.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-6)


def test_fit_records_the_planned_steps_with_callbacks_given_either_way():
    x, y = regression_data(n=32)
    model = keras_flat.FlatMinimaModel(mlp(), "sam", seed=0)
    model.compile(optimizer="sgd", loss="mse")
    seen = []
    record = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: seen.append(1))
    model.fit(x, y, 8, 3, 0, [record], 0.25)  # callbacks and validation_split positional
    assert int(model.algorithm_state.planned_steps) == 3 * 3 and seen == [1]
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[record])
    assert int(model.algorithm_state.planned_steps) == 2 * 2 and seen == [1, 1]
