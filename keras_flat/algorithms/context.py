"""What the pieces of an algorithm see of one training step."""

from keras import ops

from keras_flat import backend
from keras_flat.utils import vector


class StepContext:
    """The clean gradient of one batch, and how to ask for more gradients.

    Built once per step (at trace time) by `Composite.compute_update`,
    outside any conditional: the all-reduce behind `view` runs on every
    replica before a piece decides anything.

    Attributes:
        oracle: The step's `GradientOracle`.
        grads: The clean gradient, this replica's contribution.
        sync: `"global"` or `"replica"` (see `Algorithm`).
        view: The full-scale clean gradient norms and directions use: the
            all-reduced gradient in `"global"` mode, this replica's batch
            gradient in `"replica"` mode.
        direction: `view / ‖view‖` (zero for a zero gradient), formed when
            first read in each graph (a conditional's branch is a graph of
            its own), so a rule that never reads it keeps no gradient-sized
            unit vector alive.
        grad_norm: `‖view‖`.
    """

    def __init__(self, oracle, grads, sync):
        self.oracle = oracle
        self.grads = backend.densify(grads)
        self.sync = sync
        self.view = oracle.global_view(self.grads, sync)
        self.grad_norm = vector.norm(self.view)
        self._direction = None

    @property
    def direction(self):
        """`view / ‖view‖`, the clean gradient's unit vector (zero for zero)."""
        graph = backend.current_graph()
        if self._direction is None or self._direction[0] is not graph:
            self._direction = (graph, vector.unit(self.view)[0])
        return self._direction[1]

    @property
    def step(self):
        """The optimizer's iteration count before this step (int64 tensor)."""
        return self.oracle.step

    @property
    def learning_rate(self):
        """The optimizer's learning rate at this step (float32 scalar tensor).

        A schedule's value at `step`, or the current value of a constant
        learning rate (which a callback may have changed).
        """
        return self.oracle.learning_rate

    @property
    def progress(self):
        """`step / planned steps` of the current `fit` (float32 tensor)."""
        return self.oracle.progress

    @property
    def variables(self):
        """Current values of the trainable variables (tensors)."""
        return self.oracle.variables

    @property
    def trainable_variables(self):
        return self.oracle.trainable_variables

    @property
    def num_replicas(self):
        return self.oracle.num_replicas

    def parameters(self):
        """`[keras_flat.utils.structure.Parameter]` of the trainable variables, in order."""
        return self.oracle.parameters

    def seed(self, stream):
        """A stateless seed for the random stream numbered `stream` in this step."""
        return self.oracle.seed(stream, self.sync)

    def gradient(self, offset=None, subset=None):
        """`(loss, grads)` at `w + offset`; see `GradientOracle.gradient`."""
        loss, grads = self.oracle.gradient(offset=offset, subset=subset)
        return loss, backend.densify(grads)

    def global_view(self, vectors):
        """The full-scale version of gradient contributions (see `view`)."""
        return self.oracle.global_view(vectors, self.sync)

    def contribution(self, vectors):
        """This replica's share of a full-scale vector: `vectors / replicas`.

        The optimizer sums contributions over replicas, so a term computed
        at full scale (identical on every replica) is divided by the number
        of replicas before it is added to a contribution. The identity on
        one device.
        """
        if self.num_replicas == 1:
            return list(vectors)
        return vector.scale(vectors, 1.0 / self.num_replicas)

    def branch(self, take, perturbed, plain):
        """`perturbed()` or `plain()` as `take` says (`None`: always perturbed).

        The branches must not use collectives: under strategies that
        synchronise through `merge_call` (MirroredStrategy) a collective in
        a replica-context conditional fails. Work that needs one runs before
        the conditional (`Perturbation.prepare`) or after it
        (`Combiner.finish`), on every replica and every step.

        Returns:
            `(result, flag)`: the branch's result and a float32 scalar, 1.0
            for the perturbed branch.
        """
        if take is None:
            return perturbed(), ops.convert_to_tensor(1.0)
        return backend.branch(take, perturbed, plain), ops.cast(take, "float32")
