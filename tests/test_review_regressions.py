"""Regression tests for edge cases: BatchNorm subsets, regularized Hessians,
exhausted Krylov spaces, loss_scale_factor, raise under mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_flat
from keras_flat import hessian

from helpers import make_oracle
from helpers import mlp
from helpers import regression_data


def test_sa_examples_of_a_batchnorm_model_are_masked_not_gathered():
    # Gathering one example would run BatchNorm on a batch of one, whose output
    # is constant: every weight before BatchNorm would get a zero gradient.
    x, y = regression_data(n=16)
    inner = mlp(batchnorm=True)
    model = keras_flat.FlatMinimaModel(inner, "sa", rho=0.1)
    model.compile(optimizer="sgd", loss="mse")
    variables = model.trainable_variables
    oracle = make_oracle(model, tf.constant(x), tf.constant(y), None,
                         seed=tf.constant([1, 2], tf.int64))
    subset = oracle.sample_subset(1, tf.constant([3, 4], tf.int64))
    assert subset.masked
    _, grads = oracle.gradient(subset=subset)
    i = int(subset.indices[0])
    # Reference: the chosen example's loss inside the whole batch's forward pass.
    with tf.GradientTape() as tape:
        with keras.StatelessScope(state_mapping=[(v, v.value) for v in model.variables]):
            prediction = inner(tf.constant(x), training=True)
        loss = tf.reduce_mean(tf.square(prediction[i] - y[i]))
    expected = tape.gradient(loss, variables)
    for g, e in zip(grads, expected):
        np.testing.assert_allclose(np.array(g), np.array(e), rtol=1e-4, atol=1e-6)
    assert np.abs(np.array(grads[0])).max() > 1e-4  # The first kernel moves.


def test_hessian_in_training_mode_includes_regularizers_and_activity_losses():
    x, y = regression_data(n=32)
    l2 = 0.1

    def build(regularized):
        return keras.Sequential([
            keras.Input((4,)),
            keras.layers.Dense(
                5, activation="tanh",
                kernel_regularizer=keras.regularizers.L2(l2) if regularized else None,
                activity_regularizer=keras.regularizers.L2(0.01) if regularized else None),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2)])

    model, plain = build(True), build(False)
    plain.set_weights(model.get_weights())
    model.compile(loss="mse")
    plain.compile(loss="mse")
    before = [np.array(v) for v in model.variables]
    with_reg = hessian.exact_hessian(model, (x, y), training=True)
    without = hessian.exact_hessian(plain, (x, y), training=True)
    difference = with_reg - without
    # The kernel's block gains the L2 term 2*l2*I, plus the activity term.
    np.testing.assert_allclose(np.diag(difference)[:20], 2 * l2, atol=0.01)
    activity = difference.copy()
    activity[np.arange(20), np.arange(20)] -= 2 * l2
    assert np.abs(activity).max() > 1e-4
    for a, b in zip(before, model.variables):
        np.testing.assert_array_equal(a, np.array(b))  # BatchNorm statistics untouched.


def test_lanczos_returns_when_the_krylov_space_is_exhausted():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(loss="mse")
    x = np.eye(3, dtype="float32") * np.sqrt(3.0)
    y = np.zeros((3, 1), "float32")
    # H = 2 XᵀX / n = 2 I: every start vector is an eigenvector.
    result = hessian.top_eigenvalues(model, (x, y), num_eigenvalues=2)
    assert result.converged
    np.testing.assert_allclose(result.values[0], 2.0, rtol=1e-5)
    plus = hessian.hessian_trace(model, (x, y), num_probes=30, estimator="hutch++")
    assert plus.value == pytest.approx(6.0, rel=1e-4)  # Sketch clamped to d = 3.


def test_loss_scale_factor_optimizer_skips_nonfinite_steps_with_its_state():
    x, y = regression_data(n=32)
    x = x.copy()
    x[20] = np.nan
    model = keras_flat.FlatMinimaModel(mlp(), "sam", rho=0.1, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9, loss_scale_factor=128.0),
                  loss="mse")
    model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0)
    before = [np.array(v) for v in model.trainable_variables + model.optimizer.variables]
    history = model.fit(x[16:], y[16:], batch_size=16, epochs=1, verbose=0).history
    assert history["skipped_steps"] == [1.0]
    after = [np.array(v) for v in model.trainable_variables + model.optimizer.variables]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_raise_mode_tolerates_loss_scale_overflow_but_not_a_nan_loss():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x, y = regression_data(n=32)
        model = keras_flat.FlatMinimaModel(mlp(), "sam", rho=0.1, seed=0, on_nonfinite="raise")
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(x, y * 1e4, batch_size=16, epochs=1, verbose=0)  # Overflow: skipped, no raise.
        bad = x.copy()
        bad[3] = np.nan
        with pytest.raises(FloatingPointError):
            model.fit(bad, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_dtype_policy_survives_the_config():
    model = keras_flat.FlatMinimaModel(mlp(), "rs", dtype="mixed_bfloat16")
    clone = keras_flat.FlatMinimaModel.from_config(model.get_config())
    assert clone.dtype_policy.name == "mixed_bfloat16"


def test_operator_options_cannot_be_given_twice():
    x, y = regression_data(n=8)
    model = mlp()
    model.compile(loss="mse")
    op = hessian.HessianOperator(model, (x, y))
    with pytest.raises(ValueError, match="already fixes"):
        hessian.hessian_trace(op, training=True)
