"""Skipping training steps whose update is not finite, without a conditional apply.

`optimizer.apply` must run exactly once per step and never inside a
conditional (under `tf.distribute` it synchronises replicas). To skip a step
anyway, `StepGuard` reads the state the step may change before it changes,
lets the step run, and puts the old values back when the step's update was
not finite on any replica:

- variables with `aggregation="none"` (weights, optimizer slots, BatchNorm
  statistics) are restored inside a replica-local `tf.cond` that holds no
  collective;
- variables with another aggregation (e.g. the optimizer's `iterations`,
  `only_first_replica`) are restored by an unconditional assignment.

With a `LossScaleOptimizer` the optimizer skips non-finite steps itself; the
guard then only makes the decision global (Keras 3 checks replica 0's
gradients alone) by turning every replica's update non-finite, and restores
the non-trainable state the clean forward pass changed.
"""

import tensorflow as tf

from keras_flat import vector

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


class StepGuard:
    """Protects one training step's variables from a non-finite update.

    Args:
        variables: Every variable the step may change (weights, optimizer
            variables, non-trainable layer state).
    """

    def __init__(self, variables):
        self.variables = _unique(variables)

    def snapshot(self):
        """Reads the current values; call before the step changes anything."""
        return [tf.identity(tf.convert_to_tensor(v)) for v in self.variables]

    def restore_if(self, skip, saved):
        """Puts `saved` back into the variables when `skip` is True."""
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


def poison(update, bad):
    """Makes every entry of `update` NaN when `bad`, so a LossScaleOptimizer skips."""
    return [tf.where(bad, tf.cast(float("nan"), u.dtype), u) for u in update]


def zero_if(update, bad):
    """Replaces `update` by zeros when `bad` (no NaN reaches the optimizer's arithmetic)."""
    return [tf.where(bad, tf.zeros_like(u), u) for u in update]
