"""Hessian measurements for any Keras 3 model: products, trace, spectrum.

All functions differentiate the training loss (`model.compute_loss`, i.e.
the compiled loss plus regularization losses, or `loss=` for an uncompiled
model) with respect to `model.trainable_variables` (frozen layers are
constants), averaged over `data`. BatchNorm runs in inference mode unless
`training=True`, and no variable is ever changed.

Second derivatives are exact through every Keras layer, including
BatchNormalization (batch statistics), LayerNormalization and
GroupNormalization, whose TensorFlow moments stop the gradient through the
mean inside the variance: harmless for first derivatives (training), wrong
for second ones. Every measurement traces and runs inside
`exact_second_derivatives()`, which removes that `stop_gradient` while it is
active (see `keras_flat.hessian.exact`). A model that TensorFlow cannot
differentiate twice raises `NotTwiceDifferentiableError` naming the layer.

- `hvp`: Hessian-vector products (forward-over-backward or double backward).
- `hessian_trace`: Hutchinson or Hutch++ estimate with standard error.
- `top_eigenvalues`: Lanczos or power iteration, warm-startable.
- `spectral_density`: stochastic Lanczos quadrature.
- `exact_hessian`: the dense Hessian of a small model, for checks.
- `exact_second_derivatives`: the context every measurement runs in.

Repeated measurements on the same model trace once: the compiled functions
take the data as arguments and are kept per model and options (loss,
`training`, HVP method, `jit_compile`, trainable variables), so a call on
new data of the same shapes and dtypes reuses them, and `hvp_method="auto"`
times the two HVP methods once. Freezing a layer or recompiling the model
gives new functions. A `HessianOperator` passed as `model` also fixes the
data (its batches are taken from `data` once).
"""

import numpy as np
import tensorflow as tf

from keras_flat.hessian import diagnose
from keras_flat.hessian.density import SpectralDensity
from keras_flat.hessian.density import quadrature_steps
from keras_flat.hessian.density import smooth
from keras_flat.hessian.density import stochastic_lanczos_quadrature  # noqa: F401
from keras_flat.hessian.diagnose import NotTwiceDifferentiableError
from keras_flat.hessian.eigen import EIGEN_METHODS
from keras_flat.hessian.eigen import EigenResult
from keras_flat.hessian.eigen import lanczos_top  # noqa: F401
from keras_flat.hessian.eigen import lanczos_top_steps
from keras_flat.hessian.eigen import power_top  # noqa: F401
from keras_flat.hessian.eigen import power_top_steps
from keras_flat.hessian.exact import exact_second_derivatives
from keras_flat.hessian.operator import HVP_METHODS
from keras_flat.hessian.operator import HessianOperator
from keras_flat.hessian.operator import check_model  # noqa: F401
from keras_flat.hessian.operator import dense_gradients
from keras_flat.hessian.trace import TRACE_METHODS
from keras_flat.hessian.trace import BlockTraces
from keras_flat.hessian.trace import TraceEstimate
from keras_flat.hessian.trace import hutch_plus_plus
from keras_flat.hessian.trace import hutchinson
from keras_flat.utils import vector
from keras_flat.utils.deprecation import rename_keywords
from keras_flat.utils.deprecation import renamed_arguments
from keras_flat.utils.validation import check_bool
from keras_flat.utils.validation import check_choice
from keras_flat.utils.validation import check_count

_OPERATOR_ARGS = ("loss", "training", "hvp_method", "batch_size", "num_batches", "jit_compile")


def operator_for(model, data=None, **kwargs):
    """Returns a `HessianOperator` (or `model` itself if it already is one)."""
    if isinstance(model, HessianOperator):
        given = {k: v for k, v in kwargs.items()
                 if v is not None and not (k == "training" and v is False)
                 and not (k == "hvp_method" and v == "auto")}
        if data is not None or given:
            raise ValueError(
                "A HessianOperator already fixes its data and options; pass it "
                f"alone, without `data` or {sorted(given) or 'operator options'}."
            )
        return model
    if data is None:
        raise ValueError("Argument `data` is required when `model` is a keras.Model.")
    return HessianOperator(model, data, **kwargs)


