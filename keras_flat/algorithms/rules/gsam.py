"""GSAM: SAM with an ascent along the surrogate gap, its radius tied to the learning rate."""

import numbers

import keras

from keras_flat.algorithms import registry
from keras_flat.algorithms.pieces import how
from keras_flat.algorithms.pieces import radius
from keras_flat.algorithms.pieces import when
from keras_flat.algorithms.pieces import where
from keras_flat.algorithms.recipe import Recipe
from keras_flat.utils.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class GSAM(Recipe):
    """Surrogate-gap guided SAM (Zhuang et al., ICLR 2022, arXiv 2203.08065).

    SAM's perturbed gradient `h` minus `gap_weight` times the part of the
    clean gradient orthogonal to it (`how.SurrogateGap`): descending `h`
    lowers the perturbed loss, the second term lowers the surrogate gap
    without changing the perturbed loss to first order. The radius follows
    the learning rate as in the paper's Algorithm 1 and the official
    `ProportionScheduler`: `rho_t = rho_min + (rho - rho_min)·lr_t/lr_max`
    (`radius.FollowLearningRate`); constant with a constant learning rate.
    Same cost as SAM.

    Args:
        rho: ρ_max, the radius at the largest learning rate; or a schedule
            of its own (see `keras_flat.algorithms.radius`). Defaults to 0.05.
        gap_weight: The paper's α (`how.SurrogateGap`). Defaults to 0.1.
        rho_min: ρ_min, the radius as the learning rate reaches 0, in
            [0, rho]; `rho_min=rho` keeps the radius constant. None
            (default) means 0 for a number `rho`; must be None for a
            schedule.
        interval, start, perturbation_sync: As `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, GSAM(rho=0.05, gap_weight=0.1))  # doctest: +SKIP
    """

    RENAMED = {"alpha": "gap_weight"}

    @staticmethod
    def recipe(rho=0.05, gap_weight=0.1, interval=1, start=None, rho_min=None):
        return {"where": where.Ascent(_ascent_radius(rho, rho_min)),
                "how": how.SurrogateGap(gap_weight), "when": when.schedule(interval, start=start)}

    @classmethod
    def from_config(cls, config):
        if "rho_min" not in config:  # Saved when GSAM's radius was constant.
            config = {**config, "rho_min": config.get("rho", 0.05)}
            if not isinstance(config["rho_min"], numbers.Real):
                config["rho_min"] = None
        return super().from_config(config)


def _ascent_radius(rho, rho_min):
    """`rho`, or `FollowLearningRate(rho, rho_min)` for a number `rho` below which it falls."""
    if not isinstance(rho, numbers.Real) or isinstance(rho, bool):
        if rho_min is not None:
            raise ValueError(
                "Argument `rho_min` applies to a number `rho` only; a schedule sets the "
                f"radius by itself. Received: rho={rho!r}, rho_min={rho_min!r}."
            )
        return rho
    rho_min = 0.0 if rho_min is None else check_number("rho_min", rho_min, minimum=0.0)
    if rho_min > rho:
        raise ValueError(
            f"Argument `rho_min` must be in [0, rho] ({rho!r}). Received: rho_min={rho_min!r}.")
    return rho if rho_min == rho else radius.FollowLearningRate(rho, rho_min)


registry.register("gsam", GSAM, "GSAM", defaults={"rho": 0.05, "gap_weight": 0.1},
                  paper="Zhuang et al., ICLR 2022, arXiv 2203.08065")
