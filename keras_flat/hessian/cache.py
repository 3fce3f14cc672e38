"""Compiled measurement functions kept per model, so repeated calls trace once.

A one-line measurement (`hessian_trace(model, data)`, `surface_2d(model,
data, ...)`, a callback at every epoch) builds a new operator on every call.
The compiled functions take the batches as arguments instead of capturing
them, so they do not depend on the call's data: they live here, keyed by the
model (held weakly: its entry goes when the model does) and then by what
changes a trace (see `compiled_for`). A call with batches of the same shapes,
dtypes and structure reuses them without tracing.
"""

import collections
import warnings
import weakref

# Entries per model; the least recently used goes first (e.g. a new loss
# object at every call would otherwise grow the cache without bound).
MAX_ENTRIES = 8

_CACHE = weakref.WeakKeyDictionary()


def compiled_for(model, key, build):
    """The object cached for `model` under `key`, built by `build()` on first use.

    Args:
        model: A Keras model (the cache holds it weakly).
        key: A hashable description of everything the compiled functions
            depend on besides the model and the call's data, e.g. the loss,
            the training flag, `trainable_key(...)` and `compile_key(model)`.
        build: A function of no argument returning the object to cache. It
            must not hold `model` strongly, or the entry would never go.

    Returns:
        The cached object.
    """
    entries = _CACHE.get(model)
    if entries is None:
        entries = _CACHE[model] = collections.OrderedDict()
    if key in entries:
        entries.move_to_end(key)
        return entries[key]
    value = entries[key] = build()
    while len(entries) > MAX_ENTRIES:
        entries.popitem(last=False)
    return value


def cached_models():
    """How many models have compiled functions cached (for tests)."""
    return len(_CACHE)


def variables_key(variables):
    """Identifies a list of variables (a trainable set changes when layers are frozen).

    The cached object must hold the variables, so that their ids stay theirs.
    """
    return tuple(id(v) for v in variables)


def compile_key(model):
    """What of `model.compile(...)` a traced loss and metrics depend on.

    The loss object itself (a new one at every `compile` with a `Loss`
    instance; held by the key) and the serialized loss, loss weights and
    metrics; the optimizer, whose configuration changes with its learning
    rate, is left out.
    """
    loss = model.loss
    try:
        with warnings.catch_warnings():  # E.g. Keras's warning on serializing a lambda.
            warnings.simplefilter("ignore")
            config = dict(model.get_compile_config())
    except Exception:  # noqa: BLE001 - an unserializable config: never reuse.
        return object()
    config.pop("optimizer", None)
    try:
        hash(loss)
    except TypeError:  # A list or dict of losses: its serialized form is in the config.
        loss = None
    return (loss, repr(sorted(config.items())))
