"""Where the perturbed point is, and the gradient there.

A perturbation's `gradient(ctx, prepared, state)` returns the gradient `h`
of the batch at its perturbed point(s), in the oracle's convention (this
replica's contribution). `prepare` runs outside the schedule's conditional,
so it is where a piece may use a collective.
"""

import keras
from keras import ops

from keras_flat import backend
from keras_flat.algorithms.pieces import radius
from keras_flat.algorithms.pieces.base import Perturbation
from keras_flat.utils import vector
from keras_flat.utils.validation import check_bool
from keras_flat.utils.validation import check_fraction
from keras_flat.utils.validation import check_number


class RadiusPerturbation(Perturbation):
    """A perturbation whose size is a radius that may change over training.

    The radius (the attribute named by `RADIUS`) is a number, a schedule of
    the step or a `radius.FollowLearningRate`; see
    `keras_flat.algorithms.radius`. Its state, if any, is kept under
    `"radius"` in the piece's state and updated on every step.
    """

    #: The name of the radius argument and attribute.
    RADIUS = "rho"

    def init(self, build):
        made = radius.init(getattr(self, self.RADIUS), build)
        return {"radius": made} if made else {}

    def radius_at(self, ctx, state):
        """The radius at this step (a number or a float32 scalar tensor)."""
        return radius.value(getattr(self, self.RADIUS), ctx, state.get("radius", {}))

    def assignments(self, ctx, state):
        return radius.assignments(getattr(self, self.RADIUS), ctx, state.get("radius", {}))

    def label_parts(self):
        symbol = {"rho": "ρ", "sigma": "σ"}[self.RADIUS]
        return [f"{symbol}={radius.describe(getattr(self, self.RADIUS))}"]


@keras.saving.register_keras_serializable(package="keras_flat")
class Ascent(RadiusPerturbation):
    """SAM's point: `w + rho·g/‖g‖` (Foret et al., arXiv 2010.01412).

    The first-order worst case of the loss over the whole-model ball of
    radius `rho`. A zero gradient gives a zero offset.

    Args:
        rho: A finite number >= 0, or a schedule (see
            `keras_flat.algorithms.radius`).
    """

    def __init__(self, rho):
        self.rho = radius.check("rho", rho)

    def gradient(self, ctx, prepared, state):
        offset = vector.unit(ctx.view, self.radius_at(ctx, state))[0]
        return list(ctx.gradient(offset=offset)[1])

    def get_config(self):
        return {"rho": radius.config(self.rho)}


@keras.saving.register_keras_serializable(package="keras_flat")
class FriendlyAscent(RadiusPerturbation):
    """F-SAM's point: `w + rho·d/‖d‖`, `d = g - full_gradient_weight·m` (arXiv 2403.12350).

    `m` is an exponential moving average of the past batch gradients, an
    estimate of the full gradient, so the ascent follows the batch
    gradient's stochastic part (Li et al., "Friendly Sharpness-Aware
    Minimization", CVPR 2024). After every step `m ← ema_decay·m +
    (1 - ema_decay)·g`; the first step sets `m = g` and ascends along `g`.

    Args:
        rho: A finite number >= 0, or a schedule (see `radius`).
        full_gradient_weight: σ, a finite number >= 0; 0 is SAM.
        ema_decay: λ, in [0, 1).
    """

    def __init__(self, rho, full_gradient_weight=1.0, ema_decay=0.9):
        self.rho = radius.check("rho", rho)
        self.full_gradient_weight = check_number("full_gradient_weight", full_gradient_weight,
                                                 minimum=0.0)
        self.ema_decay = check_fraction("ema_decay", ema_decay)

    def init(self, build):
        return {**super().init(build), "started": build.make_variable("started", ()),
                "average": build.per_variable(lambda i, v, p: build.make_variable(
                    f"average_{i}", tuple(v.shape)))}

    def gradient(self, ctx, prepared, state):
        weight = self.full_gradient_weight * ops.convert_to_tensor(state["started"])
        average = [ops.cast(state["average"][i], g.dtype) for i, g in enumerate(ctx.view)]
        offset = vector.unit(vector.add(ctx.view, average, -weight), self.radius_at(ctx, state))
        return list(ctx.gradient(offset=offset[0])[1])

    def assignments(self, ctx, state):
        started = ops.convert_to_tensor(state["started"]) > 0.0
        out = [(state["started"], 1.0)]
        for i, g in enumerate(ctx.view):
            m = state["average"][i]
            g = ops.cast(g, m.dtype)
            out.append((m, ops.where(started, self.ema_decay * m + (1.0 - self.ema_decay) * g, g)))
        return super().assignments(ctx, state) + tuple(out)

    def get_config(self):
        return {"rho": radius.config(self.rho), "ema_decay": self.ema_decay,
                "full_gradient_weight": self.full_gradient_weight}


