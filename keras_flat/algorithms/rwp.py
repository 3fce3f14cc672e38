"""RWP and ARWP: random weight perturbation, mixed with the clean gradient."""

import keras

from keras_flat.algorithms import how
from keras_flat.algorithms import radius
from keras_flat.algorithms import when
from keras_flat.algorithms import where
from keras_flat.algorithms.arguments import renamed_config
from keras_flat.algorithms.base import Algorithm
from keras_flat.algorithms.composite import Composite
from keras_flat.validation import check_bool
from keras_flat.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class RWP(Composite):
    """Random weight perturbation, mixed-loss form (Li et al., arXiv 2211.11489).

    The gradient of the mixed loss `(1 - λ)·L(w) + λ·L(w + ε)`, with
    `λ = perturbed_weight` (the official scripts' `--lambda`) and `ε`
    filter-wise Gaussian: each filter (output unit or channel) of a kernel
    gets standard deviation `sigma·‖w_filter‖`; biases and normalisation
    parameters are not perturbed unless `include_offsets`. Like Algorithm 1
    (RS) it perturbs at random, but relative to each filter's scale and
    with a Gaussian instead of a sphere sample, and it mixes the two
    gradients instead of adding the perturbed one's orthogonal part.

    Both gradients are taken on the step's batch. The official scripts
    take them on two consecutive batches (or two devices' batches) and
    count epochs double; here every rule's step is one batch and one
    optimizer update, so `epochs` and `steps_per_epoch` mean the same for
    every rule, and the two gradients are of the same mixed loss. The two
    gradients are independent of each other, so on hardware that can
    overlap them RWP costs about one step; here they run one after the
    other: two gradient evaluations per step.

    Pieces: `where.FilterGaussian(sigma, include_offsets)`,
    `how.Mix(perturbed_weight)` and the schedule of `interval` and `start`.

    Arguments after `sigma` are keyword-only: the second positional
    argument was the clean gradient's weight before `perturbed_weight`
    replaced it, and is refused rather than read the other way round.

    Args:
        sigma: Relative standard deviation of the noise, a finite number
            >= 0 or a schedule (see `keras_flat.algorithms.radius`).
            Defaults to 0.01 (the paper's CIFAR setting).
        perturbed_weight: λ, the weight of the perturbed gradient, in
            [0, 1]: the official scripts' `--lambda`. Defaults to 0.5 (the
            paper's).
        include_offsets: Also perturb biases and normalisation parameters
            (each such vector `v` with standard deviation `sigma·‖v‖`, as
            the official code perturbs every parameter). Defaults to False.
        perturbation_sync: See `Algorithm` (the noise is the same on every
            replica in `"global"` mode).
        interval, start: See `SAM`.
        alpha: Deprecated: the weight of the *clean* gradient,
            `1 - perturbed_weight`. A config saved with `alpha` loads with
            the same mix.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, RWP(sigma=0.01))  # doctest: +SKIP
    """

    adaptive = False
    #: Accepted for one release, never suggested (see `arguments.suggestion`).
    DEPRECATED_ARGUMENTS = ("alpha",)

    def __init__(self, sigma=0.01, *, perturbed_weight=0.5, include_offsets=False,
                 perturbation_sync="global", interval=1, start=None, alpha=None):
        Algorithm.__init__(self, perturbation_sync=perturbation_sync)
        self.sigma = radius.check("sigma", sigma)
        self.perturbed_weight = how.perturbed_weight_argument(perturbed_weight, alpha, 0.5)
        self.include_offsets = check_bool("include_offsets", include_offsets)
        self.interval = when.check_interval(interval)
        self.start = when.check_start(start)
        self.pieces()

    def perturbation_piece(self):
        return where.FilterGaussian(self.sigma, self.include_offsets)

    def pieces(self):
        return {"when": when.schedule(self.interval, start=self.start),
                "where": self.perturbation_piece(), "how": how.Mix(self.perturbed_weight)}

    def get_config(self):
        config = Algorithm.get_config(self)
        config.update(sigma=radius.config(self.sigma), perturbed_weight=self.perturbed_weight,
                      include_offsets=self.include_offsets, interval=self.interval,
                      start=self.start)
        return config

    @classmethod
    def from_config(cls, config):
        return super().from_config(renamed_config(config, how.LEGACY_MIX))


@keras.saving.register_keras_serializable(package="keras_flat")
class ARWP(RWP):
    """RWP with adaptive noise, m-ARWP (Li et al., TMLR 2024, arXiv 2404.00357).

    As `RWP` (the mixed-loss form), with each filter's standard deviation
    divided by `sqrt(1 + eta·F)`, where `F ← beta·F + Σ h²` sums the
    squared *perturbed* gradient over the filter (per element for a
    perturbed offset), accumulated over the steps that perturb, as the
    official m-ARWP code does: directions where the loss has been changing
    fast are perturbed less. The state is one number per filter (no
    weight-sized buffer).

    Pieces: `where.FilterGaussian(sigma, include_offsets, adaptive=True,
    eta, beta)`, `how.Mix(perturbed_weight)`.

    Args:
        sigma: As `RWP`. Defaults to 0.015 (the official m-ARWP scripts').
        perturbed_weight, include_offsets, perturbation_sync, interval,
            start, alpha: See `RWP`.
        eta: Strength of the adaptation, a finite number >= 0. Defaults to
            0.1 (the official scripts').
        beta: Decay of the accumulated squared gradients, in [0, 1].
            Defaults to 0.99 (the official scripts').

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, ARWP(sigma=0.015))  # doctest: +SKIP
    """

    adaptive = True

    def __init__(self, sigma=0.015, *, perturbed_weight=0.5, include_offsets=False, eta=0.1,
                 beta=0.99, perturbation_sync="global", interval=1, start=None, alpha=None):
        self.eta = check_number("eta", eta, minimum=0.0)
        self.beta = check_number("beta", beta, minimum=0.0)
        super().__init__(sigma=sigma, perturbed_weight=perturbed_weight,
                         include_offsets=include_offsets, perturbation_sync=perturbation_sync,
                         interval=interval, start=start, alpha=alpha)

    def perturbation_piece(self):
        return where.FilterGaussian(self.sigma, self.include_offsets, adaptive=True,
                                    eta=self.eta, beta=self.beta)

    def get_config(self):
        config = super().get_config()
        config.update(eta=self.eta, beta=self.beta)
        return config
