"""SAM and ASAM, the sharpness-aware baselines."""

import keras

from keras_flat.algorithms import how
from keras_flat.algorithms import radius
from keras_flat.algorithms import when
from keras_flat.algorithms import where
from keras_flat.algorithms.base import Algorithm
from keras_flat.algorithms.composite import Composite
from keras_flat.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class SAM(Composite):
    """Sharpness-Aware Minimization (Foret et al., arXiv 2010.01412).

    Each step evaluates the batch gradient `g`, moves to the worst-case
    point `w + rho * g/‖g‖` of the whole-model ball, and hands the gradient
    there to the optimizer. A zero gradient gives a zero perturbation (the
    step is then a plain step). Cost: two gradient evaluations per step, or
    on average `1 + 1/interval` with `interval > 1`.

    Pieces: `where.Ascent(rho)`, `how.Replace()`, and the schedule of
    `interval` and `start`.

    Args:
        rho: Radius of the ascent step, a finite number >= 0. Defaults to
            0.05 (the paper's default). Or a schedule: a
            `keras.optimizers.schedules.LearningRateSchedule` of the step,
            or `radius.FollowLearningRate` (see
            `keras_flat.algorithms.radius`).
        perturbation_sync: `"global"` (default) or `"replica"`; see
            `keras_flat.algorithms.Algorithm`. `"replica"` is the m-sharpness
            variant of the SAM paper's own code.
        interval: Take the SAM step only on every `interval`-th training
            step (counted by `optimizer.iterations`, starting with the
            first) and plain steps in between, as MosaicML Composer's SAM
            does. An integer >= 1; defaults to 1 (every step).
        start: Take plain steps before this point of training: a step
            (integer) or a fraction of the steps `fit` plans (float in
            [0, 1)); see `when.StartingAt`. Defaults to None (from the
            start).

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, SAM(rho=0.05))  # doctest: +SKIP
    """

    def __init__(self, rho=0.05, perturbation_sync="global", interval=1, start=None):
        Algorithm.__init__(self, perturbation_sync=perturbation_sync)
        self.rho = radius.check("rho", rho)
        self.interval = when.check_interval(interval)
        self.start = when.check_start(start)
        self.pieces()

    def perturbation_piece(self):
        return where.Ascent(self.rho)

    def pieces(self):
        return {"when": when.schedule(self.interval, start=self.start),
                "where": self.perturbation_piece(), "how": how.Replace()}

    def get_config(self):
        config = Algorithm.get_config(self)
        config.update(rho=radius.config(self.rho), interval=self.interval, start=self.start)
        return config


@keras.saving.register_keras_serializable(package="keras_flat")
class ASAM(SAM):
    """Adaptive SAM (Kwon et al., arXiv 2102.11600).

    Like SAM, with the ascent step taken in the coordinates of the
    normalisation operator `T_w = |w| + eta`:
    `ε = rho * T_w² g / ‖T_w g‖`, which makes the sharpness it penalises
    invariant to rescaling the weights. As in the reference implementation,
    `T_w` applies to kernels, embeddings and normalisation scales; offsets
    (biases and normalisation `beta`s) use `T_w = 1`. Which variables are
    offsets is read from the layers that own them (`keras_flat.structure`,
    which also says how a custom layer declares its own).

    Pieces: `where.ScaledAscent(rho, eta)`, `how.Replace()`.

    Args:
        rho: Radius of the ascent step, a finite number >= 0 or a schedule
            (see `SAM`). Defaults to 0.5 (the reference default; ASAM's rho
            is about 10x SAM's).
        eta: The offset in `T_w`, a finite number >= 0. Defaults to 0.01.
        perturbation_sync: `"global"` (default) or `"replica"`; see
            `keras_flat.algorithms.Algorithm`.
        interval: Take the ASAM step only on every `interval`-th step; see
            `SAM`.
        start: See `SAM`.

    Example:

    >>> model = keras_flat.FlatMinimaModel(inner, ASAM(rho=0.5))  # doctest: +SKIP
    """

    def __init__(self, rho=0.5, eta=0.01, perturbation_sync="global", interval=1, start=None):
        self.eta = check_number("eta", eta, minimum=0.0)
        super().__init__(rho=rho, perturbation_sync=perturbation_sync, interval=interval,
                         start=start)

    def perturbation_piece(self):
        return where.ScaledAscent(self.rho, self.eta)

    def get_config(self):
        config = super().get_config()
        config.update(eta=self.eta)
        return config
