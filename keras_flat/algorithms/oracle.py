"""The gradient oracle `FlatMinimaModel.train_step` hands to an algorithm."""

import tensorflow as tf

from keras_flat.backend.tensorflow.evaluation import batch_mean
from keras_flat.utils import rng
from keras_flat.utils import vector


class GradientOracle:
    """Gradients of one batch at perturbed weights, with no side effects.

    Built by `FlatMinimaModel.train_step` for one batch, after the clean
    pass. `gradient` evaluates the training loss (regularization included)
    at `w + offset`, on the whole batch or on a subset of its examples,
    through the step's `keras_flat.backend.tensorflow.evaluation.BatchEvaluation`: no variable
    is written, BatchNorm statistics and other non-trainable updates of the
    perturbed pass are discarded, and no Python state changes, so it is
    safe under `tf.function`, XLA and `tf.distribute`. The oracle never
    calls the model itself.

    Gradient convention: like the clean gradient Keras computes inside a
    replica, a returned gradient is this replica's contribution (the loss
    carries Keras's 1/num_replicas factor), at true scale (loss scaling is
    the evaluation's), so contributions summed over replicas give the
    global-batch gradient. `global_view` turns a contribution into a
    full-scale gradient for norms and directions.

    Subsets of a model with batch statistics (BatchNormalization layers in
    training mode) keep the whole batch, in training mode, with zero weight
    on the other examples: the examples' loss is then their share of the
    batch loss, through the batch's statistics, exactly as in the clean
    pass (the shares of all examples sum to the batch loss). A few examples
    gathered alone would be normalised by their own statistics, a different
    function; normalised by the clean batch's statistics held fixed, they
    lose the statistics' dependence on the weights and the invariance to
    the scale of the weights before a BatchNormalization layer (see
    docs/algorithms.md). The price is a batch-sized evaluation per subset
    gradient on such models.

    Args:
        evaluation: The step's `BatchEvaluation` (shared with the clean
            pass). It may know more variables than `trainable_variables`
            (those the loss does not reach); they keep their current values.
        x, y, sample_weight: The batch, as unpacked by Keras.
        trainable_variables: The variables the optimizer updates.
        seed: The step's stateless seed, an int tensor of shape `(2,)`, or
            None for an algorithm that draws no random numbers.
        step: The training step's index (the optimizer's `iterations`
            before this step's update), for algorithms that perturb on a
            schedule.
        planned_steps: The number of steps the current `fit` plans (epochs
            × steps per epoch), or 0 when unknown.
        optimizer: The optimizer, whose learning rate `learning_rate` reads.
        parameters: The `keras_flat.utils.structure.Parameter`s of
            `trainable_variables`, in order.
        masked_subsets: Whether the model normalises with batch statistics,
            so that subsets keep the whole batch (see above).
    """

    def __init__(
        self, evaluation, x, y, sample_weight, trainable_variables, seed=None, step=None,
        planned_steps=None, optimizer=None, parameters=None, masked_subsets=False,
    ):
        self._evaluation = evaluation
        self._x = x
        self._y = y
        self._sample_weight = sample_weight
        self.trainable_variables = list(trainable_variables)
        self._seed = seed
        self._step = step
        self._planned_steps = planned_steps
        self._optimizer = optimizer
        self.parameters = None if parameters is None else list(parameters)
        # With batch statistics a few examples alone are a different function
        # (BatchNorm of a single example is constant): mask instead of gather.
        self.masked_subsets = masked_subsets
        self._values = None
        # Where each of this oracle's variables sits among the evaluation's.
        index = {id(v): i for i, v in enumerate(evaluation.variables)}
        self._positions = [index[id(v)] for v in self.trainable_variables]
        self.num_replicas = tf.distribute.get_strategy().num_replicas_in_sync

    @property
    def step(self):
        """The training step's index, a scalar int64 tensor (read when first used)."""
        if self._step is None:
            return tf.constant(0, "int64")
        return tf.cast(self._step, "int64")

    @property
    def planned_steps(self):
        """The steps the current `fit` plans, a scalar int64 tensor (0 when unknown)."""
        if self._planned_steps is None:
            return tf.constant(0, "int64")
        return tf.cast(self._planned_steps, "int64")

    @property
    def variables(self):
        """The current values of `trainable_variables`, a list of tensors.

        Read on first use in each graph (a conditional's branch is a graph of
        its own), so a step that never perturbs reads nothing.
        """
        graph = tf.compat.v1.get_default_graph()
        if self._values is None or self._values[0] is not graph:
            self._values = (graph, [tf.convert_to_tensor(v) for v in self.trainable_variables])
        return self._values[1]

    @property
    def batch_size(self):
        """Number of examples in this replica's batch, a scalar int32 tensor."""
        return tf.shape(_first_leaf(self._x))[0]

    @property
    def learning_rate(self):
        """The optimizer's learning rate at this step, a float32 scalar tensor.

        A schedule's value at `step`, or the current value of a constant
        learning rate (which a callback may have changed).
        """
        return tf.cast(self._optimizer.learning_rate, tf.float32)

    @property
    def progress(self):
        """`step / planned_steps` as a float32 scalar (0 when nothing is planned)."""
        planned = tf.cast(tf.maximum(self.planned_steps, 1), tf.float32)
        return tf.cast(self.step, tf.float32) / planned

    def seed(self, stream, sync="global"):
        """A stateless seed for random stream number `stream` in this step.

        Each piece of an algorithm names the streams it draws from and their
        numbers (`Piece.STREAMS`). In `"replica"` mode each replica gets its
        own stream; in `"global"` mode every replica draws the same numbers.
        """
        if self._seed is None:
            raise ValueError(
                "This GradientOracle has no random seed: FlatMinimaModel gives "
                "none to an algorithm whose `perturbs` attribute is False."
            )
        seed = rng.fold_in(self._seed, stream)
        if sync == "replica" and self.num_replicas > 1:
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            seed = rng.fold_in(seed, replica + 1)
        return seed

    def global_view(self, grads, sync="global"):
        """Full-scale version of gradient contributions, for norms and directions.

        In `"global"` mode, the sum over replicas (one all-reduce of the
        whole structure); in `"replica"` mode, this replica's gradient of
        its own batch mean (the contribution times the number of replicas).
        The identity on one device.

        Args:
            grads: A nested structure of tensors in the oracle's convention.
            sync: `"global"` or `"replica"`.
        """
        if self.num_replicas == 1:
            return grads
        if sync == "global":
            context = tf.distribute.get_replica_context()
            return context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        return batch_mean(grads)

    def sample_subset(self, count, seed, sync="global"):
        """Chooses `min(count, n)` distinct examples of one replica's batch.

        The first example `j` is uniform over the batch; the others are
        uniform among the rest of the same shard. On one device the shard is
        the whole batch. In `"replica"` mode each replica draws from its own
        batch. In `"global"` mode with several replicas, every replica draws
        the same `j` among the examples of the *global* batch (replicas hold
        contiguous slices of it, in order), and only the replica holding `j`
        takes examples, from its own slice, with its loss scaled to the
        global gradient's scale; the others get zero weight. So the
        examples' gradient needs no communication, and with `count=1` the
        choice, hence the whole run, equals single-device training on the
        global batch.

        Returns:
            A `Subset` for `gradient(subset=...)`.
        """
        size = self.batch_size
        count = tf.constant(count, tf.int32)
        first_key, rest_key = rng.fold_in(seed, 0), rng.fold_in(seed, 1)
        if sync != "global" or self.num_replicas == 1:
            first = _uniform_index(first_key, size)
            return Subset(_draw(rest_key, size, first, count), masked=self.masked_subsets)
        context = tf.distribute.get_replica_context()
        sizes = context.all_gather(tf.reshape(size, [1]), axis=0)
        first = _uniform_index(first_key, tf.reduce_sum(sizes))
        ends = tf.cumsum(sizes)
        owner = tf.reduce_sum(tf.cast(ends <= first, tf.int32))
        active = tf.equal(context.replica_id_in_sync_group, owner)
        offset = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
        local_first = tf.clip_by_value(first - offset, 0, tf.maximum(size - 1, 0))
        chosen = _draw(rest_key, size, local_first, count)
        # Other replicas point at a zero row appended to their batch.
        return Subset(
            tf.where(active, chosen, tf.fill(tf.shape(chosen), size)),
            weight=tf.fill(tf.shape(chosen), tf.cast(active, tf.float32)),
            scale=float(self.num_replicas),
            padded=True,
            active=active,
            masked=self.masked_subsets,
        )

    def gradient(self, offset=None, subset=None):
        """Loss and gradient at `w + offset`, on the batch or a subset of it.

        Every call of one step runs the same traced function, so a rule that
        evaluates several gradients traces the model once more, not once
        per gradient.

        Args:
            offset: `None` or a list of tensors shaped like the trainable
                variables.
            subset: `None` or a `Subset` from `sample_subset`.

        Returns:
            `(loss, grads)`: the scalar loss (this replica's contribution)
            and a list of gradient tensors, one per trainable variable.
        """
        x, y, sample_weight = self._x, self._y, self._sample_weight
        values = list(self.variables)
        if offset is not None:
            values = vector.add(values, offset)
        if subset is not None:
            x, y, sample_weight = subset.take(x, y, sample_weight)
        loss, grads = self._evaluate(values, x, y, sample_weight)
        if subset is not None and subset.scale != 1.0:
            # Only the replica holding the examples contributes: the others
            # would otherwise add their share of the regularization losses.
            loss = tf.where(subset.active, loss * tf.cast(subset.scale, loss.dtype),
                            tf.zeros_like(loss))
            grads = [tf.where(subset.active, g * tf.cast(subset.scale, g.dtype),
                              tf.zeros_like(g)) for g in grads]
        return loss, grads

    def _evaluate(self, values, x, y, sample_weight):
        """The evaluation's loss and gradient, at `values` for this oracle's variables."""
        full = list(values)
        if len(self._evaluation.variables) != len(values):
            full = [tf.convert_to_tensor(v) for v in self._evaluation.variables]
            for position, value in zip(self._positions, values):
                full[position] = value
        loss, grads, _, _ = self._evaluation(full, x, y, sample_weight)
        grads = [grads[p] for p in self._positions]
        return loss, [tf.zeros_like(v) if g is None else g for g, v in zip(grads, values)]


