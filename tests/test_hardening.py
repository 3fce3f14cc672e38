"""Faults, awkward inputs and long runs lose nothing."""

import json
import os
import resource
import zipfile

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

ALL = {
    "none": lambda: None,
    "rs": lambda: algorithms.RandomSmoothing(rho=0.2),
    "sa": lambda: algorithms.SharpnessAware(rho=0.1, examples=2),
    "sam": lambda: algorithms.SAM(rho=0.1),
    "asam": lambda: algorithms.ASAM(rho=0.3),
}


def _weights(model):
    return [np.array(v) for v in model.trainable_variables]


# ---- Non-finite values -----------------------------------------------------


class NanWhenPerturbed(keras.layers.Layer):
    """`x·(1 + v)`, NaN as soon as its scalar weight `v` (0 at the start) moves.

    The added `sqrt(1e-12 - v²) - 1e-6` is 0 at `v = 0` and NaN once `|v|`
    exceeds 1e-6: every perturbation (which moves `v` with the rest) gives
    NaN, the clean pass does not.
    """

    def build(self, input_shape):
        self.v = self.add_weight(shape=(), initializer="zeros")

    def call(self, x):
        edge = keras.ops.sqrt(1e-12 - keras.ops.square(self.v)) - 1e-6
        return x * (1.0 + self.v) + edge


def _nan_when_perturbed_model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), NanWhenPerturbed()])


# Covered for every registered rule in the default suite by tests/test_invariants.py;
# these older per-rule variants run in the slow suite.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["rs", "sa", "sam", "asam", "none"])
def test_nan_in_the_clean_pass_is_skipped_and_counted(name):
    x, y = regression_data(n=48)
    x = x.copy()
    x[20] = np.nan  # In the second batch of three.
    model = keras_flat.FlatMinimaModel(mlp(batchnorm=True), ALL[name](), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    reference = keras_flat.FlatMinimaModel(mlp(batchnorm=True), ALL[name](), seed=0)
    reference.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert history.history["skipped_steps"] == [1.0]
    assert all(np.all(np.isfinite(np.array(v))) for v in model.weights)
    # Skipping left no trace: training on the two good batches gives the same
    # weights, Adam moments, iteration count, BatchNorm statistics and seed
    # counter (the skipped step's random draws are undone with it).
    reference.fit(x[:16], y[:16], batch_size=16, epochs=1, shuffle=False, verbose=0)
    reference.fit(x[32:], y[32:], batch_size=16, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(int(model.optimizer.iterations),
                                  int(reference.optimizer.iterations))
    for a, b in zip(model.weights + model.optimizer.variables,
                    reference.weights + reference.optimizer.variables):
        if a.path.endswith("planned_steps"):  # The length of the last fit: 3 against 1.
            continue
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-7,
                                   err_msg=a.path)


@pytest.mark.parametrize("name", ["rs", "sa", "sam", "asam"])
def test_nan_only_at_the_perturbed_point_is_skipped(name):
    x, y = regression_data(n=32)
    model = keras_flat.FlatMinimaModel(_nan_when_perturbed_model(), ALL[name](), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
    before = _weights(model)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))  # The clean passes are finite...
    assert history["skipped_steps"] == [2.0, 2.0, 2.0]  # ...every perturbed one is not.
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)
    assert int(model.optimizer.iterations) == 0


def test_raise_option_raises_after_skipping_and_ignore_option_does_not_check():
    x, y = regression_data(n=32)
    x = x.copy()
    x[20] = np.inf
    model = keras_flat.FlatMinimaModel(mlp(), "sam", seed=0, on_nonfinite="raise")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0)
    before = _weights(model)
    with pytest.raises(FloatingPointError, match="non-finite"):
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    after = _weights(model)
    good = [a - b for a, b in zip(after, before)]  # Only the good first batch moved it.
    assert all(np.all(np.isfinite(t)) for t in after) and flat_norm(good) > 0
    with pytest.raises(FloatingPointError):
        model.train_on_batch(x[16:], y[16:])
    ignoring = keras_flat.FlatMinimaModel(mlp(), "sam", seed=0, on_nonfinite="ignore")
    ignoring.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    logs = ignoring.fit(x[16:], y[16:], batch_size=16, epochs=1, verbose=0).history
    assert "skipped_steps" not in logs
    assert not all(np.all(np.isfinite(t)) for t in _weights(ignoring))  # Plain Keras behaviour.


