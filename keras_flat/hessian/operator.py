"""The Hessian of a Keras model's training loss as a matrix-free operator."""

import re
import time

import keras
import numpy as np
import tensorflow as tf

from keras_flat import vector
from keras_flat.batches import as_batches
from keras_flat.batches import batch_size_of
from keras_flat.hessian import diagnose
from keras_flat.hessian import exact
from keras_flat.validation import check_choice

HVP_METHODS = ("forward_over_backward", "double_backward")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception)\b:")


class HessianOperator:
    """Hessian-vector products of a model's training loss, averaged over data.

    The loss is the one `fit` minimises: `model.compute_loss` (compiled loss
    plus regularization losses) for a compiled model, or `loss(y, y_pred)`
    plus `model.losses` when `loss` is given. Over several batches the loss
    is the example-weighted mean of the batch losses, like an epoch's.
    Derivatives are with respect to `model.trainable_variables`: variables
    of frozen layers (`trainable=False`) are constants of the measurement.

    Products run in compiled `tf.function`s, traced once per operator:
    `matvec` takes a list of tensors shaped like the variables, `matvec_flat`
    one flat vector. No variable is changed: with `training=True` BatchNorm
    uses batch statistics but its moving statistics are not updated.

    Second derivatives are exact through every Keras layer, including the
    normalization layers whose TensorFlow moments carry a `stop_gradient`
    (see `keras_flat.hessian.exact`): every function is traced and called
    inside `exact_second_derivatives()`. When the model cannot be
    differentiated twice (a layer with an operation TensorFlow has no
    gradient for), the first measurement raises `NotTwiceDifferentiableError`
    naming the layer instead of returning silent zeros.

    Args:
        model: A built Keras model.
        data: The measurement data; see `keras_flat.batches.as_batches`.
        loss: Optional loss callable `loss(y_true, y_pred)`, required when
            the model is not compiled with a loss.
        training: Run layers in training mode (BatchNorm batch statistics,
            active dropout). Defaults to False (inference mode).
        method: `"forward_over_backward"` (a `tf.autodiff.ForwardAccumulator`
            over a `GradientTape`), `"double_backward"` (nested tapes, as
            PyHessian does), or `"auto"` (default): time both once on this
            model and data and keep the faster. A method that fails on the
            model (forward-over-backward cannot pass TensorFlow's recurrent
            loops, e.g. `LSTM` and `GRU`) is set aside by `"auto"`, which
            uses the other; an explicitly requested method that fails
            raises a `ValueError` naming it.
        batch_size: Batch size used to split array data (default: one batch).
        num_batches: Use at most this many batches of `data`.
        jit_compile: Compile the products with XLA. Defaults to False (XLA
            is slower than TensorFlow's kernels for convolutions on CPU).

    Attributes:
        method: The HVP method in use (`None` until `"auto"` has chosen).
        failures: For `"auto"`, `{method: exception}` of the methods that
            failed on this model and were set aside.

    Raises:
        ValueError: for an unbuilt model, a model without trainable
            variables, empty data, an unknown method, or a model with
            no loss to differentiate.
    """

    def __init__(
        self,
        model,
        data,
        *,
        loss=None,
        training=False,
        method="auto",
        batch_size=None,
        num_batches=None,
        jit_compile=False,
    ):
        check_model(model)
        check_choice("method", method, HVP_METHODS + ("auto",))
        if loss is not None and not callable(loss):
            raise TypeError(
                f"Argument `loss` must be callable or None. Received: loss={loss!r}."
            )
        if loss is None and getattr(model, "loss", None) is None:  # Public: set by compile.
            raise ValueError(
                "The model has no loss to differentiate: compile it with a "
                "`loss`, or pass `loss=` (a callable loss(y_true, y_pred))."
            )
        self.model = model
        self.loss = loss
        self.training = bool(training)
        self.batches = as_batches(data, batch_size=batch_size, num_batches=num_batches)
        sizes = np.array([batch_size_of(b) for b in self.batches], np.float64)
        self.batch_weights = (sizes / sizes.sum()).tolist()
        self.num_examples = int(sizes.sum())
        self.variables = list(model.trainable_variables)
        self.dimension = int(sum(np.prod(v.shape) for v in self.variables))
        self.jit_compile = jit_compile
        self.requested_method = method
        self.method = None if method == "auto" else method
        self.failures = {}
        self._compiled = {}
        self._working = set()
        self._diagnosis = None

    # ---- Loss ------------------------------------------------------------

    def batch_loss(self, x, y, sample_weight, second_order=True):
        """The training loss on one batch (no variable is updated).

        The model runs in a `keras.StatelessScope` holding every variable's
        current value: BatchNorm statistics, seed states and loss-metric
        updates made by the call are discarded, and `add_loss` and activity
        regularization terms are collected.

        Args:
            x, y, sample_weight: One batch.
            second_order: Whether the loss will be differentiated twice; it
                must then be traced inside `exact_second_derivatives()`
                (every measurement function is), which is checked. False
                for loss values alone (the landscape's surfaces).
        """
        if second_order:
            exact.check_active()
        mapping = [(v, v.value) for v in self.model.variables]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            y_pred = self.model(x, training=self.training)
            if self.loss is None:
                loss = self.model.compute_loss(
                    x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                    training=self.training,
                )
                # compute_loss divides by the replicas of an active strategy.
                replicas = tf.distribute.get_strategy().num_replicas_in_sync
                if replicas > 1:
                    loss = loss * tf.cast(replicas, loss.dtype)
            else:
                loss = _user_loss(self.loss, y, y_pred, sample_weight)
                for extra in self.model.losses:
                    loss = loss + tf.cast(extra, loss.dtype)
        return tf.cast(loss, self.dtype)

    @property
    def dtype(self):
        return vector.compute_dtype(self.variables[0].dtype)

    # ---- Products ----------------------------------------------------------

    def _watched(self):
        return [v.value for v in self.variables]

    def _batch_hvp(self, batch, tangents, method, check=False):
        x, y, sample_weight = batch
        targets = []
        check = check and not tf.executing_eagerly()  # Once, while tracing.
        try:
            if method == "forward_over_backward":
                with tf.autodiff.ForwardAccumulator(self._watched(), tangents) as acc:
                    with tf.GradientTape() as tape:
                        loss = self.batch_loss(x, y, sample_weight)
                    targets.append(loss)
                    raw = tape.gradient(loss, self.variables)
                    grads = dense_gradients(raw, self.variables)
                    targets.extend(grads)
                second = acc.jvp(grads)
            else:
                with tf.GradientTape() as outer:
                    with tf.GradientTape() as inner:
                        loss = self.batch_loss(x, y, sample_weight)
                    targets.append(loss)
                    raw = inner.gradient(loss, self.variables)
                    grads = dense_gradients(raw, self.variables)
                    targets.extend(grads)
                    inner_product = vector.dot(grads, tangents)
                second = outer.gradient(inner_product, self.variables)
        except LookupError as error:
            self._diagnosis = diagnose.explain_failure(
                self.model, error, targets, f"with method={method!r}")
            raise
        if check:
            self._diagnosis = (
                diagnose.check_first_order(self.model, self.variables, loss, raw)
                or (diagnose.check_second_order(self.model, self.variables, grads, second,
                                                per_target=True)
                    if method == "forward_over_backward" else
                    diagnose.check_second_order(self.model, self.variables, [inner_product],
                                                second, per_target=False)))
        out = dense_gradients(second, self.variables)
        return [tf.cast(t, g.dtype) for t, g in zip(out, tangents)]

    def _hvp(self, tangents, method):
        tangents = [tf.cast(t, v.dtype) for t, v in zip(tangents, self.variables)]
        total = None
        for i, (weight, batch) in enumerate(zip(self.batch_weights, self.batches)):
            hv = vector.scale(self._batch_hvp(batch, tangents, method, check=i == 0), weight)
            total = hv if total is None else vector.add(total, hv)
        return total

    # ---- Compiled functions --------------------------------------------------

    def _function(self, name, make):
        """A callable running `make(method)` compiled, exactly, with method fallback.

        `make(method)` returns the Python function to compile for an HVP
        method. Each call enters
        `exact_second_derivatives()`, so every trace and retrace happens
        inside it. On the first call of a function, a failure of the HVP
        method sets it aside under `"auto"` (the other one is used) and
        raises an error naming the method otherwise.
        """
        def call(*args):
            with exact.exact_second_derivatives():
                return self._call(name, make, args)
        return call

    def _call(self, name, make, args):
        method = self.choose_method()
        try:
            return self._run(name, make, method, args)
        except Exception as error:  # noqa: BLE001 - re-raised with context below
            if (name, method) in self._working:
                raise
            self._compiled.pop((name, method), None)
            if self.requested_method != "auto":
                _reraise(_method_error(self.model, method, error), error)
            self.failures[method] = error
            other = _other(method)
            if other in self.failures:
                _reraise(_all_failed(self.model, self.failures), error)
            self.method = other
            try:
                return self._run(name, make, other, args)
            except Exception as second:  # noqa: BLE001
                self._compiled.pop((name, other), None)
                self.failures[other] = second
                _reraise(_all_failed(self.model, self.failures), second)

    def _run(self, name, make, method, args):
        key = (name, method)
        if key not in self._compiled:
            self._compiled[key] = tf.function(
                make(method), jit_compile=self.jit_compile, reduce_retracing=True
            )
        self._diagnosis = None
        try:
            result = in_replica(self._compiled[key], *args)
        except Exception as error:  # noqa: BLE001 - replaced by the diagnosis, if any
            if self._diagnosis is not None:
                raise self._diagnosis from error
            raise
        if self._diagnosis is not None:  # Found while tracing.
            raise self._diagnosis
        self._working.add(key)
        return result

    def choose_method(self):
        """The HVP method: for `"auto"`, times both once and keeps the faster.

        A method that fails to trace or run on this model is set aside (see
        `failures`); if both fail, raises the more specific error:
        `NotTwiceDifferentiableError` naming the layer when the model cannot
        be differentiated twice, a `ValueError` quoting both failures
        otherwise.
        """
        if self.method is not None:
            return self.method
        with exact.exact_second_derivatives():
            probe = [tf.ones(v.shape, v.dtype) for v in self.variables]
            make = lambda method: (lambda t: self._hvp(t, method))  # noqa: E731
            timings = {}
            for name in HVP_METHODS:
                try:
                    self._run("matvec", make, name, (probe,))  # Trace and check.
                    start = time.perf_counter()
                    for _ in range(2):
                        _block(self._run("matvec", make, name, (probe,)))
                    timings[name] = time.perf_counter() - start
                except Exception as error:  # noqa: BLE001 - kept in `failures`
                    self._compiled.pop(("matvec", name), None)
                    self.failures[name] = error
            if not timings:
                _reraise(_all_failed(self.model, self.failures),
                         self.failures[HVP_METHODS[-1]])
        self.method = min(timings, key=timings.get)
        self.timings = timings
        return self.method

    def matvec(self, tangents):
        """H·v for `v` a list of tensors shaped like the trainable variables."""
        fn = self._function("matvec", lambda method: (lambda t: self._hvp(t, method)))
        return fn([tf.convert_to_tensor(t) for t in tangents])

    def matvec_flat(self, flat):
        """H·v for a flat vector `v` of length `dimension` (tensor or array)."""
        def make(method):
            def flat_hvp(flat):
                parts = vector.unflatten(flat, self.variables)
                return vector.flatten(self._hvp(parts, method))
            return flat_hvp

        fn = self._function("matvec_flat", make)
        return fn(tf.convert_to_tensor(flat, self.dtype))

    def loss_and_gradient(self):
        """The averaged loss and gradient (a list of tensors)."""
        def compute():
            total_loss, total_grad = 0.0, None
            for weight, (x, y, sw) in zip(self.batch_weights, self.batches):
                with tf.GradientTape() as tape:
                    loss = self.batch_loss(x, y, sw)
                grads = dense_gradients(tape.gradient(loss, self.variables), self.variables)
                total_loss += weight * loss
                g = vector.scale(grads, weight)
                total_grad = g if total_grad is None else vector.add(total_grad, g)
            return total_loss, total_grad

        with exact.exact_second_derivatives():
            key = ("loss_and_gradient", None)
            if key not in self._compiled:
                self._compiled[key] = tf.function(compute, jit_compile=self.jit_compile)
            return in_replica(self._compiled[key])


