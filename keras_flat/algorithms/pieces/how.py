"""How the clean and perturbed gradients combine into the update.

A combiner returns `(update, carry)` from both branches of the schedule's
conditional: `perturbed(ctx, h, state)` when the step perturbed (`h` is the
gradient at the perturbed point), `plain(ctx, state)` otherwise. `carry` is
a list of tensors (new values of the combiner's state, or `[]`) written by
`assignments` only if the step is applied. Updates are in the oracle's
convention (this replica's contribution).
"""

import keras
from keras import ops

from keras_flat.algorithms.pieces.base import Combiner
from keras_flat.utils import vector
from keras_flat.utils.validation import check_bool
from keras_flat.utils.validation import check_fraction
from keras_flat.utils.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class Replace(Combiner):
    """The perturbed gradient replaces the clean one (SAM, ASAM)."""

    def perturbed(self, ctx, h, state):
        return list(h), []


@keras.saving.register_keras_serializable(package="keras_flat")
class AddOrthogonal(Combiner):
    """`perturbed_lr_scale·(g + P⊥h)`: the clean gradient plus the perturbed one's new part.

    Ahn, Jadbabaie & Sra's step (Algorithms 1 and 2): `P⊥` removes the
    component along the clean gradient, so the perturbation moves along the
    minima instead of fighting the descent.

    Args:
        project: Apply `P⊥` (the paper's rule).
        perturbed_lr_scale: η/η′, the perturbed step size relative to the
            optimizer's learning rate (which plain steps use), a finite
            number > 0.
    """

    RENAMED = {"scale": "perturbed_lr_scale"}

    def __init__(self, project=True, perturbed_lr_scale=1.0):
        self.project = check_bool("project", project)
        self.perturbed_lr_scale = check_number("perturbed_lr_scale", perturbed_lr_scale,
                                               minimum=0.0, inclusive=False)

    def perturbed(self, ctx, h, state):
        # `add_projected` needs no unit vector of the clean gradient, and
        # writes each product over an input whose last use it is.
        if self.project:
            step = vector.add_projected(ctx.grads, h, ctx.view)
        else:
            step = vector.add(ctx.grads, h)
        if self.perturbed_lr_scale != 1.0:
            step = vector.scale(step, self.perturbed_lr_scale)
        return step, []

    def get_config(self):
        return {"project": self.project, "perturbed_lr_scale": self.perturbed_lr_scale}


@keras.saving.register_keras_serializable(package="keras_flat")
class Mix(Combiner):
    """`(1 - λ)·g + λ·h`, m-RWP's mixed loss (Li et al., arXiv 2211.11489, 2404.00357).

    The gradient of `(1 - λ)·L(w) + λ·L(w + ε)` with `λ = perturbed_weight`,
    the official scripts' `--lambda`.

    Args:
        perturbed_weight: λ, the weight of the perturbed gradient `h`, in
            [0, 1]. Defaults to 0.5. (The deprecated `alpha` was the clean
            gradient's weight, `1 - perturbed_weight`.)
    """

    RENAMED = {"alpha": lambda alpha: {"perturbed_weight": 1.0 - check_fraction("alpha", alpha)}}

    def __init__(self, perturbed_weight=0.5):
        self.perturbed_weight = check_fraction("perturbed_weight", perturbed_weight)

    def perturbed(self, ctx, h, state):
        weight = self.perturbed_weight
        return vector.add(vector.scale(ctx.grads, 1.0 - weight), h, weight), []

    def get_config(self):
        return {"perturbed_weight": self.perturbed_weight}



@keras.saving.register_keras_serializable(package="keras_flat")
class SurrogateGap(Combiner):
    """GSAM's update `h - gap_weight·g⊥` (Zhuang et al., ICLR 2022, arXiv 2203.08065).

    `h` is the gradient at SAM's point and `g⊥ = g - <g, ĥ>ĥ` the part of
    the clean gradient orthogonal to it. Descending `h` lowers the perturbed
    loss; ascending along `g⊥` lowers the surrogate gap (perturbed minus
    clean loss) without changing the perturbed loss to first order.

    `ĥ` is the direction of the full-scale perturbed gradient (all-reduced
    in `"global"` mode, after the conditional; `g⊥` is linear in `g`, so
    contributions stay contributions).

    Args:
        gap_weight: The paper's α, a finite number >= 0; 0 is SAM.
    """

    RENAMED = {"alpha": "gap_weight"}

    def __init__(self, gap_weight=0.1):
        self.gap_weight = check_number("gap_weight", gap_weight, minimum=0.0)

    def perturbed(self, ctx, h, state):
        return list(h), list(h)

    def plain(self, ctx, state):
        return list(ctx.grads), [ops.zeros_like(g) for g in ctx.grads]

    def finish(self, ctx, update, carry, took, state):
        h_direction, _ = vector.unit(ctx.global_view(carry))
        gap = vector.add(update, vector.project_out_unit(ctx.grads, h_direction),
                         -self.gap_weight)
        return _select(took, gap, update), ()

    def get_config(self):
        return {"gap_weight": self.gap_weight}


@keras.saving.register_keras_serializable(package="keras_flat")
class Reuse(Combiner):
    """LookSAM's reuse of the last SAM step between SAM steps (Liu et al., CVPR 2022).

    On a perturbed step (a full SAM step) the update is the perturbed
    gradient `h`, and the unit vector `v̂` of its component orthogonal to the
    clean gradient is stored. On the steps in between the update is
    `g + reuse_weight·‖g‖·v̂`: the clean gradient plus the stored sharpness
    direction at the current gradient's scale ("Towards Efficient and
    Scalable Sharpness-Aware Minimization", arXiv 2203.02714). Before the
    first SAM step `v̂ = 0`. Its state is one weight-sized vector.

    In `"global"` mode under a strategy with several replicas, `v̂` comes
    from the all-reduced orthogonal component, which is summed after the
    conditional on every step (zeros on reuse steps).

    Args:
        reuse_weight: The paper's α, a finite number >= 0.
    """

    RENAMED = {"alpha": "reuse_weight"}

    def __init__(self, reuse_weight=0.7):
        self.reuse_weight = check_number("reuse_weight", reuse_weight, minimum=0.0)

    def init(self, build):
        return build.per_variable(
            lambda i, v, p: build.make_variable(f"direction_{i}", tuple(v.shape)))

    def _stored(self, state):
        return [ops.convert_to_tensor(state[i]) for i in range(len(state))]

    def perturbed(self, ctx, h, state):
        # The orthogonal part is linear in h: contributions sum to the global
        # one. Projected against `view` itself: no unit vector of it is formed.
        return list(h), vector.project_out(h, ctx.view)

    def plain(self, ctx, state):
        extra = vector.scale(self._stored(state), self.reuse_weight * ctx.grad_norm)
        extra = [ops.cast(e, g.dtype) for e, g in zip(extra, ctx.grads)]
        return vector.add(ctx.grads, ctx.contribution(extra)), [ops.zeros_like(g)
                                                                for g in ctx.grads]

    def finish(self, ctx, update, carry, took, state):
        direction, _ = vector.unit(ctx.global_view(carry))
        stored = _select(took, direction, self._stored(state))
        return update, tuple((state[i], ops.cast(v, state[i].dtype))
                             for i, v in enumerate(stored))

    def get_config(self):
        return {"reuse_weight": self.reuse_weight}


def _select(took, a, b):
    """`a` where the step perturbed (`took`; None means always), else `b`."""
    if took is None:
        return list(a)
    return [ops.where(took, ops.cast(x, y.dtype), y) for x, y in zip(a, b)]
