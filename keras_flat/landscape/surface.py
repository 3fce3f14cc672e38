"""The loss on a line or a plane through a model's weights."""

import dataclasses
import numbers

import numpy as np

from keras_flat.landscape.directions import as_directions
from keras_flat.landscape.evaluator import evaluator_for
from keras_flat.landscape.table import write_csv


@dataclasses.dataclass
class Surface1D:
    """The loss (and metrics) at `w + alpha * d` for a grid of `alpha`.

    Attributes:
        alphas: The coefficients, a `(n,)` array.
        loss: The training loss at each, a `(n,)` array.
        metrics: Dict from metric name to a `(n,)` array (empty unless
            metrics were requested).
        kind: The direction's kind (`"random"`, `"eigen"`, `"custom"`,
            `"interpolation"`...).
    """

    alphas: np.ndarray
    loss: np.ndarray
    metrics: dict
    kind: str = "custom"

    def to_csv(self, path):
        """Writes columns `alpha`, `loss` and one per metric; returns `path`."""
        return write_csv(path, {"alpha": self.alphas, "loss": self.loss, **self.metrics})


@dataclasses.dataclass
class Surface2D:
    """The loss (and metrics) at `w + alpha * d1 + beta * d2` on a grid.

    Attributes:
        alphas: Coefficients of the first direction, a `(nx,)` array.
        betas: Coefficients of the second direction, a `(ny,)` array.
        loss: A `(ny, nx)` array; `loss[j, i]` is at `(alphas[i], betas[j])`,
            the layout `matplotlib.pyplot.contour(alphas, betas, loss)` takes.
        metrics: Dict from metric name to a `(ny, nx)` array.
        kind: The directions' kind.
    """

    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    metrics: dict
    kind: str = "custom"

    def to_csv(self, path):
        """Writes one row per grid point: `alpha`, `beta`, `loss`, metrics."""
        a, b = np.meshgrid(self.alphas, self.betas)
        columns = {"alpha": a, "beta": b, "loss": self.loss}
        columns.update(self.metrics)
        return write_csv(path, columns)


def surface_1d(model, data=None, direction=None, extent=1.0, resolution=51, *, metrics=False,
               **options):
    """The loss along one direction: `L(w + alpha * d)`.

    Evaluated statelessly (no variable of `model` changes) for all `alpha`
    in one compiled call, with BatchNorm in inference mode unless
    `training=True`.

    Args:
        model: A built, compiled Keras model, or a
            `keras_flat.landscape.Evaluator` (then `data=None`).
        data: `(x, y[, sample_weight])` arrays, a batched `tf.data.Dataset`
            or a list of batches; the loss is averaged over all of it.
        direction: A `Directions` (its first row is used), a `(d,)` array or
            a list of arrays shaped like the trainable variables.
        extent: Largest `|alpha|` (a float) or the range `(low, high)`.
        resolution: Number of grid points, >= 2. The grid always contains
            0 when the range does.
        metrics: Also compute the compiled metrics (one more forward pass
            per point).
        **options: `training`, `loss` (for an uncompiled model: a name such
            as `"mse"`, a `keras.losses.Loss` or a callable), `batch_size`,
            `num_batches`, `jit_compile` (see `Evaluator`).

    Returns:
        A `Surface1D`.

    Example:

    ```python
    d = keras_flat.landscape.random_directions(model, num_directions=1, seed=0)
    line = keras_flat.landscape.surface_1d(model, (x, y), d, extent=1.0)
    line.to_csv("line.csv")
    ```
    """
    evaluator = evaluator_for(model, data, metrics=metrics, **options)
    directions = as_directions(direction, evaluator.model, "direction", count=1)
    alphas = grid("extent", extent, "resolution", resolution)
    values = evaluator.evaluate(directions.vectors, alphas[:, None])
    return Surface1D(alphas=alphas, loss=values.pop("loss"), metrics=values,
                     kind=directions.kind)


