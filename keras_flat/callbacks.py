"""Keras callbacks that measure flatness at epoch end and log it.

They write into the epoch's `logs`, so `History`, `CSVLogger`,
`TensorBoard` and the progress bar show the values. Keras passes the same
`logs` dict to every callback in order and adds `History` and the progress
bar after the user's callbacks; list these callbacks *before* `CSVLogger` or
`TensorBoard` so those see the new keys.

Cost is bounded and known in advance: each measurement runs on a fixed set
of at most `num_batches` batches of `batch_size` examples taken once from
`data` (never the whole training set by default), with `num_probes`
(trace) or at most `max_iterations` (eigenvalues) Hessian-vector products,
each costing about two to three gradient evaluations on that set.
"""

import abc
import math

import keras

from keras_flat import hessian
from keras_flat.batches import as_batches
from keras_flat.hessian.eigen import EIGEN_METHODS
from keras_flat.hessian.operator import HVP_METHODS
from keras_flat.hessian.trace import TRACE_METHODS
from keras_flat.validation import check_choice
from keras_flat.validation import check_count


class _HessianCallback(keras.callbacks.Callback, abc.ABC):
    """Shared scheduling, data and operator handling."""

    def __init__(self, data, every_n_epochs, batch_size, num_batches, training,
                 hvp_method, loss, seed, verbose):
        super().__init__()
        check_count("every_n_epochs", every_n_epochs, 1)
        check_count("batch_size", batch_size, 1)
        check_count("num_batches", num_batches, 1)
        check_count("seed", seed, 0)
        check_choice("hvp_method", hvp_method, HVP_METHODS + ("auto",))
        # Materialise the fixed measurement set now, so bad data fails here.
        self.batches = as_batches(data, batch_size=batch_size, num_batches=num_batches)
        self.every_n_epochs = every_n_epochs
        self.training = bool(training)
        self.hvp_method = hvp_method
        self.loss = loss
        self.seed = seed
        self.verbose = verbose
        self._operator = None
        self.history = []

    def _get_operator(self):
        if self._operator is None or self._operator.model is not self.model:
            self._operator = hessian.HessianOperator(
                self.model, self.batches, loss=self.loss, training=self.training,
                method=self.hvp_method,
            )
        return self._operator

    def _due(self, epoch):
        return (epoch + 1) % self.every_n_epochs == 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self._due(epoch):
            values = self.measure(self._get_operator())
        else:
            values = {key: math.nan for key in self.keys()}
        logs.update(values)
        self.history.append({"epoch": epoch, **values})
        if self.verbose and self._due(epoch):
            text = ", ".join(f"{k}={v:.5g}" for k, v in values.items())
            print(f"Epoch {epoch + 1}: {text}")

    @abc.abstractmethod
    def measure(self, operator):
        """Returns `{key: value}` for every key of `keys()`, measured with `operator`."""

    @abc.abstractmethod
    def keys(self):
        """Returns the names of the values this callback writes into `logs`."""


