"""AE-SAM: SAM on the steps whose gradient is unusually large."""

import keras

from keras_flat.algorithms import how
from keras_flat.algorithms import when
from keras_flat.algorithms.sam import SAM


@keras.saving.register_keras_serializable(package="keras_flat")
class AESAM(SAM):
    """Adaptive-policy SAM (Jiang, Yang, Zhang & Kwok, ICLR 2023, arXiv 2304.14647).

    A full SAM step when the squared clean gradient norm is large relative
    to its running mean and standard deviation over this run
    (`‖g‖² >= μ + c·σ`), a plain step otherwise; `c` moves linearly from
    `thresholds[0]` to `thresholds[1]` over the planned steps of `fit`.
    Cost: one gradient plus one more on the steps that trigger.

    Pieces: `when.AdaptiveTrigger(decay, thresholds)`, `where.Ascent(rho)`,
    `how.Replace()`.

    Args:
        rho: Radius of the ascent step, a finite number >= 0. Defaults to
            0.05.
        decay: Forgetting factor of the running statistics, in (0, 1).
            Defaults to 0.9.
        thresholds: `(c_start, c_end)` or one number. Defaults to
            `(-1.0, 1.0)`.
        perturbation_sync: See `SAM`.
        start: Plain steps before this point; see `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, AESAM(rho=0.05))  # doctest: +SKIP
    """

    def __init__(self, rho=0.05, decay=0.9, thresholds=(-1.0, 1.0), perturbation_sync="global",
                 start=None):
        self.trigger = when.AdaptiveTrigger(decay, thresholds)
        self.decay, self.thresholds = self.trigger.decay, self.trigger.thresholds
        super().__init__(rho=rho, perturbation_sync=perturbation_sync, start=start)

    def pieces(self):
        trigger = when.AdaptiveTrigger(self.decay, self.thresholds)
        schedule = trigger if self.start is None else when.AllOf(
            [trigger, when.StartingAt(self.start)])
        return {"when": schedule, "where": self.perturbation_piece(), "how": how.Replace()}

    def get_config(self):
        config = super().get_config()
        del config["interval"]
        config.update(decay=self.decay, thresholds=self.trigger.get_config()["thresholds"])
        return config