def surface_2d(model, data=None, directions=None, extent=1.0, resolution=21, *, metrics=False,
               **options):
    """The loss on a plane: `L(w + alpha * d1 + beta * d2)` on a grid.

    All `resolution**2` points are evaluated in one compiled call (traced
    once), statelessly, with BatchNorm in inference mode unless
    `training=True`; under a `tf.distribute` strategy's scope the points are
    divided between the replicas.

    Args:
        model: A built, compiled Keras model, or a
            `keras_flat.landscape.Evaluator` (then `data=None`).
        data: The data the loss is averaged over (see `surface_1d`).
        directions: Two directions: a `Directions` (its first two rows), a
            `(2, d)` array, or two lists of arrays shaped like the trainable
            variables.
        extent: Largest `|alpha|` and `|beta|` (a float), one range
            `(low, high)` for both, or `((alpha_low, alpha_high),
            (beta_low, beta_high))`.
        resolution: Points per axis, an int >= 2 or `(n_alpha, n_beta)`.
        metrics: Also compute the compiled metrics.
        **options: See `surface_1d`.

    Returns:
        A `Surface2D`.

    Example:

    ```python
    dirs = keras_flat.landscape.random_directions(model, num_directions=2, seed=0)
    plane = keras_flat.landscape.surface_2d(model, (x, y), dirs, extent=1.0, resolution=21)
    keras_flat.landscape.plot_contour(plane, "plane.png")
    ```
    """
    evaluator = evaluator_for(model, data, metrics=metrics, **options)
    directions = as_directions(directions, evaluator.model, "directions", count=2)
    extents = _pair("extent", extent)
    resolutions = _pair("resolution", resolution)
    alphas = grid("extent", extents[0], "resolution", resolutions[0])
    betas = grid("extent", extents[1], "resolution", resolutions[1])
    a, b = np.meshgrid(alphas, betas)
    values = evaluator.evaluate(directions.vectors, np.stack([a.ravel(), b.ravel()], axis=1))
    shape = (len(betas), len(alphas))
    values = {name: v.reshape(shape) for name, v in values.items()}
    return Surface2D(alphas=alphas, betas=betas, loss=values.pop("loss"), metrics=values,
                     kind=directions.kind)


def grid(extent_name, extent, resolution_name, resolution):
    """An evenly spaced grid over `extent` with `resolution` points.

    A value within rounding of 0 is set to exactly 0, so the grid passes
    through the weights themselves.
    """
    low, high = _range(extent_name, extent)
    if (isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral)
            or resolution < 2):
        raise ValueError(
            f"Argument `{resolution_name}` must be an integer >= 2. "
            f"Received: {resolution_name}={resolution!r}."
        )
    values = np.linspace(low, high, int(resolution))
    near = np.argmin(np.abs(values))
    if abs(values[near]) <= 1e-9 * (high - low):
        values[near] = 0.0
    return values


def _range(name, extent):
    if isinstance(extent, numbers.Real) and not isinstance(extent, bool):
        if not (np.isfinite(extent) and extent > 0):
            raise ValueError(
                f"Argument `{name}` must be a positive number or a range (low, high). "
                f"Received: {name}={extent!r}."
            )
        return -float(extent), float(extent)
    try:
        low, high = (float(e) for e in extent)
    except (TypeError, ValueError):
        raise ValueError(
            f"Argument `{name}` must be a positive number or a range (low, high). "
            f"Received: {name}={extent!r}."
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(
            f"Argument `{name}` must be a range (low, high) with low < high. "
            f"Received: {name}={extent!r}."
        )
    return low, high


def _pair(name, value):
    """`value` for both axes, or its two entries when it is a pair of per-axis values."""
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (tuple, list, np.ndarray)) for v in value)):
        return tuple(value)
    if name == "resolution" and isinstance(value, (tuple, list)) and len(value) == 2:
        return tuple(value)
    return value, value
