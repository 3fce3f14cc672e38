"""Algorithm 1 of Ahn, Jadbabaie & Sra: randomly smoothed perturbation."""


from keras_flat import vector
from keras_flat.validation import check_bool
from legacy.base import PerturbationAlgorithm


class RandomSmoothing(PerturbationAlgorithm):
    """Randomly smoothed perturbation (RS), Algorithm 1 of arXiv 2305.15659.

    At a perturbed step, draws `u` uniformly from the unit sphere of the
    whole parameter vector, evaluates the batch gradient `h` at `w + rho*u`,
    removes from `h` its component along the clean gradient `g`, and steps
    along `g + h⊥` (times `perturbed_lr_scale`). In expectation
    `h⊥ ≈ (rho²/2) P⊥ ∇(tr ∇²f / d)`, so the step descends the loss while
    drifting along the minima toward a smaller Hessian trace. Cost: two
    gradient evaluations per perturbed step, one per plain step.

    Args:
        rho: Perturbation radius (whole-model Euclidean norm of `rho*u`).
            Random directions are mostly flat in high dimension, so useful
            values are larger than SAM's, e.g. 0.1 to 1 for small nets.
            Defaults to 0.05.
        tolerance: The paper's ε0: perturb only when the clean whole-model
            gradient norm is at or below it. `None` (default) perturbs at
            every step.
        perturbed_lr_scale: η/η′, the perturbed step size relative to the
            optimizer's learning rate (used by plain steps). Defaults to 1.
        project: Project out the clean-gradient component of `h` (the
            paper's rule). Defaults to True.
        antithetic: Average the gradients at `w + rho*u` and `w - rho*u`
            (Zhang et al.'s two-point noise injection): the same expected
            step with the `rho ∇²f u` noise term cancelled exactly, at the
            cost of a third gradient evaluation. Defaults to False (the
            paper's rule).
        perturbation_sync: `"global"` (default) or `"replica"`; see
            `keras_flat.algorithms.Algorithm`.
        interval: Perturb only on every `interval`-th step (1, the
            default, is the paper's rule); see `PerturbationAlgorithm`.

    Example:

    >>> algorithm = RandomSmoothing(rho=0.5, tolerance=1e-2)
    >>> model = keras_flat.FlatMinimaModel(inner, algorithm)  # doctest: +SKIP
    """

    def __init__(
        self,
        rho=0.05,
        tolerance=None,
        perturbed_lr_scale=1.0,
        project=True,
        antithetic=False,
        perturbation_sync="global",
        interval=1,
    ):
        super().__init__(
            rho=rho,
            tolerance=tolerance,
            perturbed_lr_scale=perturbed_lr_scale,
            project=project,
            perturbation_sync=perturbation_sync,
            interval=interval,
        )
        self.antithetic = check_bool("antithetic", antithetic)

    def perturbation(self, oracle, grads, direction, state):
        seed = oracle.seed(1, self.perturbation_sync)
        offset = vector.sphere_like(oracle.variables, seed, self.rho)
        _, h = oracle.gradient(offset=offset)
        if self.antithetic:
            _, behind = oracle.gradient(offset=vector.scale(offset, -1.0))
            h = vector.scale(vector.add(h, behind), 0.5)
        return h

    def get_config(self):
        config = super().get_config()
        config.update(antithetic=self.antithetic)
        return config
