"""The Hessian of a Keras model's training loss as a matrix-free operator."""

import itertools

import keras
import numpy as np
import tensorflow as tf

from keras_flat.hessian import cache
from keras_flat.hessian import eigen
from keras_flat.hessian import exact
from keras_flat.hessian import losses
from keras_flat.hessian.compiled import HVP_METHODS
from keras_flat.hessian.compiled import CompiledHessian
from keras_flat.hessian.compiled import dense_gradients
from keras_flat.hessian.compiled import in_replica
from keras_flat.hessian.compiled import list_hvp
from keras_flat.utils import vector
from keras_flat.utils.batches import as_batches
from keras_flat.utils.batches import batch_size_of
from keras_flat.utils.deprecation import renamed_arguments
from keras_flat.utils.validation import check_choice

__all__ = ["HVP_METHODS", "HessianOperator", "check_model", "dense_gradients", "in_replica"]


class HessianOperator:
    """Hessian-vector products of a model's training loss, averaged over data.

    The loss is the one `fit` minimises: `model.compute_loss` (compiled loss
    plus regularization losses) for a compiled model, or `loss(y, y_pred)`
    plus `model.losses` when `loss` is given. Over several batches the loss
    is the example-weighted mean of the batch losses, like an epoch's.
    Derivatives are with respect to `model.trainable_variables`: variables
    of frozen layers (`trainable=False`) are constants of the measurement.

    Products run in compiled `tf.function`s: `matvec` takes a list of
    tensors shaped like the variables, `matvec_flat` one flat vector. The
    functions take the batches as arguments and are kept per model, loss,
    training flag, HVP method, `jit_compile`, trainable variables and
    compile settings, so every operator on the same model and options
    (and batches of the same shapes and dtypes) shares them: they are traced
    once, and `hvp_method="auto"` times the two methods once. Freezing or
    unfreezing a layer, or recompiling, gives new functions. No variable is
    changed: with `training=True` BatchNorm uses batch statistics but its
    moving statistics are not updated.

    Second derivatives are exact through every Keras layer, including the
    normalization layers whose TensorFlow moments carry a `stop_gradient`
    (see `keras_flat.hessian.exact`): every function is traced and called
    inside `exact_second_derivatives()`. When the model cannot be
    differentiated twice (a layer with an operation TensorFlow has no
    gradient for), the first measurement raises `NotTwiceDifferentiableError`
    naming the layer instead of returning silent zeros.

    Args:
        model: A built Keras model.
        data: The measurement data; see `keras_flat.utils.batches.as_batches`.
        loss: The loss, required when the model is not compiled with one
            (and used instead of the compiled one otherwise): anything
            `model.compile` accepts, i.e. a name such as `"mse"`, a
            `keras.losses.Loss`, or a callable `loss(y_true, y_pred)`.
        training: Run layers in training mode (BatchNorm batch statistics,
            active dropout). Defaults to False (inference mode).
        hvp_method: `"forward_over_backward"` (a `tf.autodiff.ForwardAccumulator`
            over a `GradientTape`), `"double_backward"` (nested tapes, as
            PyHessian does: a batch's forward and first backward passes are
            recorded once and every product of a measurement on that batch
            is one more backward pass through them), or `"auto"` (default):
            time both once on this model and options, as the measurements
            use them (several products per batch in one call; a Hutchinson
            estimate of 8 probes or more times them on its own first
            probes), and keep the faster. A method that fails on the
            model (forward-over-backward cannot pass TensorFlow's recurrent
            loops, e.g. `LSTM` and `GRU`) is set aside by `"auto"`, which
            uses the other; an explicitly requested method that fails
            raises a `ValueError` naming it.
        batch_size: Batch size used to split array data (default: one batch).
        num_batches: Use at most this many batches of `data`.
        jit_compile: Compile the products with XLA. Defaults to False (XLA
            is slower than TensorFlow's kernels for convolutions on CPU).

    Attributes:
        arguments: The data as the compiled functions take it: the batches
            and a tensor of their weights (their shares of the examples).
        method: The HVP method in use (`None` until `"auto"` has chosen).
        failures: For `"auto"`, `{method: exception}` of the methods that
            failed on this model and were set aside.
        timings: For `"auto"`, `{method: seconds per product}` of the
            timing that chose the method (None before it, or for an
            explicit method).

    Raises:
        ValueError: for an unbuilt model, a model without trainable
            variables, empty data, an unknown method or loss name, or a
            model with no loss to differentiate.
        TypeError: for a `loss` that is neither a name, a config nor callable.

    Example:

    ```python
    op = keras_flat.hessian.HessianOperator(model, (x, y), batch_size=128)
    hv = op.matvec_flat(np.ones(op.dimension))
    est = keras_flat.hessian.hessian_trace(op, num_probes=64)
    ```
    """

    @renamed_arguments(method="hvp_method")
    def __init__(
        self,
        model,
        data,
        *,
        loss=None,
        training=False,
        hvp_method="auto",
        batch_size=None,
        num_batches=None,
        jit_compile=False,
    ):
        check_model(model)
        method = check_choice("hvp_method", hvp_method, HVP_METHODS + ("auto",))
        resolved = losses.resolve(loss)
        if loss is None and getattr(model, "loss", None) is None:  # Public: set by compile.
            raise ValueError(
                "The model has no loss to differentiate: compile it with a "
                "`loss`, or pass `loss=` (e.g. 'mse' or a callable loss(y_true, y_pred))."
            )
        self.model = model
        self.training = bool(training)
        self.batches = as_batches(data, batch_size=batch_size, num_batches=num_batches)
        sizes = np.array([batch_size_of(b) for b in self.batches], np.float64)
        self.batch_weights = (sizes / sizes.sum()).tolist()
        self.num_examples = int(sizes.sum())
        self.jit_compile = jit_compile
        key = ("hessian", losses.cache_key(loss), self.training, method, bool(jit_compile),
               cache.variables_key(model.trainable_variables), cache.compile_key(model))
        self.kernel = cache.compiled_for(
            model, key,
            lambda: CompiledHessian(model, resolved, self.training, method, jit_compile))
        self.loss = self.kernel.loss
        self.variables = self.kernel.variables
        self.dimension = self.kernel.dimension
        self.requested_method = method
        self.arguments = (self.batches, tf.constant(self.batch_weights, self.dtype))

    @property
    def dtype(self):
        return self.kernel.dtype

    @property
    def method(self):
        return self.kernel.method

    @property
    def failures(self):
        return self.kernel.failures

    @property
    def timings(self):
        return self.kernel.timings

    def tracing_count(self):
        """How many times the compiled functions (shared with other operators) were traced."""
        return self.kernel.tracing_count()

    def batch_loss(self, x, y, sample_weight, second_order=True):
        """The training loss on one batch; see `CompiledHessian.batch_loss`."""
        return self.kernel.batch_loss(x, y, sample_weight, second_order)

    def _function(self, name, make):
        """`f(*args)`: the compiled function `name` of `make`, on this operator's data.

        See `CompiledHessian.function`: `make(traced)` returns the Python
        function of `*args` to compile, and must depend only on `traced`
        (e.g. `traced.hvp`, `traced.variables`), never on this operator's
        data.
        """
        function = self.kernel.function(name, make)
        return lambda *args: function(*self.arguments, *args)

    def choose_method(self):
        """The HVP method: for `"auto"`, times both once and keeps the faster.

        The choice is shared by every operator on the same model and
        options. A method that fails to trace or run on this model is set
        aside (see `failures`); if both fail, raises the more specific error:
        `NotTwiceDifferentiableError` naming the layer when the model cannot
        be differentiated twice, a `ValueError` quoting both failures
        otherwise.
        """
        return self.kernel.choose_method(*self.arguments)

    def matvec(self, tangents):
        """H·v for `v` a list of tensors shaped like the trainable variables."""
        fn = self._function("matvec", list_hvp)
        return fn([tf.convert_to_tensor(t) for t in tangents])

    def matvec_flat(self, flat):
        """H·v for a flat vector `v` of length `dimension` (tensor or array)."""
        fn = self._function("matvec_flat", _flat_hvp)
        return fn(tf.convert_to_tensor(flat, self.dtype))

    def drive(self, steps):
        """Runs an algorithm written as a generator of products (see `eigen.drive`).

        The generator (e.g. `eigen.lanczos_top_steps`) yields float64
        vectors and receives H times each (in the operator's dtype). Here
        its whole run happens inside one compiled call: a `tf.while_loop`
        computes each product and hands it to the generator
        (`tf.numpy_function`), which returns the next vector or stops the
        loop. On one batch the products then share the batch's recorded
        forward and first backward passes (with `"double_backward"`; see
        `Traced.products`), and no call is dispatched per product. With
        `jit_compile=True` (XLA cannot run Python) or under a distribution
        strategy, each product is one call of `matvec_flat` instead.

        Args:
            steps: A generator not yet started: it yields vectors of length
                `dimension`, receives H times each by `send`, and returns
                its result.

        Returns:
            The generator's return value.

        Raises:
            TypeError: if `steps` is not a generator.
        """
        if not (hasattr(steps, "send") and hasattr(steps, "__next__")):
            raise TypeError(
                "Argument `steps` must be a generator yielding vectors and receiving "
                f"their products by send(). Received: steps of type {type(steps).__name__}.")
        if self.jit_compile or tf.distribute.has_strategy():
            return eigen.drive(steps, lambda v: self.matvec_flat(v).numpy())
        state = _Driven(steps, self.dtype.as_numpy_dtype)
        if state.done:
            return state.result
        token = next(_TOKENS)
        _DRIVEN[token] = state
        try:
            self._function("drive", _driven)(tf.constant(token, tf.int64),
                                              tf.constant(state.pending))
        finally:
            _DRIVEN.pop(token, None)
        if state.error is not None:
            raise state.error
        if not state.done:  # pragma: no cover - the loop stops only when the generator does
            raise RuntimeError("The compiled products stopped before the algorithm finished.")
        return state.result

    def _evaluate(self, name, make):
        """Runs the compiled function `name` of `make`, free of any HVP method, on the data.

        `make(traced)` returns a Python function of no argument; see
        `_function` for what it may depend on.
        """
        with exact.exact_second_derivatives():
            return self.kernel.run(name, make, None, self.arguments)

    def loss_and_gradient(self):
        """The averaged loss and gradient (a list of tensors)."""
        return self._evaluate("loss_and_gradient", _loss_and_gradient)


