"""Exact second derivatives through Keras's normalization layers.

Keras's TensorFlow backend computes the mean and variance used by
`BatchNormalization` (with batch statistics), `LayerNormalization`,
`GroupNormalization` and `keras.ops.moments` with `tf.nn.moments`, which
forms the variance as `mean((x - stop_gradient(mean(x)))²)`. The
`stop_gradient` changes neither the value nor the first derivative: the
term it drops, `-2/n Σ (x_i - mean) ∂mean`, is zero because the deviations
from the mean sum to zero. So training (which needs first derivatives only)
is exact. The term's *derivative* is not zero, so every second derivative
through these layers is wrong: on `Dense -> LayerNormalization -> Dense`,
shifting all pre-normalization biases together leaves the loss unchanged,
yet the Hessian computed through `tf.nn.moments` is not zero along that
direction.

`exact_second_derivatives()` makes the measurements of `keras_flat.hessian`
exact: while it is active, Keras's backend computes the moments with the
same operations minus the `stop_gradient`, so values and first derivatives
are bit-for-bit the same and second derivatives are those of the function
the layer computes. It replaces one private hook of Keras's TensorFlow
backend (`keras.src.backend.tensorflow.nn._compute_moments`), checked at
first use, and restores it when the outermost active context exits, also
on error. Because values and first derivatives are unchanged, code running
in another thread at the same time (e.g. training) computes exactly what it
would without the context.
"""

import contextlib
import threading

import keras
import tensorflow as tf

_HOOK = "_compute_moments"
_LOCK = threading.RLock()
_state = {"depth": 0, "original": None}


def exact_moments(x, axes, keepdims=False):
    """Mean and biased variance of `x` over `axes`, exact to any order.

    The operations of `tf.nn.moments` without its `stop_gradient`, so the
    values are identical.

    Args:
        x: A floating-point tensor.
        axes: The axes to reduce over.
        keepdims: Keep the reduced axes with length 1.

    Returns:
        `(mean, variance)`.
    """
    y = tf.cast(x, tf.float32) if x.dtype == tf.float16 else x
    mean = tf.reduce_mean(y, axes, keepdims=True)
    variance = tf.reduce_mean(tf.math.squared_difference(y, mean), axes, keepdims=True)
    if not keepdims:
        mean = tf.squeeze(mean, axes)
        variance = tf.squeeze(variance, axes)
    if x.dtype == tf.float16:
        return tf.cast(mean, tf.float16), tf.cast(variance, tf.float16)
    return mean, variance


def _backend_module():
    """Keras's TensorFlow backend `nn` module, after checking its moments hook."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "keras_flat.hessian needs Keras's TensorFlow backend; the active "
            f"backend is {keras.backend.backend()!r}."
        )
    try:
        from keras.src.backend.tensorflow import nn as module
    except ImportError as error:  # pragma: no cover - depends on the Keras layout
        raise RuntimeError(_missing_hook_message()) from error
    moments = getattr(module, "moments", None)
    if not callable(getattr(module, _HOOK, None)) or _HOOK not in getattr(
        getattr(moments, "__code__", None), "co_names", ()
    ):
        raise RuntimeError(_missing_hook_message())
    return module


def _missing_hook_message():
    return (
        "keras_flat.hessian differentiates normalization layers twice by "
        "replacing keras.src.backend.tensorflow.nn._compute_moments while it "
        f"measures, and Keras {keras.__version__} has no such hook (Keras "
        "3.15 has it). Without it the Hessian of any model "
        "with BatchNormalization, LayerNormalization or GroupNormalization "
        "would be wrong, so the measurement stops here. Use a Keras version "
        "whose TensorFlow backend has this hook."
    )


@contextlib.contextmanager
def exact_second_derivatives():
    """Makes Keras's moments (and so normalization layers) exact to second order.

    Re-entrant and thread-safe: the hook is replaced when the first context
    is entered and restored when the last one exits, even on error. Every
    `tf.function` that computes second derivatives must be traced inside it.

    Raises:
        RuntimeError: if the installed Keras lacks the hook (the message
            names the Keras version).

    Example:

    ```python
    with exact_second_derivatives():
        hv = compiled_hvp(v)   # traced (or retraced) inside the context
    ```
    """
    module = _backend_module()
    with _LOCK:
        if _state["depth"] == 0:
            _state["original"] = getattr(module, _HOOK)
            setattr(module, _HOOK, exact_moments)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                setattr(module, _HOOK, _state["original"])
                _state["original"] = None


def is_active():
    """Whether an `exact_second_derivatives()` context is active."""
    return _state["depth"] > 0


def check_active():
    """Raises unless the exact moments are in place (guards every trace)."""
    if not is_active():
        raise RuntimeError(
            "A Hessian measurement was traced outside exact_second_derivatives(); "
            "its second derivatives through normalization layers would be wrong."
        )
