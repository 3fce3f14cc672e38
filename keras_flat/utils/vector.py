"""Whole-model vector arithmetic over lists of tensors.

A model's trainable variables are treated as one vector in R^d: a list of
tensors of arbitrary shapes. Inner products, norms, projections and random
samples below are taken over that whole vector, never per tensor.

Reductions run in float32 (float64 stays float64) whatever the storage
dtype, so float16 and bfloat16 vectors neither overflow nor lose the sum.
Norms take one fused pass per tensor (`tf.nn.l2_loss`, no temporary the size
of the tensor); when that sum of squares overflows or underflows, they are
recomputed with a max-scaling that keeps very large and very small
magnitudes finite and exact. Results are cast back to each tensor's dtype.
Every function is graph- and XLA-safe (no Python-side state, no
data-dependent Python control flow).
"""

import numpy as np
import tensorflow as tf

from keras_flat.utils import rng


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

    Each tensor pair is reduced by one matrix-vector product, so no
    temporary the size of the tensors is made.

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
    parts = [
        tf.reshape(tf.matmul(tf.reshape(_as(x, dtype), [1, -1]),
                             tf.reshape(_as(y, dtype), [-1, 1])), [])
        for x, y in zip(a, b)
    ]
    return tf.add_n(parts)


def _size(tensors):
    return sum(tf.TensorShape(t.shape).num_elements() or 1 for t in tensors)


def _sum_of_squares(tensors):
    """Sum of squares of the whole vector, one fused pass per tensor."""
    dtype = _reduction_dtype(tensors)
    return 2.0 * tf.add_n([tf.nn.l2_loss(_as(t, dtype)) for t in tensors])


def _trusted(squares, tensors):
    """Whether a plain sum of squares is accurate: finite, and large enough
    that squares flushed to zero (below the dtype's smallest normal) are
    negligible."""
    info = np.finfo(squares.dtype.as_numpy_dtype)
    smallest = _size(tensors) * float(info.tiny) / float(info.eps)
    return tf.logical_and(tf.math.is_finite(squares), squares >= smallest)


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

    A plain sum of squares when it is accurate; otherwise the vector is
    divided by its largest absolute entry before squaring, so the result is
    finite for entries near the float limits and exact zero for the zero
    vector (never NaN).

    Args:
        tensors: List of tensors.

    Returns:
        A scalar tensor (float32, or float64 if any input is float64).

    Example:

    >>> norm([tf.constant([3.0]), tf.constant([[4.0]])]).numpy()
    5.0
    """
    if not tensors:
        return tf.zeros((), _reduction_dtype(tensors))
    squares = _sum_of_squares(tensors)
    return tf.cond(_trusted(squares, tensors), lambda: tf.sqrt(squares),
                   lambda: _scaled_norm(tensors)[0])


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


def unit(tensors, radius=1.0):
    """Returns `radius * tensors / norm(tensors)`, or zeros for the zero vector.

    One multiplication per tensor when the plain sum of squares is accurate;
    otherwise the division is done on the max-scaled vector, so the result
    has norm `radius` (to rounding) for any non-zero input, including
    denormal and near-overflow magnitudes.

    Args:
        tensors: List of tensors.
        radius: The norm of the result, a float or scalar tensor.

    Returns:
        `(direction, norm)`: a list of tensors of norm `radius` (or zero)
        and the input's norm as a scalar tensor.
    """
    if not tensors:
        return [], tf.zeros((), _reduction_dtype(tensors))
    squares = _sum_of_squares(tensors)

    def plain():
        value = tf.sqrt(squares)
        return _times(tensors, _as(radius, value.dtype) / value), value

    def scaled():
        value, divisor, inv_root = _scaled_norm(tensors)
        direction = []
        for t in tensors:
            dtype = compute_dtype(t.dtype)
            d = _as(t, dtype) / _as(divisor, dtype) * _as(inv_root, dtype)
            direction.append(_as(d * _as(radius, dtype), t.dtype))
        return direction, value

    direction, value = tf.cond(_trusted(squares, tensors), plain, scaled)
    return list(direction), value


def _times(tensors, factor):
    out = []
    for t in tensors:
        dtype = compute_dtype(t.dtype)
        out.append(_as(_as(t, dtype) * _as(factor, dtype), t.dtype))
    return out


def project_out(h, g):
    """Removes from `h` its component along `g`: h - (<h, g>/‖g‖²) g.

    When `g` is the zero vector the projection is the identity, so the
    result is `h` unchanged (no NaN). No unit vector of `g` is formed
    unless the magnitudes need the max-scaled computation.

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
    _check_same_length(h, g)
    if not g:
        return list(h)
    g_squares = _sum_of_squares(g)
    h_squares = _sum_of_squares(h)
    coefficient = _coefficient(h, g, g_squares)
    tiny = float(np.finfo(coefficient.dtype.as_numpy_dtype).tiny)
    # A coefficient below the smallest normal number would be flushed to zero
    # although `coefficient * g` is not negligible against `h`.
    plain = tf.reduce_all(tf.stack([
        _trusted(g_squares, g), _trusted(h_squares, h), tf.math.is_finite(coefficient),
        tf.logical_or(tf.equal(coefficient, 0.0), tf.abs(coefficient) >= tiny),
    ]))

    def scaled():
        return project_out_unit(h, _unit_scaled(g))

    return list(tf.cond(plain, lambda: add(h, g, -coefficient), scaled))


