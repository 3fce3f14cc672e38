"""Named rules: a rule's arguments, and the pieces it makes of them."""

import inspect
import numbers

import keras

from keras_flat.algorithms import arguments
from keras_flat.algorithms.base import Algorithm
from keras_flat.algorithms.composite import Composite

_SYNC = inspect.Parameter("perturbation_sync", inspect.Parameter.KEYWORD_ONLY,
                          default="global")
_SELF = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)


class Recipe(Composite):
    """A named rule: a `Composite` built from the rule's own arguments.

    A subclass defines one static method, `recipe`, whose parameters are the
    rule's arguments with their defaults, and which returns its pieces as a
    dict with `"where"` and, optionally, `"how"` and `"when"`. The rule's
    constructor takes those arguments (and `perturbation_sync`); each is
    validated by the piece it is handed to. `get_config` returns them, and
    they read back as attributes (`SAM(rho=0.1).rho`); they are fixed once
    the rule is built. Deprecated arguments are declared in `RENAMED` (see
    `keras_flat.algorithms.arguments.translate`).

    Example:

    ```python
    from keras_flat.algorithms import Recipe, when, where

    @keras.saving.register_keras_serializable(package="my_rules")
    class LateSAM(Recipe):
        '''SAM over the second half of training.'''

        @staticmethod
        def recipe(rho=0.05):
            return {"where": where.Ascent(rho), "when": when.StartingAt(0.5)}

    model = keras_flat.FlatMinimaModel(inner, LateSAM(rho=0.1))
    ```
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "recipe" in vars(cls):
            parameters = list(inspect.signature(cls.recipe).parameters.values())
            cls.__signature__ = inspect.Signature(parameters + [_SYNC])

    @staticmethod
    def recipe():
        """The pieces of the rule: `{"where": ..., "how": ..., "when": ...}`."""
        raise NotImplementedError("A Recipe subclass must define recipe().")

    def __init__(self, *args, **kwargs):
        cls = type(self)
        signature = inspect.signature(cls)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            with_self = signature.replace(parameters=[_SELF, *signature.parameters.values()])
            raise TypeError(arguments.call_error(cls, with_self, args, kwargs, error)) from None
        bound.apply_defaults()
        named = {key: _from_config(value) for key, value in bound.arguments.items()}
        sync = named.pop("perturbation_sync")
        self.__dict__["_named"] = named
        super().__init__(perturbation_sync=sync, **cls.recipe(**named))

    @property
    def arguments(self):
        """The rule's arguments, `{name: value}` (a copy)."""
        return dict(self._named)

    def __getattr__(self, name):
        named = self.__dict__.get("_named", {})
        if name in named:
            return named[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in self.__dict__.get("_named", {}):
            raise AttributeError(
                f"The arguments of {type(self).__name__} are fixed when it is built; build "
                f"a new one instead, e.g. {type(self).__name__}(**{{**rule.arguments, "
                f"{name!r}: {value!r}}})."
            )
        super().__setattr__(name, value)

    def get_config(self):
        config = Algorithm.get_config(self)
        config.update({key: _config_value(value) for key, value in self._named.items()})
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**arguments.translate(cls, config, warn=False))


def _from_config(value):
    """An argument as given, or the Keras object a saved config of one describes."""
    if isinstance(value, dict) and "class_name" in value:
        return keras.saving.deserialize_keras_object(value)
    return value


def _config_value(value):
    """What a config records of an argument: the value, or a Keras object's config."""
    if value is None or isinstance(value, (numbers.Number, str, list, tuple, dict)):
        return value
    return keras.saving.serialize_keras_object(value)
