"""Algorithms 1 and 2 of Ahn, Jadbabaie & Sra (ICML 2024, arXiv 2305.15659)."""

import keras

from keras_flat.algorithms import registry
from keras_flat.algorithms.pieces import how
from keras_flat.algorithms.pieces import when
from keras_flat.algorithms.pieces import where
from keras_flat.algorithms.recipe import Recipe

_PAPER = "Ahn, Jadbabaie & Sra, ICML 2024, arXiv 2305.15659"


@keras.saving.register_keras_serializable(package="keras_flat")
class RandomSmoothing(Recipe):
    """Randomly smoothed perturbation (RS), Algorithm 1 of arXiv 2305.15659.

    At a perturbed step, draws `u` uniformly from the unit sphere of the
    whole parameter vector, evaluates the batch gradient `h` at `w + rho·u`
    (`where.SphereSample`), and steps along `g + P⊥h` times
    `perturbed_lr_scale` (`how.AddOrthogonal`). In expectation
    `P⊥h ≈ (rho²/2) P⊥ ∇(tr ∇²f / d)`: the step descends the loss while
    drifting along the minima toward a smaller Hessian trace. The paper's
    two phases come from `tolerance` (`when.GradNormAtMost`, its ε0). Cost:
    two gradient evaluations per perturbed step, one per plain step.

    Args:
        rho: The sphere's radius. Random directions are mostly flat in high
            dimension, so useful values are larger than SAM's. Defaults to
            0.05.
        tolerance: The paper's ε0; None (default) perturbs at every step.
        perturbed_lr_scale: The paper's η/η′. Defaults to 1.
        project: Project `h` orthogonally to `g`, as the paper does.
        antithetic: Average `h` at `w ± rho·u` (not the paper's rule).
        interval, start, perturbation_sync: As `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, RandomSmoothing(rho=0.5))  # doctest: +SKIP
    """

    @staticmethod
    def recipe(rho=0.05, tolerance=None, perturbed_lr_scale=1.0, project=True,
               antithetic=False, interval=1, start=None):
        return {"where": where.SphereSample(rho, antithetic),
                "how": how.AddOrthogonal(project, perturbed_lr_scale),
                "when": when.schedule(interval, tolerance, start)}


@keras.saving.register_keras_serializable(package="keras_flat")
class SharpnessAware(Recipe):
    """Sharpness-aware perturbation (SA), Algorithm 2 of arXiv 2305.15659.

    At a perturbed step, takes the direction `s` of the gradient of a few
    random examples of the batch (the paper uses one), a random sign `σ`,
    and the gradient `h` of the same examples at `w + rho·σ·s`
    (`where.ExampleDirection`), then steps along `g + P⊥h` times
    `perturbed_lr_scale` (`how.AddOrthogonal`). Near interpolation `s` is
    the top eigenvector of the example's Hessian, so the expected drift is
    `(rho²/2) P⊥ ∇ tr ∇²f`: d times RS's at equal `rho`. Cost: one batch
    gradient plus two gradients of `examples` examples per perturbed step
    (batch-sized passes on models with BatchNormalization, where the
    examples keep their place in the batch).

    Args:
        rho: The perturbation's radius. Defaults to 0.05.
        tolerance: The paper's ε0; None (default) perturbs at every step.
        perturbed_lr_scale: The paper's η/η′. Defaults to 1.
        project: Project `h` orthogonally to `g`, as the paper does.
        examples: How many examples define `s`. Defaults to 1, the paper's.
        jitter, center, antithetic: See `where.ExampleDirection`; `center`
            and `antithetic` depart from the paper's rule.
        interval, start, perturbation_sync: As `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, SharpnessAware(rho=0.05))  # doctest: +SKIP
    """

    @staticmethod
    def recipe(rho=0.05, tolerance=None, perturbed_lr_scale=1.0, project=True, examples=1,
               jitter=None, center=False, antithetic=False, interval=1, start=None):
        return {"where": where.ExampleDirection(rho, examples, jitter, center, antithetic),
                "how": how.AddOrthogonal(project, perturbed_lr_scale),
                "when": when.schedule(interval, tolerance, start)}


registry.register("rs", RandomSmoothing, "RS (Alg. 1)",
                  aliases=("random_smoothing", "randomsmoothing"), defaults={"rho": 2.0},
                  paper=f"{_PAPER}, Algorithm 1")
registry.register("sa", SharpnessAware, "SA (Alg. 2)",
                  aliases=("sharpness_aware", "sharpnessaware"), defaults={"rho": 0.1},
                  paper=f"{_PAPER}, Algorithm 2")
