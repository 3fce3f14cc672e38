"""GSAM: SAM with an ascent along the surrogate gap."""

import keras

from keras_flat.algorithms import how
from keras_flat.algorithms.sam import SAM
from keras_flat.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class GSAM(SAM):
    """Surrogate-gap guided SAM (Zhuang et al., ICLR 2022, arXiv 2203.08065).

    Takes SAM's perturbed gradient `h` at `w + rho·g/‖g‖` and subtracts
    `alpha` times the part of the clean gradient orthogonal to it:
    `h - alpha·(g - <g, ĥ>ĥ)`. The first term lowers the perturbed loss;
    the second lowers the surrogate gap (perturbed minus clean loss, a
    measure of sharpness) without changing the perturbed loss to first
    order. Same cost as SAM. The paper also ties `rho` to the learning-rate
    schedule; here `rho` is constant.

    Pieces: `where.Ascent(rho)`, `how.SurrogateGap(alpha)`.

    Args:
        rho: Radius of the ascent step, a finite number >= 0. Defaults to
            0.05.
        alpha: Weight of the surrogate-gap term, a finite number >= 0
            (0 is SAM). Defaults to 0.1.
        perturbation_sync, interval, start: See `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, GSAM(rho=0.05, alpha=0.1))  # doctest: +SKIP
    """

    def __init__(self, rho=0.05, alpha=0.1, perturbation_sync="global", interval=1, start=None):
        self.alpha = check_number("alpha", alpha, minimum=0.0)
        super().__init__(rho=rho, perturbation_sync=perturbation_sync, interval=interval,
                         start=start)

    def pieces(self):
        return {**super().pieces(), "how": how.SurrogateGap(self.alpha)}

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha)
        return config
