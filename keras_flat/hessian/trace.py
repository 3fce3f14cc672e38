"""Stochastic estimators of the Hessian trace: Hutchinson and Hutch++."""

import dataclasses

import numpy as np
import tensorflow as tf

from keras_flat import rng
from keras_flat import vector

TRACE_METHODS = ("hutchinson", "hutch++")


@dataclasses.dataclass
class TraceEstimate:
    """A stochastic trace estimate.

    Attributes:
        value: The estimate of tr(H).
        stderr: Its standard error (sample standard deviation of the
            per-probe estimates over the square root of their number).
        samples: The per-probe estimates (their mean is `value`), a NumPy
            array.
        num_matvecs: Hessian-vector products used.
        method: `"hutchinson"` or `"hutch++"`.
        dimension: Number of parameters d.
    """

    value: float
    stderr: float
    samples: np.ndarray
    num_matvecs: int
    method: str
    dimension: int

    @property
    def normalized(self):
        """tr(H) / d, the paper's flatness measure on the loss's scale."""
        return self.value / self.dimension


def hutchinson(operator, num_probes, seed):
    """Hutchinson's estimator with Rademacher probes, in one compiled call.

    Args:
        operator: A `HessianOperator`.
        num_probes: Number of probes (Hessian-vector products), >= 1.
        seed: Integer tensor of shape `(2,)`.

    Returns:
        A `TraceEstimate`.
    """
    def make(method):
        def estimate(seed, num_probes):
            samples = tf.TensorArray(operator.dtype, size=num_probes)
            for i in tf.range(num_probes):
                z = vector.rademacher_like(operator.variables, rng.fold_in(seed, i))
                samples = samples.write(i, vector.dot(z, operator._hvp(z, method)))
            return samples.stack()
        return estimate

    fn = operator._function("hutchinson", make)
    samples = fn(tf.convert_to_tensor(seed), tf.constant(num_probes, tf.int32)).numpy()
    return _result(samples, num_probes, "hutchinson", operator.dimension)


def hutch_plus_plus(operator, num_matvecs, seed):
    """Hutch++ (Meyer, Musco, Musco & Woodruff, 2021), in one compiled call.

    A third of the products sketch the top of the spectrum (H·S with S
    Rademacher, orthonormalised to Q), a third compute tr(QᵀHQ) exactly,
    and the rest estimate the trace of the deflated remainder
    (I - QQᵀ)H(I - QQᵀ) by Hutchinson. For Hessians dominated by a few
    large eigenvalues this has much lower variance at equal cost.

    Args:
        operator: A `HessianOperator`.
        num_matvecs: Total Hessian-vector products, >= 3.
        seed: Integer tensor of shape `(2,)`.

    Returns:
        A `TraceEstimate` whose samples are the low-rank part plus each
        residual probe's estimate.
    """
    sketch = min(num_matvecs // 3, operator.dimension)  # QR has at most d columns.
    residual = num_matvecs - 2 * sketch
    like = operator.variables

    def make(method):
        def matvec(flat):
            return vector.flatten(operator._hvp(vector.unflatten(flat, like), method))

        def estimate(seed, sketch, residual):
            return _hutch_plus_plus(matvec, like, operator.dtype, seed, sketch, residual)
        return estimate

    fn = operator._function("hutch++", make)
    samples = fn(
        tf.convert_to_tensor(seed), tf.constant(sketch), tf.constant(residual)
    ).numpy()
    return _result(samples, num_matvecs, "hutch++", operator.dimension)


def _hutch_plus_plus(matvec, like, dtype, seed, sketch, residual):
    """The body of `hutch_plus_plus`, for one flat HVP function `matvec`."""
    columns = tf.TensorArray(dtype, size=sketch)
    for i in tf.range(sketch):
        s = vector.flatten(vector.rademacher_like(like, rng.fold_in(seed, i)))
        columns = columns.write(i, matvec(s))
    q, _ = tf.linalg.qr(tf.transpose(columns.stack()))
    low_rank = tf.zeros((), dtype)
    for i in tf.range(sketch):
        low_rank += tf.tensordot(q[:, i], matvec(q[:, i]), 1)
    samples = tf.TensorArray(dtype, size=residual)
    for i in tf.range(residual):
        g = vector.flatten(vector.rademacher_like(like, rng.fold_in(seed, sketch + i)))
        g = g - tf.linalg.matvec(q, tf.linalg.matvec(q, g, transpose_a=True))
        samples = samples.write(i, tf.tensordot(g, matvec(g), 1))
    return low_rank + samples.stack()


def _result(samples, num_matvecs, method, dimension):
    samples = np.asarray(samples, np.float64)
    n = len(samples)
    stderr = float(np.std(samples, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return TraceEstimate(
        value=float(np.mean(samples)),
        stderr=stderr,
        samples=samples,
        num_matvecs=num_matvecs,
        method=method,
        dimension=dimension,
    )
