"""Whole-model vector arithmetic over lists of tensors.

A model's trainable variables are treated as one vector in R^d: a list of
tensors of arbitrary shapes. Inner products, norms, projections and random
samples below are taken over that whole vector, never per tensor.

Reductions run in float32 (float64 stays float64) whatever the storage
dtype, so float16 and bfloat16 vectors neither overflow nor lose the sum,
and norms are computed with a max-scaling that keeps very large and very
small magnitudes finite. Results are cast back to each tensor's dtype.
Every function is graph- and XLA-safe (no Python-side state, no
data-dependent Python control flow).
"""

import tensorflow as tf

from keras_flat import rng


def compute_dtype(dtype):
    """Returns the dtype reductions over `dtype` tensors are carried in."""
    dtype = tf.as_dtype(dtype)
    return tf.float64 if dtype == tf.float64 else tf.float32


def _reduction_dtype(tensors):
    dtypes = {compute_dtype(t.dtype) for t in tensors}
    return tf.float64 if tf.float64 in dtypes else tf.float32


def _cast_all(tensors, dtype):
    return [tf.cast(t, dtype) for t in tensors]


def max_abs(tensors):
    """Largest absolute entry of the whole vector (0 for an empty list)."""
    dtype = _reduction_dtype(tensors)
    values = [tf.reduce_max(tf.abs(t)) for t in _cast_all(tensors, dtype)]
    values = [tf.reshape(v, [1]) for v in values if v.shape.rank is not None]
    if not values:
        return tf.zeros((), dtype)
    return tf.reduce_max(tf.concat(values + [tf.zeros([1], dtype)], 0))


def dot(a, b):
    """Inner product <a, b> of two whole-model vectors.

    Args:
        a: List of tensors.
        b: List of tensors with the same shapes as `a`.

    Returns:
        A scalar tensor (float32, or float64 if any input is float64).

    Example:

    >>> dot([tf.constant([1.0, 2.0])], [tf.constant([3.0, 4.0])]).numpy()
    11.0
    """
    _check_same_length(a, b)
    dtype = _reduction_dtype(list(a) + list(b))
    total = tf.zeros((), dtype)
    for x, y in zip(a, b):
        total += tf.reduce_sum(tf.cast(x, dtype) * tf.cast(y, dtype))
    return total


def norm(tensors):
    """Euclidean norm of a whole-model vector, safe for any magnitude.

    The vector is divided by its largest absolute entry before squaring,
    so the result is finite for entries near the float limits and exact
    zero for the zero vector (never NaN).

    Args:
        tensors: List of tensors.

    Returns:
        A scalar tensor (float32, or float64 if any input is float64).

    Example:

    >>> norm([tf.constant([3.0]), tf.constant([[4.0]])]).numpy()
    5.0
    """
    dtype = _reduction_dtype(tensors)
    scale = max_abs(tensors)
    safe = tf.where(scale > 0, scale, tf.ones_like(scale))
    total = tf.zeros((), dtype)
    for t in _cast_all(tensors, dtype):
        total += tf.reduce_sum(tf.square(t / safe))
    return tf.where(scale > 0, safe * tf.sqrt(total), tf.zeros_like(scale))


def scale(tensors, factor):
    """Returns `factor * tensors`, computed in float32, in each dtype."""
    out = []
    for t in tensors:
        dtype = compute_dtype(t.dtype)
        out.append(tf.cast(tf.cast(t, dtype) * tf.cast(factor, dtype), t.dtype))
    return out


def add(a, b, alpha=1.0):
    """Returns `a + alpha * b`, in the dtypes of `a`."""
    _check_same_length(a, b)
    out = []
    for x, y in zip(a, b):
        dtype = compute_dtype(x.dtype)
        value = tf.cast(x, dtype) + tf.cast(alpha, dtype) * tf.cast(y, dtype)
        out.append(tf.cast(value, x.dtype))
    return out


