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


def _as(t, dtype):
    return tf.cast(t, dtype)  # No op when the dtype already matches.


def max_abs(tensors):
    """Largest absolute entry of the whole vector (0 for an empty vector)."""
    dtype = _reduction_dtype(tensors)
    if not tensors:
        return tf.zeros((), dtype)
    peaks = tf.stack([tf.reduce_max(tf.abs(_as(t, dtype))) for t in tensors])
    return tf.maximum(tf.reduce_max(peaks), tf.zeros((), dtype))  # Empty tensors give -inf.


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
    if not a:
        return tf.zeros((), dtype)
    return tf.add_n([tf.reduce_sum(_as(x, dtype) * _as(y, dtype)) for x, y in zip(a, b)])


def _scaled_norm(tensors):
    """(norm, max|t| or 1, 1/‖t/max|t|‖ or 1): a max-scaled norm's pieces.

    Dividing (not multiplying by a reciprocal) keeps denormal inputs
    finite: 1/max|t| would overflow for max|t| below ~3e-39.
    """
    dtype = _reduction_dtype(tensors)
    big = max_abs(tensors)
    divisor = tf.where(big > 0, big, tf.ones_like(big))
    if not tensors:
        return tf.zeros((), dtype), divisor, tf.ones((), dtype)
    squares = tf.add_n([tf.reduce_sum(tf.square(_as(t, dtype) / divisor)) for t in tensors])
    # The largest scaled entry is 1, so `squares` >= 1 whenever nonzero.
    root = tf.sqrt(tf.maximum(squares, 1.0))
    value = tf.where(big > 0, big * root, tf.zeros_like(big))
    return value, divisor, 1.0 / root


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
    return _scaled_norm(tensors)[0]


def scale(tensors, factor):
    """Returns `factor * tensors`, computed in float32, in each dtype."""
    out = []
    for t in tensors:
        dtype = compute_dtype(t.dtype)
        out.append(_as(_as(t, dtype) * _as(factor, dtype), t.dtype))
    return out


def add(a, b, alpha=1.0):
    """Returns `a + alpha * b`, in the dtypes of `a`."""
    _check_same_length(a, b)
    out = []
    for x, y in zip(a, b):
        dtype = compute_dtype(x.dtype)
        if isinstance(alpha, (int, float)) and alpha == 1.0:
            value = _as(x, dtype) + _as(y, dtype)
        else:
            value = _as(x, dtype) + _as(alpha, dtype) * _as(y, dtype)
        out.append(_as(value, x.dtype))
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
    value, divisor, inv_root = _scaled_norm(tensors)
    direction = []
    for t in tensors:
        dtype = compute_dtype(t.dtype)
        scaled = _as(t, dtype) / _as(divisor, dtype) * _as(inv_root, dtype)
        direction.append(_as(scaled, t.dtype))
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


def _sizes(tensors):
    return [tf.TensorShape(t.shape).num_elements() for t in tensors]


def _split_like(flat, tensors):
    """Splits one flat sample into tensors shaped like `tensors`."""
    parts = tf.split(flat, _sizes(tensors)) if len(tensors) > 1 else [flat]
    return [tf.reshape(p, t.shape) for p, t in zip(parts, tensors)]


def normal_like(tensors, seed):
    """Independent standard normal entries shaped like `tensors`.

    One flat draw over the whole vector, split into the tensors, so the
    cost in ops does not grow with the number of tensors.

    Args:
        tensors: List of tensors (or variables) with static shapes, giving
            shapes and dtypes.
        seed: An integer tensor of shape `(2,)`; see `keras_flat.rng`.

    Returns:
        A list of tensors in float32 (float64 for float64 tensors), so a
        later normalisation keeps full precision.
    """
    dtype = _reduction_dtype(tensors)
    flat = rng.normal([sum(_sizes(tensors))], seed, dtype)
    return [_as(p, compute_dtype(t.dtype)) for p, t in zip(_split_like(flat, tensors), tensors)]


def sphere_like(tensors, seed, radius=1.0):
    """A uniform sample from the sphere of `radius` in R^d, d = total size.

    Standard normal entries over all tensors, divided by their global norm.

    Args:
        tensors: List of tensors (or variables) giving shapes and dtypes.
        seed: An integer tensor of shape `(2,)`; see `keras_flat.rng`.
        radius: The sphere's radius, a float or scalar tensor.

    Returns:
        A list of tensors in the dtypes of `tensors` whose whole-vector norm
        is `radius` (to the dtype's rounding); the sample is drawn and
        normalised in float32 (float64 for float64 tensors).
    """
    direction, _ = unit(normal_like(tensors, seed))
    return [_as(d, t.dtype) for d, t in zip(scale(direction, radius), tensors)]


def rademacher_like(tensors, seed):
    """Independent random ±1 entries shaped like `tensors` (one flat draw)."""
    flat = rng.rademacher([sum(_sizes(tensors))], seed, tf.float32)
    return [_as(p, t.dtype) for p, t in zip(_split_like(flat, tensors), tensors)]


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
