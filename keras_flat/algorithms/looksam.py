"""LookSAM: a full SAM step every k steps, its sharpness direction reused between."""

import keras

from keras_flat.algorithms import how
from keras_flat.algorithms import when
from keras_flat.algorithms.sam import SAM
from keras_flat.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class LookSAM(SAM):
    """LookSAM (Liu et al., CVPR 2022, arXiv 2203.02714).

    Every `k`-th step is a full SAM step, and the unit vector `v̂` of the
    part of its perturbed gradient orthogonal to the clean gradient is
    stored. The `k - 1` steps in between cost one gradient: they apply
    `g + alpha·‖g‖·v̂`, reusing the last SAM step's sharpness direction at
    the current gradient's scale. Cost: about `1 + 1/k` gradient
    evaluations per step, plus one stored weight-sized vector.

    Pieces: `when.Every(k)`, `where.Ascent(rho)`, `how.Reuse(alpha)`.

    Args:
        rho: Radius of the ascent step, a finite number >= 0. Defaults to
            0.05.
        k: Take a full SAM step every `k` steps, an integer >= 1. Defaults
            to 5 (the paper's).
        alpha: Weight of the reused direction, a finite number >= 0.
            Defaults to 0.7 (the paper's).
        perturbation_sync: See `SAM`.
        start: Plain steps (no reuse either) before this point; see `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, LookSAM(rho=0.05, k=5))  # doctest: +SKIP
    """

    def __init__(self, rho=0.05, k=5, alpha=0.7, perturbation_sync="global", start=None):
        self.k = when.check_interval(k, "k")
        self.alpha = check_number("alpha", alpha, minimum=0.0)
        super().__init__(rho=rho, perturbation_sync=perturbation_sync, interval=1, start=start)

    def pieces(self):
        schedule = when.schedule(self.k, start=self.start)
        return {"when": schedule, "where": self.perturbation_piece(), "how": how.Reuse(self.alpha)}

    def get_config(self):
        config = super().get_config()
        del config["interval"]
        config.update(k=self.k, alpha=self.alpha)
        return config
