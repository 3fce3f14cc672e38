"""Where the perturbed point is, and the gradient there.

A perturbation's `gradient(ctx, prepared, state)` returns the gradient `h`
of the batch at its perturbed point(s), in the oracle's convention (this
replica's contribution). `prepare` runs outside the schedule's conditional,
so it is where a piece may use a collective.
"""

import keras
import tensorflow as tf

from keras_flat import vector
from keras_flat.algorithms.example_direction import ExampleDirection  # noqa: F401
from keras_flat.algorithms.piece import Perturbation
from keras_flat.validation import check_bool
from keras_flat.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class Ascent(Perturbation):
    """SAM's point: `w + rho·g/‖g‖` (Foret et al., arXiv 2010.01412).

    The first-order worst case of the loss over the whole-model ball of
    radius `rho`. A zero gradient gives a zero offset.

    Args:
        rho: A finite number >= 0.
    """

    def __init__(self, rho):
        self.rho = check_number("rho", rho, minimum=0.0)

    def gradient(self, ctx, prepared, state):
        return list(ctx.gradient(offset=vector.unit(ctx.view, self.rho)[0])[1])

    def get_config(self):
        return {"rho": self.rho}


@keras.saving.register_keras_serializable(package="keras_flat")
class ScaledAscent(Perturbation):
    """ASAM's point: `w + rho·T²g/‖Tg‖`, `T = |w| + eta` (Kwon et al., arXiv 2102.11600).

    The ascent step taken in the coordinates of the normalisation operator
    `T`, which makes the sharpness it penalises invariant to rescaling the
    weights. As in the reference implementation, `T` applies to kernels,
    embeddings and normalisation scales; offsets (biases and normalisation
    `beta`s: `keras_flat.structure.Parameter.offset`) use `T = 1`.

    Args:
        rho: A finite number >= 0.
        eta: The offset in `T`, a finite number >= 0.
    """

    def __init__(self, rho, eta=0.01):
        self.rho = check_number("rho", rho, minimum=0.0)
        self.eta = check_number("eta", eta, minimum=0.0)

    def scales(self, ctx):
        """`T` for each variable (None where `T = 1`)."""
        out = []
        for parameter, value in zip(ctx.parameters(), ctx.variables):
            if parameter.offset:
                out.append(None)
            else:
                dtype = vector.compute_dtype(value.dtype)
                out.append(tf.abs(tf.cast(value, dtype)) + self.eta)
        return out

    def prepare(self, ctx, state):
        # The gradient's norm first, so `view` may be overwritten by the
        # scaled gradient instead of staying alive beside it.
        with tf.control_dependencies([ctx.grad_norm]):
            scales = self.scales(ctx)
        scaled = [g if t is None else tf.cast(t, g.dtype) * g for g, t in zip(ctx.view, scales)]
        direction, _ = vector.unit(scaled, self.rho)
        offset = []
        for d, t in zip(direction, scales):
            if t is not None:
                d = tf.cast(tf.cast(d, t.dtype) * t, d.dtype)
            offset.append(d)
        return offset

    def gradient(self, ctx, prepared, state):
        return list(ctx.gradient(offset=prepared)[1])

    def get_config(self):
        return {"rho": self.rho, "eta": self.eta}


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

    def get_config(self):
        return {"rho": self.rho, "antithetic": self.antithetic}


@keras.saving.register_keras_serializable(package="keras_flat")
class FilterGaussian(Perturbation):
    """RWP's point: filter-wise Gaussian noise (Li et al., arXiv 2211.11489).

    Each filter `f` of a kernel (an output unit or channel; see
    `keras_flat.structure`) gets independent normal noise of
    standard deviation `sigma·‖w_f‖`, so the perturbation is relative to
    the scale of each filter. Offsets and normalisation scales are not
    perturbed unless `include_offsets`, in which case each such vector `v`
    gets standard deviation `sigma·‖v‖`.

    With `adaptive=True` this is ARWP's adaptive variance (Li et al., TMLR
    2024, arXiv 2404.00357): each filter's standard deviation is divided by
    `sqrt(1 + eta·F_f)`, with `F_f ← beta·F_f + Σ_{i∈f} g_i²` accumulated
    from the clean gradients of earlier steps, so directions with large
    recent gradients are perturbed less. Its state is one number per
    filter.

    Args:
        sigma: Relative standard deviation, a finite number >= 0.
        include_offsets: Also perturb biases and normalisation parameters.
        adaptive: Use ARWP's adaptive variance.
        eta: ARWP's strength of the adaptation, >= 0.
        beta: ARWP's decay of the accumulated squared gradients, in [0, 1].
    """

    STREAMS = {"filter_noise": 5}

    def __init__(self, sigma, include_offsets=False, adaptive=False, eta=0.1, beta=0.99):
        self.sigma = check_number("sigma", sigma, minimum=0.0)
        self.include_offsets = check_bool("include_offsets", include_offsets)
        self.adaptive = check_bool("adaptive", adaptive)
        self.eta = check_number("eta", eta, minimum=0.0)
        self.beta = check_number("beta", beta, minimum=0.0)
        if self.beta > 1.0:
            raise ValueError(f"Argument `beta` must be <= 1. Received: beta={beta!r}.")

    def _perturbed(self, parameter):
        return self.include_offsets or parameter.kind in ("weight", "embedding")

    def init(self, build):
        if not self.adaptive:
            return {}
        # One accumulator per filter (a vector is a single filter).
        return build.per_variable(
            lambda i, v, p: build.make_variable(f"fisher_{i}", _filter_shape(p)))

    def _fisher(self, ctx, state, i, grad):
        axes = ctx.parameters()[i].reduce_axes
        squares = tf.reduce_sum(tf.square(tf.cast(grad, tf.float32)), axis=axes, keepdims=True)
        return tf.reshape(self.beta * tf.reshape(state[i], [-1]) + tf.reshape(squares, [-1]),
                          state[i].shape)

    def gradient(self, ctx, prepared, state):
        # One standard normal draw over the whole vector (a few operations
        # however many variables), scaled filter by filter.
        noises = vector.normal_like(ctx.variables, ctx.seed(self.STREAMS["filter_noise"]))
        offset = []
        for i, (parameter, value) in enumerate(zip(ctx.parameters(), ctx.variables)):
            if not self._perturbed(parameter):
                offset.append(tf.zeros_like(value))
                continue
            w = tf.cast(value, noises[i].dtype)
            std = self.sigma * tf.sqrt(tf.reduce_sum(tf.square(w), axis=parameter.reduce_axes,
                                                     keepdims=True))
            if self.adaptive:
                fisher = tf.reshape(tf.cast(state[i], std.dtype), std.shape)
                std = std / tf.sqrt(1.0 + self.eta * fisher)
            offset.append(tf.cast(noises[i] * std, value.dtype))
        return list(ctx.gradient(offset=offset)[1])

    def assignments(self, ctx, state):
        if not self.adaptive:
            return ()
        return tuple((state[i], self._fisher(ctx, state, i, g))
                     for i, g in enumerate(ctx.view))

    def get_config(self):
        return {"sigma": self.sigma, "include_offsets": self.include_offsets,
                "adaptive": self.adaptive, "eta": self.eta, "beta": self.beta}


def _filter_shape(parameter):
    """The shape of one number per filter, broadcastable against the variable."""
    return tuple(1 if a in parameter.reduce_axes else d
                 for a, d in enumerate(parameter.shape))
