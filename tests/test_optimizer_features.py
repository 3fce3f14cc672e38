"""Optimizer features act on the final (perturbed) gradient.

Every expected value below is a SAM step computed by hand in NumPy, then
passed through the optimizer feature by hand.
"""

import keras
import numpy as np

import keras_flat

from helpers import NumpyMLP
from helpers import flat_norm
from helpers import mlp
from helpers import regression_data

RHO, LR = 0.3, 0.1


def _sam_gradient(w, x, y):
    ref = NumpyMLP()
    g = ref.grad(w, x, y)
    return ref.grad([a + RHO * b / flat_norm(g) for a, b in zip(w, g)], x, y)


def _model(**optimizer_kwargs):
    inner = mlp()
    model = keras_flat.FlatMinimaModel(inner, "sam", rho=RHO)
    model.compile(optimizer=keras.optimizers.SGD(LR, **optimizer_kwargs), loss="mse")
    w = [np.array(v, np.float64) for v in inner.trainable_variables]
    return model, w


def _weights(model):
    return [np.array(v, np.float64) for v in model.inner.trainable_variables]


def _close(actual, expected):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


def test_global_clipnorm_clips_the_sam_gradient():
    x, y = regression_data(n=16)
    model, w = _model(global_clipnorm=0.05)
    g = _sam_gradient(w, x, y)
    assert flat_norm(g) > 0.05
    clipped = [t * 0.05 / flat_norm(g) for t in g]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    _close(_weights(model), [a - LR * b for a, b in zip(w, clipped)])


def test_clipnorm_clips_each_tensor_of_the_sam_gradient():
    x, y = regression_data(n=16)
    model, w = _model(clipnorm=0.02)
    g = _sam_gradient(w, x, y)
    clipped = [t * min(1.0, 0.02 / np.linalg.norm(t)) for t in g]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    _close(_weights(model), [a - LR * b for a, b in zip(w, clipped)])


def test_decoupled_weight_decay_acts_on_the_weights_not_the_ascent():
    x, y = regression_data(n=16)
    model, w = _model(weight_decay=0.5)
    g = _sam_gradient(w, x, y)  # The ascent direction has no decay term.
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    _close(_weights(model), [a - LR * 0.5 * a - LR * b for a, b in zip(w, g)])


def test_ema_averages_the_sam_iterates():
    x, y = regression_data(n=32)
    model, w0 = _model(use_ema=True, ema_momentum=0.9)
    w1 = [a - LR * b for a, b in zip(w0, _sam_gradient(w0, x[:16], y[:16]))]
    w2 = [a - LR * b for a, b in zip(w1, _sam_gradient(w1, x[16:], y[16:]))]
    seen = []
    watch = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(_weights(model)))
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[watch])
    _close(seen[0], w1)
    _close(seen[1], w2)
    # Keras starts the average at the first iterate, mixes with 0.9, and
    # writes the average into the model when fit ends.
    _close(_weights(model), [0.9 * a + 0.1 * b for a, b in zip(w1, w2)])


def test_gradient_accumulation_averages_per_micro_batch_sam_gradients():
    """Chosen semantics: each micro-batch takes its own SAM ascent from the
    same weights (m-sharpness with m = micro-batch size); the optimizer
    averages the k perturbed gradients and applies them once."""
    x, y = regression_data(n=48)
    model, w = _model(gradient_accumulation_steps=3)
    grads = [_sam_gradient(w, x[i:i + 16], y[i:i + 16]) for i in (0, 16, 32)]
    mean = [np.mean(parts, axis=0) for parts in zip(*grads)]
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(_weights(model))

    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=[Watch()])
    _close(seen[0], w)  # Nothing moves until the third micro-batch...
    _close(seen[1], w)
    _close(seen[2], [a - LR * b for a, b in zip(w, mean)])  # ...then one averaged step.
    # Not the SAM step of the concatenated batch (one ascent for all 48).
    whole = _sam_gradient(w, x, y)
    assert flat_norm([a - b for a, b in zip(mean, whole)]) > 1e-4
