"""RWP and ARWP: random weight perturbation, mixed with the clean gradient."""

import keras

from keras_flat.algorithms import how
from keras_flat.algorithms import when
from keras_flat.algorithms import where
from keras_flat.algorithms.base import Algorithm
from keras_flat.algorithms.composite import Composite
from keras_flat.validation import check_bool
from keras_flat.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class RWP(Composite):
    """Random weight perturbation (Li, Zhuang, et al., arXiv 2211.11489).

    The gradient of the mixed loss `alpha·L(w) + (1 - alpha)·L(w + ε)`,
    with `ε` filter-wise Gaussian: each filter (output unit or channel) of a
    kernel gets standard deviation `sigma·‖w_filter‖`; biases and
    normalisation parameters are not perturbed unless `include_offsets`.
    Like Algorithm 1 (RS) it perturbs at random, but relative to each
    filter's scale and with a Gaussian instead of a sphere sample, and it
    mixes the two gradients instead of adding the perturbed one's
    orthogonal part. The two gradients are independent of each other, so on
    hardware that can overlap them RWP costs about one step. Here they run
    one after the other: two gradient evaluations per step.

    Pieces: `where.FilterGaussian(sigma, include_offsets)`,
    `how.Mix(alpha)` and the schedule of `interval` and `start`.

    Args:
        sigma: Relative standard deviation of the noise, a finite number
            >= 0. Defaults to 0.01 (the paper's CIFAR setting).
        alpha: Weight of the clean gradient in [0, 1]. Defaults to 0.5
            (the paper's).
        include_offsets: Also perturb biases and normalisation parameters
            (each such vector `v` with standard deviation `sigma·‖v‖`).
            Defaults to False.
        perturbation_sync: See `Algorithm` (the noise is the same on every
            replica in `"global"` mode).
        interval, start: See `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, RWP(sigma=0.01))  # doctest: +SKIP
    """

    adaptive = False

    def __init__(self, sigma=0.01, alpha=0.5, include_offsets=False,
                 perturbation_sync="global", interval=1, start=None):
        Algorithm.__init__(self, perturbation_sync=perturbation_sync)
        self.sigma = check_number("sigma", sigma, minimum=0.0)
        self.alpha = how.check_fraction("alpha", alpha)
        self.include_offsets = check_bool("include_offsets", include_offsets)
        self.interval = when.check_interval(interval)
        self.start = when.check_start(start)
        self.pieces()

    def perturbation_piece(self):
        return where.FilterGaussian(self.sigma, self.include_offsets)

    def pieces(self):
        return {"when": when.schedule(self.interval, start=self.start),
                "where": self.perturbation_piece(), "how": how.Mix(self.alpha)}

    def get_config(self):
        config = Algorithm.get_config(self)
        config.update(sigma=self.sigma, alpha=self.alpha,
                      include_offsets=self.include_offsets, interval=self.interval,
                      start=self.start)
        return config


@keras.saving.register_keras_serializable(package="keras_flat")
class ARWP(RWP):
    """RWP with adaptive, gradient-informed noise (Li et al., TMLR 2024, arXiv 2404.00357).

    As `RWP` (the mixed-loss form, m-ARWP), with each filter's standard
    deviation divided by `sqrt(1 + eta·F)`, where `F ← beta·F + Σ g²` sums
    the squared clean gradient over the filter, accumulated over steps:
    directions where the loss has been changing fast are perturbed less.
    The state is one number per filter (no weight-sized buffer).

    Pieces: `where.FilterGaussian(sigma, include_offsets, adaptive=True,
    eta, beta)`, `how.Mix(alpha)`.

    Args:
        sigma, alpha, include_offsets, perturbation_sync, interval, start:
            See `RWP`.
        eta: Strength of the adaptation, a finite number >= 0. Defaults to
            0.1.
        beta: Decay of the accumulated squared gradients, in [0, 1].
            Defaults to 0.99.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, ARWP(sigma=0.01))  # doctest: +SKIP
    """

    adaptive = True

    def __init__(self, sigma=0.01, alpha=0.5, include_offsets=False, eta=0.1, beta=0.99,
                 perturbation_sync="global", interval=1, start=None):
        self.eta = check_number("eta", eta, minimum=0.0)
        self.beta = check_number("beta", beta, minimum=0.0)
        super().__init__(sigma=sigma, alpha=alpha, include_offsets=include_offsets,
                         perturbation_sync=perturbation_sync, interval=interval, start=start)

    def perturbation_piece(self):
        return where.FilterGaussian(self.sigma, self.include_offsets, adaptive=True,
                                    eta=self.eta, beta=self.beta)

    def get_config(self):
        config = super().get_config()
        config.update(eta=self.eta, beta=self.beta)
        return config
