"""SAM and ASAM, the sharpness-aware baselines."""

import tensorflow as tf

from keras_flat import vector
from keras_flat.validation import check_number
from legacy.base import Algorithm
from legacy.base import check_interval
from legacy.base import due

# Variables ASAM does not rescale: biases and normalisation offsets, the
# Keras counterparts of the parameters named "bias" in the reference code.
_NON_ADAPTIVE_NAMES = ("bias", "beta")


class SAM(Algorithm):
    """Sharpness-Aware Minimization (Foret et al., arXiv 2010.01412).

    Each step evaluates the batch gradient `g`, moves to the worst-case
    point `w + rho * g/‖g‖` of the whole-model ball, and hands the gradient
    there to the optimizer. A zero gradient gives a zero perturbation (the
    step is then a plain step). Cost: two gradient evaluations per step, or
    on average `1 + 1/interval` with `interval > 1`.

    Args:
        rho: Radius of the ascent step, a finite number >= 0. Defaults to
            0.05 (the paper's default).
        perturbation_sync: `"global"` (default) or `"replica"`; see
            `keras_flat.algorithms.Algorithm`. `"replica"` is the m-sharpness
            variant of the SAM paper's own code.
        interval: Take the SAM step only on every `interval`-th training
            step (counted by `optimizer.iterations`, starting with the
            first) and plain steps in between, as MosaicML Composer's SAM
            does. An integer >= 1; defaults to 1 (every step).

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, SAM(rho=0.05))  # doctest: +SKIP
    """

    def __init__(self, rho=0.05, perturbation_sync="global", interval=1):
        super().__init__(perturbation_sync=perturbation_sync)
        self.rho = check_number("rho", rho, minimum=0.0)
        self.interval = check_interval(interval)

    def ascent(self, oracle, view):
        """`(ε, ‖view‖)`: the perturbation for the gradient `view`, and its norm."""
        return vector.unit(view, self.rho)

    def compute_update(self, oracle, grads):
        view = oracle.global_view(list(grads), self.perturbation_sync)
        offset, grad_norm = self.ascent(oracle, view)
        take = due(oracle, self.interval)
        if take is None:
            return list(oracle.gradient(offset=offset)[1]), grad_norm, tf.constant(1.0)
        update = tf.cond(take, lambda: list(oracle.gradient(offset=offset)[1]),
                         lambda: list(grads))
        return list(update), grad_norm, tf.cast(take, tf.float32)

    def get_config(self):
        config = super().get_config()
        config.update(rho=self.rho, interval=self.interval)
        return config


class ASAM(SAM):
    """Adaptive SAM (Kwon et al., arXiv 2102.11600).

    Like SAM, with the ascent step taken in the coordinates of the
    normalisation operator `T_w = |w| + eta`:
    `ε = rho * T_w² g / ‖T_w g‖`, which makes the sharpness it penalises
    invariant to rescaling the weights. As in the reference implementation,
    `T_w` applies to kernels, embeddings and normalisation scales; biases and
    normalisation offsets (variables named `bias` or `beta`) use `T_w = 1`.

    Args:
        rho: Radius of the ascent step, a finite number >= 0. Defaults to
            0.5 (the reference default; ASAM's rho is about 10x SAM's).
        eta: The offset in `T_w`, a finite number >= 0. Defaults to 0.01.
        perturbation_sync: `"global"` (default) or `"replica"`; see
            `keras_flat.algorithms.Algorithm`.
        interval: Take the ASAM step only on every `interval`-th step; see
            `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, ASAM(rho=0.5))  # doctest: +SKIP
    """

    def __init__(self, rho=0.5, eta=0.01, perturbation_sync="global", interval=1):
        super().__init__(rho=rho, perturbation_sync=perturbation_sync, interval=interval)
        self.eta = check_number("eta", eta, minimum=0.0)

    def ascent(self, oracle, view):
        grad_norm = vector.norm(view)
        # The norm first, so `view` may be overwritten by the scaled gradient
        # instead of staying alive beside it.
        with tf.control_dependencies([grad_norm]):
            scales = []
            for variable, value in zip(oracle.trainable_variables, oracle.variables):
                if is_adaptive(variable):
                    dtype = vector.compute_dtype(value.dtype)
                    scales.append(tf.abs(tf.cast(value, dtype)) + self.eta)
                else:
                    scales.append(None)
        scaled = [g if t is None else tf.cast(t, g.dtype) * g
                  for g, t in zip(view, scales)]
        direction, _ = vector.unit(scaled, self.rho)
        out = []
        for d, t in zip(direction, scales):
            if t is not None:
                d = tf.cast(tf.cast(d, t.dtype) * t, d.dtype)
            out.append(d)
        return out, grad_norm

    def get_config(self):
        config = super().get_config()
        config.update(eta=self.eta)
        return config


def is_adaptive(variable):
    """Whether ASAM rescales `variable` (kernels, embeddings, scales)."""
    name = getattr(variable, "name", "") or ""
    return name.split("/")[-1].split(":")[0] not in _NON_ADAPTIVE_NAMES
