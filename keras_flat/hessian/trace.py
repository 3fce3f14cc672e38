"""Stochastic estimators of the Hessian trace: Hutchinson and Hutch++."""

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from keras_flat.utils import rng
from keras_flat.utils import vector
from keras_flat.utils.deprecation import renamed_arguments
from keras_flat.utils.deprecation import renamed_attribute

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
        estimator: `"hutchinson"` or `"hutch++"` (formerly `method`, still
            readable with a warning).
        dimension: Number of parameters d.
        blocks: With `per_variable=True` (or `per_layer=True`), the trace
            of each diagonal block of the Hessian, a `BlockTraces`;
            otherwise None.
    """

    value: float
    stderr: float
    samples: np.ndarray
    num_matvecs: int
    estimator: str
    dimension: int
    blocks: Optional["BlockTraces"] = None

    method = renamed_attribute("method", "estimator")

    @property
    def normalized(self):
        """tr(H) / d, the paper's flatness measure on the loss's scale."""
        return self.value / self.dimension


TraceEstimate.__init__ = renamed_arguments(method="estimator")(TraceEstimate.__init__)


def hutchinson(operator, num_probes, seed, per_variable=False):
    """Hutchinson's estimator with Rademacher probes, in one compiled call.

    Args:
        operator: A `HessianOperator`.
        num_probes: Number of probes (Hessian-vector products), >= 1.
        seed: Integer tensor of shape `(2,)`.
        per_variable: Also estimate each variable's diagonal block trace
            from the same probes (see `BlockTraces`).

    Returns:
        A `TraceEstimate`.
    """
    if per_variable:
        return _hutchinson_blocks(operator, num_probes, seed)

    def make(traced):
        def estimate(seed, first, num_probes):
            def probes(product):
                samples = tf.TensorArray(traced.dtype, size=num_probes)
                for i in tf.range(num_probes):
                    z = vector.rademacher_like(traced.variables, rng.fold_in(seed, first + i))
                    samples = samples.write(i, vector.dot(z, product(z)))
                return samples.stack()
            return over_batches(traced, probes)
        return estimate

    samples = _probes(operator, "hutchinson", make, seed, num_probes)
    return _result(samples, num_probes, "hutchinson", operator.dimension)


# Probes per chunk on which `"auto"` times each HVP method (twice each).
AUTO_CHUNK = 2


def _probes(operator, name, make, seed, num_probes):
    """Runs the probe function `name` (of `(seed, first, count)`) on probes 0..num_probes-1.

    Under an undecided `hvp_method="auto"`, with enough probes, the first
    chunks choose the method (`CompiledHessian.choose_on_chunks`): the
    probes are independent, so each method is timed on some of them and
    every probe counts in the estimate.
    """
    seed = tf.convert_to_tensor(seed)
    kernel, results, done = operator.kernel, [], 0

    def chunk_args(first, count):
        return seed, tf.constant(first, tf.int32), tf.constant(count, tf.int32)

    if kernel.method is None and num_probes >= 4 * AUTO_CHUNK:
        results, done = kernel.choose_on_chunks(name, make, *operator.arguments, chunk_args,
                                                AUTO_CHUNK)
    if done < num_probes:
        results.append(operator._function(name, make)(*chunk_args(done, num_probes - done)))
    return np.concatenate([np.asarray(r) for r in results])


def hutch_plus_plus(operator, num_matvecs, seed, per_variable=False):
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
        per_variable: Also estimate each variable's diagonal block trace
            (see `BlockTraces`).

    Returns:
        A `TraceEstimate` whose samples are the low-rank part plus each
        residual probe's estimate.
    """
    if per_variable:
        return _hutch_plus_plus_blocks(operator, num_matvecs, seed)
    sketch = min(num_matvecs // 3, operator.dimension)  # QR has at most d columns.
    residual = num_matvecs - 2 * sketch

    def make(traced):
        def estimate(seed, sketch, residual):
            return _hutch_plus_plus(traced, seed, sketch, residual)
        return estimate

    fn = operator._function("hutch++", make)
    samples = fn(
        tf.convert_to_tensor(seed), tf.constant(sketch), tf.constant(residual)
    ).numpy()
    return _result(samples, num_matvecs, "hutch++", operator.dimension)


def over_batches(traced, body):
    """`Σ_b w_b body(product_b)`: `body` run on each batch's products, weighted and summed.

    `body(product)` computes, from `product(v)` = H_b·v (a list shaped like
    the variables), tensors linear in H_b; every product of one batch
    shares its recorded forward and first backward passes (see
    `Traced.per_batch`), so the probes go inside `body` and the batches
    outside.
    """
    total = None
    for weight, product in traced.per_batch():
        part = tf.nest.map_structure(lambda t, w=weight: tf.cast(w, t.dtype) * t, body(product))
        total = part if total is None else tf.nest.map_structure(tf.add, total, part)
    return total


def _flat(product, like):
    """`product` on flat vectors."""
    return lambda flat: vector.flatten(product(vector.unflatten(flat, like)))


def _sketch(traced, seed, sketch):
    """Q, an orthonormal basis of H·S for `sketch` Rademacher columns S (Hutch++'s first third)."""
    like, dtype = traced.variables, traced.dtype

    def columns(product):
        matvec = _flat(product, like)
        out = tf.TensorArray(dtype, size=sketch, element_shape=[traced.kernel.dimension])
        for i in tf.range(sketch):
            s = vector.flatten(vector.rademacher_like(like, rng.fold_in(seed, i)))
            out = out.write(i, matvec(s))
        return out.stack()

    q, _ = tf.linalg.qr(tf.transpose(over_batches(traced, columns)))
    return q


def _hutch_plus_plus(traced, seed, sketch, residual):
    """The body of `hutch_plus_plus`."""
    like, dtype = traced.variables, traced.dtype
    q = _sketch(traced, seed, sketch)

    def rest(product):
        matvec = _flat(product, like)
        low_rank = tf.zeros((), dtype)
        for i in tf.range(sketch):
            low_rank += tf.tensordot(q[:, i], matvec(q[:, i]), 1)
        samples = tf.TensorArray(dtype, size=residual)
        for i in tf.range(residual):
            g = vector.flatten(vector.rademacher_like(like, rng.fold_in(seed, sketch + i)))
            g = g - tf.linalg.matvec(q, tf.linalg.matvec(q, g, transpose_a=True))
            samples = samples.write(i, tf.tensordot(g, matvec(g), 1))
        return low_rank, samples.stack()

    low_rank, samples = over_batches(traced, rest)
    return low_rank + samples


def _result(samples, num_matvecs, method, dimension):
    samples = np.asarray(samples, np.float64)
    n = len(samples)
    stderr = float(np.std(samples, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return TraceEstimate(
        value=float(np.mean(samples)),
        stderr=stderr,
        samples=samples,
        num_matvecs=num_matvecs,
        estimator=method,
        dimension=dimension,
    )


@dataclasses.dataclass
class BlockTraces:
    """Trace estimates of the diagonal blocks of the Hessian.

    The parameters split into blocks (one per trainable variable, or one
    per layer); block b's trace is tr(H_bb), the sum of the second
    derivatives of the loss along that block's parameters. The blocks'
    traces sum to tr(H). They are estimated from the same probes as the
    total (no extra Hessian-vector products): for Hutchinson, block b's
    sample is `z_b · (H z)_b`, unbiased because the cross terms
    `z_b · H_bc z_c` (c != b) average to zero.

    Attributes:
        names: Block names: variable paths (e.g. `"dense/kernel"`) or
            layer paths (e.g. `"dense"`).
        values: Estimated block traces, a `(blocks,)` array.
        stderrs: Their standard errors, a `(blocks,)` array.
        samples: Per-probe estimates, a `(probes, blocks)` array (each row
            sums to that probe's estimate of the total).
        dimensions: Parameters per block, a `(blocks,)` int array.

    Example:

    ```python
    est = keras_flat.hessian.hessian_trace(model, (x, y), per_layer=True)
    for name, value, err in zip(est.blocks.names, est.blocks.values, est.blocks.stderrs):
        print(f"{name}: {value:.3f} ± {err:.3f}")
    ```
    """

    names: list
    values: np.ndarray
    stderrs: np.ndarray
    samples: np.ndarray
    dimensions: np.ndarray

    @property
    def normalized(self):
        """Each block's trace divided by its number of parameters."""
        return self.values / self.dimensions

    def as_dict(self):
        """`{name: (value, stderr)}`."""
        return {n: (float(v), float(e)) for n, v, e in zip(self.names, self.values, self.stderrs)}

    def by_layer(self):
        """Sums variable blocks into layer blocks (by variable path, `layer/variable`)."""
        layers = list(dict.fromkeys(_layer_of(n) for n in self.names))
        columns = [[i for i, n in enumerate(self.names) if _layer_of(n) == layer]
                   for layer in layers]
        samples = np.stack([self.samples[:, c].sum(axis=1) for c in columns], axis=1)
        dimensions = np.array([self.dimensions[c].sum() for c in columns])
        return _blocks(layers, samples, dimensions)

    def to_csv(self, path):
        """Writes `block, trace, stderr, parameters, normalized`; returns `path`."""
        import csv

        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["block", "trace", "stderr", "parameters", "normalized"])
            for n, v, e, d in zip(self.names, self.values, self.stderrs, self.dimensions):
                writer.writerow([n, repr(float(v)), repr(float(e)), int(d), repr(float(v / d))])
        return path


def _layer_of(name):
    return name.rsplit("/", 1)[0] if "/" in name else name


def _blocks(names, samples, dimensions):
    samples = np.asarray(samples, np.float64)
    n = len(samples)
    stderrs = (np.std(samples, axis=0, ddof=1) / np.sqrt(n) if n > 1
               else np.full(samples.shape[1], np.nan))
    return BlockTraces(names=list(names), values=samples.mean(axis=0), stderrs=stderrs,
                       samples=samples, dimensions=np.asarray(dimensions, np.int64))


def _block_layout(operator):
    names = [getattr(v, "path", v.name) for v in operator.variables]
    sizes = [int(np.prod(v.shape)) for v in operator.variables]
    return names, sizes


def _with_blocks(samples, num_matvecs, method, operator):
    names, sizes = _block_layout(operator)
    samples = np.asarray(samples, np.float64)
    result = _result(samples.sum(axis=1), num_matvecs, method, operator.dimension)
    result.blocks = _blocks(names, samples, sizes)
    return result


def _hutchinson_blocks(operator, num_probes, seed):
    """Hutchinson's estimator of every block's trace from the same probes."""
    def make(traced):
        dtype = traced.dtype

        def estimate(seed, first, num_probes):
            def probes(product):
                samples = tf.TensorArray(dtype, size=num_probes)
                for i in tf.range(num_probes):
                    z = vector.rademacher_like(traced.variables, rng.fold_in(seed, first + i))
                    hz = product(z)
                    dots = [tf.reduce_sum(tf.cast(a, dtype) * tf.cast(b, dtype))
                            for a, b in zip(z, hz)]
                    samples = samples.write(i, tf.stack(dots))
                return samples.stack()
            return over_batches(traced, probes)
        return estimate

    samples = _probes(operator, "hutchinson_blocks", make, seed, num_probes)
    return _with_blocks(samples, num_probes, "hutchinson", operator)


def _hutch_plus_plus_blocks(operator, num_matvecs, seed):
    """Hutch++ for every block's trace.

    With P = QQᵀ the sketch's projector, H = PH + (I - P)HP + (I - P)H(I - P).
    Block b's trace of the first two terms is computed exactly,
    Σ_i (q_i)_b · ((2I - P) H q_i)_b, and that of the third estimated from
    the residual probes g as g_b · ((I - P) H (I - P) g)_b. Summed over the
    blocks these are Hutch++'s low-rank and residual terms.
    """
    sketch = min(num_matvecs // 3, operator.dimension)
    residual = num_matvecs - 2 * sketch
    _, sizes = _block_layout(operator)

    def make(traced):
        def estimate(seed, sketch, residual):
            return _block_estimate(traced, sizes, seed, sketch, residual)
        return estimate

    fn = operator._function("hutch++_blocks", make)
    samples = fn(
        tf.convert_to_tensor(seed), tf.constant(sketch), tf.constant(residual)
    ).numpy()
    return _with_blocks(samples, num_matvecs, "hutch++", operator)


def _block_estimate(traced, sizes, seed, sketch, residual):
    """The body of `_hutch_plus_plus_blocks`: per-block samples, low-rank part added."""
    like, dtype = traced.variables, traced.dtype
    segments = tf.constant(np.repeat(np.arange(len(sizes)), sizes), tf.int32)

    def block_dot(a, b):
        return tf.math.segment_sum(a * b, segments)

    def project_out(q, v):
        return v - tf.linalg.matvec(q, tf.linalg.matvec(q, v, transpose_a=True))

    q = _sketch(traced, seed, sketch)

    def rest(product):
        matvec = _flat(product, like)
        low_rank = tf.zeros([len(sizes)], dtype)
        for i in tf.range(sketch):
            hq = matvec(q[:, i])
            low_rank += block_dot(q[:, i], hq + project_out(q, hq))
        samples = tf.TensorArray(dtype, size=residual)
        for i in tf.range(residual):
            g = vector.flatten(vector.rademacher_like(like, rng.fold_in(seed, sketch + i)))
            samples = samples.write(i, block_dot(g, project_out(q, matvec(project_out(q, g)))))
        return low_rank, samples.stack()

    low_rank, samples = over_batches(traced, rest)
    return low_rank + samples