class HessianTrace(_HessianCallback):
    """Estimates the Hessian trace at the end of every `every_n_epochs` epochs.

    Logs `hessian_trace` (the estimate of tr ∇²L on the measurement set),
    `hessian_trace_stderr` (its standard error) and
    `hessian_trace_normalized` (tr ∇²L / d, the flatness measure of Ahn,
    Jadbabaie & Sra). Epochs that are not measured log NaN, which keeps
    `History` aligned with epochs.

    The probes are the same every epoch (common random numbers), so
    epoch-to-epoch changes are not probe noise; set `resample_probes=True`
    to draw new ones each time.

    Args:
        data: Measurement data: `(x, y[, sample_weight])` arrays, a batched
            `tf.data.Dataset`, or a list of batches.
        num_probes: Hessian-vector products per measurement, >= 1 (>= 3 for
            `"hutch++"`). Defaults to 16.
        every_n_epochs: Measure every this many epochs. Defaults to 1.
        method: `"hutchinson"` (default) or `"hutch++"`.
        batch_size: Split array data into batches of this size (128).
        num_batches: Use at most this many batches of `data` (4).
        training: Measure with layers in training mode (BatchNorm batch
            statistics). Defaults to False.
        hvp_method: `"auto"`, `"forward_over_backward"` or `"double_backward"`.
        loss: Loss callable, for a model compiled without one.
        seed: Seed of the probes.
        resample_probes: Draw new probes at each measurement.
        verbose: Print each measurement.

    Example:

    ```python
    trace = keras_flat.callbacks.HessianTrace((x_val, y_val), num_probes=16)
    history = model.fit(x, y, epochs=5, callbacks=[trace])
    history.history["hessian_trace"], history.history["hessian_trace_stderr"]
    ```
    """

    def __init__(self, data, num_probes=16, every_n_epochs=1, method="hutchinson",
                 batch_size=128, num_batches=4, training=False, hvp_method="auto",
                 loss=None, seed=0, resample_probes=False, verbose=0):
        check_choice("method", method, TRACE_METHODS)
        check_count("num_probes", num_probes, 3 if method == "hutch++" else 1)
        super().__init__(data, every_n_epochs, batch_size, num_batches, training,
                         hvp_method, loss, seed, verbose)
        self.num_probes = num_probes
        self.method = method
        self.resample_probes = bool(resample_probes)
        self._measurements = 0

    def keys(self):
        return ["hessian_trace", "hessian_trace_stderr", "hessian_trace_normalized"]

    def measure(self, operator):
        seed = self.seed + (self._measurements if self.resample_probes else 0)
        self._measurements += 1
        estimate = hessian.hessian_trace(
            operator, num_probes=self.num_probes, method=self.method, seed=seed)
        self.last = estimate
        return {
            "hessian_trace": estimate.value,
            "hessian_trace_stderr": estimate.stderr,
            "hessian_trace_normalized": estimate.normalized,
        }


class TopEigenvalue(_HessianCallback):
    """Estimates the top Hessian eigenvalues at the end of every `every_n_epochs` epochs.

    Logs `top_eigenvalue` (the largest eigenvalue) and, for `k > 1`,
    `top_eigenvalue_2` ... `top_eigenvalue_k`. Each measurement warm-starts
    from the previous eigenvectors, so during training it usually needs only
    a few Hessian-vector products. Epochs that are not measured log NaN.

    Args:
        data: Measurement data (see `HessianTrace`).
        k: How many eigenvalues, >= 1. Defaults to 1.
        every_n_epochs: Measure every this many epochs. Defaults to 1.
        method: `"lanczos"` (default) or `"power"`.
        max_iterations: Budget of Hessian-vector products per measurement
            (50).
        tol: Relative accuracy (1e-3).
        batch_size, num_batches, training, hvp_method, loss, seed, verbose:
            As for `HessianTrace`.
        warm_start: Start from the previous measurement's eigenvectors.

    Example:

    ```python
    top = keras_flat.callbacks.TopEigenvalue((x_val, y_val), k=2)
    model.fit(x, y, epochs=5, callbacks=[top])
    ```
    """

    def __init__(self, data, k=1, every_n_epochs=1, method="lanczos", max_iterations=50,
                 tol=1e-3, batch_size=128, num_batches=4, training=False,
                 hvp_method="auto", loss=None, seed=0, warm_start=True, verbose=0):
        check_count("k", k, 1)
        check_count("max_iterations", max_iterations, 1)
        check_choice("method", method, EIGEN_METHODS)
        if not (isinstance(tol, (int, float)) and 0 < tol < 1):
            raise ValueError(f"Argument `tol` must be in (0, 1). Received: tol={tol!r}.")
        super().__init__(data, every_n_epochs, batch_size, num_batches, training,
                         hvp_method, loss, seed, verbose)
        self.k = k
        self.method = method
        self.max_iterations = max_iterations
        self.tol = tol
        self.warm_start = bool(warm_start)
        self.vectors = None

    def keys(self):
        return ["top_eigenvalue"] + [f"top_eigenvalue_{i}" for i in range(2, self.k + 1)]

    def measure(self, operator):
        result = hessian.top_eigenvalues(
            operator, k=self.k, method=self.method, max_iterations=self.max_iterations,
            tol=self.tol, seed=self.seed,
            initial_vectors=self.vectors if self.warm_start else None)
        self.vectors = result.vectors
        self.last = result
        return {key: float(v) for key, v in zip(self.keys(), result.values)}