class Subset:
    """Examples of the batch an algorithm evaluates gradients on.

    Args:
        indices: int32 tensor of example indices.
        weight: Optional float32 tensor, a per-index multiplier of the
            sample weights (0 drops an example).
        scale: Multiplier of the subset's loss.
        padded: Whether `indices` may point one past the batch, at a zero
            row appended by `take`.
        active: Scalar boolean tensor, False on a replica that holds none
            of the examples.
        masked: Keep the whole batch and give the other examples zero
            weight, instead of gathering the chosen ones.
    """

    def __init__(self, indices, weight=None, scale=1.0, padded=False, active=True,
                 masked=False):
        self.indices = indices
        self.weight = weight
        self.scale = scale
        self.padded = padded
        self.active = tf.convert_to_tensor(active)
        self.masked = masked

    def take(self, x, y, sample_weight):
        """The subset of a batch as `(x, y, sample_weight)`."""
        if self.masked:
            return x, y, self._mask(x, sample_weight)

        def gather(t):
            if t is None:
                return None
            if self.padded:
                t = tf.concat([t, tf.zeros_like(t[:1])], axis=0)
            return tf.gather(t, self.indices)

        x = tf.nest.map_structure(gather, x)
        y = tf.nest.map_structure(gather, y)
        sample_weight = tf.nest.map_structure(gather, sample_weight)
        if self.weight is not None:
            if sample_weight is None:
                sample_weight = self.weight
            else:
                sample_weight = tf.nest.map_structure(self._weigh, sample_weight)
        return x, y, sample_weight

    def _mask(self, x, sample_weight):
        """Sample weights that keep only the chosen examples.

        The loss divides by the batch size, so a chosen example's weight is
        batch/chosen: the weighted loss is then the chosen examples' mean.
        """
        size = tf.shape(_first_leaf(x))[0]
        chosen = tf.ones(tf.shape(self.indices), tf.float32)
        if self.weight is not None:
            chosen = chosen * self.weight
        count = tf.cast(tf.size(self.indices), tf.float32)
        per_index = chosen * tf.cast(size, tf.float32) / tf.maximum(count, 1.0)
        # Indices may point one past the batch (padding): that segment is dropped.
        mask = tf.math.unsorted_segment_sum(per_index, self.indices, size + 1)[:size]
        if sample_weight is None:
            return mask
        return tf.nest.map_structure(
            lambda w: w * tf.reshape(tf.cast(mask, w.dtype),
                                     [-1] + [1] * ((w.shape.rank or 1) - 1)),
            sample_weight)

    def _weigh(self, weights):
        mask = tf.cast(self.weight, weights.dtype)
        rank = weights.shape.rank or 1
        return weights * tf.reshape(mask, [-1] + [1] * (rank - 1))


def _uniform_index(key, size):
    """A uniform index in [0, size) (0 for an empty batch)."""
    u = rng.uniform([1], key)[0]
    index = tf.cast(tf.floor(u * tf.cast(size, tf.float32)), tf.int32)
    return tf.clip_by_value(index, 0, tf.maximum(size - 1, 0))


def _draw(key, size, first, count):
    """`first` followed by `count - 1` other random indices of [0, size)."""
    keys = rng.uniform([size], key)
    keys = tf.where(tf.range(size) == first, -1.0, keys)  # `first` sorts first.
    return tf.argsort(keys)[: tf.minimum(count, size)]


def _first_leaf(structure):
    return next(t for t in tf.nest.flatten(structure) if t is not None)
