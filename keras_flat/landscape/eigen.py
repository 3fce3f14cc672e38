"""Directions along the top Hessian eigenvectors (as PyHessian plots them)."""

import numpy as np

from keras_flat import hessian
from keras_flat.landscape.directions import Directions
from keras_flat.utils.deprecation import renamed_arguments
from keras_flat.utils.validation import check_count


@renamed_arguments(k="num_directions")
def eigen_directions(model, data=None, num_directions=2, **kwargs):
    """The top Hessian eigenvectors of the training loss, as directions.

    Along the top eigenvector the loss curves fastest; a plot along it shows
    the sharpest direction of the minimum, where a random direction in high
    dimension mostly shows flat ones. The vectors have unit norm, so the
    coefficient of a plot along them is the Euclidean distance moved, and
    the curvature at 0 along direction i is `values[i]`.

    Args:
        model: A built Keras model (or a `keras_flat.hessian.HessianOperator`,
            then `data=None`).
        data: The data whose training loss is measured (see
            `keras_flat.hessian.hvp`).
        num_directions: How many eigenvectors (the top `num_directions`
            eigenvalues' ones), >= 1.
        **kwargs: Passed to `keras_flat.hessian.top_eigenvalues`
            (`estimator`, `max_iterations`, `rtol`, `seed`, `training`,
            `hvp_method`, `batch_size`, `num_batches`, `loss`...).

    Returns:
        A `Directions` of kind `"eigen"` whose `values` are the eigenvalues.

    Example:

    ```python
    top = keras_flat.landscape.eigen_directions(model, (x, y), num_directions=2)
    surface = keras_flat.landscape.surface_2d(model, (x, y), top, extent=0.5)
    ```
    """
    check_count("num_directions", num_directions, 1)
    result = hessian.top_eigenvalues(model, data, num_eigenvalues=num_directions, **kwargs)
    keras_model = model.model if isinstance(model, hessian.HessianOperator) else model
    variables = keras_model.trainable_variables
    return Directions(
        vectors=np.asarray(result.vectors, np.float32),
        kind="eigen",
        names=[getattr(v, "path", v.name) for v in variables],
        shapes=[tuple(int(s) for s in v.shape) for v in variables],
        values=np.asarray(result.values, np.float64),
    )
