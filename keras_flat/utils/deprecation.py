"""Renamed arguments, config keys and names: the old ones work for one release.

Every renamed name in the package goes through these helpers, so each old
name warns the same way (a `DeprecationWarning` naming the old and the new
name), and giving both the old and the new name is an error that names both.
`docs/glossary.md` lists the names in use and what they mean.
"""

import functools
import inspect
import os
import sys
import warnings

#: The release after which the old names stop working.
REMOVAL = "the next release"


def message(old, new, what="Argument"):
    """The warning's text: `Argument `k` is deprecated ...; use `num_eigenvalues` instead.`"""
    return (f"{what} `{old}` is deprecated and will be removed in {REMOVAL}; "
            f"use `{new}` instead.")


# The package root (this file is keras_flat/utils/deprecation.py).
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def warn_renamed(old, new, what="Argument"):
    """Warns that `old` was renamed to `new`.

    The warning is attributed to the first caller outside `keras_flat`
    (the user's line), however deep inside the package the old name was
    translated, so Python's default filters show it in a script.

    Args:
        old: The old name.
        new: The name to use instead.
        what: What was renamed, for the message (`"Argument"`, `"Name"`).
    """
    warnings.warn(message(old, new, what), DeprecationWarning, stacklevel=_outside_level())


def _outside_level():
    """The `stacklevel` of `warnings.warn` (called by our caller) that names user code."""
    frame, level = sys._getframe(2), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def both_given(owner, old, new):
    """The `TypeError` for a call that passes a renamed argument under both names."""
    return TypeError(
        f"{owner} got both `{old}` (the deprecated name) and `{new}` (its new name); "
        f"pass only `{new}`."
    )


def rename_keywords(owner, kwargs, renames, given=()):
    """`kwargs` with each old key of `renames` replaced by its new one, warning once per key.

    Args:
        owner: The function or class, for messages (e.g. `"top_eigenvalues()"`).
        kwargs: The keyword arguments as given.
        renames: `{old: new}`.
        given: Names the call already gives otherwise (e.g. by position).

    Returns:
        A new dict.

    Raises:
        TypeError: if both the old and the new name of an argument are given.
    """
    kwargs = dict(kwargs)
    for old, new in renames.items():
        if old not in kwargs:
            continue
        if new in kwargs or new in given:
            raise both_given(owner, old, new)
        warn_renamed(old, new)
        kwargs[new] = kwargs.pop(old)
    return kwargs


def renamed_arguments(**renames):
    """Decorator: keyword arguments renamed `old="new"` keep working, with a warning.

    The decorated function's signature (as `inspect.signature` and `help`
    show it) has only the new names. A call with an old name warns with a
    `DeprecationWarning` naming the old and the new name and runs as if the
    new name had been given; a call that gives both (the new one by keyword
    or by position) raises a `TypeError` naming both.

    Works on functions and on methods such as `__init__`.

    Args:
        **renames: `old_name="new_name"`; each new name must be a parameter
            of the function (or it must take `**kwargs`).

    Example:

    ```python
    @renamed_arguments(k="num_eigenvalues")
    def top_eigenvalues(model, data=None, num_eigenvalues=1):
        ...

    top_eigenvalues(model, data, k=2)   # DeprecationWarning, num_eigenvalues=2
    ```
    """
    def decorate(function):
        signature = inspect.signature(function)
        parameters = signature.parameters
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        for old, new in renames.items():
            if old in parameters:
                raise ValueError(f"{function.__qualname__} still has the old argument `{old}`.")
            if new not in parameters and not takes_kwargs:
                raise ValueError(f"{function.__qualname__} has no argument `{new}`.")
        owner = _owner(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if any(old in kwargs for old in renames):
                try:
                    positional = signature.bind_partial(*args).arguments
                except TypeError:
                    positional = {}
                kwargs = rename_keywords(owner, kwargs, renames, given=positional)
            return function(*args, **kwargs)

        wrapper.renamed_arguments = {**getattr(function, "renamed_arguments", {}), **renames}
        return wrapper

    return decorate


def renamed_config(owner, config, renames):
    """A saved config with old keys replaced by their new names.

    A config saved before a rename records the old names; it must load to
    the same object. Warns like a call with the old names would.

    Args:
        owner: The class, for messages.
        config: The config dict.
        renames: `{old: new}`.

    Returns:
        A new dict.

    Raises:
        TypeError: if a config holds both the old and the new key.
    """
    return rename_keywords(owner, config, renames)


def renamed_attribute(old, new):
    """A property `old` that reads and writes attribute `new`, with a warning.

    Example:

    ```python
    class TopEigenvalue:
        k = renamed_attribute("k", "num_eigenvalues")
    ```
    """
    def get(self):
        warn_renamed(f"{type(self).__name__}.{old}", f"{type(self).__name__}.{new}",
                     what="Attribute")
        return getattr(self, new)

    def set(self, value):
        warn_renamed(f"{type(self).__name__}.{old}", f"{type(self).__name__}.{new}",
                     what="Attribute")
        setattr(self, new, value)

    return property(get, set, doc=f"Deprecated name of `{new}`.")


def deprecated_names(module_name, names):
    """A module `__getattr__` that serves old public names with a warning.

    Args:
        module_name: The module's `__name__`, for messages.
        names: `{old_name: (new_name, object)}`.

    Returns:
        A function to assign to the module's `__getattr__`.

    Example:

    ```python
    __getattr__ = deprecated_names(__name__, {"SpectralDensity": ("HessianSpectrum",
                                                                  HessianSpectrum)})
    ```
    """
    def __getattr__(name):
        if name in names:
            new, value = names[name]
            warn_renamed(f"{module_name}.{name}", f"{module_name}.{new}", what="Name")
            return value
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__


def _owner(function):
    name = function.__qualname__
    if name.endswith(".__init__"):
        return name[: -len(".__init__")] + "()"
    return name + "()"