@renamed_arguments(method="hvp_method")
def hvp(model, data, vectors, *, loss=None, training=False, hvp_method="auto",
        batch_size=None, num_batches=None):
    """Hessian-vector product of the training loss, averaged over `data`.

    Args:
        model: A built Keras model (or a `HessianOperator`, with `data=None`).
        data: A batch `(x, y[, sample_weight])`, a batched `tf.data.Dataset`
            or a list of batches; see `keras_flat.utils.batches.as_batches`.
        vectors: A list of tensors shaped like `model.trainable_variables`,
            or one flat vector of their total size.
        loss: The loss for an uncompiled model (or instead of the compiled
            one): a name such as `"mse"`, a `keras.losses.Loss`, or a
            callable `loss(y_true, y_pred)`.
        training: Layers in training mode (BatchNorm batch statistics).
        hvp_method: How the products are computed: `"forward_over_backward"`,
            `"double_backward"` or `"auto"` (see `HessianOperator`).
        batch_size: Split array data into batches of this size.
        num_batches: Use at most this many batches.

    Returns:
        H·v in the form of `vectors` (a list of tensors, or a flat tensor).

    Example:

    ```python
    v = [tf.ones_like(w) for w in model.trainable_variables]
    hv = keras_flat.hessian.hvp(model, (x, y), v)
    ```
    """
    op = operator_for(model, data, loss=loss, training=training, hvp_method=hvp_method,
                      batch_size=batch_size, num_batches=num_batches)
    if isinstance(vectors, (list, tuple)):
        if len(vectors) != len(op.variables):
            raise ValueError(
                f"Argument `vectors` must hold {len(op.variables)} tensors (one "
                f"per trainable variable). Received {len(vectors)}."
            )
        return list(op.matvec(vectors))
    flat = tf.convert_to_tensor(vectors)
    if flat.shape.rank != 1 or flat.shape[0] != op.dimension:
        raise ValueError(
            f"Argument `vectors` must be a list of tensors or a flat vector of "
            f"length {op.dimension}. Received shape {flat.shape}."
        )
    return op.matvec_flat(flat)


@renamed_arguments(method="estimator")
def hessian_trace(model, data=None, num_probes=32, estimator="hutchinson", seed=0,
                  per_variable=False, per_layer=False, **operator_kwargs):
    """Estimates tr(∇²L) with Rademacher probes, all in one compiled call.

    Args:
        model: A built Keras model, or a `HessianOperator` (then `data=None`).
        data: The measurement data (see `hvp`).
        num_probes: Hessian-vector products to spend, >= 1 (>= 3 for
            `"hutch++"`).
        estimator: The trace estimator, `"hutchinson"` or `"hutch++"`
            (better when a few eigenvalues dominate the trace).
        seed: Integer seed of the probes.
        per_variable: Also estimate the trace of each trainable variable's
            diagonal block of the Hessian, with its standard error, from the
            same probes (`est.blocks`, a `BlockTraces`; the blocks sum to
            the total).
        per_layer: The same per layer (variables grouped by layer path).
        **operator_kwargs: `loss`, `training`, `hvp_method`, `batch_size`,
            `num_batches`, `jit_compile` (see `HessianOperator`).

    Returns:
        A `TraceEstimate` (`value`, `stderr`, `samples`, `normalized`,
        `blocks`...).

    Example:

    ```python
    est = keras_flat.hessian.hessian_trace(model, (x, y), num_probes=64)
    print(f"{est.value:.3f} ± {est.stderr:.3f}")
    per_layer = keras_flat.hessian.hessian_trace(model, (x, y), per_layer=True).blocks
    ```
    """
    check_choice("estimator", estimator, TRACE_METHODS)
    check_count("num_probes", num_probes, 3 if estimator == "hutch++" else 1)
    check_bool("per_variable", per_variable)
    check_bool("per_layer", per_layer)
    if per_variable and per_layer:
        raise ValueError("Pass per_variable=True or per_layer=True, not both.")
    op = operator_for(model, data, **_operator_kwargs(operator_kwargs))
    seed = _seed(seed)
    blocks = per_variable or per_layer
    if estimator == "hutchinson":
        estimate = hutchinson(op, num_probes, seed, per_variable=blocks)
    else:
        estimate = hutch_plus_plus(op, num_probes, seed, per_variable=blocks)
    if per_layer and not per_variable:
        estimate.blocks = estimate.blocks.by_layer()
    return estimate