def unit(tensors):
    """Returns `tensors / norm(tensors)`, or zeros for the zero vector.

    The division is done on the max-scaled vector, so the result has unit
    norm (to rounding) for any non-zero input, including denormal and
    near-overflow magnitudes.

    Args:
        tensors: List of tensors.

    Returns:
        `(direction, norm)`: a list of tensors of unit (or zero) norm and
        the input's norm as a scalar tensor.
    """
    dtype = _reduction_dtype(tensors)
    big = max_abs(tensors)
    safe_big = tf.where(big > 0, big, tf.ones_like(big))
    scaled = [t / safe_big for t in _cast_all(tensors, dtype)]
    total = tf.zeros((), dtype)
    for t in scaled:
        total += tf.reduce_sum(tf.square(t))
    scaled_norm = tf.sqrt(total)
    nonzero = big > 0
    inv = tf.where(nonzero, 1.0 / tf.where(nonzero, scaled_norm, 1.0), 0.0)
    inv = tf.cast(inv, dtype)
    direction = [tf.cast(t * inv, x.dtype) for t, x in zip(scaled, tensors)]
    value = tf.where(nonzero, safe_big * scaled_norm, tf.zeros_like(big))
    return direction, value


def project_out(h, g):
    """Removes from `h` its component along `g`: h - <h, ĝ> ĝ.

    When `g` is the zero vector the projection is the identity, so the
    result is `h` unchanged (no NaN).

    Args:
        h: List of tensors, the vector to project.
        g: List of tensors, the direction to remove.

    Returns:
        A list of tensors orthogonal to `g` (to rounding), in the dtypes
        of `h`.

    Example:

    >>> v = project_out([tf.constant([1.0, 1.0])], [tf.constant([2.0, 0.0])])
    >>> v[0].numpy()
    array([0., 1.], dtype=float32)
    """
    direction, _ = unit(g)
    return project_out_unit(h, direction)


def project_out_unit(h, direction):
    """Like `project_out`, for a `direction` already of unit or zero norm."""
    coefficient = dot(h, direction)
    return add(h, direction, -coefficient)


def normal_like(tensors, seed):
    """Independent standard normal entries shaped like `tensors`.

    Args:
        tensors: List of tensors (or variables) giving shapes and dtypes.
        seed: An integer tensor of shape `(2,)`; see `keras_flat.rng`.

    Returns:
        A list of tensors.
    """
    return [
        rng.normal(tf.shape(t), rng.fold_in(seed, i), compute_dtype(t.dtype))
        for i, t in enumerate(tensors)
    ]


def sphere_like(tensors, seed, radius=1.0):
    """A uniform sample from the sphere of `radius` in R^d, d = total size.

    Standard normal entries over all tensors, divided by their global norm.

    Args:
        tensors: List of tensors (or variables) giving shapes and dtypes.
        seed: An integer tensor of shape `(2,)`; see `keras_flat.rng`.
        radius: The sphere's radius, a float or scalar tensor.

    Returns:
        A list of tensors whose whole-vector norm is `radius`.
    """
    direction, _ = unit(normal_like(tensors, seed))
    return scale(direction, radius)


def rademacher_like(tensors, seed):
    """Independent random ±1 entries shaped like `tensors`."""
    return [
        rng.rademacher(tf.shape(t), rng.fold_in(seed, i), t.dtype)
        for i, t in enumerate(tensors)
    ]


def random_sign(seed, dtype=tf.float32):
    """A scalar ±1 with probability one half each."""
    return rng.rademacher((), seed, dtype)


def all_finite(tensors):
    """A scalar boolean: True when every entry of every tensor is finite."""
    checks = [tf.reduce_all(tf.math.is_finite(t)) for t in tensors]
    if not checks:
        return tf.constant(True)
    return tf.reduce_all(tf.stack(checks))


def flatten(tensors):
    """Concatenates a list of tensors into one flat vector."""
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(flat, like):
    """Splits a flat vector into tensors shaped like `like` (static shapes)."""
    out, start = [], 0
    for t in like:
        shape = tf.TensorShape(t.shape)
        size = shape.num_elements()
        out.append(tf.reshape(flat[start : start + size], shape))
        start += size
    return out


def _check_same_length(a, b):
    if len(a) != len(b):
        raise ValueError(
            "Whole-model vectors must have the same number of tensors; "
            f"received {len(a)} and {len(b)}."
        )
