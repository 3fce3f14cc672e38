"""An update rule as three pieces: when it perturbs, where, and how it combines."""

import keras
from keras import ops

from keras_flat.algorithms.base import Algorithm
from keras_flat.algorithms.base import Step
from keras_flat.algorithms.context import StepContext
from keras_flat.algorithms.pieces.base import Combiner
from keras_flat.algorithms.pieces.base import Perturbation
from keras_flat.algorithms.pieces.base import PerVariable
from keras_flat.algorithms.pieces.base import Schedule
from keras_flat.algorithms.pieces.base import deserialize
from keras_flat.algorithms.pieces.base import serialize
from keras_flat.algorithms.pieces.how import Replace
from keras_flat.algorithms.pieces.when import Always

ROLES = ("when", "where", "how")


@keras.saving.register_keras_serializable(package="keras_flat")
class Composite(Algorithm):
    """An update rule composed of a schedule, a perturbation and a combiner.

    Each step, on every replica and outside any conditional, the clean
    gradient's full-scale view, direction and norm are formed and the
    perturbation may `prepare` (e.g. draw examples). Then, under one tensor
    conditional on the schedule's decision, either the perturbation's
    gradient `h` is evaluated and the combiner turns `(g, h)` into the
    update, or the combiner's plain update is used (usually `g`). After
    the conditional, on every replica, the combiner finishes the update and
    a perturbation that `keeps_gradient` reads `h` (zeros on a plain step)
    for its state. State the pieces keep is returned as assignments,
    written by `FlatMinimaModel` only if the step is applied.

    The named rules are recipes of this class (`keras_flat.algorithms.Recipe`),
    e.g. `SAM(rho)` is `Composite(where=Ascent(rho), how=Replace())` and
    LookSAM is `Composite(where=Ascent(rho), how=Reuse(reuse_weight),
    when=Every(interval))`.

    Args:
        where: A `Perturbation` (`keras_flat.algorithms.where`).
        how: A `Combiner` (`keras_flat.algorithms.how`); defaults to
            `Replace()`.
        when: A `Schedule` (`keras_flat.algorithms.when`); defaults to
            `Always()`.
        perturbation_sync: `"global"` or `"replica"`; see `Algorithm`.

    Example:

    ```python
    from keras_flat.algorithms import Composite, when, where, how
    late_gsam = Composite(where=where.Ascent(0.05), how=how.SurrogateGap(0.1),
                          when=when.StartingAt(0.5))
    model = keras_flat.FlatMinimaModel(inner, late_gsam)
    ```
    """

    def __init__(self, where, how=None, when=None, perturbation_sync="global"):
        super().__init__(perturbation_sync=perturbation_sync)
        self.where = _piece("where", where, Perturbation)
        self.how = _piece("how", Replace() if how is None else how, Combiner)
        self.when = _piece("when", Always() if when is None else when, Schedule)
        check_streams(self.pieces())

    def pieces(self):
        """`{"when": ..., "where": ..., "how": ...}`, the pieces of this rule."""
        return {"when": self.when, "where": self.where, "how": self.how}

    @property
    def needs_plan(self):
        """Whether the schedule needs the number of steps `fit` plans."""
        return self.when.needs_plan

    def gradient_evaluations(self, batch_size, perturbed_fraction=None):
        """Expected batch-gradient evaluations per step.

        Args:
            batch_size: The batch size (a perturbation may use part of it).
            perturbed_fraction: The fraction of steps that perturb; None
                uses the schedule's expectation.
        """
        if perturbed_fraction is None:
            perturbed_fraction = self.when.expected_fraction()
        return 1.0 + perturbed_fraction * self.where.gradient_evaluations(batch_size)

    def label_parts(self):
        """The pieces' label fragments, e.g. `["ρ=0.05", "interval=2"]`."""
        return [part for piece in (self.where, self.how, self.when)
                for part in piece.label_parts()]

    def variant_options(self):
        """The pieces' options that depart from the published rule."""
        return [option for piece in (self.where, self.how, self.when)
                for option in piece.variant_options()]

    def build(self, build):
        self.state = {role: piece.init(build.prefixed(f"{role}_"))
                      for role, piece in self.pieces().items()}

    def _state(self, role, variables):
        """The state of `role` for a step that updates `variables`."""
        state = getattr(self, "state", None)
        if state is None:
            return {}
        return _select(state[role], variables)

    def compute_update(self, oracle, grads):
        when, where, how = self.when, self.where, self.how
        states = {role: self._state(role, oracle.trainable_variables) for role in ROLES}
        ctx = StepContext(oracle, grads, self.perturbation_sync)
        prepared = where.prepare(ctx, states["where"])
        take = when.due(ctx, states["when"])

        def perturbed():
            h = where.gradient(ctx, prepared, states["where"])
            update, carry = how.perturbed(ctx, h, states["how"])
            return update, carry, list(h) if where.keeps_gradient else []

        def plain():
            update, carry = how.plain(ctx, states["how"])
            kept = [ops.zeros_like(g) for g in ctx.grads] if where.keeps_gradient else []
            return update, carry, kept

        (update, carry, kept), flag = ctx.branch(take, perturbed, plain)
        update, finished = how.finish(ctx, update, carry, take, states["how"])
        assignments = (tuple(finished)
                       + tuple(when.assignments(ctx, states["when"]))
                       + tuple(where.assignments(ctx, states["where"])))
        if where.keeps_gradient:
            assignments += tuple(where.finish(ctx, kept, take, states["where"]))
        return Step(list(update), ctx.grad_norm, flag, assignments)

    def get_config(self):
        config = super().get_config()
        config.update({role: serialize(piece) for role, piece in self.pieces().items()})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        kinds = {"where": Perturbation, "how": Combiner, "when": Schedule}
        for role, kind in kinds.items():
            if isinstance(config.get(role), dict):
                config[role] = deserialize(config[role], kind)
        return cls(**config)


def _select(state, variables):
    """`state` with every `PerVariable` part narrowed to `variables`."""
    if isinstance(state, PerVariable):
        return state.select(variables)
    return {k: v.select(variables) if isinstance(v, PerVariable) else v
            for k, v in state.items()}


def _piece(role, piece, kind):
    if not isinstance(piece, kind):
        raise TypeError(
            f"Argument `{role}` must be a {kind.__name__} (see "
            f"keras_flat.algorithms.{role}). Received: {role}={piece!r} of type "
            f"{type(piece).__name__}."
        )
    return piece


def check_streams(pieces):
    """Raises unless every random stream number is used by one piece only."""
    seen = {}
    for role, piece in pieces.items():
        for name, number in piece.STREAMS.items():
            if number in seen:
                raise ValueError(
                    f"Random stream {number} is drawn by both {seen[number]} and "
                    f"{role}={type(piece).__name__} ({name!r}); give one of them "
                    "another number in its STREAMS."
                )
            seen[number] = f"{role}={type(piece).__name__} ({name!r})"
