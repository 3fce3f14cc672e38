"""What each trainable variable is, read from the layer that owns it.

Rules that treat variables differently decide from the layer structure,
never from variable names: ASAM does not rescale offsets, RWP perturbs each
filter in proportion to its norm, and the landscape's filter normalisation
(Li et al., 2018) rescales each filter of a random direction.

A filter is one *output unit* of a layer: the slice of a parameter that
produces one output feature. Keras stores output units on the last axis of
most kernels, where PyTorch stores them on the first. The PyTorch reference
implementations (RWP's, the filter-normalised directions of Li et al.) take
the slices along a parameter's first axis, whatever the layer; for dense,
convolution, depthwise, recurrent, attention and embedding layers that is
the output unit, and the rules below give the same filters. Transposed
convolutions differ: PyTorch stores their kernels `(in, out, ...)`, so the
reference code's filters there are *input* channels, while keras-flat's
are output channels, as for every other layer. By the layer that owns the
variable:

- `Dense`, `Conv1D/2D/3D`, `LSTM`/`GRU`/`SimpleRNN` kernels and any other
  kernel of rank >= 2 (kind `"weight"`): one slice along the last axis,
  `kernel[..., j]`.
- `Conv1DTranspose/2DTranspose/3DTranspose` kernels, stored
  `(..., out, in)`: one output channel, `kernel[..., j, :]`.
- `DepthwiseConv1D/2D` kernels and the `depthwise_kernel` of
  `SeparableConv1D/2D`, stored `(..., in, multiplier)`: one (input
  channel, multiplier) pair.
- `EinsumDense` kernels (and so `MultiHeadAttention`'s): one combination of
  the kernel axes that appear in the output of the layer's equation.
- `Embedding` `embeddings` (kind `"embedding"`): one token's vector.
- A layer's `bias`, and every other variable of rank <= 1 (kind `"bias"`):
  the whole tensor is one filter.
- Scales and offsets of `BatchNormalization`, `LayerNormalization`,
  `GroupNormalization` and `RMSNormalization` (kind `"normalization"`): the
  whole tensor is one filter.

*Offsets* are a layer's `bias` and a normalisation layer's `beta`. A custom
layer whose offsets are held under other attributes says so with a
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

import dataclasses

import keras

from keras_flat.utils import internals

KINDS = ("weight", "embedding", "bias", "normalization")

_NORMALIZATION_LAYERS = tuple(
    getattr(keras.layers, name)
    for name in ("BatchNormalization", "LayerNormalization", "GroupNormalization",
                 "RMSNormalization")
    if hasattr(keras.layers, name)
)
_TRANSPOSE_LAYERS = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                     keras.layers.Conv3DTranspose)
_DEPTHWISE_LAYERS = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE_LAYERS = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


@dataclasses.dataclass(frozen=True)
class Parameter:
    """How one trainable variable splits into filters, and whether it is an offset.

    Attributes:
        name: The variable's path, e.g. `"sequential/dense/kernel"`.
        shape: Its shape.
        kind: One of `"weight"`, `"embedding"`, `"bias"`, `"normalization"`.
        filter_axes: The axes that index filters; the norm of one filter is
            taken over all other axes. `()` means the whole tensor is one
            filter.
        layer: Class name of the layer that owns the variable.
        offset: Whether the variable is an offset (a `bias`, a normalisation
            `beta`, or one a custom layer lists in `keras_flat_offsets`).
    """

    name: str
    shape: tuple
    kind: str
    filter_axes: tuple
    layer: str
    offset: bool = False

    @property
    def reduce_axes(self):
        """The axes a filter's norm is taken over."""
        return tuple(a for a in range(len(self.shape)) if a not in self.filter_axes)


def describe_parameters(model):
    """Describes every trainable variable of `model`, in trainable order.

    Args:
        model: A built Keras model.

    Returns:
        A list of `Parameter`, one per `model.trainable_variables` entry.

    Example:

    ```python
    for p in keras_flat.utils.structure.describe_parameters(model):
        print(p.name, p.kind, p.filter_axes, p.offset)
    ```
    """
    table = parameters_by_id(model)
    return [table[id(v)] for v in model.trainable_variables]


def parameters_by_id(model):
    """`{id(variable): Parameter}` for every trainable variable of `model`."""
    owners = _owners(model)
    return {id(v): _describe(v, owners.get(id(v))) for v in model.trainable_variables}


def _owners(model):
    """Maps id(variable) to the innermost layer that holds it."""
    best = {}
    for layer in internals.flatten_layers(model):
        weights = layer.trainable_weights
        for v in weights:
            # The innermost owner holds the fewest weights; on ties the later
            # (deeper) layer in the traversal wins.
            if id(v) not in best or len(weights) <= best[id(v)][0]:
                best[id(v)] = (len(weights), layer)
    return {key: layer for key, (_, layer) in best.items()}


def _held(layer, attribute):
    """The variables `layer.<attribute>` holds (a variable, a list, or a method)."""
    value = getattr(layer, attribute, None)
    if callable(value) and not isinstance(value, keras.Variable):
        value = value()
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in values if isinstance(v, keras.Variable)]


def _is(variable, layer, *attributes):
    return layer is not None and any(
        variable is held for attribute in attributes for held in _held(layer, attribute))


def _describe(variable, layer):
    shape = tuple(int(s) for s in variable.shape)
    rank = len(shape)
    name = getattr(variable, "path", variable.name)
    offset = _is(variable, layer, "bias", "beta", "keras_flat_offsets")

    def make(kind, axes):
        return Parameter(name=name, shape=shape, kind=kind, filter_axes=tuple(axes),
                         layer=type(layer).__name__ if layer is not None else "",
                         offset=offset)

    if isinstance(layer, _NORMALIZATION_LAYERS):
        return make("normalization", ())
    if offset or rank <= 1:
        return make("bias", ())
    if isinstance(layer, keras.layers.Embedding) and _is(variable, layer, "embeddings"):
        return make("embedding", (0,))
    if isinstance(layer, _TRANSPOSE_LAYERS) and _is(variable, layer, "kernel"):
        return make("weight", (rank - 2,))
    if (isinstance(layer, _DEPTHWISE_LAYERS) and _is(variable, layer, "kernel")) or (
            isinstance(layer, _SEPARABLE_LAYERS) and _is(variable, layer, "depthwise_kernel")):
        return make("weight", (rank - 2, rank - 1))
    if isinstance(layer, keras.layers.EinsumDense) and _is(variable, layer, "kernel"):
        axes = _einsum_output_axes(getattr(layer, "equation", ""), rank)
        if axes is not None:
            return make("weight", axes)
    return make("weight", (rank - 1,))


def _einsum_output_axes(equation, rank):
    """Axes of an EinsumDense kernel that appear in the output, or None."""
    try:
        inputs, output = equation.replace(" ", "").split("->")
        kernel = inputs.split(",")[1]
    except (ValueError, IndexError):
        return None
    if "." in kernel or len(kernel) != rank:
        return None
    axes = tuple(i for i, letter in enumerate(kernel) if letter in output)
    return axes or None
