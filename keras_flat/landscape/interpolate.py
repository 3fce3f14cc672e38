"""The loss on the straight line between two models (Goodfellow, Vinyals & Saxe, 2015)."""

import keras
import numpy as np

from keras_flat.hessian.operator import check_model
from keras_flat.landscape.evaluator import Evaluator
from keras_flat.landscape.surface import Surface1D
from keras_flat.landscape.surface import grid
from keras_flat.utils.batch_statistics import batchnorm_variances
from keras_flat.utils.deprecation import renamed_arguments


@renamed_arguments(num="resolution")
def interpolate(model_a, model_b, data, resolution=41, extent=(-0.5, 1.5), *, alphas=None,
                metrics=True, training=False, loss=None, batch_size=None, num_batches=None,
                jit_compile=False):
    """The loss and metrics along `(1 - alpha) * w_a + alpha * w_b`.

    Every floating-point weight moves, the non-trainable ones too (BatchNorm
    moving means and variances), so alpha = 0 is exactly `model_a` and
    alpha = 1 is `model_b`; outside [0, 1] moving variances are clipped at
    zero. The models are evaluated statelessly, in `model_a`'s graph (the
    two must have the same architecture), for all alpha in one compiled
    call; neither model changes.

    Args:
        model_a: A built, compiled Keras model (alpha = 0).
        model_b: A model of the same architecture (alpha = 1).
        data: The data the loss is averaged over (see
            `keras_flat.landscape.surface_1d`).
        resolution: Number of evenly spaced alpha values, >= 2 (0 and 1
            are always added), as for `surface_1d`.
        extent: The alpha range `(low, high)`; the default goes half the
            distance beyond each model.
        alphas: Explicit alpha values (overrides `resolution` and `extent`).
        metrics: Also compute `model_a`'s compiled metrics (default True).
        training: Layers in training mode (BatchNorm batch statistics).
        loss: The loss for an uncompiled `model_a`: a name such as `"mse"`,
            a `keras.losses.Loss`, or a callable `loss(y_true, y_pred)`.
        batch_size: Split array data into batches of this size.
        num_batches: Use at most this many batches.
        jit_compile: Compile the evaluation with XLA.

    Returns:
        A `Surface1D` of kind `"interpolation"` whose `alphas` are the
        interpolation coefficients.

    Example:

    ```python
    line = keras_flat.landscape.interpolate(sgd_model, sa_model, (x, y))
    keras_flat.landscape.plot_1d(line, "interpolation.png")
    ```
    """
    check_model(model_a)
    moved_a, moved_b = _matching_weights(model_a, model_b)
    if alphas is None:
        alphas = np.union1d(grid("extent", extent, "resolution", resolution), [0.0, 1.0])
    else:
        alphas = np.asarray(alphas, np.float64).reshape(-1)
        if alphas.size == 0 or not np.all(np.isfinite(alphas)):
            raise ValueError(
                f"Argument `alphas` must hold finite numbers. Received: alphas={alphas!r}."
            )
    evaluator = Evaluator(model_a, data, loss=loss, training=training, batch_size=batch_size,
                          num_batches=num_batches, metrics=metrics, variables=moved_a,
                          nonnegative=batchnorm_variances(model_a), jit_compile=jit_compile)
    difference = np.concatenate([
        (np.asarray(b, np.float64) - np.asarray(a, np.float64)).ravel()
        for a, b in zip(moved_a, moved_b)
    ])
    values = evaluator.evaluate(difference[None, :], alphas[:, None])
    return Surface1D(alphas=alphas, loss=values.pop("loss"), metrics=values,
                     kind="interpolation")


def _matching_weights(model_a, model_b):
    if not isinstance(model_b, keras.Model):
        raise TypeError(
            "Argument `model_b` must be a keras.Model. Received: "
            f"model_b={model_b!r} of type {type(model_b).__name__}."
        )
    a = [v for v in model_a.weights if _floating(v)]
    b = [v for v in model_b.weights if _floating(v)]
    shapes_a = [tuple(v.shape) for v in a]
    shapes_b = [tuple(v.shape) for v in b]
    if shapes_a != shapes_b:
        raise ValueError(
            "Argument `model_b` must have the same architecture as `model_a`: their "
            f"floating-point weights have shapes {shapes_b} and {shapes_a}."
        )
    return a, b


def _floating(variable):
    return "float" in keras.backend.standardize_dtype(variable.dtype)