def in_replica(function, *args):
    """Calls `function`, inside a replica when under a strategy's scope.

    Differentiating through distributed variables needs a replica context;
    in a strategy's cross-replica scope (e.g. `with strategy.scope():` after
    training) the measurement runs through `strategy.run` and the first
    replica's result is returned (every replica computes the same value on
    the same data). Elsewhere, e.g. in callbacks during `fit`, the variables
    resolve to their primary copies and `function` is called directly.
    """
    if not (tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context()):
        return function(*args)
    strategy = tf.distribute.get_strategy()
    result = strategy.run(function, args=args)
    return tf.nest.map_structure(lambda t: strategy.experimental_local_results(t)[0], result)


def check_model(model):
    """Raises a clear error unless `model` is a built Keras model with weights."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model. Received: "
            f"model={model!r} of type {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(
            f"Argument `model` ({model.name}) has not been built: call it on a "
            "batch, call `model.build(input_shape)`, or train it first."
        )
    if not model.trainable_variables:
        raise ValueError(
            f"Argument `model` ({model.name}) has no trainable variables."
        )


def _user_loss(loss, y, y_pred, sample_weight):
    if sample_weight is None:
        value = loss(y, y_pred)
    else:
        try:
            value = loss(y, y_pred, sample_weight=sample_weight)
        except TypeError:
            per_example = loss(y, y_pred)
            value = tf.reduce_sum(per_example * tf.cast(sample_weight, per_example.dtype))
            value = value / tf.cast(tf.size(per_example), value.dtype)
    return tf.reduce_mean(value)


def dense_gradients(grads, variables):
    """Gradients as dense tensors: zeros for None, IndexedSlices densified.

    An `Embedding`'s gradient is `tf.IndexedSlices`, which forward-mode
    differentiation and whole-model arithmetic need as a dense tensor.
    """
    out = []
    for g, v in zip(grads, variables):
        if g is None:
            out.append(tf.zeros(v.shape, v.dtype))
        elif isinstance(g, tf.IndexedSlices):
            out.append(tf.convert_to_tensor(g))
        else:
            out.append(g)
    return out


def _other(method):
    return next(m for m in HVP_METHODS if m != method)


def _summary(error, limit=600):
    """The message of `error` without TensorFlow's "in user code" traceback."""
    text = _ANSI.sub("", str(error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    start = 0
    for i, line in enumerate(lines):
        if _ERROR_LINE.match(line):
            start = i
    text = " ".join(lines[start:]) if lines else ""
    if not _ERROR_LINE.match(text):
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reraise(replacement, error):
    """Raises `replacement`, chained to `error` unless it is `error` itself."""
    if replacement is error:
        raise error
    raise replacement from error


def _method_error(model, method, error):
    if isinstance(error, diagnose.NotTwiceDifferentiableError):
        return error
    return ValueError(
        f"Hessian-vector products by method={method!r} failed on model "
        f"'{model.name}': {_summary(error)}. Try method={_other(method)!r}, "
        "or method='auto', which uses whichever method works."
    )


def _all_failed(model, failures):
    for method in reversed(HVP_METHODS):
        if isinstance(failures.get(method), diagnose.NotTwiceDifferentiableError):
            return failures[method]
    details = "; ".join(f"{m}: {_summary(e)}" for m, e in failures.items())
    return ValueError(
        f"Hessian-vector products failed on model '{model.name}' with every "
        f"method ({details})."
    )


def _block(tensors):
    for t in tf.nest.flatten(tensors):
        t.numpy()