_DRIVEN = {}
_TOKENS = itertools.count()


class _Driven:
    """A generator of products run from inside a compiled loop (see `HessianOperator.drive`)."""

    def __init__(self, steps, dtype):
        self.steps, self.dtype = steps, dtype
        self.done, self.result, self.error, self.pending = False, None, None, None
        self._advance(lambda: next(steps))

    def _advance(self, resume):
        try:
            self.pending = np.asarray(resume(), self.dtype).ravel()
        except StopIteration as finished:
            self.done, self.result, self.pending = True, finished.value, None
        except Exception as error:  # noqa: BLE001 - raised by `drive` after the call
            self.done, self.error, self.pending = True, error, None

    def send(self, product):
        """The next vector and whether to stop, from H times the previous one."""
        if not self.done:
            self._advance(lambda: self.steps.send(product))
        if self.done:
            return np.zeros(product.shape, self.dtype), np.bool_(True)
        return self.pending, np.bool_(False)


def _send(token, product):
    return _DRIVEN[int(token)].send(product)


def _driven(traced):
    """`make` of `drive`: products in a loop, each handed to the generator of `token`."""
    dimension, dtype = traced.kernel.dimension, traced.dtype

    def run(token, start):
        product = traced.products()

        def body(v, stop):
            hv = vector.flatten(product(vector.unflatten(v, traced.variables)))
            following, stop = tf.numpy_function(_send, [token, tf.cast(hv, dtype)],
                                                [dtype, tf.bool], stateful=True)
            return tf.ensure_shape(following, [dimension]), tf.ensure_shape(stop, [])

        _, stop = tf.while_loop(lambda v, stop: tf.logical_not(stop), body,
                                [start, tf.constant(False)])
        return stop
    return run


def _flat_hvp(traced):
    def flat_hvp(flat):
        parts = vector.unflatten(flat, traced.variables)
        return vector.flatten(traced.hvp(parts))
    return flat_hvp


def _loss_and_gradient(traced):
    kernel = traced.kernel

    def compute():
        total_loss, total_grad = 0.0, None
        for i, (x, y, sw) in enumerate(traced.batches):
            with tf.GradientTape() as tape:
                loss = kernel.batch_loss(x, y, sw)
            grads = dense_gradients(tape.gradient(loss, kernel.variables), kernel.variables)
            total_loss += traced.weights[i] * loss
            g = vector.scale(grads, traced.weights[i])
            total_grad = g if total_grad is None else vector.add(total_grad, g)
        return total_loss, total_grad
    return compute


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
