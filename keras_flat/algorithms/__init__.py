"""Update rules for `keras_flat.FlatMinimaModel`.

- `RandomSmoothing` ("rs"): Algorithm 1 of Ahn, Jadbabaie & Sra (2024).
- `SharpnessAware` ("sa"): Algorithm 2 of the same paper.
- `SAM` ("sam") and `ASAM` ("asam"): the sharpness-aware baselines.
- `NoPerturbation` ("none", or `None`): plain training.
"""

import keras

from keras_flat.algorithms.base import Algorithm
from keras_flat.algorithms.base import PerturbationAlgorithm
from keras_flat.algorithms.none import NoPerturbation
from keras_flat.algorithms.random_smoothing import RandomSmoothing
from keras_flat.algorithms.sam import ASAM
from keras_flat.algorithms.sam import SAM
from keras_flat.algorithms.sharpness_aware import SharpnessAware

ALIASES = {
    "none": NoPerturbation,
    "plain": NoPerturbation,
    "no_perturbation": NoPerturbation,
    "rs": RandomSmoothing,
    "random_smoothing": RandomSmoothing,
    "randomsmoothing": RandomSmoothing,
    "sa": SharpnessAware,
    "sharpness_aware": SharpnessAware,
    "sharpnessaware": SharpnessAware,
    "sam": SAM,
    "asam": ASAM,
}

_CLASSES = {
    cls.__name__: cls
    for cls in (NoPerturbation, RandomSmoothing, SharpnessAware, SAM, ASAM)
}


def serialize(algorithm):
    """Returns the Keras config dict of an algorithm."""
    return keras.saving.serialize_keras_object(algorithm)


def deserialize(config, custom_objects=None):
    """Builds an algorithm from the config dict `serialize` returns."""
    return get(config, custom_objects=custom_objects)


def get(identifier, custom_objects=None, **kwargs):
    """Returns an algorithm instance.

    Args:
        identifier: An `Algorithm` instance (returned as is), a name
            (`"rs"`/`"random_smoothing"`, `"sa"`/`"sharpness_aware"`,
            `"sam"`, `"asam"`, or `None`/`"none"` for plain training; case
            and dashes do not matter), a class name, or a config dict as
            returned by `serialize` or `{"class_name": ..., "config": ...}`.
        custom_objects: Optional dict of user-defined algorithm classes, for
            dict identifiers.
        **kwargs: Constructor arguments, allowed only with a name.

    Returns:
        An `Algorithm`.

    Raises:
        ValueError: for an unknown name, or keyword arguments given with an
            instance or a dict.
        TypeError: for any other kind of identifier.

    Example:

    >>> keras_flat.algorithms.get("sa", rho=0.1, examples=2)
    SharpnessAware(perturbation_sync='global', rho=0.1, ...)
    """
    if identifier is None:
        identifier = "none"
    if isinstance(identifier, Algorithm):
        _no_kwargs(identifier, kwargs)
        return identifier
    if isinstance(identifier, str):
        key = identifier.strip().lower().replace("-", "_")
        cls = ALIASES.get(key) or _CLASSES.get(identifier.strip())
        if cls is None:
            raise ValueError(
                "Unknown algorithm. Argument `algorithm` must be an Algorithm "
                f"instance, a config dict, None or one of {sorted(ALIASES)}. "
                f"Received: algorithm={identifier!r}."
            )
        return cls(**kwargs)
    if isinstance(identifier, dict):
        _no_kwargs(identifier, kwargs)
        return _from_dict(identifier, custom_objects)
    raise TypeError(
        "Argument `algorithm` must be an Algorithm instance, a name, a config "
        f"dict or None. Received: algorithm={identifier!r} of type "
        f"{type(identifier).__name__}."
    )


def _from_dict(config, custom_objects):
    if "class_name" not in config:
        raise ValueError(
            "An algorithm config dict needs a 'class_name' key. "
            f"Received: algorithm={config!r}."
        )
    name = config["class_name"]
    local = dict(custom_objects or {})
    cls = local.get(name) or _CLASSES.get(name)
    if cls is None and isinstance(name, str):
        cls = ALIASES.get(name.strip().lower().replace("-", "_"))
    if cls is None:
        with keras.saving.custom_object_scope(local):
            cls = keras.saving.get_registered_object(
                name if "registered_name" not in config
                else config["registered_name"] or name
            )
    if cls is None or not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise ValueError(
            f"Unknown algorithm class {name!r} in config {config!r}. Known: "
            f"{sorted(_CLASSES)} (register your own with "
            "`keras.saving.register_keras_serializable`)."
        )
    inner = config.get("config", {})
    if not isinstance(inner, dict):
        raise ValueError(
            f"An algorithm config's 'config' must be a dict. Received: {inner!r}."
        )
    try:
        return cls.from_config(dict(inner))
    except TypeError as error:
        raise ValueError(
            f"Invalid config for algorithm {name!r}: {inner!r}. {error}"
        ) from error


def _no_kwargs(identifier, kwargs):
    if kwargs:
        raise ValueError(
            "Algorithm arguments can only be given with an algorithm name; "
            f"received {sorted(kwargs)} with algorithm={identifier!r}. Set "
            "them on the instance or in the config instead."
        )


__all__ = [
    "Algorithm",
    "PerturbationAlgorithm",
    "NoPerturbation",
    "RandomSmoothing",
    "SharpnessAware",
    "SAM",
    "ASAM",
    "get",
    "serialize",
    "deserialize",
]
