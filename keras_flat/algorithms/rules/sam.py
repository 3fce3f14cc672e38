"""SAM and the rules that change only its ascent: ASAM and Friendly-SAM."""

import keras

from keras_flat.algorithms import registry
from keras_flat.algorithms.pieces import when
from keras_flat.algorithms.pieces import where
from keras_flat.algorithms.recipe import Recipe


@keras.saving.register_keras_serializable(package="keras_flat")
class SAM(Recipe):
    """Sharpness-Aware Minimization (Foret et al., ICLR 2021, arXiv 2010.01412).

    Each step evaluates the batch gradient `g`, moves to the worst-case
    point `w + rho·g/‖g‖` of the whole-model ball, and hands the gradient
    there to the optimizer. Cost: two gradient evaluations per step, or on
    average `1 + 1/interval`.

    Recipe: `where.Ascent(rho)` and `when.schedule(interval, start=start)`.

    Args:
        rho: The ascent radius (`where.Ascent`). Defaults to 0.05, the
            paper's.
        interval: Perturb every `interval`-th step, plain steps between
            (`when.Every`; MosaicML Composer's SAM interval). Defaults to 1.
        start: Plain steps before this point of training (`when.StartingAt`).
        perturbation_sync: `"global"` or `"replica"` (the SAM paper's
            m-sharpness); see `Algorithm`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, SAM(rho=0.05))  # doctest: +SKIP
    """

    @staticmethod
    def recipe(rho=0.05, interval=1, start=None):
        return {"where": where.Ascent(rho), "when": when.schedule(interval, start=start)}


@keras.saving.register_keras_serializable(package="keras_flat")
class ASAM(Recipe):
    """Adaptive SAM (Kwon et al., ICML 2021, arXiv 2102.11600).

    SAM's ascent taken in the coordinates of `T_w = |w| + eta`, which makes
    the sharpness it penalises invariant to rescaling the weights
    (`where.ScaledAscent`). Same cost as SAM.

    Args:
        rho: The ascent radius. Defaults to 0.5, the reference
            implementation's (ASAM's radius is about 10x SAM's).
        eta: The offset in `T_w` (`where.ScaledAscent`). Defaults to 0.01.
        interval, start, perturbation_sync: As `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, ASAM(rho=0.5))  # doctest: +SKIP
    """

    @staticmethod
    def recipe(rho=0.5, eta=0.01, interval=1, start=None):
        return {"where": where.ScaledAscent(rho, eta),
                "when": when.schedule(interval, start=start)}


@keras.saving.register_keras_serializable(package="keras_flat")
class FriendlySAM(Recipe):
    """Friendly-SAM, F-SAM (Li et al., CVPR 2024, arXiv 2403.12350).

    SAM ascending along the batch gradient minus an estimate of the full
    gradient, a moving average of past batch gradients
    (`where.FriendlyAscent`). Same cost as SAM, plus one weight-sized vector.

    Args:
        rho: The ascent radius. Defaults to 0.05.
        full_gradient_weight: σ, the weight of the removed average.
            Defaults to 1.0, the official code's.
        ema_decay: λ, the average's decay. Defaults to 0.9, the official
            code's.
        interval, start, perturbation_sync: As `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, FriendlySAM(rho=0.05))  # doctest: +SKIP
    """

    @staticmethod
    def recipe(rho=0.05, full_gradient_weight=1.0, ema_decay=0.9, interval=1, start=None):
        return {"where": where.FriendlyAscent(rho, full_gradient_weight, ema_decay),
                "when": when.schedule(interval, start=start)}


registry.register("sam", SAM, "SAM", defaults={"rho": 0.05},
                  paper="Foret et al., ICLR 2021, arXiv 2010.01412")
registry.register("asam", ASAM, "ASAM", defaults={"rho": 0.5},
                  paper="Kwon et al., ICML 2021, arXiv 2102.11600")
registry.register("fsam", FriendlySAM, "F-SAM", aliases=("friendly_sam", "friendlysam"),
                  paper="Li et al., CVPR 2024, arXiv 2403.12350")
