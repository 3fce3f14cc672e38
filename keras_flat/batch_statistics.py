"""The batch statistics a training step's BatchNormalization layers normalised by.

In training mode a `keras.layers.BatchNormalization` layer normalises by the
mean and variance of the current batch and moves its moving statistics toward
them: `new = momentum * old + (1 - momentum) * batch`. Reading the moving
statistics before and after the clean forward pass therefore gives the batch
statistics back, `batch = (new - momentum * old) / (1 - momentum)`, without a
second pass over the batch. With these statistics held fixed, a subset of the
batch evaluated in inference mode (the layers then normalise by their
"moving" statistics, mapped to the batch's) gives each example the very
normalisation it had in the clean pass, so a few gathered examples are a valid
sub-batch.

The inversion is exact up to the rounding of the layer's own update,
amplified by `1 / (1 - momentum)`: a relative error of about 1e-5 of the
statistics' scale at Keras's default momentum 0.99. It is impossible for a
layer with `momentum=1` (the moving statistics never change) or with
`renorm=True` (a different update); `BatchStatistics.recoverable` is then
False.
"""

import keras
import tensorflow as tf

from keras_flat.internals import flatten_layers


def batch_normalization_layers(model):
    """The BatchNormalization layers of `model` that use batch statistics in training.

    A layer frozen with `trainable=False` normalises by its moving statistics
    even in training mode, like every other per-example layer, so it is not
    listed.
    """
    return [
        layer for layer in flatten_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


class BatchStatistics:
    """Recovers the clean pass's batch statistics from the moving-statistic update.

    Create it before the clean forward pass (it reads the moving statistics
    then), and call `fixed` after it.

    Args:
        model: The model whose forward pass is about to run.
    """

    def __init__(self, model):
        self.layers = batch_normalization_layers(model)
        self.recoverable = all(
            not getattr(layer, "renorm", False) and float(layer.momentum) < 1.0
            for layer in self.layers
        )
        self._before = []
        if self.recoverable:
            for layer in self.layers:
                self._before.append((
                    tf.identity(tf.convert_to_tensor(layer.moving_mean)),
                    tf.identity(tf.convert_to_tensor(layer.moving_variance)),
                ))

    def __bool__(self):
        return bool(self.layers)

    def fixed(self):
        """`(variable, value)` pairs mapping each layer's moving statistics to the batch's.

        Call after the clean forward pass. With these in a
        `keras.StatelessScope(state_mapping=...)` and the model called with
        `training=False`, every listed layer normalises by the clean batch's
        mean and variance.

        Returns:
            A list of `(variable, tensor)` pairs, or None when the statistics
            cannot be recovered (see the module docstring).
        """
        if not self.recoverable:
            return None
        mapping = []
        for layer, (old_mean, old_variance) in zip(self.layers, self._before):
            mean = _invert(layer.moving_mean, old_mean, layer.momentum)
            variance = _invert(layer.moving_variance, old_variance, layer.momentum)
            # Rounding can take a variance of about zero just below it.
            variance = tf.maximum(variance, tf.zeros_like(variance))
            mapping += [(layer.moving_mean, mean), (layer.moving_variance, variance)]
        return mapping


def _invert(variable, old, momentum):
    """The batch statistic behind the update `new = momentum*old + (1-momentum)*batch`.

    Keras multiplies by `momentum` and `1 - momentum` as constants of the
    statistic's dtype; the inversion uses the same constants. Its error is
    the rounding of `new`, amplified by `1 / (1 - momentum)`.
    """
    dtype = tf.as_dtype(old.dtype)
    kept = tf.constant(momentum, dtype)
    taken = tf.constant(1.0 - momentum, dtype)
    new = tf.convert_to_tensor(variable)
    return (new - kept * old) / taken
