"""RWP and ARWP: random weight perturbation, mixed with the clean gradient."""

import keras

from keras_flat.algorithms import registry
from keras_flat.algorithms.pieces import how
from keras_flat.algorithms.pieces import when
from keras_flat.algorithms.pieces import where
from keras_flat.algorithms.recipe import Recipe


@keras.saving.register_keras_serializable(package="keras_flat")
class RWP(Recipe):
    """Random weight perturbation, mixed-loss form (Li et al., arXiv 2211.11489).

    The gradient of `(1 - λ)·L(w) + λ·L(w + ε)` (`how.Mix`), `ε` filter-wise
    Gaussian noise of standard deviation `sigma·‖w_filter‖`
    (`where.FilterGaussian`). Both gradients are taken on the step's batch
    (the official scripts take two consecutive batches and count epochs
    double). Cost: two gradient evaluations per step.

    Arguments after `sigma` are keyword-only.

    Args:
        sigma: The noise's relative standard deviation. Defaults to 0.01,
            the paper's CIFAR setting.
        perturbed_weight: λ, the official scripts' `--lambda`. Defaults to
            0.5, the paper's.
        include_offsets: Also perturb biases and normalisation parameters.
        interval, start, perturbation_sync: As `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, RWP(sigma=0.01))  # doctest: +SKIP
    """

    RENAMED = how.Mix.RENAMED

    @staticmethod
    def recipe(sigma=0.01, *, perturbed_weight=0.5, include_offsets=False, interval=1,
               start=None):
        return {"where": where.FilterGaussian(sigma, include_offsets),
                "how": how.Mix(perturbed_weight), "when": when.schedule(interval, start=start)}


@keras.saving.register_keras_serializable(package="keras_flat")
class ARWP(Recipe):
    """RWP with adaptive noise, m-ARWP (Li et al., TMLR 2024, arXiv 2404.00357).

    As `RWP`, with each filter's standard deviation divided by
    `sqrt(1 + adaptation·F)`, `F` a decaying sum of the squared perturbed
    gradients over the filter (`where.FilterGaussian(adaptive=True)`): one
    number per filter of state.

    Args:
        sigma: As `RWP`. Defaults to 0.015, the official m-ARWP scripts'.
        adaptation: The paper's η. Defaults to 0.1, the official scripts'.
        ema_decay: The paper's β. Defaults to 0.99, the official scripts'.
        perturbed_weight, include_offsets, interval, start,
            perturbation_sync: As `RWP`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, ARWP(sigma=0.015))  # doctest: +SKIP
    """

    RENAMED = {**how.Mix.RENAMED, **where.FilterGaussian.RENAMED}

    @staticmethod
    def recipe(sigma=0.015, *, perturbed_weight=0.5, include_offsets=False, adaptation=0.1,
               ema_decay=0.99, interval=1, start=None):
        return {"where": where.FilterGaussian(sigma, include_offsets, adaptive=True,
                                              adaptation=adaptation, ema_decay=ema_decay),
                "how": how.Mix(perturbed_weight), "when": when.schedule(interval, start=start)}


registry.register("rwp", RWP, "RWP", defaults={"sigma": 0.01},
                  paper="Li et al., arXiv 2211.11489")
registry.register("arwp", ARWP, "ARWP", defaults={"sigma": 0.015},
                  paper="Li et al., TMLR 2024, arXiv 2404.00357")
