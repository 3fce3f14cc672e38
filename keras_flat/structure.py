"""What each trainable variable is, read from the layers that own it.

Rules that treat variables differently (ASAM does not rescale offsets, RWP
perturbs each filter in proportion to its norm) decide from the layer
structure, never from variable names:

- `"offset"`: a layer's `bias` or `beta` (BatchNormalization,
  LayerNormalization, GroupNormalization, Dense, convolutions, RNN cells...);
- `"scale"`: a normalization layer's `gamma`;
- `"embedding"`: an `Embedding` layer's `embeddings`;
- `"kernel"`: every other variable.

A custom layer whose offsets are not called `bias` or `beta` says so with a
`keras_flat_offsets` attribute (a list of its variables, or a method
returning one):

```python
class Affine(keras.layers.Layer):
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones")
        self.shift = self.add_weight(shape=(shape[-1],), initializer="zeros")

    @property
    def keras_flat_offsets(self):
        return [self.shift]
```
"""

import keras

from keras_flat import internals

ROLES = ("kernel", "embedding", "scale", "offset")
_OFFSET_ATTRIBUTES = ("bias", "beta")
_SCALE_ATTRIBUTES = ("gamma",)
_TRANSPOSED = (
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
)


def _variables_of(layer, attribute):
    value = getattr(layer, attribute, None)
    if callable(value):
        value = value()
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in values if isinstance(v, keras.Variable)]


def roles(model):
    """Maps `id(variable)` to its role, for every variable of `model`.

    Args:
        model: A Keras layer or model.

    Returns:
        A dict from `id(variable)` to one of `ROLES`; variables not listed
        are kernels.
    """
    found = {}
    for layer in internals.flatten_layers(model):
        for attribute in _OFFSET_ATTRIBUTES + ("keras_flat_offsets",):
            for variable in _variables_of(layer, attribute):
                found[id(variable)] = "offset"
        for attribute in _SCALE_ATTRIBUTES:
            for variable in _variables_of(layer, attribute):
                found.setdefault(id(variable), "scale")
        if isinstance(layer, keras.layers.Embedding):
            for variable in _variables_of(layer, "embeddings"):
                found[id(variable)] = "embedding"
        if isinstance(layer, _TRANSPOSED):
            for variable in _variables_of(layer, "kernel"):
                found[id(variable)] = "transposed_kernel"
        if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
            for variable in _variables_of(layer, "kernel"):
                found[id(variable)] = "depthwise_kernel"
        if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
            for variable in _variables_of(layer, "depthwise_kernel"):
                found[id(variable)] = "depthwise_kernel"
    return found


def role_of(variable, table):
    """The role of `variable` in a table from `roles`: `"kernel"` if unlisted."""
    role = table.get(id(variable), "kernel")
    return "kernel" if role in ("transposed_kernel", "depthwise_kernel") else role


def filter_axes(variable, table):
    """The axes a filter's norm is taken over (all others index the filters).

    A filter is one output unit or channel: for Dense and convolution
    kernels (output dimension last in Keras) every axis but the last; for
    transposed convolutions (output channels second to last) every axis but
    that one; for depthwise kernels the spatial axes (each input channel and
    multiplier is a filter); for embeddings one row per token. A vector
    (bias, scale) is a single filter.

    Returns:
        A tuple of axes to reduce over, possibly all of them.
    """
    rank = len(variable.shape)
    if rank <= 1:
        return tuple(range(rank))
    kind = table.get(id(variable), "kernel")
    if kind == "embedding":
        return tuple(range(1, rank))
    if kind == "transposed_kernel":
        return tuple(a for a in range(rank) if a != rank - 2)
    if kind == "depthwise_kernel":
        return tuple(range(rank - 2))
    return tuple(range(rank - 1))