@keras.saving.register_keras_serializable(package="keras_flat")
class ScaledAscent(RadiusPerturbation):
    """ASAM's point: `w + rho·T²g/‖Tg‖`, `T = |w| + eta` (Kwon et al., arXiv 2102.11600).

    The ascent step taken in the coordinates of the normalisation operator
    `T`, which makes the sharpness it penalises invariant to rescaling the
    weights. As in the reference implementation, `T` applies to kernels,
    embeddings and normalisation scales; offsets (biases and normalisation
    `beta`s: `keras_flat.utils.structure.Parameter.offset`) use `T = 1`.

    Args:
        rho: A finite number >= 0, or a schedule (see
            `keras_flat.algorithms.radius`).
        eta: The offset in `T`, a finite number >= 0.
    """

    def __init__(self, rho, eta=0.01):
        self.rho = radius.check("rho", rho)
        self.eta = check_number("eta", eta, minimum=0.0)

    def scales(self, ctx):
        """`T` for each variable (None where `T = 1`)."""
        out = []
        for parameter, value in zip(ctx.parameters(), ctx.variables):
            if parameter.offset:
                out.append(None)
            else:
                dtype = vector.compute_dtype(value.dtype)
                out.append(ops.abs(ops.cast(value, dtype)) + self.eta)
        return out

    def prepare(self, ctx, state):
        # The gradient's norm first, so `view` may be overwritten by the
        # scaled gradient instead of staying alive beside it.
        scales = backend.after(ctx.grad_norm, lambda: self.scales(ctx))
        scaled = [g if t is None else ops.cast(t, g.dtype) * g for g, t in zip(ctx.view, scales)]
        direction, _ = vector.unit(scaled, self.radius_at(ctx, state))
        offset = []
        for d, t in zip(direction, scales):
            if t is not None:
                d = ops.cast(ops.cast(d, t.dtype) * t, d.dtype)
            offset.append(d)
        return offset

    def gradient(self, ctx, prepared, state):
        return list(ctx.gradient(offset=prepared)[1])

    def get_config(self):
        return {"rho": radius.config(self.rho), "eta": self.eta}


@keras.saving.register_keras_serializable(package="keras_flat")
class SphereSample(Perturbation):
    """Algorithm 1's point: `w + rho·u`, `u` uniform on the unit sphere of R^d.

    Args:
        rho: A finite number >= 0 (the whole-model norm of the offset).
        antithetic: Average the gradients at `w + rho·u` and `w - rho·u`:
            the same expected step with the `rho ∇²f u` term cancelled
            exactly, for a third gradient evaluation.
    """

    STREAMS = {"sphere": 1}

    def __init__(self, rho, antithetic=False):
        self.rho = check_number("rho", rho, minimum=0.0)
        self.antithetic = check_bool("antithetic", antithetic)

    def gradient(self, ctx, prepared, state):
        offset = vector.sphere_like(ctx.variables, ctx.seed(self.STREAMS["sphere"]), self.rho)
        _, h = ctx.gradient(offset=offset)
        if self.antithetic:
            _, behind = ctx.gradient(offset=vector.scale(offset, -1.0))
            h = vector.scale(vector.add(h, behind), 0.5)
        return list(h)

    def gradient_evaluations(self, batch_size):
        return 2.0 if self.antithetic else 1.0

    def label_parts(self):
        return [f"ρ={radius.describe(self.rho)}"]

    def variant_options(self):
        return ["antithetic"] if self.antithetic else []

    def get_config(self):
        return {"rho": self.rho, "antithetic": self.antithetic}