@renamed_arguments(k="num_eigenvalues", method="estimator", tol="rtol")
def top_eigenvalues(model, data=None, num_eigenvalues=1, estimator="lanczos",
                    max_iterations=100, rtol=1e-4, initial_vectors=None, seed=0,
                    **operator_kwargs):
    """The `num_eigenvalues` largest Hessian eigenvalues and their eigenvectors.

    Args:
        model: A built Keras model, or a `HessianOperator` (then `data=None`).
        data: The measurement data (see `hvp`).
        num_eigenvalues: How many eigenvalues, >= 1.
        estimator: The eigenvalue estimator: `"lanczos"` (default; the
            algebraically largest, with full reorthogonalisation) or
            `"power"` (subspace iteration; the largest in magnitude, as
            PyHessian reports).
        max_iterations: Budget of Hessian-vector products.
        rtol: Relative accuracy: Lanczos stops when every Ritz pair's
            residual is at most `rtol * |value|`; power iteration when no
            value changes by more than `rtol` relatively.
        initial_vectors: Optional `(j, d)` array (e.g. the `vectors` of a
            previous result) to warm-start from.
        seed: Integer seed of the random start.
        **operator_kwargs: See `hessian_trace`.

    Returns:
        An `EigenResult` (`values`, `vectors`, `iterations`, `converged`).

    Example:

    ```python
    first = keras_flat.hessian.top_eigenvalues(model, (x, y), num_eigenvalues=2)
    later = keras_flat.hessian.top_eigenvalues(model, (x, y), num_eigenvalues=2,
                                               initial_vectors=first.vectors)
    ```
    """
    k = check_count("num_eigenvalues", num_eigenvalues, 1)
    check_count("max_iterations", max_iterations, 1)
    check_choice("estimator", estimator, EIGEN_METHODS)
    op = operator_for(model, data, **_operator_kwargs(operator_kwargs))
    if k > op.dimension:
        raise ValueError(
            f"Argument `num_eigenvalues` must be at most the number of parameters "
            f"({op.dimension}). Received: num_eigenvalues={k}."
        )
    random = np.random.default_rng(seed).normal(size=(k, op.dimension))
    start = random
    if initial_vectors is not None:
        warm = np.asarray(initial_vectors, np.float64).reshape(-1, op.dimension)
        start = random * 1e-3 * np.linalg.norm(warm) / np.linalg.norm(random)
        start[: min(k, len(warm))] += warm[:k]
    if estimator == "lanczos":
        values, vectors, used, converged = op.drive(lanczos_top_steps(
            op.dimension, k, max_iterations, rtol, start.sum(axis=0)))
    else:
        values, vectors, used, converged = op.drive(power_top_steps(
            k, max(max_iterations, k), rtol, start))
    return EigenResult(values=np.asarray(values), vectors=np.asarray(vectors),
                       iterations=used, converged=converged)


