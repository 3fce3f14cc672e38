"""The per-step statistics `FlatMinimaModel` logs, kept in one metric."""

import keras
import tensorflow as tf


class StepStatistics(keras.metrics.Metric):
    """Epoch means of `grad_norm` and `perturbed`, and the sum of `skipped_steps`.

    One metric with one vector of totals instead of three metrics: a step
    then spends two variable updates on them, not six, which matters on
    models whose step takes a millisecond. Under a `tf.distribute` strategy
    every replica adds its values and one to the count, and the variables
    are summed over replicas on read, so the means are over replicas too
    (as with `keras.metrics.Mean`).

    Args:
        skipped: Whether to keep `skipped_steps` (the count of steps skipped
            for a non-finite update).
        name: The metric's name.

    Example:

    >>> stats = StepStatistics()
    >>> stats.update_state(grad_norm=2.0, perturbed=1.0, skipped=0.0)
    >>> float(stats.result()["grad_norm"])
    2.0
    """

    def __init__(self, skipped=True, name="step_statistics", **kwargs):
        super().__init__(name=name, **kwargs)
        self.skipped = skipped
        self.total = self.add_variable(
            shape=(3 if skipped else 2,), initializer="zeros", dtype=self.dtype, name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype=self.dtype,
                                       name="count")

    def update_state(self, grad_norm, perturbed, skipped=None):
        values = [grad_norm, perturbed] + ([skipped] if self.skipped else [])
        self.total.assign_add(tf.stack([tf.cast(v, self.dtype) for v in values]))
        self.count.assign_add(tf.ones((), self.dtype))

    def result(self):
        total = tf.convert_to_tensor(self.total)
        means = tf.math.divide_no_nan(total[:2], tf.convert_to_tensor(self.count))
        out = {"grad_norm": means[0], "perturbed": means[1]}
        if self.skipped:
            out["skipped_steps"] = total[2]
        return out

    def get_config(self):
        return {**super().get_config(), "skipped": self.skipped}
