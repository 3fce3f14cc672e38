"""AE-SAM: SAM on the steps whose gradient is unusually large."""

import keras

from keras_flat.algorithms import registry
from keras_flat.algorithms.pieces import when
from keras_flat.algorithms.pieces import where
from keras_flat.algorithms.recipe import Recipe


@keras.saving.register_keras_serializable(package="keras_flat")
class AESAM(Recipe):
    """Adaptive-policy SAM (Jiang, Yang, Zhang & Kwok, ICLR 2023, arXiv 2304.14647).

    A SAM step when the squared clean gradient norm is large against its
    running mean and deviation over this run (`when.AdaptiveTrigger`), a
    plain step otherwise. The defaults are the paper's `λ1 = -1, λ2 = 1`:
    the threshold falls from 1 to -1 over the planned steps of `fit`.
    Cost: one gradient plus one more on the steps that trigger.

    Args:
        rho: The ascent radius. Defaults to 0.05.
        ema_decay: The running statistics' decay δ. Defaults to 0.9.
        threshold_start: The threshold at the start of `fit`, the paper's
            λ2. Defaults to 1.0.
        threshold_end: The threshold at its end, the paper's λ1. Defaults
            to -1.0.
        start, perturbation_sync: As `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, AESAM(rho=0.05))  # doctest: +SKIP
    """

    RENAMED = when.AdaptiveTrigger.RENAMED

    @staticmethod
    def recipe(rho=0.05, ema_decay=0.9, *, threshold_start=1.0, threshold_end=-1.0,
               start=None):
        trigger = when.AdaptiveTrigger(ema_decay, threshold_start, threshold_end)
        schedule = trigger if start is None else when.AllOf([trigger, when.StartingAt(start)])
        return {"where": where.Ascent(rho), "when": schedule}


registry.register("aesam", AESAM, "AE-SAM", aliases=("ae_sam",), defaults={"rho": 0.05},
                  paper="Jiang et al., ICLR 2023, arXiv 2304.14647")
