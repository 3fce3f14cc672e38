"""AE-SAM: SAM on the steps whose gradient is unusually large."""

import keras

from keras_flat.algorithms import how
from keras_flat.algorithms import when
from keras_flat.algorithms.arguments import renamed_config
from keras_flat.algorithms.sam import SAM


@keras.saving.register_keras_serializable(package="keras_flat")
class AESAM(SAM):
    """Adaptive-policy SAM (Jiang, Yang, Zhang & Kwok, ICLR 2023, arXiv 2304.14647).

    A full SAM step when the squared clean gradient norm is large relative
    to its running mean and standard deviation over this run
    (`‖g‖² >= μ + c·σ`), a plain step otherwise; `c` moves linearly from
    `threshold_start` to `threshold_end` over the planned steps of `fit`.
    The defaults are the paper's `c_t = (t/T)·λ1 + (1 - t/T)·λ2` with
    `λ1 = -1, λ2 = 1`: the threshold falls from 1 to -1, so SAM is used
    more often late in training. Cost: one gradient plus one more on the
    steps that trigger.

    Pieces: `when.AdaptiveTrigger(decay, threshold_start, threshold_end)`,
    `where.Ascent(rho)`, `how.Replace()`.

    Args:
        rho: Radius of the ascent step, a finite number >= 0 or a schedule
            (see `SAM`). Defaults to 0.05.
        decay: Forgetting factor of the running statistics, in (0, 1).
            Defaults to 0.9.
        threshold_start: `c` at the start of `fit`. Defaults to 1.0 (the
            paper's λ2).
        threshold_end: `c` at the end of `fit`. Defaults to -1.0 (the
            paper's λ1).
        perturbation_sync: See `SAM`.
        start: Plain steps before this point; see `SAM`.
        thresholds: Deprecated: `(threshold_start, threshold_end)`, or one
            number for both. A config saved with it loads with the schedule
            it had.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, AESAM(rho=0.05))  # doctest: +SKIP
    """

    #: Accepted for one release, never suggested (see `arguments.suggestion`).
    DEPRECATED_ARGUMENTS = ("thresholds",)

    def __init__(self, rho=0.05, decay=0.9, *, threshold_start=1.0, threshold_end=-1.0,
                 perturbation_sync="global", start=None, thresholds=None):
        self.trigger = when.AdaptiveTrigger(decay, threshold_start, threshold_end, thresholds)
        self.decay = self.trigger.decay
        self.threshold_start = self.trigger.threshold_start
        self.threshold_end = self.trigger.threshold_end
        super().__init__(rho=rho, perturbation_sync=perturbation_sync, start=start)

    def pieces(self):
        trigger = when.AdaptiveTrigger(self.decay, self.threshold_start, self.threshold_end)
        schedule = trigger if self.start is None else when.AllOf(
            [trigger, when.StartingAt(self.start)])
        return {"when": schedule, "where": self.perturbation_piece(), "how": how.Replace()}

    def get_config(self):
        config = super().get_config()
        del config["interval"]
        config.update(decay=self.decay, threshold_start=self.threshold_start,
                      threshold_end=self.threshold_end)
        return config

    @classmethod
    def from_config(cls, config):
        return super().from_config(renamed_config(config, when.LEGACY_THRESHOLDS))
