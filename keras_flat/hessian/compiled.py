"""The compiled Hessian functions of one model, shared by its operators.

Every `HessianOperator` on the same model with the same loss, training
flag, HVP method, `jit_compile`, trainable variables and compile settings
uses one `CompiledHessian` (see `keras_flat.hessian.cache`). Its functions
take the batches and their weights as arguments, so an operator on new data
of the same shapes reuses them without tracing, and `hvp_method="auto"` times
the two HVP methods once. With `"double_backward"`, the products of one
compiled call on one batch share that batch's recorded forward and first
backward passes (`Traced.per_batch`).
"""

import functools
import re
import time
import weakref

import numpy as np
import tensorflow as tf

from keras_flat.backend.tensorflow.evaluation import loss_at
from keras_flat.hessian import diagnose
from keras_flat.hessian import exact
from keras_flat.hessian import losses
from keras_flat.utils import vector

HVP_METHODS = ("forward_over_backward", "double_backward")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception)\b:")


class Traced:
    """What the body of a compiled function sees while it is traced.

    Attributes:
        kernel: The `CompiledHessian`.
        method: The HVP method of this function (None for method-free ones).
        batches: The batches, symbolic `(x, y, sample_weight)` tuples.
        weights: The batches' weights, a symbolic vector summing to 1.
    """

    def __init__(self, kernel, method, batches, weights):
        self.kernel = kernel
        self.method = method
        self.batches = batches
        self.weights = weights

    @property
    def variables(self):
        return self.kernel.variables

    @property
    def dtype(self):
        return self.kernel.dtype

    def hvp(self, tangents):
        """H·v averaged over the batches, for `v` a list shaped like the variables."""
        return self.kernel.hvp(tangents, self)

    def per_batch(self):
        """`[(weight, product)]`, one per batch: `product(v)` is that batch's H_b·v.

        With `"double_backward"` each batch's forward pass and first
        backward pass are recorded once (a persistent tape) and every
        product is one more backward pass through them, as PyHessian does,
        so several products on the same batch cost one gradient less each.
        Forward-over-backward needs the tangent during the forward pass, so
        each of its products recomputes it. Call it once per traced
        function, and compute all of that batch's products from it.
        """
        return [(self.weights[i], self.kernel.batch_products(batch, self.method, check=i == 0))
                for i, batch in enumerate(self.batches)]

    def products(self):
        """`product(v)`: H·v averaged over the batches, for many products in one function.

        On one batch, the products share its recorded forward and first
        backward passes (see `per_batch`); on several, holding every
        batch's recorded passes at once would take their memory together,
        so each product recomputes them (like `hvp`).
        """
        if len(self.batches) == 1:
            product = self.per_batch()[0][1]
            return lambda tangents: product(tangents)
        return self.hvp


def _body(kernel, make, method, batches, weights, *args):
    """The Python function every compiled function traces (a `functools.partial` of it).

    Being a distinct `partial` per function, each one is its own function for
    TensorFlow's retracing statistics.
    """
    return make(Traced(kernel, method, batches, weights))(*args)


