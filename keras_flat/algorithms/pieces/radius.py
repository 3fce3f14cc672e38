"""Perturbation radii that change over training: a number, a schedule, or the learning rate.

A rule's radius (`rho` of SAM, ASAM, GSAM, LookSAM and AE-SAM; `sigma` of
RWP and ARWP) may be

- a finite number >= 0: the same radius at every step;
- a `keras.optimizers.schedules.LearningRateSchedule`, or any Keras
  serializable callable of the step: evaluated at each step at the
  optimizer's `iterations` (before the step's update). It is traced once;
  the step counter is a mirrored variable, so every replica gets the same
  radius, with or without XLA;
- a `FollowLearningRate(maximum, minimum)`: the radius tracks the
  optimizer's current learning rate, `maximum` at the largest learning rate
  and `minimum` at `learning_rate_min` (GSAM's rule, Zhuang et al., ICLR
  2022, Algorithm 1).

A rule's config records a number as a number and anything else as its Keras
config, so it is saved with the model and rebuilt on load.

Example:

```python
decay = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10_000)
model = keras_flat.FlatMinimaModel(inner, keras_flat.algorithms.SAM(rho=decay))
```
"""

import numbers

import keras
from keras import ops

from keras_flat.utils.validation import check_number


@keras.saving.register_keras_serializable(package="keras_flat")
class FollowLearningRate:
    """A radius proportional to the optimizer's learning rate (GSAM's `ρ_t`).

    `radius = minimum + (maximum - minimum)·(lr - lr_min)/(lr_max - lr_min)`,
    clipped to `[minimum, maximum]`, where `lr` is the optimizer's current
    learning rate (`optimizer.learning_rate`: a schedule's value at this
    step, or the value a callback set), `lr_min` is `learning_rate_min`
    and `lr_max` is `learning_rate_max` or, when that is None, the largest
    learning rate of the run so far (a state variable saved with the model;
    it restarts when the trainable variables change and the state is
    rebuilt). With a constant learning rate the radius is `maximum`; during
    a warm-up it stays `maximum` unless `learning_rate_max` is given, since
    each learning rate is then the largest so far.

    Args:
        maximum: The radius at `lr_max`, a finite number >= 0.
        minimum: The radius at `lr_min`, a finite number in [0, maximum].
        learning_rate_max: The peak learning rate, a finite number >
            `learning_rate_min`, or None (default) for the largest seen.
        learning_rate_min: The learning rate at which the radius is
            `minimum`, a finite number >= 0. Defaults to 0 (the official
            GSAM code's default).
    """

    def __init__(self, maximum, minimum=0.0, learning_rate_max=None, learning_rate_min=0.0):
        self.maximum = check_number("maximum", maximum, minimum=0.0)
        self.minimum = check_number("minimum", minimum, minimum=0.0)
        if self.minimum > self.maximum:
            raise ValueError(
                f"Argument `minimum` must be <= maximum ({self.maximum!r}). "
                f"Received: minimum={minimum!r}."
            )
        self.learning_rate_min = check_number("learning_rate_min", learning_rate_min,
                                              minimum=0.0)
        self.learning_rate_max = None
        if learning_rate_max is not None:
            self.learning_rate_max = check_number("learning_rate_max", learning_rate_max,
                                                  minimum=0.0)
            if self.learning_rate_max <= self.learning_rate_min:
                raise ValueError(
                    "Argument `learning_rate_max` must be > learning_rate_min "
                    f"({self.learning_rate_min!r}). Received: "
                    f"learning_rate_max={learning_rate_max!r}."
                )

    def init(self, build):
        if self.learning_rate_max is not None:
            return {}
        return {"learning_rate_max": build.make_variable("learning_rate_max", ())}

    def _peak(self, ctx, state):
        """`(lr, lr_max)` of this step, float32 scalars."""
        lr = ctx.learning_rate
        if self.learning_rate_max is not None:
            return lr, ops.convert_to_tensor(self.learning_rate_max, "float32")
        return lr, ops.maximum(ops.cast(state["learning_rate_max"], "float32"), lr)

    def value(self, ctx, state):
        lr, peak = self._peak(ctx, state)
        span = peak - self.learning_rate_min
        fraction = ops.divide_no_nan(lr - self.learning_rate_min, span)
        fraction = ops.where(span > 0.0, ops.clip(fraction, 0.0, 1.0), 1.0)
        return self.minimum + (self.maximum - self.minimum) * fraction

    def assignments(self, ctx, state):
        if self.learning_rate_max is not None:
            return ()
        return ((state["learning_rate_max"], self._peak(ctx, state)[1]),)

    def get_config(self):
        return {"maximum": self.maximum, "minimum": self.minimum,
                "learning_rate_max": self.learning_rate_max,
                "learning_rate_min": self.learning_rate_min}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(repr(self))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"FollowLearningRate({args})"


class _Schedule:
    """A callable of the step, evaluated at the optimizer's iterations."""

    def __init__(self, schedule):
        self.schedule = schedule

    def init(self, build):
        return {}

    def value(self, ctx, state):
        return ops.cast(self.schedule(ctx.step), "float32")

    def assignments(self, ctx, state):
        return ()


def check(name, value):
    """Validates a radius argument; returns a number, a schedule or a `FollowLearningRate`.

    Args:
        name: The argument's name, for errors.
        value: A finite number >= 0, a `LearningRateSchedule` (or another
            Keras serializable callable of the step), a `FollowLearningRate`,
            or the Keras config of one of these (as a rule's config stores
            it).

    Raises:
        TypeError: for anything else, naming the argument and the value.
        ValueError: for a negative or non-finite number.
    """
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if isinstance(value, FollowLearningRate) or (callable(value) and hasattr(value, "get_config")
                                                 and not isinstance(value, type)):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a finite number >= 0, a "
            "keras.optimizers.schedules.LearningRateSchedule (or another serializable "
            "callable of the step), or keras_flat.algorithms.radius.FollowLearningRate. "
            f"Received: {name}={value!r} of type {type(value).__name__}."
        )
    return check_number(name, value, minimum=0.0)


def describe(value):
    """A radius for a label: `0.05` (a `FollowLearningRate`'s maximum), or a schedule's class."""
    if isinstance(value, FollowLearningRate):
        value = value.maximum
    return f"{value:g}" if is_constant(value) else type(value).__name__


def is_constant(value):
    """Whether a checked radius is a plain number."""
    return isinstance(value, numbers.Real)


def _tracker(value):
    if isinstance(value, FollowLearningRate):
        return value
    return _Schedule(value)


def init(value, build):
    """The state a radius keeps (`FollowLearningRate`'s largest learning rate), or `{}`."""
    return {} if is_constant(value) else _tracker(value).init(build)


def value(radius, ctx, state):
    """The radius at this step: the number itself, or a float32 scalar tensor."""
    return radius if is_constant(radius) else _tracker(radius).value(ctx, state)


def assignments(radius, ctx, state):
    """`(variable, value)` pairs updating the radius's state (every step)."""
    return () if is_constant(radius) else tuple(_tracker(radius).assignments(ctx, state))


def config(radius):
    """What a rule's config records: the number, or the Keras config of the object."""
    return radius if is_constant(radius) else keras.saving.serialize_keras_object(radius)
