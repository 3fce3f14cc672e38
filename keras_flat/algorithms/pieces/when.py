"""When a step perturbs: schedules and triggers.

A schedule's `due(ctx, state)` returns `None` ("every step") or a scalar
boolean tensor. It must be the same on every replica: it may depend on the
step count (a mirrored variable) and, in `"global"` mode, on the
all-reduced gradient, never on replica-local data. That is what lets a
perturbed branch run collectives inside its conditional.
"""

import keras
import numpy as np
from keras import ops

from keras_flat.algorithms.pieces.base import Schedule
from keras_flat.algorithms.pieces.base import deserialize
from keras_flat.algorithms.pieces.base import serialize
from keras_flat.utils.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class Always(Schedule):
    """Perturbs at every step."""


@keras.saving.register_keras_serializable(package="keras_flat")
class Every(Schedule):
    """Perturbs on every `interval`-th step, counted by `optimizer.iterations`.

    The count is saved with the optimizer, so the schedule survives save and
    resume, and is mirrored across replicas, so they agree without a
    collective. Step 0 perturbs.

    Args:
        interval: An integer >= 1; 1 perturbs at every step.
    """

    def __init__(self, interval=1):
        self.interval = check_interval(interval)

    def due(self, ctx, state):
        if self.interval == 1:
            return None
        return ops.equal(ops.mod(ctx.step, self.interval), 0)

    def expected_fraction(self):
        return 1.0 / self.interval

    def label_parts(self):
        return [f"interval={self.interval}"] if self.interval > 1 else []

    def get_config(self):
        return {"interval": self.interval}


@keras.saving.register_keras_serializable(package="keras_flat")
class GradNormAtMost(Schedule):
    """Perturbs when the clean whole-model gradient norm is at most `tolerance`.

    The paper's ε0 (Ahn, Jadbabaie & Sra): perturbations are for the phase
    near a minimum. In `"global"` mode the norm is the all-reduced
    gradient's, so every replica takes the same branch.

    Args:
        tolerance: A finite number >= 0.
    """

    def __init__(self, tolerance):
        self.tolerance = check_number("tolerance", tolerance, minimum=0.0)

    def due(self, ctx, state):
        return ctx.grad_norm <= ops.cast(self.tolerance, ctx.grad_norm.dtype)

    def get_config(self):
        return {"tolerance": self.tolerance}


@keras.saving.register_keras_serializable(package="keras_flat")
class StartingAt(Schedule):
    """Perturbs from a given point of training on (late-phase flatness).

    Zhou et al., "Sharpness-Aware Minimization Efficiently Selects Flatter
    Minima Late in Training" (ICLR 2025), find that SAM's effect on the
    minimum comes mostly from the end of training; switching a rule on for
    the last part of a run keeps much of it at a fraction of the cost.

    Args:
        start: An integer >= 0, the first step (`optimizer.iterations`) that
            perturbs; or a float in [0, 1), the fraction of the steps `fit`
            plans (epochs × steps per epoch) after which steps perturb. A
            fraction needs `fit` to know its number of steps (arrays, a
            finite dataset, or `steps_per_epoch`).
    """

    def __init__(self, start):
        self.start = check_start(start)

    @property
    def needs_plan(self):
        return isinstance(self.start, float)

    def due(self, ctx, state):
        if isinstance(self.start, float):
            return ctx.progress >= ops.cast(self.start, ctx.progress.dtype)
        return ctx.step >= ops.cast(self.start, ctx.step.dtype)

    def expected_fraction(self):
        return 1.0 - self.start if isinstance(self.start, float) else 1.0

    def label_parts(self):
        return [f"start={self.start:g}"]

    def get_config(self):
        return {"start": self.start}