def add_projected(a, h, g):
    """Returns `a + project_out(h, g)`, without a temporary the size of the vectors.

    Computed as `h + (1 - c) g` when `a` is `g` itself (the same tensors), else
    as `(h - c g) + a`, with `c = <h, g>/‖g‖²`, so that each product can be
    written over an input whose last use it is. The coefficient is taken
    through the unit vector of `g` only when the plain sums overflow or
    underflow. Against `a`, the rounding of a coefficient below the smallest
    normal number is negligible, so unlike `project_out` this needs no
    vector-valued fallback.

    Args:
        a: List of tensors shaped like `h`.
        h: List of tensors, the vector to project.
        g: List of tensors, the direction to remove.

    Returns:
        A list of tensors in the dtypes of `h`.
    """
    _check_same_length(h, g)
    _check_same_length(a, h)
    if not g:
        return add(a, h)
    g_squares = _sum_of_squares(g)
    coefficient = _coefficient(h, g, g_squares)
    plain = tf.logical_and(_trusted(g_squares, g), tf.math.is_finite(coefficient))
    coefficient = tf.cond(plain, lambda: coefficient,
                          lambda: _coefficient_scaled(h, g))
    if all(x is y for x, y in zip(a, g)):
        return add(h, g, 1.0 - coefficient)
    return add(add(h, g, -coefficient), a)


def _coefficient(h, g, g_squares):
    """<h, g>/‖g‖² from plain sums (NaN for a zero `g`, caught by the caller)."""
    g_norm = tf.sqrt(g_squares)
    return dot(h, g) / g_norm / g_norm


def _unit_scaled(g):
    _, divisor, inv_root = _scaled_norm(g)
    direction = []
    for t in g:
        dtype = compute_dtype(t.dtype)
        direction.append(_as(t, dtype) / _as(divisor, dtype) * _as(inv_root, dtype))
    return direction


def _coefficient_scaled(h, g):
    """<h, g>/‖g‖² through the unit vector of `g` (0 for a zero `g`)."""
    value = _scaled_norm(g)[0]
    along = dot(h, _unit_scaled(g))
    safe = tf.where(value > 0, value, tf.ones_like(value))
    return tf.where(value > 0, along / safe, tf.zeros_like(value))


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

    The entries are those of one flat draw over the whole vector
    (`rng.normal([d], seed)`, split into the tensors), bit for bit, but each
    tensor's entries are computed from their own counters, tensor after
    tensor (`rng.normal_pieces`), so the flat draw is never materialised.

    Args:
        tensors: List of tensors (or variables) with static shapes, giving
            shapes and dtypes.
        seed: An integer tensor of shape `(2,)`; see `keras_flat.utils.rng`.

    Returns:
        A list of tensors in float32 (float64 for float64 tensors), so a
        later normalisation keeps full precision.
    """
    dtype = _reduction_dtype(tensors)
    pieces = rng.normal_pieces(_sizes(tensors), seed, dtype)
    return [_as(tf.reshape(p, t.shape), compute_dtype(t.dtype)) for p, t in zip(pieces, tensors)]


def sphere_like(tensors, seed, radius=1.0):
    """A uniform sample from the sphere of `radius` in R^d, d = total size.

    Standard normal entries over all tensors (`normal_like`), divided by
    their global norm: the only tensors of the size of the vector alive at
    once are the sample itself and one tensor's temporaries.

    Args:
        tensors: List of tensors (or variables) giving shapes and dtypes.
        seed: An integer tensor of shape `(2,)`; see `keras_flat.utils.rng`.
        radius: The sphere's radius, a float or scalar tensor.

    Returns:
        A list of tensors in the dtypes of `tensors` whose whole-vector norm
        is `radius` (to the dtype's rounding); the sample is drawn and
        normalised in float32 (float64 for float64 tensors).
    """
    direction, _ = unit(normal_like(tensors, seed), radius)
    return [_as(d, t.dtype) for d, t in zip(direction, tensors)]


def rademacher_like(tensors, seed):
    """Independent random ±1 entries shaped like `tensors` (one flat draw)."""
    flat = rng.rademacher([sum(_sizes(tensors))], seed, tf.float32)
    return [_as(p, t.dtype) for p, t in zip(_split_like(flat, tensors), tensors)]


def random_sign(seed, dtype=tf.float32):
    """A scalar ±1 with probability one half each."""
    return rng.rademacher((), seed, dtype)


def all_finite(tensors):
    """A scalar boolean: True when every entry of every tensor is finite.

    One fused pass per tensor: a NaN or infinite entry makes its tensor's
    sum of squares non-finite (the same reduction `norm` uses, so a graph
    computing both computes it once). Only when a sum is not finite (which
    finite entries whose squares overflow also cause) are the entries
    checked one by one.
    """
    if not tensors:
        return tf.constant(True)
    dtype = _reduction_dtype(tensors)
    sums = tf.stack([tf.nn.l2_loss(_as(t, dtype)) for t in tensors])

    def entries():
        return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in tensors]))

    return tf.cond(tf.reduce_all(tf.math.is_finite(sums)), lambda: tf.constant(True), entries)


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
