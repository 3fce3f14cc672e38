"""Skipping training steps whose loss or update is not finite, without copies.

A step is skipped when its loss or update is NaN or Inf on any replica. The
decision is reduced across replicas first (`nonfinite_anywhere`, one scalar
all-reduce), so every replica takes the same one. Then:

- `apply_unless` runs `optimizer.apply` inside a conditional, the way Keras's
  `LossScaleOptimizer` skips a step (`_tf_apply`): a skipped step never
  reaches the optimizer, so weights, optimizer slots, the iteration counter,
  gradient accumulators and EMA averages stay exactly as they were, with no
  copy of any of them;
- the state the clean forward pass itself writes (BatchNorm statistics,
  seed-generator states: `forward_state`) is small, and `StepGuard` restores
  it from a snapshot taken before the forward pass.

With a `LossScaleOptimizer` the optimizer skips non-finite steps itself (and
lowers its loss scale); `poison` only makes that decision global (Keras 3
checks replica 0's gradients alone).
"""

import tensorflow as tf

from keras_flat.utils import vector
from keras_flat.utils.internals import flatten_layers

ON_NONFINITE = ("skip", "raise", "ignore")


def _aggregation(variable):
    value = getattr(variable, "aggregation", "none")
    return "none" if value in (None, "none") else str(value)


def _unique(variables):
    seen, out = set(), []
    for v in variables:
        key = id(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def forward_state(model):
    """The variables a training-mode forward pass of `model` may write.

    Its non-trainable variables (BatchNorm moving statistics, `SeedGenerator`
    states, counters of custom layers) except the weights of frozen
    (`trainable=False`) layers: no forward pass writes those (a frozen
    BatchNorm layer normalises by its moving statistics without updating
    them), and copying them would cost memory the size of the frozen part of
    the model.

    Args:
        model: A `keras.Model` (or layer).

    Returns:
        A list of variables, without duplicates.
    """
    frozen = {id(w) for layer in flatten_layers(model) if not layer.trainable
              for w in layer.weights}
    return _unique(v for v in model.non_trainable_variables if id(v) not in frozen)


class StepGuard:
    """Restores a few variables when a training step is skipped.

    Args:
        variables: The variables to protect, e.g. `forward_state(model)`.
    """

    def __init__(self, variables):
        self.variables = _unique(variables)

    def snapshot(self):
        """Reads the current values; call before the step changes anything."""
        return [tf.identity(tf.convert_to_tensor(v)) for v in self.variables]

    def restore_if(self, skip, saved):
        """Puts `saved` back into the variables when `skip` is True.

        Variables with `aggregation="none"` are restored inside a
        replica-local `tf.cond` that holds no collective; variables with
        another aggregation (which a conditional may not write under a
        strategy) by an unconditional assignment.
        """
        local = [(v, s) for v, s in zip(self.variables, saved) if _aggregation(v) == "none"]
        shared = [(v, s) for v, s in zip(self.variables, saved) if _aggregation(v) != "none"]

        def restore():
            for variable, value in local:
                variable.assign(value)
            return tf.constant(True)

        if local:
            tf.cond(skip, restore, lambda: tf.constant(False))
        for variable, value in shared:
            current = tf.convert_to_tensor(variable)
            variable.assign(tf.where(skip, value, current))


def nonfinite_anywhere(update, loss):
    """True (on every replica) when `update` or `loss` is not finite on any replica.

    One scalar all-reduce when several replicas run, outside any conditional.
    """
    bad = tf.logical_not(
        tf.logical_and(vector.all_finite(update), tf.reduce_all(tf.math.is_finite(loss)))
    )
    strategy = tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync > 1:
        context = tf.distribute.get_replica_context()
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(bad, tf.float32))
        bad = count > 0
    return bad


def _supports_no_merge_call():
    """Whether the current strategy runs `optimizer.apply` without `merge_call`.

    Keras's own TensorFlow optimizer and `LossScaleOptimizer` decide with this
    TensorFlow function; it is not part of the public API, so check it.
    """
    distribute = getattr(getattr(tf, "__internal__", None), "distribute", None)
    check = getattr(distribute, "strategy_supports_no_merge_call", None)
    if check is None:
        raise RuntimeError(
            "keras_flat skips non-finite steps the way Keras's LossScaleOptimizer "
            "does, with tf.__internal__.distribute.strategy_supports_no_merge_call, "
            f"which TensorFlow {tf.__version__} does not have. Use "
            "FlatMinimaModel(..., on_nonfinite='ignore') or a TensorFlow version "
            "Keras supports."
        )
    return check()


def apply_unless(skip, optimizer, grads, variables):
    """`optimizer.apply(grads, variables)` unless `skip`, with no copy of any state.

    `skip` must be the same on every replica (e.g. from `nonfinite_anywhere`):
    the optimizer's apply all-reduces the gradients under a strategy, and a
    collective inside a conditional is only safe when every replica takes the
    same branch. As in Keras's `LossScaleOptimizer._tf_apply`: where the
    strategy needs no `merge_call`, a `tf.cond` around `optimizer.apply` in
    replica context; otherwise a `merge_call` into cross-replica context and
    a `tf.cond` around `call_for_each_replica(optimizer.apply)` (a replica
    context `tf.cond` may not contain the optimizer's own `merge_call`).

    The optimizer must be built: slot variables cannot be created inside a
    conditional.

    Args:
        skip: A scalar boolean tensor, identical on every replica.
        optimizer: A built `keras.optimizers.Optimizer` (not a
            `LossScaleOptimizer`, which skips steps itself).
        grads: The gradients to apply.
        variables: The variables they belong to.
    """
    if not optimizer.built:
        raise ValueError(
            "The optimizer must be built before a conditional apply (its "
            "variables cannot be created inside a conditional)."
        )
    grads, variables = list(grads), list(variables)
    if _supports_no_merge_call():
        tf.cond(skip, _nothing, lambda: _apply(optimizer, grads, variables))
        return

    def cross_replica(distribution, skip, grads, variables):
        # Every replica computed the same `skip` (it was all-reduced), so the
        # first replica's value is everyone's, and every replica runs the
        # apply's collectives or none of them.
        skip = distribution.experimental_local_results(skip)[0]

        def apply():
            distribution.extended.call_for_each_replica(
                lambda g, v: _apply(optimizer, g, v), args=(grads, variables)
            )
            return tf.constant(True)

        tf.cond(skip, _nothing, apply)

    tf.distribute.get_replica_context().merge_call(
        cross_replica, args=(skip, grads, variables)
    )


def _apply(optimizer, grads, variables):
    optimizer.apply(grads, variables)
    return tf.constant(True)


def _nothing():
    return tf.constant(False)


def poison(update, bad):
    """Makes `update` non-finite when `bad`, so a `LossScaleOptimizer` skips it.

    Only the smallest tensor is written (one NaN entry is enough for the
    optimizer's finiteness check), so no update-sized copy is made.
    """
    update = list(update)
    if not update:
        return update
    sizes = [u.shape.num_elements() for u in update]
    known = [(s, i) for i, s in enumerate(sizes) if s is not None]
    i = min(known)[1] if known else 0
    u = update[i]
    update[i] = tf.where(bad, tf.fill(tf.shape(u), tf.cast(float("nan"), u.dtype)), u)
    return update