def test_terminate_on_nan_still_stops_training():
    x, y = regression_data(n=64)
    x = x.copy()
    x[20] = np.nan
    model = keras_flat.FlatMinimaModel(mlp(), "rs", seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    seen = []
    history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(batch))])
    assert seen == [0, 1]  # Stopped right after the NaN batch...
    assert all(np.all(np.isfinite(t)) for t in _weights(model))  # ...with intact weights.
    assert len(history.history["loss"]) == 1


def test_invalid_on_nonfinite_is_rejected():
    with pytest.raises(ValueError, match=r"`on_nonfinite`.*'retry'"):
        keras_flat.FlatMinimaModel(mlp(), "sam", on_nonfinite="retry")


# ---- Awkward inputs ----------------------------------------------------------


def _manual_sam(w, x, y, sw=None, rho=0.1):
    ref = NumpyMLP()
    g = ref.grad(w, x, y, sw)
    return ref.grad([a + rho * b / flat_norm(g) for a, b in zip(w, g)], x, y, sw)


def test_last_smaller_batch_and_batch_of_one_take_exact_steps():
    x, y = regression_data(n=23)  # Batches of 16 and 7, then of 1.
    model = keras_flat.FlatMinimaModel(mlp(), "sam", rho=0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    w = [np.array(v, np.float64) for v in model.trainable_variables]
    for sl in (slice(0, 16), slice(16, 23)):
        w = [a - 0.1 * b for a, b in zip(w, _manual_sam(w, x[sl], y[sl]))]
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(_weights(model), w):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for i in range(3):
        w = [a - 0.1 * b for a, b in zip(w, _manual_sam(w, x[i:i + 1], y[i:i + 1]))]
    model.fit(x[:3], y[:3], batch_size=1, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(_weights(model), w):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sa_with_more_examples_than_the_batch_uses_the_whole_batch():
    x, y = regression_data(n=32)
    finals = []
    for examples in (4, 50):
        model = keras_flat.FlatMinimaModel(mlp(), "sa", rho=0.1, examples=examples, seed=1)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        finals.append(_weights(model))
    for a, b in zip(*finals):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_steps_per_epoch_with_an_infinite_dataset():
    x, y = regression_data(n=40)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    model = keras_flat.FlatMinimaModel(mlp(), "rs", rho=0.1, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    history = model.fit(dataset, steps_per_epoch=7, epochs=3, verbose=0)
    assert int(model.optimizer.iterations) == 21
    assert history.history["perturbed"] == [1.0, 1.0, 1.0]
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_tuple_inputs_take_the_reference_step():
    x, y = regression_data(n=16)
    a, b = keras.Input((3,)), keras.Input((1,))
    hidden = keras.layers.Dense(5, activation="tanh")(keras.layers.Concatenate()([a, b]))
    inner = keras.Model([a, b], keras.layers.Dense(2)(hidden))
    model = keras_flat.FlatMinimaModel(inner, "sam", rho=0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    # The two-input model is the MLP with its first kernel split in rows.
    w = [np.array(v, np.float64) for v in inner.trainable_variables]
    w = [a - 0.1 * b for a, b in zip(w, _manual_sam(w, x, y))]
    model.fit((x[:, :3], x[:, 3:]), y, batch_size=16, epochs=1, verbose=0)
    for got, expected in zip(_weights(model), w):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["rs", "sa", "sam", "asam"])
def test_all_zero_sample_weights_change_nothing(name):
    x, y = regression_data(n=16)
    model = keras_flat.FlatMinimaModel(mlp(), ALL[name](), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    before = _weights(model)
    history = model.fit(x, y, sample_weight=np.zeros(16, "float32"), batch_size=8,
                        epochs=2, verbose=0).history
    assert history["loss"] == [0.0, 0.0] and history["skipped_steps"] == [0.0, 0.0]
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


def test_tfds_pipeline_trains():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=64):
        dataset = tfds.load("mnist", split="train", as_supervised=True)
    dataset = dataset.map(lambda image, label: (tf.cast(image, tf.float32) / 255.0, label))
    dataset = dataset.batch(16).cache()
    inner = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)])
    model = keras_flat.FlatMinimaModel(inner, "sa", rho=0.05, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(dataset, epochs=5, verbose=0).history
    assert int(model.optimizer.iterations) == 20
    assert history["loss"][-1] < history["loss"][0]


# ---- Long runs -----------------------------------------------------------------


def test_ten_thousand_perturbed_steps_at_zero_learning_rate_change_nothing():
    x, y = regression_data(n=40)
    inner = mlp(batchnorm=True)
    before = [np.array(v) for v in inner.trainable_variables]
    model = keras_flat.FlatMinimaModel(inner, "rs", rho=0.5, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.0, momentum=0.9), loss="mse",
                  steps_per_execution=500)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
    history = model.fit(dataset, steps_per_epoch=5000, epochs=2, verbose=0).history
    assert int(model.optimizer.iterations) == 10_000
    assert history["perturbed"] == [1.0, 1.0]
    for a, b in zip(before, inner.trainable_variables):
        np.testing.assert_array_equal(a, np.array(b))


