"""Which rule an algorithm's config describes: the `"name"` key of `get_config()`.

As a Keras optimizer's config records the name `keras.optimizers.get`
accepts (`{"name": "adam", ...}`), every algorithm's `get_config()` records
the name `keras_flat.algorithms.get` resolves: the registered name of a
registered rule (`"sam"`), else the class's Keras registered name
(`"my_package>MyRule"`, or `"MyRule"` for a class not registered with
Keras). So a bare `get_config()` dict builds the same rule again, wherever
a config dict is accepted.

Names are matched exactly (registered names are lower case, Keras
registered names keep their case), so a config never resolves to another
class that happens to be spelt alike. `from_config` drops the name after
checking it, and a config without it (saved before configs recorded it)
still loads through the class or a `{"class_name": ..., "config": ...}`
dict.
"""

import difflib
import functools

import keras

from keras_flat.algorithms import registry

KEY = "name"


def name_of(cls):
    """The name a config of `cls` records: registered, else Keras registered."""
    entry = registry.by_class(cls)
    return entry.name if entry else keras.saving.get_registered_name(cls)


def find(name, custom_objects=None):
    """The class a recorded `name` stands for, or None.

    Args:
        name: A config's `"name"`.
        custom_objects: Optional dict of user-defined classes by name.
    """
    if not isinstance(name, str):
        return None
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    entry = registry.lookup(name)
    if entry is not None and registry.normalize(name) == name:
        return entry.cls
    return keras.saving.get_registered_object(name, custom_objects=custom_objects)


def class_of(config, custom_objects=None):
    """The class a bare `get_config()` dict describes.

    Raises:
        ValueError: if the dict has no `"name"`, or the name is unknown;
            the message says how to pass a class of one's own.
    """
    if KEY not in config:
        raise ValueError(
            "An algorithm config dict needs the key 'name' that every algorithm's "
            "get_config() records, or the keys 'class_name' and 'config' that "
            f"keras_flat.algorithms.serialize() returns. Received: algorithm={config!r}. "
            "A config without either (saved before configs recorded the name) loads "
            "through its class: e.g. keras_flat.algorithms.SAM.from_config(config)."
        )
    name = config[KEY]
    cls = find(name, custom_objects)
    if isinstance(cls, type):
        return cls
    known = sorted({key for entry in registry.entries() for key in (entry.name,) + entry.aliases})
    close = difflib.get_close_matches(registry.normalize(str(name)), known, n=1)
    raise ValueError(
        f"Unknown algorithm name {name!r} in config {config!r}."
        + (f" Did you mean {close[0]!r}?" if close else "")
        + f" Registered names: {known}. For a class of your own, pass "
        f"custom_objects={{{name!r}: YourClass}} or register it with "
        "keras.saving.register_keras_serializable."
    )


def without_name(cls, config):
    """`config` without its `"name"`, after checking the name is `cls`'s.

    Raises:
        ValueError: if the config names another rule.
    """
    config = dict(config)
    name = config.pop(KEY, None)
    if name is None or name == name_of(cls) or find(name) is cls:
        return config
    other = find(name)
    raise ValueError(
        f"{cls.__name__}.from_config received the config of {name!r}"
        + (f" ({other.__name__})" if isinstance(other, type) else "")
        + f", not of {cls.__name__} ({name_of(cls)!r}). Build it with "
        "keras_flat.algorithms.get(config), which reads the name."
    )


def recording(get_config):
    """Wraps a `get_config` so its dict starts with the rule's name."""

    @functools.wraps(get_config)
    def wrapper(self):
        return {KEY: name_of(type(self)), **get_config(self)}

    return wrapper


def reading(from_config):
    """Wraps a `from_config` classmethod so it checks and drops the name first."""
    function = from_config.__func__

    @functools.wraps(function)
    def wrapper(cls, config):
        return function(cls, without_name(cls, config))

    return classmethod(wrapper)
