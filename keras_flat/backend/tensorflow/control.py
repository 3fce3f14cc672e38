"""Conditionals, graphs and gradient structures on TensorFlow."""

import tensorflow as tf


def branch(take, perturbed, plain):
    """`perturbed()` or `plain()` as the scalar bool tensor `take` says.

    A `tf.cond`: only the branch taken runs. Its branches must not use
    collectives (under `merge_call` strategies a collective inside a
    replica-context conditional fails).
    """
    return tf.cond(take, perturbed, plain)


def current_graph():
    """The graph being built (a conditional's branch is a graph of its own)."""
    return tf.compat.v1.get_default_graph()


def densify(grads):
    """`grads` with every `tf.IndexedSlices` (an Embedding's gradient) made dense."""
    return [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]


def after(tensor, function):
    """`function()`, its ops made to run after `tensor` is computed.

    Lets a step free a buffer before the next one is allocated (e.g. the
    gradient's norm before a scaled copy of the gradient exists).
    """
    with tf.control_dependencies([tensor]):
        return function()
