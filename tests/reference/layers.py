"""What each trainable variable is, read from its Keras layer (independently of keras_flat).

Used by the references of pieces that treat variables differently: an
*offset* is a layer's `bias` or a normalisation layer's `beta`; a *filter*
is one output unit of a kernel (the slice producing one output feature),
and a kernel of rank >= 2 outside a normalisation layer is split into
filters, every other variable being one filter as a whole.
"""

import keras

_NORMALIZATION = tuple(getattr(keras.layers, name) for name in (
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "RMSNormalization")
    if hasattr(keras.layers, name))
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
              keras.layers.Conv3DTranspose)


def owner(model, variable):
    """The innermost layer of `model` holding `variable` (fewest weights)."""
    best = None
    for layer in model._flatten_layers(include_self=False):
        weights = layer.trainable_weights
        if any(w is variable for w in weights):
            if best is None or len(weights) <= len(best.trainable_weights):
                best = layer
    return best


def _holds(layer, attribute, variable):
    return layer is not None and getattr(layer, attribute, None) is variable


def is_offset(model, variable):
    """A layer's `bias` or a normalisation layer's `beta`."""
    layer = owner(model, variable)
    return _holds(layer, "bias", variable) or _holds(layer, "beta", variable)


def is_filtered(model, variable):
    """A kernel or embedding split into filters (rank >= 2, not an offset or normalisation)."""
    layer = owner(model, variable)
    return (len(variable.shape) >= 2 and not is_offset(model, variable)
            and not isinstance(layer, _NORMALIZATION))


def filter_reduce_axes(model, variable):
    """The axes one filter's norm is taken over (all axes for a one-filter variable)."""
    rank = len(variable.shape)
    everything = tuple(range(rank))
    if not is_filtered(model, variable):
        return everything
    layer = owner(model, variable)
    if isinstance(layer, keras.layers.Embedding):
        filters = (0,)  # One token's vector.
    elif isinstance(layer, _DEPTHWISE) or (
            isinstance(layer, _SEPARABLE) and _holds(layer, "depthwise_kernel", variable)):
        filters = (rank - 2, rank - 1)  # One (input channel, multiplier) pair.
    elif isinstance(layer, _TRANSPOSE):
        filters = (rank - 2,)  # Stored (..., out, in).
    elif isinstance(layer, keras.layers.EinsumDense):
        inputs, output = layer.equation.replace(" ", "").split("->")
        kernel = inputs.split(",")[1]
        filters = tuple(i for i, letter in enumerate(kernel) if letter in output)
    else:
        filters = (rank - 1,)  # Keras kernels keep output units last.
    return tuple(a for a in everything if a not in filters)