@renamed_arguments(sigma="bandwidth")
def spectral_density(model, data=None, num_probes=4, num_steps=40, grid_size=512,
                     bandwidth=None, seed=0, **operator_kwargs):
    """Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ).

    Args:
        model: A built Keras model, or a `HessianOperator` (then `data=None`).
        data: The measurement data (see `hvp`).
        num_probes: Random probes (independent Lanczos runs), >= 1.
        num_steps: Lanczos steps per probe, >= 1 (the quadrature's nodes).
        grid_size: Points of the returned grid, >= 2.
        bandwidth: Standard deviation of the Gaussian kernel that smooths
            the quadrature nodes into a density; default 1% of the spectral
            range.
        seed: Integer seed of the probes.
        **operator_kwargs: See `hessian_trace`.

    Returns:
        A `SpectralDensity` (`grid`, `density`, `nodes`, `weights`,
        `bandwidth`).
    """
    check_count("num_probes", num_probes, 1)
    check_count("num_steps", num_steps, 1)
    check_count("grid_size", grid_size, 2)
    op = operator_for(model, data, **_operator_kwargs(operator_kwargs))
    starts = np.random.default_rng(seed).choice([-1.0, 1.0], size=(num_probes, op.dimension))
    nodes, weights = op.drive(quadrature_steps(op.dimension, num_probes, num_steps, starts))
    grid, density, bandwidth = smooth(nodes, weights, grid_size, bandwidth)
    return SpectralDensity(grid=grid, density=density, nodes=nodes, weights=weights,
                           bandwidth=bandwidth)


def exact_hessian(model, data=None, max_parameters=5000, **operator_kwargs):
    """The dense Hessian of a small model, as a float64 NumPy array.

    Computed as the Jacobian of the flattened gradient (a different path
    from the Hessian-vector products), for tests and small experiments.

    Args:
        model: A built Keras model, or a `HessianOperator` (then `data=None`).
        data: The measurement data (see `hvp`).
        max_parameters: Refuse models with more parameters than this.
        **operator_kwargs: See `hessian_trace`.

    Returns:
        A `(d, d)` array in the flattened order of `model.trainable_variables`.
    """
    op = operator_for(model, data, **_operator_kwargs(operator_kwargs))
    if op.dimension > max_parameters:
        raise ValueError(
            f"exact_hessian builds a {op.dimension}x{op.dimension} matrix; the "
            f"model has more than max_parameters={max_parameters} parameters."
        )

    blocks = op._evaluate("exact_hessian", _jacobians)
    total = sum(weight * np.asarray(block, np.float64)
                for weight, block in zip(op.batch_weights, blocks))
    return (total + total.T) / 2


def _jacobians(traced):
    """`make` of `exact_hessian`: each batch's Hessian as the Jacobian of its gradient."""
    kernel = traced.kernel
    variables, dimension = kernel.variables, kernel.dimension

    def jacobian(x, y, sw):
        targets = []
        try:
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = kernel.batch_loss(x, y, sw)
                targets.append(loss)
                raw = inner.gradient(loss, variables)
                kernel.report(diagnose.check_first_order(kernel.model, variables, loss, raw))
                flat = vector.flatten(dense_gradients(raw, variables))
                targets.append(flat)
            blocks = outer.jacobian(flat, variables,
                                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                                    experimental_use_pfor=False)
        except LookupError as error:
            kernel.report(diagnose.explain_failure(kernel.model, error, targets,
                                                   "by exact_hessian"))
            raise
        return tf.concat([tf.reshape(b, [dimension, -1]) for b in blocks], axis=1)

    return lambda: [jacobian(*batch) for batch in traced.batches]


def _operator_kwargs(kwargs):
    # `method` reached the operator through **operator_kwargs of
    # `spectral_density` and `exact_hessian`, where it meant the HVP method.
    kwargs = rename_keywords("HessianOperator()", kwargs, {"method": "hvp_method"})
    unknown = set(kwargs) - set(_OPERATOR_ARGS)
    if unknown:
        raise TypeError(
            f"Unknown arguments {sorted(unknown)}; the operator accepts "
            f"{sorted(_OPERATOR_ARGS)}."
        )
    return kwargs


def _seed(seed):
    return tf.constant([check_count("seed", seed, 0), 0], tf.int64)


__all__ = [
    "HessianOperator",
    "TraceEstimate",
    "BlockTraces",
    "EigenResult",
    "SpectralDensity",
    "hvp",
    "hessian_trace",
    "top_eigenvalues",
    "spectral_density",
    "exact_hessian",
    "exact_second_derivatives",
    "NotTwiceDifferentiableError",
    "HVP_METHODS",
    "TRACE_METHODS",
    "EIGEN_METHODS",
]
