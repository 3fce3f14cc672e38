"""Stateless, compiled evaluation of the loss at many points of weight space.

A point is `w + sum_j c_j d_j`: the model's current values `w` of some of
its variables (the trainable ones by default) moved along directions
`d_j`. All points of a grid are evaluated in one call of one
`tf.function` (a `tf.while_loop` over the points; see
`keras_flat.landscape.evaluation`), traced once per model, options and
data signature whatever the number of directions and points. Each point's
values are handed to the model through a `keras.StatelessScope`, inside
which the training loss is computed exactly as the Hessian measurements
do; no variable is ever assigned, so BatchNorm statistics, metric states
and random seeds are left as they were.

Under a `tf.distribute` strategy's scope the points are divided between
the replicas (each replica evaluates every `R`-th point on all the data)
and the results are gathered.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_flat.hessian import cache
from keras_flat.hessian.operator import HessianOperator
from keras_flat.landscape.evaluation import CompiledEvaluation


class Evaluator:
    """Evaluates the loss and metrics of `model` at points near its weights.

    The compiled evaluation functions take the data as arguments and are
    kept per model and options (see `keras_flat.hessian.cache`): every
    evaluator on the same model, options and data shapes shares them, so a
    one-line `surface_1d`, `surface_2d` or `interpolate` traces once however
    often it is called.

    Args:
        model: A built Keras model, compiled with a loss (or pass `loss`).
        data: The data (see `keras_flat.utils.batches.as_batches`).
        loss: The loss for an uncompiled model: a name such as `"mse"`, a
            `keras.losses.Loss` or a callable (see
            `keras_flat.hessian.HessianOperator`).
        training: Layers in training mode (BatchNorm batch statistics).
        batch_size: Split array data into batches of this size.
        num_batches: Use at most this many batches.
        metrics: Also compute the compiled metrics at every point (one
            more forward pass per point and batch).
        variables: The variables the directions move, in order; defaults
            to `model.trainable_variables`.
        nonnegative: Variables whose moved values are clipped at zero
            (BatchNorm moving variances when they are interpolated).
        jit_compile: Compile the evaluation with XLA.

    Example:

    ```python
    evaluator = keras_flat.landscape.Evaluator(model, (x, y), batch_size=256)
    dirs = keras_flat.landscape.random_directions(model, num_directions=2)
    plane = keras_flat.landscape.surface_2d(evaluator, None, dirs)   # traced once
    line = keras_flat.landscape.surface_1d(evaluator, None, dirs)    # same function
    values = evaluator.evaluate(dirs.vectors, [[0.5, -0.5]])         # {"loss": array([...])}
    ```
    """

    def __init__(self, model, data, *, loss=None, training=False, batch_size=None,
                 num_batches=None, metrics=False, variables=None, nonnegative=(),
                 jit_compile=False):
        self.operator = HessianOperator(model, data, loss=loss, training=training,
                                        batch_size=batch_size, num_batches=num_batches)
        self.model = model
        self.variables = list(model.trainable_variables if variables is None else variables)
        self.metrics = bool(metrics) and bool(getattr(model, "compiled", False))
        self.jit_compile = bool(jit_compile)
        nonnegative = list(nonnegative)
        kernel = self.operator.kernel
        key = ("landscape", id(kernel), cache.variables_key(self.variables),
               cache.variables_key(nonnegative), self.metrics, self.jit_compile)
        self._compiled = cache.compiled_for(
            model, key, lambda: self._build(kernel, nonnegative))

    def _build(self, kernel, nonnegative):
        if self.metrics:
            _build_metrics(self.model, self.operator.batches[0])
        return CompiledEvaluation(kernel, self.variables, nonnegative, self.metrics,
                                  self.jit_compile)

    @property
    def dimension(self):
        return int(sum(np.prod(v.shape) for v in self.variables))

    @property
    def names(self):
        """The names of the evaluated values: `"loss"`, then the metrics'."""
        return self._compiled.names

    def tracing_count(self):
        """How many times the evaluation functions (shared with other evaluators) were traced."""
        return self._compiled.tracing_count()

    def evaluate(self, directions, selection, mode="combination"):
        """Values at many points.

        Args:
            directions: A `(k, d)` array, d = `self.dimension`.
            selection: For `mode="combination"`, a `(P, k)` array of
                coefficients: point p is `w + sum_j selection[p, j] *
                directions[j]`. For `mode="rows"`, a `(P,)` array of row
                indices: point p is `w + directions[selection[p]]`.
            mode: `"combination"` or `"rows"`.

        Returns:
            A dict from `"loss"` (and each metric name) to a `(P,)` array.
        """
        wide = any(tf.as_dtype(v.dtype) == tf.float64 for v in self.variables)
        directions = np.asarray(directions, np.float64 if wide else np.float32)
        if directions.ndim != 2 or directions.shape[1] != self.dimension:
            raise ValueError(
                f"Directions must have shape (k, {self.dimension}); got {directions.shape}."
            )
        if mode == "combination":
            selection = np.asarray(selection, directions.dtype).reshape(-1, len(directions))
        else:
            selection = np.asarray(selection, np.int32).reshape(-1)
        count = len(selection)
        strategy = None
        if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context():
            strategy = tf.distribute.get_strategy()
        replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        padded = -(-count // replicas) * replicas
        if padded > count:  # Every replica evaluates the same number of points.
            selection = np.concatenate([selection, np.repeat(selection[-1:], padded - count, 0)])
        data = self.operator.arguments
        function = self._compiled.function(mode, strategy, tf.as_dtype(directions.dtype), data)
        out = function(tf.constant(directions), tf.constant(selection), *data)
        if strategy is None:
            table = out.numpy()
        else:
            locals_ = [t.numpy() for t in out]
            table = np.empty((padded, locals_[0].shape[1]), np.float32)
            for r, local in enumerate(locals_):
                table[r::replicas] = local
        table = np.asarray(table[:count], np.float64)
        return {name: table[:, j] for j, name in enumerate(self.names)}


def _build_metrics(model, batch):
    """Creates unbuilt compiled-metric variables now, outside any tf.function.

    Inside a `StatelessScope` Keras defers the new variables'
    initialisation to the scope's exit and discards the update, so this
    leaves every metric at its initial state.
    """
    x, y, sample_weight = batch
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    with strategy.scope():
        with keras.StatelessScope():
            y_pred = model(x, training=False)
            model.compute_metrics(x, y, y_pred, sample_weight)


def evaluator_for(model, data, metrics=False, **kwargs):
    """Returns an `Evaluator` for `model` and `data` (or `model` itself if it is one).

    Args:
        model: A built Keras model, or an `Evaluator` (then `data` must be
            None and no other option may be given).
        data: The data, required for a Keras model.
        metrics: Compute the compiled metrics too.
        **kwargs: `loss`, `training`, `batch_size`, `num_batches`,
            `jit_compile` of a new `Evaluator`.
    """
    if isinstance(model, Evaluator):
        given = sorted(k for k, v in kwargs.items()
                       if v is not None and not (k in ("training", "jit_compile") and v is False))
        if data is not None or given:
            raise ValueError(
                "An Evaluator already fixes its data and options; pass it alone, "
                f"without `data` or {given or 'evaluation options'}."
            )
        if metrics and not model.metrics:
            raise ValueError(
                "metrics=True, but this Evaluator was built without metrics; build it with "
                "Evaluator(model, data, metrics=True)."
            )
        return model
    if data is None:
        raise ValueError("Argument `data` is required when `model` is a keras.Model.")
    return Evaluator(model, data, metrics=metrics, **kwargs)
