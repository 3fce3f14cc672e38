"""The Hessian of a Keras model's training loss as a matrix-free operator."""

import time

import keras
import numpy as np
import tensorflow as tf

from keras_flat import vector
from keras_flat.batches import as_batches
from keras_flat.batches import batch_size_of
from keras_flat.validation import check_choice

HVP_METHODS = ("forward_over_backward", "double_backward")


class HessianOperator:
    """Hessian-vector products of a model's training loss, averaged over data.

    The loss is the one `fit` minimises: `model.compute_loss` (compiled loss
    plus regularization losses) for a compiled model, or `loss(y, y_pred)`
    plus `model.losses` when `loss` is given. Over several batches the loss
    is the example-weighted mean of the batch losses, like an epoch's.
    Derivatives are with respect to `model.trainable_variables`.

    Products run in compiled `tf.function`s, traced once per operator:
    `matvec` takes a list of tensors shaped like the variables, `matvec_flat`
    one flat vector. No variable is changed: with `training=True` BatchNorm
    uses batch statistics but its moving statistics are not updated.

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
            model and data and keep the faster.
        batch_size: Batch size used to split array data (default: one batch).
        num_batches: Use at most this many batches of `data`.
        jit_compile: Compile the products with XLA. Defaults to False (XLA
            is slower than TensorFlow's kernels for convolutions on CPU).

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
        if loss is None and getattr(model, "_compile_loss", None) is None:
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
        self._compiled = {}
        self.method = None if method == "auto" else method

    # ---- Loss ------------------------------------------------------------

    def batch_loss(self, x, y, sample_weight):
        """The training loss on one batch (no variable is updated).

        The model runs in a `keras.StatelessScope` holding every variable's
        current value: BatchNorm statistics, seed states and loss-metric
        updates made by the call are discarded, and `add_loss` and activity
        regularization terms are collected.
        """
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

    def _batch_hvp(self, batch, tangents, method):
        x, y, sample_weight = batch
        if method == "forward_over_backward":
            with tf.autodiff.ForwardAccumulator(self._watched(), tangents) as acc:
                with tf.GradientTape() as tape:
                    loss = self.batch_loss(x, y, sample_weight)
                grads = _zeros_for_none(tape.gradient(loss, self.variables), self.variables)
            out = acc.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        else:
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    loss = self.batch_loss(x, y, sample_weight)
                grads = _zeros_for_none(inner.gradient(loss, self.variables), self.variables)
                inner_product = vector.dot(grads, tangents)
            out = outer.gradient(
                inner_product, self.variables,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
        return [tf.cast(t, g.dtype) for t, g in zip(out, tangents)]

    def _hvp(self, tangents, method):
        tangents = [tf.cast(t, v.dtype) for t, v in zip(tangents, self.variables)]
        total = None
        for weight, batch in zip(self.batch_weights, self.batches):
            hv = vector.scale(self._batch_hvp(batch, tangents, method), weight)
            total = hv if total is None else vector.add(total, hv)
        return total

    def _function(self, name, python_function):
        key = (name, self.method)
        if key not in self._compiled:
            self._compiled[key] = tf.function(
                python_function, jit_compile=self.jit_compile, reduce_retracing=True
            )
        compiled = self._compiled[key]
        return lambda *args: in_replica(compiled, *args)

    def choose_method(self):
        """Times both HVP methods once and keeps the faster (for `"auto"`)."""
        if self.method is not None:
            return self.method
        probe = [tf.ones(v.shape, v.dtype) for v in self.variables]
        timings = {}
        for name in HVP_METHODS:
            fn = tf.function(lambda t, name=name: self._hvp(t, name),
                             jit_compile=self.jit_compile)
            in_replica(fn, probe)  # Trace.
            start = time.perf_counter()
            for _ in range(2):
                _block(in_replica(fn, probe))
            timings[name] = time.perf_counter() - start
            self._compiled[("matvec", name)] = fn
        self.method = min(timings, key=timings.get)
        self.timings = timings
        return self.method

    def matvec(self, tangents):
        """H·v for `v` a list of tensors shaped like the trainable variables."""
        method = self.choose_method()
        fn = self._function("matvec", lambda t: self._hvp(t, method))
        return fn([tf.convert_to_tensor(t) for t in tangents])

    def matvec_flat(self, flat):
        """H·v for a flat vector `v` of length `dimension` (tensor or array)."""
        method = self.choose_method()

        def flat_hvp(flat):
            parts = vector.unflatten(flat, self.variables)
            return vector.flatten(self._hvp(parts, method))

        fn = self._function("matvec_flat", flat_hvp)
        return fn(tf.convert_to_tensor(flat, self.dtype))

    def loss_and_gradient(self):
        """The averaged loss and gradient (a list of tensors)."""
        def compute():
            total_loss, total_grad = 0.0, None
            for weight, (x, y, sw) in zip(self.batch_weights, self.batches):
                with tf.GradientTape() as tape:
                    loss = self.batch_loss(x, y, sw)
                grads = _zeros_for_none(tape.gradient(loss, self.variables), self.variables)
                total_loss += weight * loss
                g = vector.scale(grads, weight)
                total_grad = g if total_grad is None else vector.add(total_grad, g)
            return total_loss, total_grad

        return self._function("loss_and_gradient", compute)()


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


def _zeros_for_none(grads, variables):
    return [tf.zeros(v.shape, v.dtype) if g is None else g for g, v in zip(grads, variables)]


def _block(tensors):
    for t in tf.nest.flatten(tensors):
        t.numpy()
