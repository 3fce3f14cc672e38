"""Update rules for `keras_flat.FlatMinimaModel`, and the pieces they are made of.

Pieces, to compose new rules with `Composite(where=..., how=..., when=...)`:
`keras_flat.algorithms.when` (schedules), `.where` (perturbed points) and
`.how` (combiners). A named rule is a `Recipe`: its arguments and the
pieces it makes of them. A new rule is registered once with `register`,
which makes it known to `get`, the command line, the demo and the
registry-driven tests.

Named rules (`names()`; `None` also means "none"), as registered:

{registered_rules}
"""

import keras

from keras_flat.algorithms import config_name
from keras_flat.algorithms import registry
from keras_flat.algorithms import rules  # noqa: F401  (registers the named rules)
from keras_flat.algorithms.base import Algorithm
from keras_flat.algorithms.base import Step
from keras_flat.algorithms.composite import Composite
from keras_flat.algorithms.context import StepContext
from keras_flat.algorithms.oracle import GradientOracle
from keras_flat.algorithms.pieces import how
from keras_flat.algorithms.pieces import radius
from keras_flat.algorithms.pieces import when
from keras_flat.algorithms.pieces import where
from keras_flat.algorithms.pieces.base import BuildContext
from keras_flat.algorithms.recipe import Recipe
from keras_flat.algorithms.registry import label
from keras_flat.algorithms.registry import names
from keras_flat.algorithms.registry import register
from keras_flat.algorithms.rules.aesam import AESAM
from keras_flat.algorithms.rules.ahn import RandomSmoothing
from keras_flat.algorithms.rules.ahn import SharpnessAware
from keras_flat.algorithms.rules.gsam import GSAM
from keras_flat.algorithms.rules.looksam import LookSAM
from keras_flat.algorithms.rules.none import NoPerturbation
from keras_flat.algorithms.rules.rwp import ARWP
from keras_flat.algorithms.rules.rwp import RWP
from keras_flat.algorithms.rules.sam import ASAM
from keras_flat.algorithms.rules.sam import SAM
from keras_flat.algorithms.rules.sam import FriendlySAM

__doc__ = registry.fill_docstring(__doc__)

_CLASSES = {entry.cls.__name__: entry.cls for entry in registry.entries()}
_CLASSES.update(Composite=Composite)


def serialize(algorithm):
    """Returns the Keras config dict of an algorithm."""
    return keras.saving.serialize_keras_object(algorithm)


def deserialize(config, custom_objects=None):
    """Builds an algorithm from the dict `serialize` or its `get_config()` returns."""
    return get(config, custom_objects=custom_objects)


#: The name `get` resolves to `default()`, `FlatMinimaModel`'s `algorithm` default.
DEFAULT = "default"


def default(**overrides):
    """A new instance of the rule `FlatMinimaModel` uses when given none.

    SAM on the steps whose squared gradient norm is at least its running
    mean (`AESAM(rho=0.05, threshold_start=0.0, threshold_end=0.0)`: AE-SAM's
    trigger at a constant threshold, so it needs no planned number of steps
    and works with data of unknown length), plain steps otherwise: 17-42% of
    the steps perturbed on the tasks of `python -m benchmarks.defaults`, so
    1.2-1.4 gradient evaluations per step. Chosen by that panel (3 seeds,
    five tasks trained from scratch and the escape from a sharp minimum): it
    ended flatter than plain training on all five from-scratch tasks and
    within 1.4 points of its test accuracy; no rule at its defaults met the
    target on every task. It does not escape a sharp minimum reached
    already (the paper's setting): use `SharpnessAware` there.
    `benchmarks/RESULTS.md` has the tables.

    Args:
        **overrides: Arguments of `AESAM` replacing these defaults, e.g.
            `rho=0.1`.

    Returns:
        An `AESAM`.

    Example:

    >>> keras_flat.algorithms.default(rho=0.1).get_config()["rho"]
    0.1
    """
    return AESAM(**{"rho": 0.05, "threshold_start": 0.0, "threshold_end": 0.0, **overrides})


def get(identifier, custom_objects=None, **kwargs):
    """Returns an algorithm instance.

    Args:
        identifier: An `Algorithm` instance (returned as is), a registered
            name or alias (see `names()`; case and dashes do not matter),
            `"default"` for `default()`,
            `None` for plain training, a class name, or a config dict: an
            algorithm's `get_config()` (which records the rule's name under
            `"name"`), or `{"class_name": ..., "config": ...}` as returned by
            `serialize`.
        custom_objects: Optional dict of user-defined algorithm classes, for
            dict identifiers.
        **kwargs: Constructor arguments, allowed only with a name. A name
            builds the class with its own defaults (the registry's demo
            defaults are not applied here).

    Returns:
        An `Algorithm`.

    Raises:
        ValueError: for an unknown name, an invalid config, or keyword
            arguments given with an instance or a dict.
        TypeError: for an argument the rule does not take (naming the rule,
            the argument and those it accepts), or any other kind of
            identifier.

    Example:

    >>> keras_flat.algorithms.get("sa", rho=0.1, examples=2)
    SharpnessAware(perturbation_sync='global', rho=0.1, ...)
    >>> keras_flat.algorithms.get(SAM(rho=0.1).get_config())
    SAM(perturbation_sync='global', rho=0.1, interval=1, start=None)
    """
    if identifier is None:
        identifier = "none"
    if isinstance(identifier, Algorithm):
        _no_kwargs(identifier, kwargs)
        return identifier
    if isinstance(identifier, str) and identifier.strip().lower() == DEFAULT:
        return default(**kwargs)
    if isinstance(identifier, str):
        found = registry.lookup(identifier)
        cls = found.cls if found else _CLASSES.get(identifier.strip())
        if cls is None:
            registry.entry(identifier)  # Raises, naming the choices.
        return cls(**kwargs)
    if isinstance(identifier, dict):
        _no_kwargs(identifier, kwargs)
        if "class_name" not in identifier:
            return _build(config_name.class_of(identifier, custom_objects), identifier)
        return _from_dict(identifier, custom_objects)
    raise TypeError(
        "Argument `algorithm` must be an Algorithm instance, a name, a config "
        f"dict or None. Received: algorithm={identifier!r} of type "
        f"{type(identifier).__name__}."
    )


def _from_dict(config, custom_objects):
    name = config["class_name"]
    local = dict(custom_objects or {})
    cls = local.get(name) or _CLASSES.get(name)
    if cls is None and isinstance(name, str) and registry.lookup(name):
        cls = registry.lookup(name).cls
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
    return _build(cls, inner)


def _build(cls, config):
    """`cls.from_config(config)`, with a wrong argument reported as a `ValueError`."""
    if not issubclass(cls, Algorithm):
        raise ValueError(
            f"The config {config!r} names {cls.__name__}, which is not an Algorithm."
        )
    try:
        return cls.from_config(dict(config))
    except TypeError as error:
        raise ValueError(
            f"Invalid config for algorithm {cls.__name__!r}: {config!r}. {error}"
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
    "Composite",
    "Recipe",
    "GradientOracle",
    "NoPerturbation",
    "RandomSmoothing",
    "SharpnessAware",
    "SAM",
    "ASAM",
    "GSAM",
    "LookSAM",
    "AESAM",
    "RWP",
    "ARWP",
    "FriendlySAM",
    "Step",
    "StepContext",
    "BuildContext",
    "when",
    "where",
    "how",
    "radius",
    "register",
    "names",
    "label",
    "get",
    "default",
    "DEFAULT",
    "serialize",
    "deserialize",
]
