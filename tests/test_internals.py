"""Every private Keras hook is checked before use and fails loudly when missing."""

import types

import keras
import numpy as np
import pytest

import keras_flat
from keras_flat.utils import internals
from keras_flat.utils import structure

from helpers import NumpyMLP
from helpers import mlp
from helpers import regression_data


def test_flatten_layers_reaches_nested_layers_and_fails_loudly_without_the_hook():
    inputs = keras.Input((3, 4))
    outputs = keras.layers.MultiHeadAttention(2, 4)(inputs, inputs)
    model = keras.Model(inputs, outputs)
    layers = internals.flatten_layers(model)
    # MultiHeadAttention keeps its projections out of `Model.layers`.
    assert len(layers) > len(model.layers) + 1
    assert any(isinstance(layer, keras.layers.EinsumDense) for layer in layers)
    with pytest.raises(internals.MissingKerasHook, match=keras.__version__):
        internals.flatten_layers(types.SimpleNamespace())


def test_offsets_come_from_the_layer_structure_not_from_names():
    class Shift(keras.layers.Layer):
        def build(self, shape):
            self.bias = self.add_weight(shape=(shape[-1],), initializer="ones", name="bias")
            self.moved = self.add_weight(shape=(shape[-1],), initializer="zeros", name="kernel")

        @property
        def keras_flat_offsets(self):
            return [self.moved]

        def call(self, x):
            return x * self.bias + self.moved

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="beta"),
                              keras.layers.LayerNormalization(), Shift()])
    found = {p.name.split("/", 1)[1]: p.offset for p in structure.describe_parameters(model)}
    # A Dense layer named "beta" keeps a kernel that is not an offset; a custom
    # layer's variable named "kernel" is one when the layer says so.
    assert found == {
        "beta/kernel": False, "beta/bias": True,
        "layer_normalization/gamma": False, "layer_normalization/beta": True,
        "shift/bias": True, "shift/kernel": True,
    }


def test_loss_tracker_is_checked():
    with pytest.raises(internals.MissingKerasHook, match="_loss_tracker"):
        internals.loss_tracker(types.SimpleNamespace())
    x, y = regression_data(n=16)
    inner = mlp()
    w = [np.array(v, np.float64) for v in inner.trainable_variables]
    model = keras_flat.FlatMinimaModel(inner, "sam", seed=0)
    model.compile(optimizer="sgd", loss="mse")
    logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    # The logged loss is the clean loss, read from the tracker the hook updates.
    assert logs["loss"][0] == pytest.approx(NumpyMLP().loss_and_grad(w, x, y)[0], rel=1e-5)


def test_symbolic_build_hook_is_checked(monkeypatch):
    internals.check_symbolic_build_hook()  # Present in this Keras.
    trainer = next(c for c in type.mro(keras.Model) if "_maybe_symbolic_build" in vars(c))
    original = trainer._maybe_symbolic_build
    monkeypatch.delattr(trainer, "_maybe_symbolic_build")
    with pytest.raises(internals.MissingKerasHook, match="_maybe_symbolic_build"):
        internals.check_symbolic_build_hook()
    monkeypatch.setattr(trainer, "_maybe_symbolic_build", lambda self, batch=None: original,
                        raising=False)
    with pytest.raises(internals.MissingKerasHook, match="parameters"):
        internals.check_symbolic_build_hook()
