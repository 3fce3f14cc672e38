"""LookSAM: a full SAM step every few steps, its sharpness direction reused between."""

import keras

from keras_flat.algorithms import registry
from keras_flat.algorithms.pieces import how
from keras_flat.algorithms.pieces import when
from keras_flat.algorithms.pieces import where
from keras_flat.algorithms.recipe import Recipe


@keras.saving.register_keras_serializable(package="keras_flat")
class LookSAM(Recipe):
    """LookSAM (Liu et al., CVPR 2022, arXiv 2203.02714).

    Every `interval`-th step is a full SAM step, which stores the direction
    of its perturbed gradient's part orthogonal to the clean gradient; the
    steps between cost one gradient and add that direction, at the current
    gradient's scale times `reuse_weight` (`how.Reuse`). Cost: about
    `1 + 1/interval` gradient evaluations per step, plus one weight-sized
    vector.

    Args:
        rho: The ascent radius. Defaults to 0.05.
        interval: The paper's k. Defaults to 5, the paper's.
        reuse_weight: The paper's α. Defaults to 0.7, the paper's.
        start, perturbation_sync: As `SAM` (before `start`, no reuse either).

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, LookSAM(rho=0.05, interval=5))  # doctest: +SKIP
    """

    RENAMED = {"k": "interval", "alpha": "reuse_weight"}

    @staticmethod
    def recipe(rho=0.05, interval=5, reuse_weight=0.7, start=None):
        return {"where": where.Ascent(rho), "how": how.Reuse(reuse_weight),
                "when": when.schedule(interval, start=start)}


registry.register("looksam", LookSAM, "LookSAM", aliases=("look_sam",),
                  defaults={"rho": 0.05, "interval": 5},
                  paper="Liu et al., CVPR 2022, arXiv 2203.02714")
