"""The contract every update rule follows, and argument validation."""

import collections.abc

import tensorflow as tf

import keras_flat
from keras_flat import vector
from keras_flat.validation import check_bool
from keras_flat.validation import check_choice
from keras_flat.validation import check_number

PERTURBATION_SYNC_MODES = ("global", "replica")


class Algorithm(keras_flat.algorithms.Algorithm):
    """Base class of the update rules `FlatMinimaModel` runs.

    An algorithm turns the clean gradient of one batch into the gradient
    the optimizer applies. It never touches variables, metrics or the
    optimizer: `FlatMinimaModel.train_step` owns those and hands the
    algorithm a `GradientOracle`, which evaluates gradients of the same
    batch at perturbed weights without writing any variable.

    Subclasses implement `compute_update` and `get_config`; the arguments
    of `__init__` are validated there, at construction time.

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

    def __init__(self, perturbation_sync="global"):
        self.perturbation_sync = check_choice(
            "perturbation_sync", perturbation_sync, PERTURBATION_SYNC_MODES
        )

    def compute_update(self, oracle, grads):
        """Returns the gradient to apply for one batch.

        Args:
            oracle: The `GradientOracle` of the batch.
            grads: List of tensors, the clean gradient of the batch (this
                replica's contribution, loss scaling removed).

        Returns:
            `(update, grad_norm, perturbed)`: the list of tensors to hand
            to the optimizer (same convention as `grads`), the whole-model
            norm of the clean gradient as the perturbation scope sees it,
            and a scalar float32 tensor, 1.0 if the step took the perturbed
            branch else 0.0.
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


class PerturbationAlgorithm(Algorithm):
    """Shared machinery of Algorithms 1 and 2 of Ahn, Jadbabaie & Sra.

    Both rules take the paper's two-phase step: when the whole-model
    gradient norm is at or below `tolerance`, they add to the gradient a
    perturbation direction `v` (a gradient at a perturbed point with its
    component along the clean gradient projected out) and scale the step
    by `perturbed_lr_scale`; otherwise they take the plain gradient step.

    Args:
        rho: Perturbation radius, a finite number >= 0.
        tolerance: The paper's ε0. `None` perturbs at every step; a number
            >= 0 perturbs only when the clean whole-model gradient norm is
            at or below it.
        perturbed_lr_scale: η/η′, the ratio of the paper's step size of a
            perturbed step to that of a plain step; the optimizer's
            learning rate is η′. A finite number > 0.
        project: Whether to project the perturbed gradient orthogonally to
            the clean gradient, as the paper does.
        perturbation_sync: See `Algorithm`.
        interval: Perturb only on every `interval`-th training step (counted
            by `optimizer.iterations`, starting with the first); the other
            steps are plain. An integer >= 1; 1 (default) perturbs at every
            step the tolerance allows. A cost knob: a step that does not
            perturb costs one gradient evaluation.
    """

    def __init__(
        self,
        rho,
        tolerance=None,
        perturbed_lr_scale=1.0,
        project=True,
        perturbation_sync="global",
        interval=1,
    ):
        super().__init__(perturbation_sync=perturbation_sync)
        self.rho = check_number("rho", rho, minimum=0.0)
        self.interval = check_interval(interval)
        self.tolerance = (
            None
            if tolerance is None
            else check_number("tolerance", tolerance, minimum=0.0)
        )
        self.perturbed_lr_scale = check_number(
            "perturbed_lr_scale", perturbed_lr_scale, minimum=0.0,
            inclusive=False,
        )
        self.project = check_bool("project", project)

    def prepare(self, oracle, grads):
        """Work of a step that must run whether or not it perturbs.

        Runs outside the tolerance conditional, so it is where an algorithm
        may use a collective (e.g. SA's draw of examples across replicas);
        `perturbation`, which runs inside it, must not.

        Returns:
            Any structure, handed unchanged to `perturbation` as `state`.
        """
        return None

    def perturbation(self, oracle, grads, direction, state):
        """Returns the perturbation direction `v` of one perturbed step.

        Args:
            oracle: The `GradientOracle` of the batch.
            grads: The clean gradient (this replica's contribution).
            direction: The unit vector of the clean gradient as the
                perturbation scope sees it (zero for a zero gradient), a
                sequence of tensors computed when first read.
            state: What `prepare` returned.

        Returns:
            A list of tensors in the convention of `grads`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement perturbation()."
        )

    def compute_update(self, oracle, grads):
        grads = list(grads)
        state = self.prepare(oracle, grads)
        view = oracle.global_view(grads, self.perturbation_sync)
        grad_norm = vector.norm(view)

        def perturbed_step():
            # The unit vector is formed only if `perturbation` reads it: the
            # projection below needs no gradient-sized copy of it.
            direction = _LazyUnit(view)
            v = self.perturbation(oracle, grads, direction, state)
            if self.project:
                step = vector.add_projected(grads, v, view)
            else:
                step = vector.add(grads, v)
            if self.perturbed_lr_scale != 1.0:
                step = vector.scale(step, self.perturbed_lr_scale)
            return step

        take = None
        if self.tolerance is not None:
            take = grad_norm <= tf.cast(self.tolerance, grad_norm.dtype)
        take = due(oracle, self.interval, take)
        if take is None:
            return perturbed_step(), grad_norm, tf.constant(1.0)
        update = tf.cond(take, perturbed_step, lambda: grads)
        return list(update), grad_norm, tf.cast(take, tf.float32)

    def get_config(self):
        config = super().get_config()
        config.update(
            rho=self.rho,
            tolerance=self.tolerance,
            perturbed_lr_scale=self.perturbed_lr_scale,
            project=self.project,
            interval=self.interval,
        )
        return config


class _LazyUnit(collections.abc.Sequence):
    """The list `vector.unit(tensors)[0]`, computed on first access."""

    def __init__(self, tensors):
        self._tensors = tensors
        self._value = None

    def _get(self):
        if self._value is None:
            self._value = vector.unit(self._tensors)[0]
        return self._value

    def __getitem__(self, index):
        return self._get()[index]

    def __len__(self):
        return len(self._tensors)


def check_interval(interval):
    """Validates the `interval` argument of the perturbing algorithms."""
    return check_number("interval", interval, minimum=1, integer=True)


def due(oracle, interval, condition=None):
    """Whether this step perturbs, as a scalar bool tensor, or None for "always".

    Combines an optional data-dependent `condition` (a scalar bool tensor)
    with the schedule "every `interval`-th step". The step count is the
    optimizer's, a variable mirrored across replicas, so every replica takes
    the same branch without a collective.
    """
    if interval == 1:
        return condition
    on_schedule = tf.equal(tf.math.floormod(oracle.step, interval), 0)
    if condition is None:
        return on_schedule
    return tf.logical_and(condition, on_schedule)
