"""One traced function for every pass of a training step: the loss and its gradient."""

import keras
import tensorflow as tf

from keras_flat.utils.vector import compute_dtype


class BatchEvaluation:
    """The training loss of a batch at given weights, with its gradient, writing nothing.

    `FlatMinimaModel.train_step` makes one per step (at trace time) and runs
    every pass through it: the clean pass and each of the rule's perturbed
    passes. So the model's forward and backward pass is traced once per step,
    however many gradients the rule evaluates.

    The model runs in training mode inside a `keras.StatelessScope` that maps
    the trainable variables to the given values and its forward state
    (BatchNorm statistics, the seed states of random layers, counters of
    custom layers) to the values it had before the step's forward pass: every
    pass sees the model as the clean pass saw it, and random layers draw the
    same numbers in each (on a batch of the same shape). Nothing is assigned;
    what the pass would have written to the forward state is returned, and the
    clean pass writes it.

    Args:
        model: The `FlatMinimaModel`.
        variables: The trainable variables, in the order of the values (the
            attribute `variables`).
        state: `(variable, value)` pairs of the forward state, with the
            values from before the step's forward pass.
        scale: The step's loss scale (see `oracle.loss_scale`), or None.
    """

    def __init__(self, model, variables, state, scale=None):
        self._model = model
        self.variables = list(variables)
        self._state = list(state)
        self._scale = scale
        self._function = tf.function(self._evaluate, reduce_retracing=True)
        self._traced = False

    def __call__(self, values, x, y, sample_weight):
        """`(loss, grads, y_pred, written)` at trainable `values` on a batch.

        Args:
            values: Tensors, one per trainable variable.
            x, y, sample_weight: The batch.

        Returns:
            The loss (this replica's contribution, regularization
            included), its gradient with respect to `values` (loss scaling
            removed; None where the loss does not depend on a variable), the
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
        model = self._model
        mapping = self._state + list(zip(self.variables, values))
        with tf.GradientTape() as tape:
            tape.watch(values)
            with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
                y_pred = model(x, training=True)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred,
                                          sample_weight=sample_weight, training=True)
            scaled = loss if self._scale is None else loss * tf.cast(self._scale, loss.dtype)
        grads = tape.gradient(scaled, values)
        if self._scale is not None:
            grads = [_unscaled(g, self._scale) for g in grads]
        written = [scope.get_current_value(variable) for variable, _ in self._state]
        return loss, grads, y_pred, written



def _unscaled(gradient, scale):
    """`gradient / scale` in its own dtype (None and an Embedding's slices kept)."""
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(_unscaled(gradient.values, scale), gradient.indices,
                                gradient.dense_shape)
    dtype = compute_dtype(gradient.dtype)
    return tf.cast(tf.cast(gradient, dtype) / tf.cast(scale, dtype), gradient.dtype)


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
