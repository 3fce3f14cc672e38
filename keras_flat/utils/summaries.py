"""TensorBoard scalars and histograms written with TensorFlow alone.

`tf.summary.scalar` and `tf.summary.histogram` live in the `tensorboard`
package and fail without it; `tf.summary.write` with the summary metadata
TensorBoard's scalar and histogram plugins expect writes the same records,
so flatness logs can be written where `tensorboard` is not installed and
read later wherever it is.
"""

import numpy as np
import tensorflow as tf

_DATA_CLASS_SCALAR = 1  # tensorboard's summary_pb2.DATA_CLASS_SCALAR
_DATA_CLASS_TENSOR = 2  # summary_pb2.DATA_CLASS_TENSOR


def _metadata(plugin, data_class):
    return tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name=plugin),
        data_class=data_class,
    )


def scalar(name, value, step):
    """Writes a float32 scalar to the default summary writer (the scalars plugin)."""
    return tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                            metadata=_metadata("scalars", _DATA_CLASS_SCALAR))


def histogram(name, buckets, step):
    """Writes a histogram given as `(k, 3)` rows `[left edge, right edge, count]`.

    This is the tensor layout of TensorBoard's histogram plugin.
    """
    buckets = np.asarray(buckets, np.float64)
    if buckets.ndim != 2 or buckets.shape[1] != 3:
        raise ValueError(f"Histogram buckets must have shape (k, 3); got {buckets.shape}.")
    return tf.summary.write(name, tf.constant(buckets, tf.float64), step=step,
                            metadata=_metadata("histograms", _DATA_CLASS_TENSOR))


def density_buckets(grid, density, total, buckets=64):
    """Integrates a density on `grid` into `buckets` equal-width bins.

    Args:
        grid: Increasing grid points.
        density: Density values on the grid.
        total: What the counts sum to (e.g. the number of eigenvalues d,
            so each count is the expected number of eigenvalues in its bin).
        buckets: Number of bins, >= 1.

    Returns:
        A `(buckets, 3)` array of `[left, right, count]` rows.
    """
    grid = np.asarray(grid, np.float64)
    density = np.asarray(density, np.float64)
    steps = np.diff(grid) * (density[1:] + density[:-1]) / 2
    cumulative = np.concatenate([[0.0], np.cumsum(steps)])
    edges = np.linspace(grid[0], grid[-1], int(buckets) + 1)
    mass = np.interp(edges, grid, cumulative)
    counts = np.diff(mass) * (total / cumulative[-1] if cumulative[-1] > 0 else 0.0)
    return np.stack([edges[:-1], edges[1:], counts], axis=1)
