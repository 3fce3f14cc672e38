"""Algorithm 2 of Ahn, Jadbabaie & Sra: sharpness-aware perturbation."""

import keras

from keras_flat.algorithms.example_direction import ExampleDirection
from keras_flat.algorithms.perturbed_step import PerturbationAlgorithm
from keras_flat.validation import check_bool
from keras_flat.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class SharpnessAware(PerturbationAlgorithm):
    """Sharpness-aware perturbation (SA), Algorithm 2 of arXiv 2305.15659.

    At a perturbed step, picks `examples` random examples of the batch
    (the paper uses one), takes the direction `s` of their gradient, a
    random sign `σ = ±1`, evaluates the gradient `h` of the same examples at
    `w + rho*σ*s`, removes from `h` its component along the clean batch
    gradient `g`, and steps along `g + h⊥` (times `perturbed_lr_scale`).
    For a training loss near interpolation, `s` is the top eigenvector of
    the example's rank-one Hessian, which makes the expected drift
    `(rho²/2) P⊥ ∇ tr ∇²f`: d times RS's drift at equal `rho`.

    When the chosen examples' gradient is zero (exactly at an
    interpolating minimum), the direction is taken at a point jittered by
    a random vector of norm `jitter` (the paper's Remark 2), so a zero
    gradient never yields NaN.

    Cost: one batch gradient plus two gradients on `examples` examples per
    perturbed step (a third when the jitter is needed, a third or fourth with
    `antithetic`); plain steps (see `tolerance`) cost one batch gradient. For
    models with BatchNormalization the examples' gradients are taken on the
    whole batch with the other examples' weights set to zero (so BatchNorm
    sees the batch's statistics, as in the clean pass), at the cost of a
    batch gradient each.

    Args:
        rho: Perturbation radius (whole-model norm of `rho*σ*s`).
            Defaults to 0.05.
        tolerance: The paper's ε0: perturb only when the clean whole-model
            gradient norm is at or below it. `None` (default) perturbs at
            every step.
        perturbed_lr_scale: η/η′, the perturbed step size relative to the
            optimizer's learning rate. Defaults to 1.
        project: Project out the clean-gradient component of `h` (the
            paper's rule). Defaults to True.
        examples: How many examples of the batch define the direction, an
            integer >= 1 (1 is the paper's and gives the largest trace
            decrease). A batch smaller than `examples` uses all of it.
        jitter: Norm of the random offset used when the examples' gradient
            is zero, a finite number >= 0. `None` (default) means
            `0.1 * rho`: for a training loss the direction found at the
            jittered point is the example's output gradient whatever the
            jitter's size, and a tenth of `rho` is still resolved by 16-bit
            compute, where exact zeros are common.
        center: Subtract the examples' gradient at `w` (already computed
            for the direction) from `h`. The expected step is unchanged (its
            mean is projected out with the clean gradient), but the
            per-example gradient noise that `h` carries away from
            interpolation is removed, which keeps SA stable at larger
            learning rates. Defaults to False (the paper's rule).
        antithetic: Evaluate `h` at both `w + rho*s` and `w - rho*s` and
            average, instead of at one random sign. The expectation over
            the sign is the same, but the `±rho ∇²f_i s` term, which is
            pure noise unless `s` is parallel to the clean gradient,
            cancels exactly. Costs one more gradient on `examples`
            examples. Defaults to False (the paper's rule).
        perturbation_sync: `"global"` (default) or `"replica"`; see
            `keras_flat.algorithms.Algorithm`.
        interval: Perturb only on every `interval`-th step (1, the
            default, is the paper's rule); see `PerturbationAlgorithm`.
        start: Perturb only from this point of training on; see
            `PerturbationAlgorithm`.

    Pieces: `where.ExampleDirection(rho, examples, jitter, center,
    antithetic)`, `how.AddOrthogonal(project, perturbed_lr_scale)` and the
    schedule of `tolerance`, `interval` and `start`.

    Example:

    >>> algorithm = SharpnessAware(rho=0.05, examples=1)
    >>> model = keras_flat.FlatMinimaModel(inner, algorithm)  # doctest: +SKIP
    """

    def __init__(
        self,
        rho=0.05,
        tolerance=None,
        perturbed_lr_scale=1.0,
        project=True,
        examples=1,
        jitter=None,
        center=False,
        antithetic=False,
        perturbation_sync="global",
        interval=1,
        start=None,
    ):
        super().__init__(
            rho=rho,
            tolerance=tolerance,
            perturbed_lr_scale=perturbed_lr_scale,
            project=project,
            perturbation_sync=perturbation_sync,
            interval=interval,
            start=start,
        )
        self.examples = check_number("examples", examples, minimum=1, integer=True)
        self.jitter = (
            None if jitter is None else check_number("jitter", jitter, minimum=0.0)
        )
        self.center = check_bool("center", center)
        self.antithetic = check_bool("antithetic", antithetic)
        self.pieces()

    @property
    def jitter_radius(self):
        return 0.1 * self.rho if self.jitter is None else self.jitter

    def perturbation_piece(self):
        return ExampleDirection(self.rho, self.examples, self.jitter, self.center,
                                self.antithetic)

    def get_config(self):
        config = super().get_config()
        config.update(
            examples=self.examples, jitter=self.jitter, center=self.center,
            antithetic=self.antithetic,
        )
        return config
