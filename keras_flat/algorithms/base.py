"""The contract every update rule follows."""

import typing

import keras

from keras_flat.algorithms.arguments import checked_init
from keras_flat.validation import check_choice

PERTURBATION_SYNC_MODES = ("global", "replica")


class _StepFields(typing.NamedTuple):
    update: list
    grad_norm: typing.Any
    perturbed: typing.Any


class Step(_StepFields):
    """What an algorithm returns for one batch.

    Unpacks as `update, grad_norm, perturbed` (the earlier three-tuple
    contract) and carries the algorithm's state changes in `assignments`.

    Attributes:
        update: List of tensors the optimizer applies (this replica's
            contribution, like the clean gradient it was given).
        grad_norm: Whole-model norm of the clean gradient, as the
            perturbation scope sees it (a scalar tensor).
        perturbed: Scalar float32 tensor, 1.0 if the step took the
            perturbed branch, else 0.0.
        assignments: `(variable, value)` pairs of the algorithm's own state
            (see `Algorithm.build`). `FlatMinimaModel.train_step` writes them
            only when the step is applied, so a skipped step leaves the
            algorithm's state as it was too.
    """

    def __new__(cls, update, grad_norm, perturbed, assignments=()):
        self = super().__new__(cls, update, grad_norm, perturbed)
        self.assignments = tuple(assignments)
        return self


@keras.saving.register_keras_serializable(package="keras_flat")
class Algorithm:
    """Base class of the update rules `FlatMinimaModel` runs.

    An algorithm turns the clean gradient of one batch into the gradient
    the optimizer applies. It never writes variables, metrics or the
    optimizer: `FlatMinimaModel.train_step` owns those and hands the
    algorithm a `GradientOracle`, which evaluates gradients of the same
    batch at perturbed weights without writing any variable. State an
    algorithm keeps between steps (LookSAM's stored direction, AE-SAM's
    running statistics) is created once by `build` and changed only through
    the `assignments` of the `Step` it returns.

    Most rules are compositions of small pieces (when to perturb, where the
    perturbed point is, how the gradients combine): see
    `keras_flat.algorithms.Composite`. Subclass `Algorithm` directly only
    for a rule that does not fit that mould; implement `compute_update` and
    `get_config`, and validate the arguments of `__init__` there.

    Args:
        perturbation_sync: `"global"` or `"replica"`; how the perturbation
            is formed under a `tf.distribute` strategy with several
            replicas. `"global"` (default) computes it from the all-reduced
            gradient and draws identical noise on every replica, so a run
            equals single-device training on the global batch. `"replica"`
            lets each replica perturb from its own gradient and its own
            noise (m-sharpness, with m the per-replica batch). On one device
            the two are the same.
    """

    #: Whether the rule ever evaluates gradients at perturbed weights.
    perturbs = True

    def __init_subclass__(cls, **kwargs):
        """Checks the arguments of every subclass's own `__init__` before it runs.

        An argument the rule does not take raises a `TypeError` that names
        the rule, the argument, the one probably meant and every accepted
        one (see `keras_flat.algorithms.arguments`).
        """
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = checked_init(cls.__dict__["__init__"])

    def __init__(self, perturbation_sync="global"):
        self.perturbation_sync = check_choice(
            "perturbation_sync", perturbation_sync, PERTURBATION_SYNC_MODES
        )

    def build(self, build):
        """Creates the algorithm's state variables; called once before training.

        Args:
            build: A `keras_flat.algorithms.BuildContext`: the trainable
                variables, their `Parameter`s, and `make_variable(name, shape,
                dtype="float32")`, which returns a new non-trainable,
                zero-initialised variable saved with the model.
        """

    def compute_update(self, oracle, grads):
        """Returns the gradient to apply for one batch.

        Args:
            oracle: The `GradientOracle` of the batch.
            grads: List of tensors, the clean gradient of the batch (this
                replica's contribution, loss scaling removed).

        Returns:
            A `Step` (or the tuple `(update, grad_norm, perturbed)`).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_update()."
        )

    def get_config(self):
        return {"perturbation_sync": self.perturbation_sync}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and (
            self.get_config() == other.get_config()
        )

    def __hash__(self):
        return hash((type(self).__name__, repr(self)))


def as_step(result):
    """A `Step` from what `compute_update` returned (a `Step` or a 3-tuple)."""
    if isinstance(result, Step):
        return result
    update, grad_norm, perturbed = result
    return Step(list(update), grad_norm, perturbed)
