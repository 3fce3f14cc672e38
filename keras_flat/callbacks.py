"""Keras callbacks that measure flatness at epoch end and log it.

They write into the epoch's `logs`, so `History`, `CSVLogger`,
`TensorBoard` and the progress bar show the values. Keras passes the same
`logs` dict to every callback in order and adds `History` and the progress
bar after the user's callbacks; list these callbacks *before* `CSVLogger` or
`TensorBoard` so those see the new keys.

With `log_dir` (e.g. the `log_dir` of `keras.callbacks.TensorBoard`) they
also write their values as TensorBoard scalars, and `HessianSpectrum` the
Hessian's eigenvalue density as a histogram, into the `flatness`
subdirectory of `log_dir` (a run of its own, next to Keras's `train` and
`validation`); `tensorboard` itself need not be installed to write them.

Cost is bounded and known in advance: each measurement runs on a fixed set
of at most `num_batches` batches of `batch_size` examples taken once from
`data` (never the whole training set by default), with `num_probes`
(trace) or at most `max_iterations` (eigenvalues) Hessian-vector products,
each costing about two to three gradient evaluations on that set.

The compiled functions are shared between the callbacks and with the
one-line measurements of `keras_flat.hessian` on the same model (see
`keras_flat.hessian.HessianOperator`): `HessianTrace`, `TopEigenvalue` and
`HessianSpectrum` on the same data trace each function once per model,
however many epochs they measure.
"""

import abc
import math
import os

import keras
import numpy as np
import tensorflow as tf

from keras_flat import hessian
from keras_flat.hessian import losses
from keras_flat.hessian.eigen import EIGEN_METHODS
from keras_flat.hessian.operator import HVP_METHODS
from keras_flat.hessian.trace import TRACE_METHODS
from keras_flat.utils import summaries
from keras_flat.utils.batches import as_batches
from keras_flat.utils.deprecation import deprecated_names
from keras_flat.utils.deprecation import renamed_arguments
from keras_flat.utils.deprecation import renamed_attribute
from keras_flat.utils.validation import check_choice
from keras_flat.utils.validation import check_count