@keras.saving.register_keras_serializable(package="keras_flat")
class FilterGaussian(RadiusPerturbation):
    """RWP's point: filter-wise Gaussian noise (Li et al., arXiv 2211.11489).

    Each filter `f` of a kernel (an output unit or channel; see
    `keras_flat.utils.structure`) gets independent normal noise of
    standard deviation `sigma·‖w_f‖`, so the perturbation is relative to
    the scale of each filter. Offsets and normalisation scales are not
    perturbed unless `include_offsets`, in which case each such vector `v`
    gets standard deviation `sigma·‖v‖`.

    With `adaptive=True` this is ARWP's adaptive variance (Li et al., TMLR
    2024, arXiv 2404.00357): each standard deviation is divided by
    `sqrt(1 + adaptation·F)`, with `F ← ema_decay·F + Σ h²` accumulated from the
    *perturbed* gradients `h` of earlier steps (as the official m-ARWP
    code does), summed over each filter of a kernel or embedding and kept
    per element for the other perturbed variables (offsets and
    normalisation parameters with `include_offsets`), so directions with
    large recent gradients are perturbed less. `F` is updated after the
    schedule's conditional from the full-scale `h` (all-reduced in
    `"global"` mode: one more all-reduce of a gradient per step), and only
    on steps that perturb. Its state is one number per filter (per element
    of a perturbed offset).

    Args:
        sigma: Relative standard deviation, a finite number >= 0, or a
            schedule (see `keras_flat.algorithms.radius`).
        include_offsets: Also perturb biases and normalisation parameters.
        adaptive: Use ARWP's adaptive variance.
        adaptation: ARWP's strength of the adaptation (the paper's η), >= 0.
        ema_decay: ARWP's decay of the accumulated squared gradients (the
            paper's β), in [0, 1].
    """

    STREAMS = {"filter_noise": 5}
    RADIUS = "sigma"
    RENAMED = {"eta": "adaptation", "beta": "ema_decay"}

    def __init__(self, sigma, include_offsets=False, adaptive=False, adaptation=0.1,
                 ema_decay=0.99):
        self.sigma = radius.check("sigma", sigma)
        self.include_offsets = check_bool("include_offsets", include_offsets)
        self.adaptive = check_bool("adaptive", adaptive)
        self.adaptation = check_number("adaptation", adaptation, minimum=0.0)
        self.ema_decay = check_number("ema_decay", ema_decay, minimum=0.0)
        if self.ema_decay > 1.0:
            raise ValueError(
                f"Argument `ema_decay` must be <= 1. Received: ema_decay={ema_decay!r}.")
        self.keeps_gradient = self.adaptive

    def _perturbed(self, parameter):
        return self.include_offsets or parameter.kind in ("weight", "embedding")

    def _fisher_axes(self, parameter):
        """The axes a variable's accumulated squared gradient is summed over."""
        if parameter.kind in ("weight", "embedding") or not self._perturbed(parameter):
            return parameter.reduce_axes
        return ()  # A perturbed offset: one sum per element, as the official code.

    def init(self, build):
        state = super().init(build)
        if self.adaptive:
            state["fisher"] = build.per_variable(lambda i, v, p: build.make_variable(
                f"fisher_{i}", _reduced_shape(p.shape, self._fisher_axes(p))))
        return state

    def gradient(self, ctx, prepared, state):
        # One standard normal draw over the whole vector (a few operations
        # however many variables), scaled filter by filter.
        noises = vector.normal_like(ctx.variables, ctx.seed(self.STREAMS["filter_noise"]))
        sigma = self.radius_at(ctx, state)
        offset = []
        for i, (parameter, value) in enumerate(zip(ctx.parameters(), ctx.variables)):
            if not self._perturbed(parameter):
                offset.append(ops.zeros_like(value))
                continue
            w = ops.cast(value, noises[i].dtype)
            std = ops.cast(sigma, w.dtype) * ops.sqrt(
                ops.sum(ops.square(w), axis=parameter.reduce_axes, keepdims=True))
            if self.adaptive:
                fisher = ops.cast(state["fisher"][i], std.dtype)
                std = std / ops.sqrt(1.0 + self.adaptation * fisher)
            offset.append(ops.cast(noises[i] * std, value.dtype))
        return list(ctx.gradient(offset=offset)[1])

    def finish(self, ctx, h, took, state):
        full = ctx.global_view(h)
        out = []
        for i, (parameter, grad) in enumerate(zip(ctx.parameters(), full)):
            if not self._perturbed(parameter):
                continue  # Its sum is never read.
            fisher = state["fisher"][i]
            squares = ops.sum(ops.square(ops.cast(grad, "float32")),
                                    axis=self._fisher_axes(parameter), keepdims=True)
            old = ops.convert_to_tensor(fisher)
            value = self.ema_decay * old + ops.reshape(squares, fisher.shape)
            if took is not None:
                value = ops.where(took, value, old)
            out.append((fisher, value))
        return tuple(out)

    def get_config(self):
        return {"sigma": radius.config(self.sigma), "include_offsets": self.include_offsets,
                "adaptive": self.adaptive, "adaptation": self.adaptation,
                "ema_decay": self.ema_decay}


def _reduced_shape(shape, axes):
    """`shape` with `axes` of size one: one number per slice, broadcastable against it."""
    return tuple(1 if a in axes else d for a, d in enumerate(shape))


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
        needs_jitter = ops.logical_and(subset.active, vector.norm(example_grads) <= _ZERO_NORM)
        direction_grads = backend.branch(needs_jitter, jittered, lambda: example_grads)
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

    def gradient_evaluations(self, batch_size):
        share = min(self.examples, batch_size) / batch_size
        return share * (3.0 if self.antithetic else 2.0)

    def label_parts(self):
        return [f"ρ={self.rho:g}"]

    def variant_options(self):
        return [o for o in ("center", "antithetic") if getattr(self, o)]

    def get_config(self):
        return {"rho": self.rho, "examples": self.examples, "jitter": self.jitter,
                "center": self.center, "antithetic": self.antithetic}
