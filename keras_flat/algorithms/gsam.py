"""GSAM: SAM with an ascent along the surrogate gap, its radius tied to the learning rate."""

import keras

from keras_flat.algorithms import how
from keras_flat.algorithms import radius
from keras_flat.algorithms import where
from keras_flat.algorithms.sam import SAM
from keras_flat.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class GSAM(SAM):
    """Surrogate-gap guided SAM (Zhuang et al., ICLR 2022, arXiv 2203.08065).

    Takes SAM's perturbed gradient `h` at `w + rho_t·g/‖g‖` and subtracts
    `alpha` times the part of the clean gradient orthogonal to it:
    `h - alpha·(g - <g, ĥ>ĥ)`. The first term lowers the perturbed loss;
    the second lowers the surrogate gap (perturbed minus clean loss, a
    measure of sharpness) without changing the perturbed loss to first
    order. Same cost as SAM.

    The radius follows the learning rate, as in the paper's Algorithm 1
    (step 0) and the official code's `ProportionScheduler`:
    `rho_t = rho_min + (rho - rho_min)·lr_t / lr_max`, where `lr_t` is the
    optimizer's learning rate at step t and `lr_max` the largest learning
    rate of the run so far (`radius.FollowLearningRate(rho, rho_min)`;
    `lr_min = 0`, the official code's default). With a constant learning
    rate `rho_t = rho`; with a decaying schedule `rho_t` decays with it. A
    schedule given as `rho` is used as it is.

    Pieces: `where.Ascent(radius.FollowLearningRate(rho, rho_min))` (or
    `where.Ascent(rho)` for a schedule or `rho_min == rho`),
    `how.SurrogateGap(alpha)`.

    Args:
        rho: ρ_max, the radius at the largest learning rate, a finite
            number >= 0; or a schedule (a
            `keras.optimizers.schedules.LearningRateSchedule` of the step,
            or a `radius.FollowLearningRate`). Defaults to 0.05.
        alpha: Weight of the surrogate-gap term, a finite number >= 0
            (0 is SAM). Defaults to 0.1.
        perturbation_sync, interval, start: See `SAM`.
        rho_min: ρ_min, the radius as the learning rate reaches 0, a finite
            number in [0, rho]; `rho_min=rho` keeps the radius constant.
            None (default) means 0 for a number `rho`; it must be None for a
            schedule. A config saved before `rho_min` existed loads with
            `rho_min = rho` (the constant radius it had).

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, GSAM(rho=0.05, alpha=0.1))  # doctest: +SKIP
    """

    def __init__(self, rho=0.05, alpha=0.1, perturbation_sync="global", interval=1, start=None,
                 rho_min=None):
        self.alpha = check_number("alpha", alpha, minimum=0.0)
        self.rho_min = _rho_min(radius.check("rho", rho), rho_min)
        super().__init__(rho=rho, perturbation_sync=perturbation_sync, interval=interval,
                         start=start)

    def ascent_radius(self):
        """The radius the ascent uses: `rho`, or `FollowLearningRate(rho, rho_min)`."""
        if self.rho_min is None or self.rho_min == self.rho:
            return self.rho
        return radius.FollowLearningRate(self.rho, self.rho_min)

    def perturbation_piece(self):
        return where.Ascent(self.ascent_radius())

    def pieces(self):
        return {**super().pieces(), "how": how.SurrogateGap(self.alpha)}

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha, rho_min=self.rho_min)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "rho_min" not in config:  # Saved when GSAM's radius was constant.
            rho = config.get("rho", 0.05)
            config["rho_min"] = rho if radius.is_constant(rho) else None
        return super().from_config(config)


def _rho_min(rho, rho_min):
    """Validates `rho_min` against `rho`; returns it (0 for None with a number `rho`)."""
    if not radius.is_constant(rho):
        if rho_min is not None:
            raise ValueError(
                "Argument `rho_min` applies to a number `rho` only; a schedule sets the "
                f"radius by itself. Received: rho={rho!r}, rho_min={rho_min!r}."
            )
        return None
    if rho_min is None:
        return 0.0
    rho_min = check_number("rho_min", rho_min, minimum=0.0)
    if rho_min > rho:
        raise ValueError(
            f"Argument `rho_min` must be in [0, rho] ({rho!r}). Received: rho_min={rho_min!r}."
        )
    return rho_min
