"""What a "filter" is for each kind of Keras parameter (Li et al., 2018).

Filter normalisation rescales each filter of a random direction to the
norm of the matching filter of the weights, so that directions are
comparable across layers and across networks whose weights differ in scale.
A filter is one *output unit* of a layer: the slice of a parameter that
produces one output feature. Keras stores output units on the last axis of
most kernels, where PyTorch stores them on the first; the rules below give
the same filters as the PyTorch reference implementation for the layers
both frameworks share.

What one filter is, by the layer that owns the parameter:

- `Dense`, `Conv1D/2D/3D`, `LSTM`/`GRU`/`SimpleRNN` kernels and any other
  kernel of rank >= 2 (kind "weight"): one slice along the last axis, an
  output unit or output channel, `kernel[..., j]`.
- `Conv1DTranspose/2DTranspose/3DTranspose` kernels, stored
  `(..., out, in)`: one output channel, `kernel[..., j, :]`.
- `DepthwiseConv1D/2D` kernels and the `depthwise_kernel` of
  `SeparableConv1D/2D`, stored `(..., in, multiplier)`: one (input
  channel, multiplier) pair, `kernel[..., c, m]`. The `pointwise_kernel`
  is an ordinary kernel (last axis).
- `EinsumDense` kernels (and so `MultiHeadAttention`'s): one combination of
  the kernel axes that appear in the output of the layer's equation.
- `Embedding` `embeddings`, stored `(vocabulary, dim)` (kind "embedding"):
  one token's vector, `embeddings[i, :]`.
- Biases (parameters named `bias`) and every other parameter of rank <= 1
  (kind "bias"): the whole tensor is one filter.
- Scales and offsets of `BatchNormalization`, `LayerNormalization`,
  `GroupNormalization` and `RMSNormalization` (kind "normalization"): the
  whole tensor is one filter.

Biases and normalisation parameters are left out of random directions by
default (their direction is zero), as in Li et al.
"""

import dataclasses

import keras

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
    """How one trainable variable splits into filters.

    Attributes:
        name: The variable's path, e.g. `"sequential/dense/kernel"`.
        shape: Its shape.
        kind: One of `"weight"`, `"embedding"`, `"bias"`, `"normalization"`.
        filter_axes: The axes that index filters; the norm of one filter is
            taken over all other axes. `()` means the whole tensor is one
            filter.
        layer: Class name of the layer that owns the variable.
    """

    name: str
    shape: tuple
    kind: str
    filter_axes: tuple
    layer: str

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
    for p in keras_flat.landscape.describe_parameters(model):
        print(p.name, p.kind, p.filter_axes)
    ```
    """
    owners = _owners(model)
    return [_describe(v, owners.get(id(v))) for v in model.trainable_variables]


def _owners(model):
    """Maps id(variable) to the innermost layer that holds it."""
    if not hasattr(model, "_flatten_layers"):
        raise RuntimeError(
            "keras_flat.landscape needs `Layer._flatten_layers` to find which layer "
            f"owns each variable; Keras {keras.__version__} does not have it."
        )
    best = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        weights = layer.trainable_weights
        for v in weights:
            # The innermost owner holds the fewest weights; on ties the later
            # (deeper) layer in the traversal wins.
            if id(v) not in best or len(weights) <= best[id(v)][0]:
                best[id(v)] = (len(weights), layer)
    return {key: layer for key, (_, layer) in best.items()}


def _describe(variable, layer):
    shape = tuple(int(s) for s in variable.shape)
    rank = len(shape)
    name = getattr(variable, "path", variable.name)
    short = name.rsplit("/", 1)[-1]
    layer_name = type(layer).__name__ if layer is not None else ""

    def make(kind, axes):
        return Parameter(name=name, shape=shape, kind=kind, filter_axes=tuple(axes),
                         layer=layer_name)

    if layer is not None and isinstance(layer, _NORMALIZATION_LAYERS):
        return make("normalization", ())
    if short == "bias" or short.endswith("_bias") or rank <= 1:
        return make("bias", ())
    if isinstance(layer, keras.layers.Embedding) and short == "embeddings":
        return make("embedding", (0,))
    if isinstance(layer, _TRANSPOSE_LAYERS) and short == "kernel":
        return make("weight", (rank - 2,))
    if (isinstance(layer, _DEPTHWISE_LAYERS) and short == "kernel") or (
            isinstance(layer, _SEPARABLE_LAYERS) and short == "depthwise_kernel"):
        return make("weight", (rank - 2, rank - 1))
    if isinstance(layer, keras.layers.EinsumDense) and short == "kernel":
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


def batchnorm_variances(model):
    """The `moving_variance` variables of the BatchNormalization layers of `model`."""
    if not hasattr(model, "_flatten_layers"):
        raise RuntimeError(
            "keras_flat.landscape needs `Layer._flatten_layers` to find the layers of a "
            f"model; Keras {keras.__version__} does not have it."
        )
    return [layer.moving_variance for layer in model._flatten_layers(include_self=True)
            if isinstance(layer, keras.layers.BatchNormalization)
            and getattr(layer, "moving_variance", None) is not None]
