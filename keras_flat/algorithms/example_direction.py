"""Algorithm 2's point: along a few examples' gradient, with a random sign."""

import keras
import tensorflow as tf

from keras_flat import vector
from keras_flat.algorithms.piece import Perturbation
from keras_flat.validation import check_bool
from keras_flat.validation import check_number

# Below this norm the examples' gradient counts as zero and the direction is
# taken at a jittered point instead (the paper's Remark 2).
_ZERO_NORM = 1e-30


@keras.saving.register_keras_serializable(package="keras_flat")
class ExampleDirection(Perturbation):
    """SA's point `w + rho·σ·s`: `s` the unit gradient of a few random examples.

    Picks `examples` random examples of the batch, takes the direction `s`
    of their gradient and a random sign `σ = ±1`, and returns the gradient
    `h` of the same examples at `w + rho·σ·s` (Ahn, Jadbabaie & Sra,
    Algorithm 2). When the examples' gradient is zero (exactly at an
    interpolating minimum) the direction is taken at a point jittered by a
    random vector of norm `jitter` (the paper's Remark 2: `jitter·z/√d`,
    `z` uniform on `{−1, +1}^d`), so a zero gradient never yields NaN.

    Args:
        rho: A finite number >= 0.
        examples: How many examples define the direction, an integer >= 1.
        jitter: Norm of the offset used when the examples' gradient is
            zero; `None` means `0.1 * rho`.
        center: Subtract the examples' gradient at `w` from `h`.
        antithetic: Average `h` at `w ± rho·s` instead of one random sign.
    """

    STREAMS = {"examples": 2, "jitter": 3, "sign": 4}

    def __init__(self, rho, examples=1, jitter=None, center=False, antithetic=False):
        self.rho = check_number("rho", rho, minimum=0.0)
        self.examples = check_number("examples", examples, minimum=1, integer=True)
        self.jitter = None if jitter is None else check_number("jitter", jitter, minimum=0.0)
        self.center = check_bool("center", center)
        self.antithetic = check_bool("antithetic", antithetic)

    @property
    def jitter_radius(self):
        return 0.1 * self.rho if self.jitter is None else self.jitter

    def prepare(self, ctx, state):
        # The draw may gather batch sizes across replicas: outside the
        # schedule's conditional. Everything else runs only on perturbed steps.
        seed = ctx.seed(self.STREAMS["examples"])
        return ctx.oracle.sample_subset(self.examples, seed, ctx.sync)

    def gradient(self, ctx, prepared, state):
        subset = prepared
        _, example_grads = ctx.gradient(subset=subset)
        example_grads = list(example_grads)

        def jittered():
            # A random vertex of the hypercube, ±1 in every coordinate, has norm
            # sqrt(d) exactly: scaled, its norm is `jitter` with no reduction.
            signs = vector.rademacher_like(ctx.variables, ctx.seed(self.STREAMS["jitter"]))
            size = sum(int(v.shape.num_elements()) for v in ctx.variables)
            offset = vector.scale(signs, self.jitter_radius / size ** 0.5)
            return list(ctx.gradient(offset=offset, subset=subset)[1])

        # A replica-local condition with no collective inside. The examples
        # all live on one replica (see GradientOracle.sample_subset), so the
        # direction needs no communication: other replicas see zero.
        needs_jitter = tf.logical_and(subset.active, vector.norm(example_grads) <= _ZERO_NORM)
        direction_grads = tf.cond(needs_jitter, jittered, lambda: example_grads)
        s, _ = vector.unit(list(direction_grads))
        if self.antithetic:
            _, ahead = ctx.gradient(offset=vector.scale(s, self.rho), subset=subset)
            _, behind = ctx.gradient(offset=vector.scale(s, -self.rho), subset=subset)
            h = vector.scale(vector.add(ahead, behind), 0.5)
        else:
            sign = vector.random_sign(ctx.seed(self.STREAMS["sign"]))
            _, h = ctx.gradient(offset=vector.scale(s, sign * self.rho), subset=subset)
        if self.center:  # The examples' gradient at w itself, not at a jittered point.
            h = vector.add(h, example_grads, -1.0)
        return list(h)

    def get_config(self):
        return {"rho": self.rho, "examples": self.examples, "jitter": self.jitter,
                "center": self.center, "antithetic": self.antithetic}