class CompiledHessian:
    """Hessian-vector products of a model's training loss, compiled once per options.

    Args:
        model: A built Keras model (held weakly).
        loss: A resolved loss callable, or None for the compiled loss.
        training: Run layers in training mode.
        method: `"forward_over_backward"`, `"double_backward"` or `"auto"`.
        jit_compile: Compile with XLA.
    """

    def __init__(self, model, loss, training, method, jit_compile):
        self._model = weakref.ref(model)
        self.loss = loss
        self.weighted_loss = None if loss is None else functools.partial(losses.apply, loss)
        self.training = bool(training)
        self.variables = list(model.trainable_variables)
        self.dimension = int(sum(np.prod(v.shape) for v in self.variables))
        self.dtype = vector.compute_dtype(self.variables[0].dtype)
        self.jit_compile = jit_compile
        self.requested_method = method
        self.method = None if method == "auto" else method
        self.failures = {}
        self.timings = None
        self._compiled = {}
        self._working = set()
        self._diagnosis = None

    @property
    def model(self):
        return self._model()

    def tracing_count(self):
        """Total number of times the compiled functions were traced."""
        return sum(f.experimental_get_tracing_count() for f in self._compiled.values())

    # ---- Loss ------------------------------------------------------------

    def batch_loss(self, x, y, sample_weight, second_order=True):
        """The training loss on one batch, its mean over the batch (no variable is updated).

        Args:
            x, y, sample_weight: One batch.
            second_order: Whether the loss will be differentiated twice; it
                must then be traced inside `exact_second_derivatives()`
                (every measurement function is), which is checked.
        """
        if second_order:
            exact.check_active()
        return self.loss_and_predictions(x, y, sample_weight)[0]

    def loss_and_predictions(self, x, y, sample_weight):
        """`(loss, y_pred)` on one batch: `batch_loss`'s value and the model's predictions.

        See `keras_flat.backend.tensorflow.evaluation.loss_at`: every variable keeps its current
        value (an enclosing `keras.StatelessScope`'s, if any), and what the
        call writes (BatchNorm statistics, seed states, loss-metric updates)
        is discarded. The loss is not checked for second derivatives.
        """
        model = self.model
        loss, y_pred, _ = loss_at(model, [(v, v.value) for v in model.variables], x, y,
                                  sample_weight, training=self.training,
                                  loss=self.weighted_loss, mean=True)
        return tf.cast(loss, self.dtype), y_pred

    # ---- Products ----------------------------------------------------------

    def _first_backward(self, x, y, sample_weight, targets):
        """`(loss, raw, grads)` of one batch, recorded on the enclosing tapes.

        `raw` is the tape's gradient (None or IndexedSlices allowed), `grads`
        its dense form; the loss and grads are appended to `targets` (what a
        failure diagnosis looks back from).
        """
        with tf.GradientTape() as inner:
            loss = self.batch_loss(x, y, sample_weight)
        targets.append(loss)
        raw = inner.gradient(loss, self.variables)
        grads = dense_gradients(raw, self.variables)
        targets.extend(grads)
        return loss, raw, grads

    def _batch_hvp(self, batch, tangents, method, check=False):
        x, y, sample_weight = batch
        targets = []
        check = check and not tf.executing_eagerly()  # Once, while tracing.
        try:
            if method == "forward_over_backward":
                watched = [v.value for v in self.variables]
                with tf.autodiff.ForwardAccumulator(watched, tangents) as acc:
                    loss, raw, grads = self._first_backward(x, y, sample_weight, targets)
                second = acc.jvp(grads)
            else:
                with tf.GradientTape() as outer:
                    loss, raw, grads = self._first_backward(x, y, sample_weight, targets)
                    inner_product = vector.dot(grads, tangents)
                second = outer.gradient(inner_product, self.variables)
        except LookupError as error:
            self.report(diagnose.explain_failure(
                self.model, error, targets, f"with hvp_method={method!r}"))
            raise
        if check:
            self.report(
                diagnose.check_first_order(self.model, self.variables, loss, raw)
                or (diagnose.check_second_order(self.model, self.variables, grads, second,
                                                per_target=True)
                    if method == "forward_over_backward" else
                    diagnose.check_second_order(self.model, self.variables, [inner_product],
                                                second, per_target=False)))
        out = dense_gradients(second, self.variables)
        return [tf.cast(t, g.dtype) for t, g in zip(out, tangents)]

    def batch_products(self, batch, method, check=False):
        """`product(v)`: H·v on one batch, reusing its recorded passes for `"double_backward"`.

        See `Traced.per_batch`. `check` diagnoses, while tracing, a model
        that cannot be differentiated twice (from the first product).
        """
        if method != "double_backward":
            first = [check]

            def recompute(tangents):
                tangents = [tf.cast(t, v.dtype) for t, v in zip(tangents, self.variables)]
                out = self._batch_hvp(batch, tangents, method, check=first[0])
                first[0] = False
                return out
            return recompute
        x, y, sample_weight = batch
        check = check and not tf.executing_eagerly()
        targets = []
        try:
            with tf.GradientTape(persistent=True) as outer:
                loss, raw, grads = self._first_backward(x, y, sample_weight, targets)
        except LookupError as error:
            self.report(diagnose.explain_failure(
                self.model, error, targets, f"with hvp_method={method!r}"))
            raise
        if check:
            self.report(diagnose.check_first_order(self.model, self.variables, loss, raw))
        pending = [check]

        def product(tangents):
            tangents = [tf.cast(t, v.dtype) for t, v in zip(tangents, self.variables)]
            try:
                second = outer.gradient(grads, self.variables, output_gradients=tangents)
            except LookupError as error:
                self.report(diagnose.explain_failure(
                    self.model, error, targets, f"with hvp_method={method!r}"))
                raise
            if pending[0]:
                pending[0] = False
                self.report(diagnose.check_second_order(
                    self.model, self.variables, grads, second, per_target=False))
            out = dense_gradients(second, self.variables)
            return [tf.cast(t, g.dtype) for t, g in zip(out, tangents)]
        return product

    def hvp(self, tangents, traced):
        """H·v averaged over `traced.batches` with `traced.weights`, by `traced.method`."""
        tangents = [tf.cast(t, v.dtype) for t, v in zip(tangents, self.variables)]
        total = None
        for i, batch in enumerate(traced.batches):
            hv = self._batch_hvp(batch, tangents, traced.method, check=i == 0)
            hv = vector.scale(hv, traced.weights[i])
            total = hv if total is None else vector.add(total, hv)
        return total

    # ---- Compiled functions --------------------------------------------------

    def report(self, problem):
        """Keeps the first problem found while tracing (or None); `run` raises it.

        Problems are returned, not raised, while tracing, because TensorFlow
        would re-wrap an exception raised there.
        """
        if problem is not None and self._diagnosis is None:
            self._diagnosis = problem

    def function(self, name, make):
        """A callable `f(batches, weights, *args)` running `make` compiled, exactly.

        `make(traced)` returns the Python function of `*args` to compile,
        given a `Traced` (the symbolic batches, the HVP method, `hvp`). It
        runs only while tracing, once per function `name` (and input
        signature), so it must depend on nothing but `traced` and the
        options this object is cached for, never on a call's data. Each
        call enters `exact_second_derivatives()`, so every trace and retrace
        happens inside it. On the first call of a function, a failure of
        the HVP method sets it aside under `"auto"` (the other one is used)
        and raises an error naming the method otherwise.
        """
        def call(batches, weights, *args):
            with exact.exact_second_derivatives():
                return self._call(name, make, (batches, weights, *args))
        return call

    def _call(self, name, make, args):
        method = self.choose_method(*args[:2])
        try:
            return self.run(name, make, method, args)
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
                return self.run(name, make, other, args)
            except Exception as second:  # noqa: BLE001
                self._compiled.pop((name, other), None)
                self.failures[other] = second
                _reraise(_all_failed(self.model, self.failures), second)

    def run(self, name, make, method, args):
        """Calls the function `name` for `method` on `args`, compiling it on first use.

        Must be called inside `exact_second_derivatives()`. A diagnosis
        found while tracing (`NotTwiceDifferentiableError`) is raised.
        """
        key = (name, method)
        if key not in self._compiled:
            self._compiled[key] = tf.function(
                functools.partial(_body, self, make, method),
                jit_compile=self.jit_compile, reduce_retracing=True,
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

    def choose_method(self, batches, weights):
        """The HVP method: for `"auto"`, times both once on these batches, keeps the faster.

        Each method is timed, once traced, on one call computing
        `TIMED_PRODUCTS` products per batch, as the measurements compute
        them (`timings` holds the seconds per product).

        A method that fails to trace or run on this model is set aside (see
        `failures`); if both fail, raises the more specific error:
        `NotTwiceDifferentiableError` naming the layer when the model cannot
        be differentiated twice, a `ValueError` quoting both failures
        otherwise.
        """
        if self.method is not None:
            return self.method
        with exact.exact_second_derivatives():
            args = (batches, weights, [tf.ones(v.shape, v.dtype) for v in self.variables])
            timings = {}
            for name in HVP_METHODS:
                try:
                    self.run("timing", _timed_products, name, args)  # Trace and check.
                    start = time.perf_counter()
                    _block(self.run("timing", _timed_products, name, args))
                    timings[name] = (time.perf_counter() - start) / TIMED_PRODUCTS
                except Exception as error:  # noqa: BLE001 - kept in `failures`
                    self._compiled.pop(("timing", name), None)
                    self.failures[name] = error
            if not timings:
                _reraise(_all_failed(self.model, self.failures),
                         self.failures[HVP_METHODS[-1]])
        self.method = min(timings, key=timings.get)
        self.timings = timings
        return self.method

    def choose_on_chunks(self, name, make, batches, weights, chunk_args, chunk):
        """For `"auto"`: times both methods on chunks of the caller's own work, keeps the faster.

        Replaces `choose_method`'s separate timing for work made of
        independent chunks (e.g. Hutchinson's probes): each method runs
        the compiled function `name` on one chunk (tracing it), then on
        another, timed; every chunk's result is part of the answer, so the
        choice costs no work of its own, only the trace of the method not
        kept. A method that fails is set aside as by `choose_method`.

        Args:
            name, make: The compiled function (see `function`).
            batches, weights: The data.
            chunk_args: `chunk_args(start, count)`, the function's other
                arguments for the `count` items from `start`.
            chunk: Items per chunk.

        Returns:
            `(results, done)`: the chunks' results in order, and how many
            items they cover (from 0).
        """
        results, done, timings = [], 0, {}
        with exact.exact_second_derivatives():
            for timed in (False, True):
                for method in HVP_METHODS:
                    if method in self.failures:
                        continue
                    args = (batches, weights, *chunk_args(done, chunk))
                    try:
                        start = time.perf_counter()
                        out = self.run(name, make, method, args)
                        _block(out)
                        elapsed = time.perf_counter() - start
                    except Exception as error:  # noqa: BLE001 - kept in `failures`
                        self._compiled.pop((name, method), None)
                        self.failures[method] = error
                        continue
                    if timed:
                        timings[method] = elapsed / chunk
                    results.append(out)
                    done += chunk
            if not timings:
                _reraise(_all_failed(self.model, self.failures),
                         self.failures[HVP_METHODS[-1]])
        self.method = min(timings, key=timings.get)
        self.timings = timings
        return results, done


TIMED_PRODUCTS = 2


def _timed_products(traced):
    """`make` of what `"auto"` times: `TIMED_PRODUCTS` products per batch in one call.

    The measurements compute their products several at a time per batch
    (see `Traced.per_batch`), where double backward records each batch's
    passes once and forward-over-backward recomputes them for every
    product; timing a few products in one call measures the methods as
    they are used.
    """
    def run(tangents):
        total = tf.zeros((), traced.dtype)
        for weight, product in traced.per_batch():
            for i in range(TIMED_PRODUCTS):  # Distinct tangents: no product is deduplicated.
                v = vector.scale(tangents, float(i + 1))
                total += weight * vector.dot(v, product(v))
        return total
    return run


def list_hvp(traced):
    """`make` of the product of a list of tensors (`"matvec"`)."""
    return traced.hvp


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
        f"Hessian-vector products by hvp_method={method!r} failed on model "
        f"'{model.name}': {_summary(error)}. Try hvp_method={_other(method)!r}, "
        "or hvp_method='auto', which uses whichever method works."
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
