"""The contract every update rule follows."""

import dataclasses
import typing

import keras

from keras_flat.algorithms import config_name
from keras_flat.algorithms.arguments import checked_init
from keras_flat.algorithms.arguments import translate
from keras_flat.utils.validation import check_choice

PERTURBATION_SYNC_MODES = ("global", "replica")


@dataclasses.dataclass(frozen=True)
class Step:
    """What an algorithm returns for one batch.

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

    update: list
    grad_norm: typing.Any
    perturbed: typing.Any
    assignments: tuple = ()


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
        """Wraps a subclass's own `__init__`, `get_config` and `from_config`.

        `__init__` checks its arguments before it runs: one the rule does
        not take raises a `TypeError` that names the rule, the argument, the
        one probably meant and every accepted one (see
        `keras_flat.algorithms.arguments`). `get_config` records the rule's
        name under `"name"` and `from_config` checks and drops it (see
        `keras_flat.algorithms.config_name`), so `"name"` is not available
        as an argument of a subclass.
        """
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "__init__" in own:
            cls.__init__ = checked_init(own["__init__"])
        if "get_config" in own:
            cls.get_config = config_name.recording(own["get_config"])
        if isinstance(own.get("from_config"), classmethod):
            cls.from_config = config_name.reading(own["from_config"])

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
            A `Step`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_update()."
        )

    def get_config(self):
        """The constructor arguments, and under `"name"` which rule this is.

        `keras_flat.algorithms.get` builds the same rule from this dict.
        """
        return {config_name.KEY: config_name.name_of(type(self)),
                "perturbation_sync": self.perturbation_sync}

    @classmethod
    def from_config(cls, config):
        """The rule of a `get_config()` dict (with or without its `"name"`)."""
        return cls(**translate(cls, config_name.without_name(cls, config), warn=False))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()
                         if k != config_name.KEY)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and (
            self.get_config() == other.get_config()
        )

    def __hash__(self):
        return hash((type(self).__name__, repr(self)))
