"""A radius argument's value at a step: a number, a schedule or the learning rate."""

import numbers

import keras
import numpy as np


def radius_at(value, point):
    """The radius a piece uses at `point`'s step.

    Args:
        value: The radius as the piece's config records it: a number, or
            the Keras config of a `radius.FollowLearningRate` or of a
            schedule of the step.
        point: The `Point` of the step (its step, learning rate and the
            largest learning rate of the run before it).
    """
    if isinstance(value, numbers.Real):
        return float(value)
    if value.get("class_name") == "FollowLearningRate":
        return _follow_learning_rate(value["config"], point)
    # Any other schedule is a Keras serializable callable of the step.
    schedule = keras.saving.deserialize_keras_object(value)
    return float(np.asarray(schedule(point.step)))


def _follow_learning_rate(config, point):
    """GSAM's ρ_t = ρ_min + (ρ_max - ρ_min)·(lr - lr_min)/(lr_max - lr_min), clipped.

    `lr_max` is `learning_rate_max`, or the largest learning rate of the
    run so far, this step's included (so a constant learning rate gives
    ρ_max).
    """
    lr, lr_min = point.learning_rate, config["learning_rate_min"]
    peak = config["learning_rate_max"]
    if peak is None:
        peak = max(point.largest_learning_rate, lr)
    span = peak - lr_min
    fraction = 1.0 if span <= 0 else min(max((lr - lr_min) / span, 0.0), 1.0)
    return config["minimum"] + (config["maximum"] - config["minimum"]) * fraction
