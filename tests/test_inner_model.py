"""The wrapped model's own training contract: its loss, its training step, nesting.

References are plain Keras (`fit` of the same model without the wrapper) and
a SAM step assembled by hand with `tf.GradientTape` on the model's own loss.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_flat

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
PENALTY = 0.5


class PenalisedModel(keras.Model):
    """A subclassed model whose `compute_loss` adds a term on its outputs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(
            8, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(0))
        self.out = keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(1))

    def call(self, x):
        return self.out(self.hidden(x))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        base = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                    training=training)
        return base + PENALTY * tf.reduce_mean(tf.square(y_pred))


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0.5).astype("int32")


def _built(model):
    model(np.zeros((1, 5), "float32"))
    return model


def _weights(model):
    return [np.array(v) for v in model.trainable_variables]


def _own_loss(model, x, y):
    """The model's loss written out by hand: cross-entropy plus the penalty."""
    logits = model(x)
    return LOSS(y, logits) + PENALTY * tf.reduce_mean(tf.square(logits))


@pytest.mark.parametrize("algorithm", [None, keras_flat.algorithms.SAM(rho=0.0)])
def test_the_inner_compute_loss_is_the_loss_trained(algorithm):
    x, y = _data()
    plain = _built(PenalisedModel())
    plain.compile(keras.optimizers.SGD(0.1), LOSS)
    expected = plain.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    inner = _built(PenalisedModel())
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=0)
    model.compile(keras.optimizers.SGD(0.1), LOSS)
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-5)
    for a, b in zip(_weights(inner), _weights(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_perturbed_pass_uses_the_inner_compute_loss():
    x, y = _data(8)
    rho, lr = 0.3, 0.1
    reference = _built(PenalisedModel())
    variables = reference.trainable_variables
    with tf.GradientTape() as tape:
        loss = _own_loss(reference, x, y)
    g = tape.gradient(loss, variables)
    norm = tf.sqrt(sum(tf.reduce_sum(t ** 2) for t in g))
    for v, t in zip(variables, g):
        v.assign_add(rho * t / norm)
    with tf.GradientTape() as tape:
        loss = _own_loss(reference, x, y)
    h = tape.gradient(loss, variables)
    expected = [np.array(v) - rho * np.array(t) / float(norm) - lr * np.array(d)
                for v, t, d in zip(variables, g, h)]

    inner = _built(PenalisedModel())
    model = keras_flat.FlatMinimaModel(inner, keras_flat.algorithms.SAM(rho=rho), seed=0)
    model.compile(keras.optimizers.SGD(lr), LOSS)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(_weights(inner), expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_an_inner_train_step_is_refused_by_name():
    class OwnStep(keras.Sequential):
        def train_step(self, data):
            return super().train_step(data)

    inner = OwnStep([keras.Input((5,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="train_step.*compute_loss"):
        keras_flat.FlatMinimaModel(inner, "sam")


def test_a_wrapper_inside_a_wrapper_is_refused():
    inner = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    wrapped = keras_flat.FlatMinimaModel(inner, "sam", seed=0)
    with pytest.raises(ValueError, match="already a FlatMinimaModel.*model.inner"):
        keras_flat.FlatMinimaModel(wrapped, "sa")


def test_export_serves_what_predict_returns(tmp_path):
    x, y = _data()
    inner = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(3)])
    model = keras_flat.FlatMinimaModel(inner, "sam", seed=0)
    model.compile("sgd", LOSS)
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "served")
    model.export(path, verbose=False)
    served = tf.saved_model.load(path)
    np.testing.assert_allclose(np.array(served.serve(x)), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)
