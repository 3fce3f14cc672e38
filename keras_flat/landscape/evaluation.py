"""The compiled loss-at-many-points functions of one model, shared by its evaluators.

Every `keras_flat.landscape.Evaluator` on the same model with the same
loss, training flag, moved variables, metrics and `jit_compile` uses one
`CompiledEvaluation` (see `keras_flat.hessian.cache`). Its functions take
the directions, the points and the data as arguments; each is traced once,
for any number of directions and points, per data signature (the shapes,
dtypes and structure of the batches).
"""

import functools

import keras
import numpy as np
import tensorflow as tf

MODES = ("combination", "rows")


class CompiledEvaluation:
    """The compiled evaluation of a model's loss (and metrics) at many points.

    Args:
        kernel: The model's `keras_flat.hessian.compiled.CompiledHessian`,
            whose `loss_and_predictions` gives the training loss (and the
            predictions the metrics take).
        variables: The variables the directions move, in order.
        nonnegative: Variables whose moved values are clipped at zero.
        metrics: Also compute the compiled metrics.
        jit_compile: Compile with XLA.

    Attributes:
        names: The names of the values, `"loss"` then the metrics' (known
            once a function has been traced).
    """

    def __init__(self, kernel, variables, nonnegative, metrics, jit_compile):
        self.kernel = kernel
        self.variables = list(variables)
        self.nonnegative = list(nonnegative)
        self.metrics = metrics
        self.jit_compile = jit_compile
        self.names = ["loss"]
        self._functions = {}

    # ---- One point -------------------------------------------------------

    def _point(self, values, batches, weights):
        """Loss and metric values at `values` of `self.variables`, one vector."""
        clipped = {id(v) for v in self.nonnegative}
        values = [tf.maximum(x, tf.zeros_like(x)) if id(v) in clipped else x
                  for v, x in zip(self.variables, values)]
        kernel, model = self.kernel, self.kernel.model
        with keras.StatelessScope(state_mapping=list(zip(self.variables, values))) as scope:
            metrics = model.metrics if self.metrics else []
            for metric in metrics:
                metric.reset_state()
            reset = {id(v): scope.get_current_value(v) for m in metrics for v in m.variables}
            loss = tf.zeros((), kernel.dtype)
            for i, (x, y, sample_weight) in enumerate(batches):
                value, y_pred = kernel.loss_and_predictions(x, y, sample_weight)
                loss += weights[i] * value
                if metrics:
                    model.compute_metrics(x, y, y_pred, sample_weight)
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

    # ---- Many points -------------------------------------------------------

    def _loop(self, directions, selection, batches, weights, mode):
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
            return i + 1, out.write(i, self._point(values, batches, weights))

        out = tf.TensorArray(tf.float32, size=count, element_shape=None)
        _, out = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), out))
        return out.stack()

    def _replica(self, directions, selection, batches, weights, mode):
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        if replicas > 1:
            rows = tf.range(context.replica_id_in_sync_group, tf.shape(selection)[0], replicas)
            selection = tf.gather(selection, rows)
        return self._loop(directions, selection, batches, weights, mode)

    def _run(self, mode, strategy, directions, selection, batches, weights):
        if strategy is None:
            return self._replica(directions, selection, batches, weights, mode)
        result = strategy.run(self._replica, args=(directions, selection, batches, weights, mode))
        return strategy.experimental_local_results(result)

    def function(self, mode, strategy, dtype, data):
        """The compiled `f(directions, selection, batches, weights)` for this data signature.

        Traced on first use for any number of directions (`(None, d)`) and
        points, so later calls with the same data signature never trace.

        Args:
            mode: `"combination"` or `"rows"` (see `Evaluator.evaluate`).
            strategy: The `tf.distribute` strategy to divide the points
                between, or None.
            dtype: The directions' dtype.
            data: `(batches, weights)` of the call.
        """
        specs = tf.nest.map_structure(
            lambda t: None if t is None else tf.type_spec_from_value(t), data)
        key = (mode, strategy, dtype, repr(specs))
        if key not in self._functions:
            function = tf.function(functools.partial(self._run, mode, strategy),
                                   jit_compile=self.jit_compile)
            dimension = int(sum(np.prod(v.shape) for v in self.variables))
            selection = (tf.TensorSpec([None, None], dtype) if mode == "combination"
                         else tf.TensorSpec([None], tf.int32))
            function.get_concrete_function(tf.TensorSpec([None, dimension], dtype), selection,
                                           *specs)
            self._functions[key] = function
        return self._functions[key]

    def tracing_count(self):
        """Total number of times the evaluation functions were traced."""
        return sum(f.experimental_get_tracing_count() for f in self._functions.values())
