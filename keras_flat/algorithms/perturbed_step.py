"""The family of Ahn, Jadbabaie & Sra's two rules: `g + P⊥h` near a minimum."""

from keras_flat.algorithms import how
from keras_flat.algorithms import when
from keras_flat.algorithms.base import Algorithm
from keras_flat.algorithms.composite import Composite
from keras_flat.algorithms.piece import Perturbation
from keras_flat.validation import check_bool
from keras_flat.validation import check_number


class PerturbationAlgorithm(Composite):
    """Shared arguments of Algorithms 1 and 2 of Ahn, Jadbabaie & Sra.

    Both rules take the paper's two-phase step: when the whole-model
    gradient norm is at or below `tolerance`, they add to the gradient a
    perturbation direction `v` (a gradient at a perturbed point with its
    component along the clean gradient projected out) and scale the step
    by `perturbed_lr_scale`; otherwise they take the plain gradient step.
    Subclasses say where the perturbed point is by overriding
    `perturbation()` (returning a `keras_flat.algorithms.where` piece).

    Pieces: the schedule of `tolerance`, `interval` and `start`; the
    subclass's perturbation; `how.AddOrthogonal(project, perturbed_lr_scale)`.

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
        start: Perturb only from this point of training on: a step (integer)
            or a fraction of the steps `fit` plans (float in [0, 1)); see
            `when.StartingAt`. Defaults to None.
    """

    def __init__(
        self,
        rho,
        tolerance=None,
        perturbed_lr_scale=1.0,
        project=True,
        perturbation_sync="global",
        interval=1,
        start=None,
    ):
        Algorithm.__init__(self, perturbation_sync=perturbation_sync)
        self.rho = check_number("rho", rho, minimum=0.0)
        self.interval = when.check_interval(interval)
        self.tolerance = (
            None if tolerance is None else check_number("tolerance", tolerance, minimum=0.0)
        )
        self.perturbed_lr_scale = check_number(
            "perturbed_lr_scale", perturbed_lr_scale, minimum=0.0, inclusive=False,
        )
        self.project = check_bool("project", project)
        self.start = when.check_start(start)

    def perturbation_piece(self):
        """The `where` piece of this rule.

        Subclasses override it. A subclass written against the earlier
        contract, which overrides `prepare(oracle, grads)` and
        `perturbation(oracle, grads, direction, state)` instead, keeps
        working: those hooks become the piece.
        """
        return _Hooks(self)

    def pieces(self):
        return {
            "when": when.schedule(self.interval, self.tolerance, self.start),
            "where": self.perturbation_piece(),
            "how": how.AddOrthogonal(self.project, self.perturbed_lr_scale),
        }

    def prepare(self, oracle, grads):
        """Earlier-contract hook: work outside the conditional (default: none)."""
        return None

    def perturbation(self, oracle, grads, direction, state):
        """Earlier-contract hook: the perturbation direction `v` of a perturbed step."""
        raise NotImplementedError(
            f"{type(self).__name__} must override perturbation_piece() (or the "
            "earlier perturbation(oracle, grads, direction, state))."
        )

    def get_config(self):
        config = Algorithm.get_config(self)
        config.update(
            rho=self.rho,
            tolerance=self.tolerance,
            perturbed_lr_scale=self.perturbed_lr_scale,
            project=self.project,
            interval=self.interval,
            start=self.start,
        )
        return config


class _Hooks(Perturbation):
    """A subclass's `prepare` and `perturbation` hooks as a `where` piece."""

    def __init__(self, algorithm):
        self.algorithm = algorithm

    def prepare(self, ctx, state):
        return self.algorithm.prepare(ctx.oracle, ctx.grads)

    def gradient(self, ctx, prepared, state):
        return list(self.algorithm.perturbation(ctx.oracle, ctx.grads, ctx.direction, prepared))