@keras.saving.register_keras_serializable(package="keras_flat")
class AdaptiveTrigger(Schedule):
    """Perturbs when the squared gradient norm is large for this run (AE-SAM).

    Jiang, Yang, Zhang & Kwok, "An Adaptive Policy to Employ Sharpness-Aware
    Minimization" (ICLR 2023, arXiv 2304.14647): keep exponential moving
    estimates `μ` and `σ²` of the mean and variance of `s = ‖g‖²` and
    perturb when `s >= μ + c·σ`, i.e. in regions where the gradient is
    unusually large (sharp). `c` moves linearly from `threshold_start` at
    the start of `fit` to `threshold_end` at its end: the paper's
    `c_t = (t/T)·λ1 + (1 - t/T)·λ2` is `threshold_start=λ2`,
    `threshold_end=λ1`, and its `λ1 = -1, λ2 = 1` (the defaults) lower the
    threshold over training, so SAM is used more and more often. The first
    step initialises `μ = s`, `σ² = 0`.

    Note that this triggers on a *large* gradient, the opposite of
    `GradNormAtMost` (the paper of Ahn et al. perturbs near minima).

    Args:
        ema_decay: The moving averages' forgetting factor δ in (0, 1).
            Defaults to 0.9.
        threshold_start: `c` at the first step of `fit`, a finite number.
            Defaults to 1.0 (the paper's λ2).
        threshold_end: `c` at the last planned step, a finite number.
            Defaults to -1.0 (the paper's λ1). Equal to `threshold_start`,
            `c` is constant and needs no plan. (The deprecated `thresholds`
            was the pair `(threshold_start, threshold_end)`, or one number
            for both.)
    """

    RENAMED = {"decay": "ema_decay", "thresholds": lambda value: _thresholds(value)}

    def __init__(self, ema_decay=0.9, threshold_start=1.0, threshold_end=-1.0):
        ema_decay = check_number("ema_decay", ema_decay, minimum=0.0, inclusive=False)
        if ema_decay >= 1.0:
            raise ValueError(
                f"Argument `ema_decay` must be < 1. Received: ema_decay={ema_decay!r}.")
        self.ema_decay = ema_decay
        self.threshold_start = check_number("threshold_start", threshold_start)
        self.threshold_end = check_number("threshold_end", threshold_end)

    @property
    def needs_plan(self):
        return self.threshold_start != self.threshold_end

    def init(self, build):
        return {"mean": build.make_variable("norm_mean", ()),
                "variance": build.make_variable("norm_variance", ()),
                "count": build.make_variable("norm_count", ())}

    def _statistics(self, ctx, state):
        s = ops.cast(ops.square(ctx.grad_norm), "float32")
        first = ops.equal(state["count"], 0.0)
        decay = self.ema_decay
        mean = ops.where(first, s, decay * state["mean"] + (1 - decay) * s)
        variance = ops.where(
            first, 0.0, decay * state["variance"] + (1 - decay) * ops.square(s - mean))
        return s, mean, variance

    def threshold(self, ctx):
        """The current `c` (a float32 tensor)."""
        begin, end = self.threshold_start, self.threshold_end
        if begin == end:
            return ops.convert_to_tensor(begin, "float32")
        progress = ops.clip(ops.cast(ctx.progress, "float32"), 0.0, 1.0)
        return begin + (end - begin) * progress

    def due(self, ctx, state):
        s, mean, variance = self._statistics(ctx, state)
        return s >= mean + self.threshold(ctx) * ops.sqrt(variance)

    def assignments(self, ctx, state):
        _, mean, variance = self._statistics(ctx, state)
        return ((state["mean"], mean), (state["variance"], variance),
                (state["count"], state["count"] + 1.0))

    def expected_fraction(self):
        return 0.5  # A guess: the trigger compares the norm with its running mean.

    def get_config(self):
        return {"ema_decay": self.ema_decay, "threshold_start": self.threshold_start,
                "threshold_end": self.threshold_end}


def _thresholds(thresholds):
    """The `threshold_start`/`threshold_end` of the deprecated `thresholds` (a pair or one)."""
    if isinstance(thresholds, (list, tuple)):
        if len(thresholds) != 2:
            raise ValueError(
                "Argument `thresholds` must be a number or a pair (start, end). "
                f"Received: thresholds={thresholds!r}."
            )
        start, end = thresholds
    else:
        start = end = thresholds
    return {"threshold_start": check_number("thresholds", start),
            "threshold_end": check_number("thresholds", end)}



@keras.saving.register_keras_serializable(package="keras_flat")
class AllOf(Schedule):
    """Perturbs when every one of `schedules` says so.

    Args:
        schedules: A list of `Schedule`s (or their configs).
    """

    def __init__(self, schedules):
        self.schedules = [s if isinstance(s, Schedule) else deserialize(s, Schedule)
                          for s in schedules]

    @property
    def needs_plan(self):
        return any(s.needs_plan for s in self.schedules)

    def init(self, build):
        out = {}
        for i, schedule in enumerate(self.schedules):
            made = schedule.init(build.prefixed(f"{i}_"))
            out.update({(i, k): v for k, v in made.items()})
        return out

    def _state(self, state, i):
        return {k[1]: v for k, v in state.items() if k[0] == i}

    def due(self, ctx, state):
        take = None
        for i, schedule in enumerate(self.schedules):
            condition = schedule.due(ctx, self._state(state, i))
            if condition is not None:
                take = condition if take is None else ops.logical_and(take, condition)
        return take

    def assignments(self, ctx, state):
        out = ()
        for i, schedule in enumerate(self.schedules):
            out += tuple(schedule.assignments(ctx, self._state(state, i)))
        return out

    def expected_fraction(self):
        return float(np.prod([s.expected_fraction() for s in self.schedules]))

    def label_parts(self):
        return [part for s in self.schedules for part in s.label_parts()]

    def get_config(self):
        return {"schedules": [serialize(s) for s in self.schedules]}


def schedule(interval=1, tolerance=None, start=None):
    """The schedule of the named rules' `interval`, `tolerance` and `start` arguments.

    A step perturbs when the gradient norm allows it (`tolerance`), it is an
    `interval`-th step, and training has reached `start`.
    """
    parts = []
    if tolerance is not None:
        parts.append(GradNormAtMost(tolerance))
    if interval != 1:
        parts.append(Every(interval))
    if start is not None:
        parts.append(StartingAt(start))
    if not parts:
        return Always()
    return parts[0] if len(parts) == 1 else AllOf(parts)


def check_interval(interval):
    """Validates an `interval` argument: an integer >= 1."""
    return check_number("interval", interval, minimum=1, integer=True)


def check_start(start):
    """Validates a `start` argument: None, an integer >= 0 or a float in [0, 1)."""
    if start is None:
        return None
    if isinstance(start, bool) or not isinstance(start, (int, float)):
        raise TypeError(
            "Argument `start` must be None, an integer step >= 0 or a fraction of "
            f"training in [0, 1). Received: start={start!r} of type {type(start).__name__}."
        )
    if isinstance(start, int):
        return check_number("start", start, minimum=0, integer=True)
    start = check_number("start", start, minimum=0.0)
    if start >= 1.0:
        raise ValueError(
            "Argument `start` as a fraction of training must be in [0, 1); give a step "
            f"count as an integer. Received: start={start!r}."
        )
    return start
