"""The loss of a batch at given weights, writing nothing, and the step's traced gradient.

`loss_at` is the one place a model's loss is evaluated without side effects:
the training step's clean and perturbed passes (through `BatchEvaluation`),
the Hessian measurements and the loss landscape all call it. `LossScale` is
the one place a training step's loss scaling is handled, and `batch_mean`
the one place Keras's division of the loss by the number of replicas is
undone.
"""

import keras
import tensorflow as tf

from keras_flat.utils.vector import compute_dtype


def loss_at(model, mapping, x, y, sample_weight, *, training, loss=None, mean=False):
    """The loss of `model` on one batch with some variables at given values, writing nothing.

    The model runs inside a `keras.StatelessScope` that maps each variable of
    `mapping` to its value (the other variables read their current values).
    No variable is assigned: what the pass writes (BatchNorm statistics, the
    seed states of random layers) is left in the returned scope, and `add_loss`
    and activity-regularization terms are collected.

    Args:
        model: A Keras model.
        mapping: `(variable, value)` pairs.
        x, y, sample_weight: The batch.
        training: Run layers in training mode.
        loss: None for `model.compute_loss` (the compiled loss plus the
            regularization losses), or a callable `loss(y, y_pred,
            sample_weight)` giving the batch's loss, to which `model.losses`
            are added.
        mean: For `model.compute_loss`, give its value on this batch rather
            than this replica's contribution to the global batch's (see
            `batch_mean`); they differ only under a `tf.distribute` strategy.

    Returns:
        `(loss, y_pred, scope)`: the scalar loss, the predictions, and the
        scope, whose `get_current_value(variable)` is what the pass would
        have written.
    """
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        y_pred = model(x, training=training)
        if loss is None:
            value = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                       training=training)
            if mean:
                value = batch_mean(value)
        else:
            value = loss(y, y_pred, sample_weight)
            for extra in model.losses:
                value = value + tf.cast(extra, value.dtype)
    return value, y_pred, scope


def batch_mean(values):
    """A replica's contributions as values of its own batch: times the number of replicas.

    Inside a replica of a `tf.distribute` strategy, Keras divides the loss by
    the number of replicas, so that contributions (and their gradients)
    summed over replicas are the global batch's. This multiplies a loss, or
    a structure of gradients, back; the identity on one device.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1:
        return values
    return tf.nest.map_structure(lambda v: v * tf.cast(replicas, v.dtype), values)


class LossScale:
    """The loss scaling of one training step, owned in one place.

    The factor `optimizer.scale_loss` multiplies the loss by: the dynamic
    scale of a `keras.optimizers.LossScaleOptimizer` (mixed precision) or an
    optimizer's `loss_scale_factor`; None for an optimizer that scales
    nothing, or for no optimizer. Read once per step. Gradients are at true
    scale everywhere but inside `gradient` and in what `for_optimizer`
    returns: `gradient` differentiates the scaled loss (so float16 gradients
    do not underflow) and divides the result, and `for_optimizer` multiplies
    the step's update once, right before `optimizer.apply`, which divides it
    again (a `LossScaleOptimizer` also checks it and updates its scale).

    Args:
        optimizer: The model's optimizer, or None.
    """

    def __init__(self, optimizer=None):
        scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer) or (
            getattr(optimizer, "loss_scale_factor", None) is not None
        )
        self.value = None
        if scaled:
            self.value = tf.cast(optimizer.scale_loss(tf.constant(1.0, tf.float32)), tf.float32)

    def gradient(self, tape, loss, sources):
        """The true-scale gradient of `loss` (recorded on `tape`) with respect to `sources`."""
        if self.value is None:
            return tape.gradient(loss, sources)
        # The gradient of the scaled loss: backpropagation starts from the scale.
        grads = tape.gradient(loss, sources, output_gradients=tf.cast(self.value, loss.dtype))
        return [_apply(tf.divide, g, self.value) for g in grads]

    def for_optimizer(self, grads):
        """True-scale `grads` as `optimizer.apply` takes them: times the scale."""
        if self.value is None:
            return list(grads)
        return [_apply(tf.multiply, g, self.value) for g in grads]


def _apply(operation, gradient, factor):
    """`operation(gradient, factor)` in its own dtype (None and an Embedding's slices kept)."""
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(_apply(operation, gradient.values, factor), gradient.indices,
                                gradient.dense_shape)
    dtype = compute_dtype(gradient.dtype)
    return tf.cast(operation(tf.cast(gradient, dtype), tf.cast(factor, dtype)), gradient.dtype)


class BatchEvaluation:
    """The training loss of a batch at given weights, with its gradient, writing nothing.

    `FlatMinimaModel.train_step` makes one per step (at trace time) and runs
    every pass through it: the clean pass and each of the rule's perturbed
    passes. So the model's forward and backward pass is traced once per step,
    however many gradients the rule evaluates.

    Each pass is a `loss_at` in training mode that maps the trainable
    variables to the given values and the model's forward state (BatchNorm
    statistics, the seed states of random layers, counters of custom layers)
    to the values it had before the step's forward pass: every pass sees the
    model as the clean pass saw it, and random layers draw the same numbers in
    each (on a batch of the same shape). Nothing is assigned; what the pass
    would have written to the forward state is returned, and the clean pass
    writes it.

    Args:
        model: The `FlatMinimaModel`.
        variables: The trainable variables, in the order of the values (the
            attribute `variables`).
        state: `(variable, value)` pairs of the forward state, with the
            values from before the step's forward pass.
        scale: The step's `LossScale` (default: none).
    """

    def __init__(self, model, variables, state=(), scale=None):
        self._model = model
        self.variables = list(variables)
        self._state = list(state)
        self._scale = LossScale() if scale is None else scale
        self._function = tf.function(self._evaluate, reduce_retracing=True)
        self._traced = False

    def __call__(self, values, x, y, sample_weight):
        """`(loss, grads, y_pred, written)` at trainable `values` on a batch.

        Args:
            values: Tensors, one per trainable variable.
            x, y, sample_weight: The batch.

        Returns:
            The loss (this replica's contribution, regularization
            included), its gradient with respect to `values` (at true scale;
            None where the loss does not depend on a variable), the
            predictions, and the values the pass would write to the forward
            state, in the order of `state`.
        """
        values = list(values)
        if not self._traced:
            # Traced once for any batch size: the whole batch and a few of its
            # examples run the same function.
            self._function.get_concrete_function(
                *_any_batch_size((values, x, y, sample_weight), first=1))
            self._traced = True
        return self._function(values, x, y, sample_weight)

    def _evaluate(self, values, x, y, sample_weight):
        mapping = self._state + list(zip(self.variables, values))
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss, y_pred, scope = loss_at(self._model, mapping, x, y, sample_weight,
                                          training=True)
        grads = self._scale.gradient(tape, loss, values)
        written = [scope.get_current_value(variable) for variable, _ in self._state]
        return loss, grads, y_pred, written


def _any_batch_size(arguments, first):
    """Specs of `arguments` whose batch axis is unknown, from argument `first` on."""
    specs = []
    for i, argument in enumerate(arguments):
        spec = tf.nest.map_structure(tf.type_spec_from_value, argument)
        if i >= first:
            spec = tf.nest.map_structure(_unknown_batch, spec)
        specs.append(spec)
    return specs


def _unknown_batch(spec):
    if isinstance(spec, tf.TensorSpec) and spec.shape.rank:
        return tf.TensorSpec([None] + spec.shape.as_list()[1:], spec.dtype)
    return spec
