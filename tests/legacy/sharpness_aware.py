"""Algorithm 2 of Ahn, Jadbabaie & Sra: sharpness-aware perturbation."""

import tensorflow as tf

from keras_flat import vector
from keras_flat.validation import check_bool
from keras_flat.validation import check_number
from legacy.base import PerturbationAlgorithm

# Below this norm a per-example gradient counts as zero and the direction
# is taken at a jittered point instead (the paper's Remark 2).
_ZERO_NORM = 1e-30


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
    ):
        super().__init__(
            rho=rho,
            tolerance=tolerance,
            perturbed_lr_scale=perturbed_lr_scale,
            project=project,
            perturbation_sync=perturbation_sync,
            interval=interval,
        )
        self.examples = check_number("examples", examples, minimum=1, integer=True)
        self.jitter = (
            None if jitter is None else check_number("jitter", jitter, minimum=0.0)
        )
        self.center = check_bool("center", center)
        self.antithetic = check_bool("antithetic", antithetic)

    @property
    def jitter_radius(self):
        return 0.1 * self.rho if self.jitter is None else self.jitter

    def prepare(self, oracle, grads):
        # The draw may gather batch sizes across replicas: outside the
        # tolerance conditional. Everything else runs only on perturbed steps.
        sync = self.perturbation_sync
        return oracle.sample_subset(self.examples, oracle.seed(2, sync), sync)

    def perturbation(self, oracle, grads, direction, state):
        subset, sync = state, self.perturbation_sync
        _, example_grads = oracle.gradient(subset=subset)
        example_grads = list(example_grads)

        def jittered():
            offset = vector.sphere_like(
                oracle.variables, oracle.seed(3, sync), self.jitter_radius
            )
            return list(oracle.gradient(offset=offset, subset=subset)[1])

        # A replica-local condition with no collective inside. The examples
        # all live on one replica (see GradientOracle.sample_subset), so the
        # direction needs no communication: other replicas see zero.
        needs_jitter = tf.logical_and(subset.active, vector.norm(example_grads) <= _ZERO_NORM)
        direction_grads = tf.cond(needs_jitter, jittered, lambda: example_grads)
        s, _ = vector.unit(list(direction_grads))
        if self.antithetic:
            _, ahead = oracle.gradient(offset=vector.scale(s, self.rho), subset=subset)
            _, behind = oracle.gradient(offset=vector.scale(s, -self.rho), subset=subset)
            h = vector.scale(vector.add(ahead, behind), 0.5)
        else:
            sign = vector.random_sign(oracle.seed(4, sync))
            _, h = oracle.gradient(offset=vector.scale(s, sign * self.rho), subset=subset)
        if self.center:  # The examples' gradient at w itself, not at a jittered point.
            h = vector.add(h, example_grads, -1.0)
        return h

    def get_config(self):
        config = super().get_config()
        config.update(
            examples=self.examples, jitter=self.jitter, center=self.center,
            antithetic=self.antithetic,
        )
        return config