class CountingSAM(algorithms.SAM):
    """SAM that counts how often its Python code runs, i.e. how often it is traced."""

    traces = 0

    def compute_update(self, oracle, grads):
        CountingSAM.traces += 1
        return super().compute_update(oracle, grads)


def test_train_step_is_traced_a_bounded_number_of_times_and_memory_is_flat():
    x, y = regression_data(n=70)  # Full batches of 16 and a last batch of 6.
    CountingSAM.traces = 0
    model = keras_flat.FlatMinimaModel(mlp(), CountingSAM(rho=0.1), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(x, y, batch_size=16, epochs=5, verbose=0)
    traces = CountingSAM.traces
    assert 1 <= traces <= 2  # One per batch shape.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model.fit(x, y, batch_size=16, epochs=60, verbose=0)
    assert CountingSAM.traces == traces  # No retrace per step or per epoch.
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
    assert grown_kib < 30 * 1024  # Peak memory did not grow with epochs.


# ---- Resume and safe loading ---------------------------------------------------


# The rules that draw random numbers in the default suite; the others in the slow one.
@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[] if name in ("rs", "sa") else pytest.mark.slow)
    for name in sorted(ALL)])
def test_resume_with_schedule_and_callbacks_is_exact(name, tmp_path):
    x, y = regression_data(n=64)
    probe = (x[:32], y[:32])

    def build():
        schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.9)
        model = keras_flat.FlatMinimaModel(mlp(batchnorm=True), ALL[name](), seed=7)
        model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), loss="mse")
        return model

    full = build()
    trace = keras_flat.callbacks.HessianTrace(probe, num_probes=4)
    full_history = full.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0,
                            callbacks=[trace]).history
    first = build()
    first.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    path = os.path.join(tmp_path, "resume.keras")
    first.save(path)
    resumed = keras.models.load_model(path, safe_mode=True)
    trace = keras_flat.callbacks.HessianTrace(probe, num_probes=4)
    history = resumed.fit(x, y, batch_size=16, epochs=4, initial_epoch=2, shuffle=False,
                          verbose=0, callbacks=[trace]).history
    for a, b in zip(full.weights + full.optimizer.variables,
                    resumed.weights + resumed.optimizer.variables):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(history["hessian_trace"], full_history["hessian_trace"][2:],
                               rtol=1e-5)


def _edit_saved_config(path, edit):
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    edit(config["config"])
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_safe_mode_loading_and_clear_errors_for_bad_configs(tmp_path):
    model = keras_flat.FlatMinimaModel(mlp(), "sa", rho=0.1, seed=1)
    model.compile(optimizer="sgd", loss="mse")
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.algorithm == model.algorithm
    unknown = os.path.join(tmp_path, "unknown.keras")
    model.save(unknown)
    _edit_saved_config(unknown, lambda c: c["algorithm"].update(
        class_name="Adamantium", registered_name="keras_flat>Adamantium"))
    with pytest.raises(ValueError, match="Unknown algorithm class 'Adamantium'"):
        keras.models.load_model(unknown, safe_mode=True)
    bad = os.path.join(tmp_path, "bad.keras")
    model.save(bad)
    _edit_saved_config(bad, lambda c: c["algorithm"]["config"].update(rho=-1.0))
    with pytest.raises(ValueError, match=r"`rho`.*-1\.0"):
        keras.models.load_model(bad, safe_mode=True)
