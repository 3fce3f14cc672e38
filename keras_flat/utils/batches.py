"""Turns the data a user passes to a flatness measurement into fixed batches."""

import itertools

import keras
import numpy as np
import tensorflow as tf


def as_batches(data, batch_size=None, num_batches=None, argument="data"):
    """Returns `data` as a list of `(x, y, sample_weight)` batches of tensors.

    Measurements evaluate the loss on the same batches every time they run,
    so the batches are materialised once, here.

    Args:
        data: One of
            - a tuple `(x, y)` or `(x, y, sample_weight)` of arrays, tensors
              or dicts/lists of them (split into batches of `batch_size`);
            - a batched `tf.data.Dataset` yielding such tuples;
            - a list of such tuples, each one batch.
        batch_size: Examples per batch when splitting arrays; `None` keeps
            the arrays as a single batch.
        num_batches: Keep at most this many batches (`None`: all of them; an
            infinite dataset needs a number).
        argument: The argument name used in error messages.

    Returns:
        A non-empty list of `(x, y, sample_weight)` tuples of tensors
        (`sample_weight` may be None).

    Raises:
        ValueError: if `data` is empty or infinite without `num_batches`.
        TypeError: if `data` is of an unsupported kind.
    """
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("num_batches", num_batches)
    if isinstance(data, tf.data.Dataset):
        batches = _from_dataset(data, num_batches, argument)
    elif isinstance(data, tuple):
        batches = _from_arrays(data, batch_size, argument)
    elif isinstance(data, list) and data and all(isinstance(b, tuple) for b in data):
        batches = [_unpack(b, argument) for b in data]
    elif isinstance(data, keras.utils.PyDataset):
        batches = [_unpack(data[i], argument) for i in range(len(data))]
    else:
        raise TypeError(
            f"Argument `{argument}` must be a tuple (x, y) or (x, y, "
            "sample_weight), a batched tf.data.Dataset, or a list of such "
            f"tuples. Received: {argument}={_short(data)} of type "
            f"{type(data).__name__}."
        )
    if num_batches is not None:
        batches = batches[:num_batches]
    if not batches:
        raise ValueError(
            f"Argument `{argument}` is empty: it yielded no batch. "
            f"Received: {argument}={_short(data)}."
        )
    return batches


def batch_size_of(batch):
    """Number of examples in a `(x, y, sample_weight)` batch."""
    x = batch[0]
    leaf = next(t for t in tf.nest.flatten(x) if t is not None)
    return int(leaf.shape[0])


def _from_dataset(dataset, num_batches, argument):
    if num_batches is None and (
        dataset.cardinality() == tf.data.INFINITE_CARDINALITY
    ):
        raise ValueError(
            f"Argument `{argument}` is an infinite dataset; pass `num_batches` "
            "to say how many batches to measure on."
        )
    iterator = iter(dataset)
    if num_batches is not None:
        iterator = itertools.islice(iterator, num_batches)
    out = []
    for element in iterator:
        if not isinstance(element, (tuple, list)):
            raise ValueError(
                f"Argument `{argument}` must yield (x, y) or (x, y, "
                f"sample_weight) tuples; it yielded {_short(element)}."
            )
        out.append(_unpack(tuple(element), argument))
    return out


def _from_arrays(data, batch_size, argument):
    x, y, sample_weight = _unpack(data, argument)
    total = batch_size_of((x, y, sample_weight))
    if total == 0:
        return []
    size = total if batch_size is None else batch_size
    out = []
    for start in range(0, total, size):
        take = lambda t, start=start: None if t is None else t[start : start + size]  # noqa: E731
        out.append((
            tf.nest.map_structure(take, x),
            tf.nest.map_structure(take, y),
            None if sample_weight is None else sample_weight[start : start + size],
        ))
    return out


def _unpack(batch, argument):
    if len(batch) not in (2, 3):
        raise ValueError(
            f"Argument `{argument}` must hold (x, y) or (x, y, sample_weight) "
            f"tuples; received a tuple of length {len(batch)}."
        )
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(batch))
    convert = lambda t: None if t is None else tf.convert_to_tensor(t)  # noqa: E731
    x = tf.nest.map_structure(convert, x)
    y = tf.nest.map_structure(convert, y)
    sample_weight = convert(sample_weight)
    return x, y, sample_weight


def _check_positive_int(name, value):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"Argument `{name}` must be a positive integer or None. "
            f"Received: {name}={value!r}."
        )


def _short(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
