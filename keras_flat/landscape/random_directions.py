"""Random, filter-normalised directions (Li, Xu, Taylor, Studer & Goldstein, 2018)."""

import numpy as np

from keras_flat.hessian.operator import check_model
from keras_flat.landscape.directions import Directions
from keras_flat.utils.deprecation import renamed_arguments
from keras_flat.utils.structure import describe_parameters
from keras_flat.utils.validation import check_bool
from keras_flat.utils.validation import check_choice
from keras_flat.utils.validation import check_count

NORMALIZATIONS = ("filter", "variable", "model", None)


@renamed_arguments(k="num_directions")
def random_directions(model, num_directions=2, seed=0, normalization="filter",
                      include_biases=False, include_normalization=False):
    """Gaussian directions rescaled to the weights, filter by filter.

    Each direction starts as independent standard normal entries (drawn
    with NumPy from `seed`, one draw over all parameters, so the draw does
    not depend on which parameters are included and two models of the same
    architecture get the same raw directions). With
    `normalization="filter"` each filter of the direction is then rescaled
    to the Euclidean norm of the matching filter of the weights,
    `d_f <- d_f * ||w_f|| / ||d_f||`: a step of 1 along it moves every
    filter by its own size, which makes plots of different minima and
    networks comparable despite the scale invariance of ReLU and
    normalisation layers. `describe_parameters` (in
    `keras_flat.utils.structure`) says what a filter is for each layer:
    an output unit of `Dense`, an output channel of a convolution, one
    token's vector of an `Embedding`.

    Args:
        model: A built Keras model.
        num_directions: Number of directions, >= 1.
        seed: Integer seed, >= 0; the same seed gives the same directions.
        normalization: `"filter"` (Li et al., the default), `"variable"`
            (each variable tensor rescaled to the variable's norm),
            `"model"` (the whole direction rescaled to the norm of the
            included weights) or None (raw standard normal entries).
        include_biases: Also move biases and other parameters of rank <= 1
            (each one normalised as a single filter). By default their
            direction is zero.
        include_normalization: Also move the scales and offsets of
            normalisation layers (BatchNormalization, LayerNormalization,
            GroupNormalization, RMSNormalization), each a single filter. By
            default their direction is zero.

    Returns:
        A `Directions` of kind `"random"`.

    Example:

    ```python
    dirs = keras_flat.landscape.random_directions(model, num_directions=2, seed=0)
    surface = keras_flat.landscape.surface_2d(model, (x, y), dirs)
    ```
    """
    check_model(model)
    k = check_count("num_directions", num_directions, 1)
    check_count("seed", seed, 0)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_bool("include_biases", include_biases)
    check_bool("include_normalization", include_normalization)
    parameters = describe_parameters(model)
    weights = [np.asarray(v, np.float64) for v in model.trainable_variables]
    shapes = [p.shape for p in parameters]
    sizes = [int(np.prod(s)) for s in shapes]
    included = [
        p.kind in ("weight", "embedding")
        or (p.kind == "bias" and include_biases)
        or (p.kind == "normalization" and include_normalization)
        for p in parameters
    ]
    if not any(included):
        raise ValueError(
            "Every trainable variable of the model is a bias or a normalisation "
            "parameter; pass include_biases=True or include_normalization=True."
        )
    rng = np.random.default_rng(seed)
    vectors = np.zeros((k, sum(sizes)), np.float32)
    for i in range(k):
        raw = rng.standard_normal(sum(sizes))
        parts = np.split(raw, np.cumsum(sizes)[:-1])
        parts = [part.reshape(shape) for part, shape in zip(parts, shapes)]
        parts = [part if keep else np.zeros_like(part) for part, keep in zip(parts, included)]
        parts = _normalize(parts, weights, parameters, normalization, included)
        vectors[i] = np.concatenate([p.ravel() for p in parts])
    return Directions(vectors=vectors, kind="random", names=[p.name for p in parameters],
                      shapes=shapes)


def _normalize(parts, weights, parameters, normalization, included):
    if normalization is None:
        return parts
    if normalization == "model":
        w_norm = np.sqrt(sum(np.sum(w ** 2) for w, keep in zip(weights, included) if keep))
        d_norm = np.sqrt(sum(np.sum(d ** 2) for d in parts))
        return [d * _ratio(w_norm, d_norm) for d in parts]
    out = []
    for d, w, p in zip(parts, weights, parameters):
        axes = None if normalization == "variable" else p.reduce_axes
        w_norm = np.sqrt(np.sum(w ** 2, axis=axes, keepdims=True))
        d_norm = np.sqrt(np.sum(d ** 2, axis=axes, keepdims=True))
        out.append(d * _ratio(w_norm, d_norm))
    return out


def _ratio(numerator, denominator):
    """numerator / denominator, and 0 where the denominator is 0."""
    denominator = np.asarray(denominator, np.float64)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)
