"""The `loss=` argument of the Hessian and landscape tools: names, losses, callables."""

import keras
import tensorflow as tf

ALLOWED = (
    "a loss name (e.g. 'mse' or 'sparse_categorical_crossentropy'), a keras.losses.Loss, "
    "a loss config dict, a callable loss(y_true, y_pred), or None (the compiled loss)"
)


def resolve(loss, argument="loss"):
    """Returns `loss` as a callable `loss(y_true, y_pred)`, or None.

    Accepts whatever `keras.losses.get` (and so `model.compile`) accepts: a
    loss name, a `keras.losses.Loss` instance, a serialized loss config, or a
    callable.

    Args:
        loss: The loss, or None.
        argument: The argument name used in error messages.

    Returns:
        None, or a callable.

    Raises:
        ValueError: for an unknown name or config.
        TypeError: for anything else that is not callable.

    Example:

    >>> resolve("mse").__name__
    'mean_squared_error'
    """
    if loss is None:
        return None
    try:
        resolved = keras.losses.get(loss)
    except (ValueError, TypeError) as error:
        kind = ValueError if isinstance(loss, (str, dict)) else TypeError
        raise kind(
            f"Argument `{argument}` must be {ALLOWED}. Received: {argument}={loss!r} "
            f"of type {type(loss).__name__} ({error})."
        ) from None
    if not callable(resolved):
        raise TypeError(
            f"Argument `{argument}` must be {ALLOWED}. Received: {argument}={loss!r}, "
            f"which keras.losses.get turned into the non-callable {resolved!r}."
        )
    return resolved


def cache_key(loss):
    """What identifies `loss` among compiled functions: a name or config by value.

    Objects (losses, callables) are identified by identity: the compiled
    functions keep the object alive, so its `id` is not reused meanwhile.
    """
    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, dict):
        return ("config", repr(loss))
    return ("object", id(loss))


def apply(loss, y, y_pred, sample_weight):
    """The scalar value of a resolved user `loss` on one batch.

    A loss that takes no `sample_weight` (a plain function such as the one
    `"mse"` names) is weighted like Keras's `"sum_over_batch_size"`
    reduction: the weighted per-example values summed, over their number.
    """
    if sample_weight is None:
        value = loss(y, y_pred)
    else:
        try:
            value = loss(y, y_pred, sample_weight=sample_weight)
        except TypeError:
            per_example = loss(y, y_pred)
            value = tf.reduce_sum(per_example * tf.cast(sample_weight, per_example.dtype))
            value = value / tf.cast(tf.size(per_example), value.dtype)
    return tf.reduce_mean(value)