class _HessianCallback(keras.callbacks.Callback, abc.ABC):
    """Shared scheduling, data and operator handling."""

    def __init__(self, data, every_n_epochs, batch_size, num_batches, training,
                 hvp_method, loss, seed, verbose, log_dir=None):
        super().__init__()
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(
                "Argument `log_dir` must be a directory path or None. "
                f"Received: log_dir={log_dir!r} of type {type(log_dir).__name__}."
            )
        check_count("every_n_epochs", every_n_epochs, 1)
        check_count("batch_size", batch_size, 1)
        check_count("num_batches", num_batches, 1)
        check_count("seed", seed, 0)
        check_choice("hvp_method", hvp_method, HVP_METHODS + ("auto",))
        losses.resolve(loss)  # Fails here on an unknown loss.
        # Materialise the fixed measurement set now, so bad data fails here.
        self.batches = as_batches(data, batch_size=batch_size, num_batches=num_batches)
        self.every_n_epochs = every_n_epochs
        self.training = bool(training)
        self.hvp_method = hvp_method
        self.loss = loss
        self.seed = seed
        self.verbose = verbose
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self._writer = None
        self.history = []

    def _get_operator(self):
        """An operator on the current trainable variables (layers may be frozen meanwhile).

        Cheap: its compiled functions are those of the previous
        measurements, and of the other callbacks on the same model.
        """
        return hessian.HessianOperator(
            self.model, self.batches, loss=self.loss, training=self.training,
            hvp_method=self.hvp_method,
        )

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
        if self.log_dir is not None and self._due(epoch):
            self._write_summaries(values, epoch)
        if self.verbose and self._due(epoch):
            text = ", ".join(f"{k}={v:.5g}" for k, v in values.items())
            print(f"Epoch {epoch + 1}: {text}")

    def _write_summaries(self, values, epoch):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "flatness"))
        with self._writer.as_default():
            for key, value in values.items():
                if math.isfinite(value):
                    summaries.scalar(key, value, step=epoch)
            self.write_extra_summaries(epoch)
        self._writer.flush()

    def write_extra_summaries(self, epoch):
        """Writes summaries beyond the logged scalars (inside the writer's scope)."""

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

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

    With `per_layer=True` it also logs `hessian_trace/<layer>`, the trace of
    each layer's diagonal block of the Hessian (estimated from the same
    probes, so at no extra cost; the blocks sum to the total).

    Args:
        data: Measurement data: `(x, y[, sample_weight])` arrays, a batched
            `tf.data.Dataset`, or a list of batches.
        num_probes: Hessian-vector products per measurement, >= 1 (>= 3 for
            `"hutch++"`). Defaults to 16.
        every_n_epochs: Measure every this many epochs. Defaults to 1.
        estimator: The trace estimator, `"hutchinson"` (default) or
            `"hutch++"`.
        batch_size: Split array data into batches of this size (128).
        num_batches: Use at most this many batches of `data` (4).
        training: Measure with layers in training mode (BatchNorm batch
            statistics). Defaults to False.
        hvp_method: How the Hessian-vector products are computed: `"auto"`,
            `"forward_over_backward"` or `"double_backward"`.
        loss: The loss to measure, for a model compiled without one (or
            instead of the compiled one): a name such as `"mse"`, a
            `keras.losses.Loss`, or a callable `loss(y_true, y_pred)`.
        seed: Seed of the probes.
        resample_probes: Draw new probes at each measurement.
        per_layer: Also log each layer's block trace.
        log_dir: If given, also write the values as TensorBoard scalars
            into `log_dir/flatness`.
        verbose: Print each measurement.

    Example:

    ```python
    trace = keras_flat.callbacks.HessianTrace((x_val, y_val), num_probes=16)
    history = model.fit(x, y, epochs=5, callbacks=[trace])
    history.history["hessian_trace"], history.history["hessian_trace_stderr"]
    ```
    """

    method = renamed_attribute("method", "estimator")

    @renamed_arguments(method="estimator")
    def __init__(self, data, num_probes=16, every_n_epochs=1, estimator="hutchinson",
                 batch_size=128, num_batches=4, training=False, hvp_method="auto",
                 loss=None, seed=0, resample_probes=False, verbose=0, per_layer=False,
                 log_dir=None):
        check_choice("estimator", estimator, TRACE_METHODS)
        check_count("num_probes", num_probes, 3 if estimator == "hutch++" else 1)
        super().__init__(data, every_n_epochs, batch_size, num_batches, training,
                         hvp_method, loss, seed, verbose, log_dir)
        self.num_probes = num_probes
        self.estimator = estimator
        self.resample_probes = bool(resample_probes)
        self.per_layer = bool(per_layer)
        self._measurements = 0

    def keys(self):
        keys = ["hessian_trace", "hessian_trace_stderr", "hessian_trace_normalized"]
        if self.per_layer:
            paths = [getattr(v, "path", v.name) for v in self.model.trainable_variables]
            layers = dict.fromkeys(p.rsplit("/", 1)[0] if "/" in p else p for p in paths)
            keys += [f"hessian_trace/{layer}" for layer in layers]
        return keys

    def measure(self, operator):
        seed = self.seed + (self._measurements if self.resample_probes else 0)
        self._measurements += 1
        estimate = hessian.hessian_trace(
            operator, num_probes=self.num_probes, estimator=self.estimator, seed=seed,
            per_layer=self.per_layer)
        self.last = estimate
        values = {
            "hessian_trace": estimate.value,
            "hessian_trace_stderr": estimate.stderr,
            "hessian_trace_normalized": estimate.normalized,
        }
        if self.per_layer:
            for name, value in zip(estimate.blocks.names, estimate.blocks.values):
                values[f"hessian_trace/{name}"] = float(value)
        return values


class TopEigenvalue(_HessianCallback):
    """Estimates the top Hessian eigenvalues at the end of every `every_n_epochs` epochs.

    Logs `top_eigenvalue` (the largest eigenvalue) and, for
    `num_eigenvalues > 1`, `top_eigenvalue_2` ... `top_eigenvalue_<n>`. Each measurement warm-starts
    from the previous eigenvectors, so during training it usually needs only
    a few Hessian-vector products. Epochs that are not measured log NaN.

    Args:
        data: Measurement data (see `HessianTrace`).
        num_eigenvalues: How many eigenvalues, >= 1. Defaults to 1.
        every_n_epochs: Measure every this many epochs. Defaults to 1.
        estimator: The eigenvalue estimator, `"lanczos"` (default) or
            `"power"`.
        max_iterations: Budget of Hessian-vector products per measurement
            (50).
        rtol: Relative accuracy (1e-3).
        batch_size, num_batches, training, hvp_method, loss, seed, verbose:
            As for `HessianTrace`.
        warm_start: Start from the previous measurement's eigenvectors.
        log_dir: If given, also write the values as TensorBoard scalars
            into `log_dir/flatness`.

    Example:

    ```python
    top = keras_flat.callbacks.TopEigenvalue((x_val, y_val), num_eigenvalues=2)
    model.fit(x, y, epochs=5, callbacks=[top])
    ```
    """

    k = renamed_attribute("k", "num_eigenvalues")
    method = renamed_attribute("method", "estimator")
    tol = renamed_attribute("tol", "rtol")

    @renamed_arguments(k="num_eigenvalues", method="estimator", tol="rtol")
    def __init__(self, data, num_eigenvalues=1, every_n_epochs=1, estimator="lanczos",
                 max_iterations=50, rtol=1e-3, batch_size=128, num_batches=4, training=False,
                 hvp_method="auto", loss=None, seed=0, warm_start=True, verbose=0,
                 log_dir=None):
        check_count("num_eigenvalues", num_eigenvalues, 1)
        check_count("max_iterations", max_iterations, 1)
        check_choice("estimator", estimator, EIGEN_METHODS)
        if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
            raise ValueError(f"Argument `rtol` must be in (0, 1). Received: rtol={rtol!r}.")
        super().__init__(data, every_n_epochs, batch_size, num_batches, training,
                         hvp_method, loss, seed, verbose, log_dir)
        self.num_eigenvalues = num_eigenvalues
        self.estimator = estimator
        self.max_iterations = max_iterations
        self.rtol = rtol
        self.warm_start = bool(warm_start)
        self.vectors = None

    def keys(self):
        return ["top_eigenvalue"] + [f"top_eigenvalue_{i}"
                                     for i in range(2, self.num_eigenvalues + 1)]

    def measure(self, operator):
        warm = self.warm_start and self.vectors is not None
        warm = warm and self.vectors.shape[1] == operator.dimension  # Not after freezing.
        result = hessian.top_eigenvalues(
            operator, num_eigenvalues=self.num_eigenvalues, estimator=self.estimator,
            max_iterations=self.max_iterations, rtol=self.rtol, seed=self.seed,
            initial_vectors=self.vectors if warm else None)
        self.vectors = result.vectors
        self.last = result
        return {key: float(v) for key, v in zip(self.keys(), result.values)}


class HessianSpectrum(_HessianCallback):
    """Estimates the Hessian's eigenvalue density at the end of every `every_n_epochs` epochs.

    Uses stochastic Lanczos quadrature (`keras_flat.hessian.spectral_density`)
    and logs `hessian_spectrum_min` and `hessian_spectrum_max`, the
    smallest and largest Ritz values (with enough Lanczos steps, the
    extreme eigenvalues; a negative minimum means the loss is not convex
    there). With `log_dir` it writes the density as a TensorBoard histogram,
    `hessian_spectrum`, whose bucket counts are the expected number of
    eigenvalues in each bucket (they sum to the number of parameters), and
    the logged values as scalars. Epochs that are not measured log NaN.

    Args:
        data: Measurement data (see `HessianTrace`).
        num_probes: Random probes (independent Lanczos runs), >= 1 (4).
        num_steps: Lanczos steps per probe, >= 1 (40).
        every_n_epochs: Measure every this many epochs. Defaults to 1.
        grid_size: Points of the density's grid, >= 2 (512).
        buckets: Buckets of the histogram, >= 1 (64).
        batch_size, num_batches, training, hvp_method, loss, seed, verbose:
            As for `HessianTrace`.
        log_dir: If given, write the histogram and scalars into
            `log_dir/flatness`.

    Formerly `SpectralDensity`, the name of the result class
    `keras_flat.hessian.SpectralDensity`; the old name still works for one
    release, with a `DeprecationWarning`.

    Attributes:
        last: The last `keras_flat.hessian.SpectralDensity` measured.
        histograms: `{epoch: (buckets, 3) array}` of what was written.

    Example:

    ```python
    spectrum = keras_flat.callbacks.HessianSpectrum(probe, log_dir="logs")
    model.fit(x, y, epochs=5, callbacks=[spectrum, keras.callbacks.TensorBoard("logs")])
    ```
    """

    def __init__(self, data, num_probes=4, num_steps=40, every_n_epochs=1, grid_size=512,
                 buckets=64, batch_size=128, num_batches=4, training=False, hvp_method="auto",
                 loss=None, seed=0, verbose=0, log_dir=None):
        check_count("num_probes", num_probes, 1)
        check_count("num_steps", num_steps, 1)
        check_count("grid_size", grid_size, 2)
        check_count("buckets", buckets, 1)
        super().__init__(data, every_n_epochs, batch_size, num_batches, training,
                         hvp_method, loss, seed, verbose, log_dir)
        self.num_probes = num_probes
        self.num_steps = num_steps
        self.grid_size = grid_size
        self.buckets = buckets
        self.histograms = {}
        self.last = None

    def keys(self):
        return ["hessian_spectrum_min", "hessian_spectrum_max"]

    def measure(self, operator):
        result = hessian.spectral_density(
            operator, num_probes=self.num_probes, num_steps=self.num_steps,
            grid_size=self.grid_size, seed=self.seed)
        self.last = result
        self._dimension = operator.dimension
        return {"hessian_spectrum_min": float(np.min(result.nodes)),
                "hessian_spectrum_max": float(np.max(result.nodes))}

    def write_extra_summaries(self, epoch):
        buckets = summaries.density_buckets(self.last.grid, self.last.density,
                                            self._dimension, self.buckets)
        self.histograms[epoch] = buckets
        summaries.histogram("hessian_spectrum", buckets, step=epoch)


__getattr__ = deprecated_names(__name__, {"SpectralDensity": ("HessianSpectrum", HessianSpectrum)})
