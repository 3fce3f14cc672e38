"""Which BatchNormalization layers a model has, frozen ones included or not."""

import keras

from keras_flat.utils.internals import flatten_layers


def batchnorm_layers(model, *, include_frozen):
    """The `BatchNormalization` layers of `model`, nested ones included.

    A layer frozen with `trainable=False` normalises by its moving statistics
    even in training mode, like a per-example layer, and its statistics are
    never updated.

    Args:
        model: A Keras model or layer.
        include_frozen: Whether to list frozen layers too: False for the
            layers that normalise with batch statistics in training, True
            for every layer holding moving statistics.

    Returns:
        A list of layers, in the order of the layer traversal.
    """
    return [layer for layer in flatten_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)
            and (include_frozen or layer.trainable)]


def batchnorm_variances(model):
    """The `moving_variance` variables of the BatchNormalization layers of `model`."""
    return [layer.moving_variance for layer in batchnorm_layers(model, include_frozen=True)
            if getattr(layer, "moving_variance", None) is not None]
