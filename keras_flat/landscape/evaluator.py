"""Stateless, compiled evaluation of the loss at many points of weight space.

A point is `w + sum_j c_j d_j`: the model's current values `w` of some of
its variables (the trainable ones by default) moved along directions
`d_j`. All points of a grid are evaluated in one call of one
`tf.function` (a `tf.while_loop` over the points), traced once per
evaluator whatever the number of directions and points. Each point's values are handed to the
model through a `keras.StatelessScope`, inside which
`keras_flat.hessian.HessianOperator.batch_loss` computes the training loss
exactly as the Hessian measurements do; no variable is ever assigned, so
BatchNorm statistics, metric states and random seeds are left as they were.

Under a `tf.distribute` strategy's scope the points are divided between
the replicas (each replica evaluates every `R`-th point on all the data)
and the results are gathered.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_flat.hessian.operator import HessianOperator

MODES = ("combination", "rows")


class Evaluator:
    """Evaluates the loss and metrics of `model` at points near its weights.

    Args:
        model: A built Keras model, compiled with a loss (or pass `loss`).
        data: The data (see `keras_flat.batches.as_batches`).
        loss: Loss callable for an uncompiled model.
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
    dirs = keras_flat.landscape.random_directions(model, k=2)
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
        self._nonnegative = {id(v) for v in nonnegative}
        self._functions = {}
        self.names = ["loss"]
        if self.metrics:
            self._build_metrics()

    @property
    def dimension(self):
        return int(sum(np.prod(v.shape) for v in self.variables))

    # ---- One point -------------------------------------------------------

    def _point(self, values):
        """Loss and metric values at `values` of `self.variables`, one vector."""
        values = [tf.maximum(x, tf.zeros_like(x)) if id(v) in self._nonnegative else x
                  for v, x in zip(self.variables, values)]
        op = self.operator
        with keras.StatelessScope(state_mapping=list(zip(self.variables, values))) as scope:
            metrics = self.model.metrics if self.metrics else []
            for metric in metrics:
                metric.reset_state()
            reset = {id(v): scope.get_current_value(v) for m in metrics for v in m.variables}
            loss = tf.zeros((), op.dtype)
            for weight, (x, y, sample_weight) in zip(op.batch_weights, op.batches):
                loss += weight * op.batch_loss(x, y, sample_weight, second_order=False)
                if metrics:
                    y_pred = self.model(x, training=op.training)
                    self.model.compute_metrics(x, y, y_pred, sample_weight)
            names, results = ["loss"], [tf.cast(loss, tf.float32)]
            for metric in metrics:
                if all(scope.get_current_value(v) is reset[id(v)] for v in metric.variables):
                    continue  # Not updated by compute_metrics (e.g. the loss tracker).
                result = metric.result()
                items = result.items() if isinstance(result, dict) else [(metric.name, result)]
                for name, value in items:
                    names.append(name)
                    results.append(tf.cast(value, tf.float32))
        self.names = names
        return tf.stack(results)

    def _build_metrics(self):
        """Creates unbuilt compiled-metric variables now, outside any tf.function.

        Inside a `StatelessScope` Keras defers the new variables'
        initialisation to the scope's exit and discards the update, so this
        leaves every metric at its initial state.
        """
        x, y, sample_weight = self.operator.batches[0]
        strategy = getattr(self.model, "distribute_strategy", None) or tf.distribute.get_strategy()
        with strategy.scope():
            with keras.StatelessScope():
                y_pred = self.model(x, training=False)
                self.model.compute_metrics(x, y, y_pred, sample_weight)

    # ---- Many points -------------------------------------------------------

    def _loop(self, directions, selection, mode):
        """Evaluates the points `selection` selects, in a tf.while_loop.

        `directions` is one `(k, d)` matrix, so a point's offset is one
        matrix-vector product (or one row) split into the variables.
        """
        dtype = directions.dtype
        origin = tf.concat([tf.reshape(tf.cast(v.value, dtype), [-1]) for v in self.variables], 0)
        sizes = [int(np.prod(v.shape)) for v in self.variables]
        count = tf.shape(selection)[0]

        def body(i, out):
            if mode == "combination":
                c = tf.cast(selection[i], dtype)
                flat = origin + tf.linalg.matvec(directions, c, transpose_a=True)
            else:
                flat = origin + directions[selection[i]]
            parts = tf.split(flat, sizes) if len(sizes) > 1 else [flat]
            values = [tf.cast(tf.reshape(p, v.shape), v.dtype)
                      for p, v in zip(parts, self.variables)]
            return i + 1, out.write(i, self._point(values))

        out = tf.TensorArray(tf.float32, size=count, element_shape=None)
        _, out = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), out))
        return out.stack()

    def _replica(self, directions, selection, mode):
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        if replicas > 1:
            rows = tf.range(context.replica_id_in_sync_group, tf.shape(selection)[0], replicas)
            selection = tf.gather(selection, rows)
        return self._loop(directions, selection, mode)

    def _function(self, mode, strategy, dtype):
        key = (mode, id(strategy) if strategy is not None else None, dtype)
        if key not in self._functions:
            if strategy is None:
                def run(directions, selection):
                    return self._replica(directions, selection, mode)
            else:
                def run(directions, selection):
                    result = strategy.run(self._replica, args=(directions, selection, mode))
                    return strategy.experimental_local_results(result)
            # Any number of directions and points: one trace per evaluator and mode.
            signature = [
                tf.TensorSpec([None, self.dimension], dtype),
                tf.TensorSpec([None, None], dtype) if mode == "combination"
                else tf.TensorSpec([None], tf.int32),
            ]
            self._functions[key] = tf.function(run, input_signature=signature,
                                               jit_compile=self.jit_compile)
        return self._functions[key]

    def tracing_count(self):
        """Total number of times the evaluation functions were traced."""
        return sum(f.experimental_get_tracing_count() for f in self._functions.values())

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
        function = self._function(mode, strategy, tf.as_dtype(directions.dtype))
        out = function(tf.constant(directions), tf.constant(selection))
        if strategy is None:
            table = out.numpy()
        else:
            locals_ = [t.numpy() for t in out]
            table = np.empty((padded, locals_[0].shape[1]), np.float32)
            for r, local in enumerate(locals_):
                table[r::replicas] = local
        table = np.asarray(table[:count], np.float64)
        return {name: table[:, j] for j, name in enumerate(self.names)}


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
