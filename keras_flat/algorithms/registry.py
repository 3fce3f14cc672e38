"""The one table of algorithm names, aliases, labels and default arguments.

`keras_flat.algorithms.get`, the `keras-flat` command line, the demo and the
examples all read this table, so a new rule is known everywhere once it is
registered here (and the invariant tests in `tests/test_invariants.py` cover
it with no test edited).
"""

import dataclasses
import numbers
import textwrap


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered algorithm.

    Attributes:
        name: The short name (`"sam"`), lower case.
        cls: The `Algorithm` subclass the name builds.
        label: The name tables and plots show (`"SAM"`).
        aliases: Other names accepted by `get` (case and dashes ignored).
        defaults: Arguments the demo and command line use when the user
            gives none, e.g. a radius suited to the demo's model. They do
            not change the class's own defaults.
        test_kwargs: Non-default arguments for the invariant tests (every
            argument the class takes that changes its behaviour).
        paper: Where the rule comes from.
    """

    name: str
    cls: type
    label: str
    aliases: tuple = ()
    defaults: dict = dataclasses.field(default_factory=dict)
    test_kwargs: dict = dataclasses.field(default_factory=dict)
    paper: str = ""

    def build(self, **kwargs):
        """The algorithm with `defaults` overridden by `kwargs`."""
        return self.cls(**{**self.defaults, **kwargs})


_ENTRIES = {}
_ALIASES = {}


def normalize(name):
    """The lookup key of a name: stripped, lower case, dashes as underscores."""
    return name.strip().lower().replace("-", "_")


def register(name, cls, label, aliases=(), defaults=None, test_kwargs=None, paper=""):
    """Adds an algorithm to the table; returns its `Entry`.

    Args:
        name: Short name, e.g. `"looksam"`.
        cls: The `Algorithm` subclass.
        label: Display name for tables and plots.
        aliases: Other accepted names.
        defaults: Arguments the demo and command line use by default.
        test_kwargs: Non-default arguments the invariant tests use.
        paper: Citation.

    Raises:
        ValueError: if the name or an alias is already taken.
    """
    entry = Entry(normalize(name), cls, label, tuple(normalize(a) for a in aliases),
                  dict(defaults or {}), dict(test_kwargs or {}), paper)
    for key in (entry.name,) + entry.aliases:
        if key in _ALIASES:
            raise ValueError(
                f"Algorithm name {key!r} is already registered for "
                f"{_ALIASES[key].cls.__name__}."
            )
    _ENTRIES[entry.name] = entry
    for key in (entry.name,) + entry.aliases:
        _ALIASES[key] = entry
    return entry


def unregister(name):
    """Removes a registered algorithm and its aliases; returns its `Entry`.

    Args:
        name: Its registered name or an alias.

    Raises:
        ValueError: if the name is not registered.
    """
    found = entry(name)
    del _ENTRIES[found.name]
    for key in (found.name,) + found.aliases:
        del _ALIASES[key]
    return found


def names():
    """The registered short names, in registration order."""
    return list(_ENTRIES)


def entries():
    """The registered entries, in registration order."""
    return list(_ENTRIES.values())


def lookup(name):
    """The `Entry` of a name or alias, or None."""
    return _ALIASES.get(normalize(name))


def entry(name):
    """The `Entry` of a name or alias; raises `ValueError` naming the choices."""
    found = lookup(name)
    if found is None:
        raise ValueError(
            "Unknown algorithm. Argument `algorithm` must be an Algorithm "
            f"instance, a config dict, None or one of {sorted(_ALIASES)}. "
            f"Received: algorithm={name!r}."
        )
    return found


def by_class(cls):
    """The `Entry` whose class is exactly `cls`, or None."""
    for found in _ENTRIES.values():
        if found.cls is cls:
            return found
    return None


def label(algorithm, radius=True):
    """A table label: the registered name, its options and (optionally) radius.

    Options that depart from the published rule (`center`, `antithetic`)
    replace the rule's citation, so a variant is never labelled as the
    paper's algorithm: `"SA (Alg. 2), ρ=0.1"` but `"SA + center, antithetic,
    ρ=0.1"`.

    Args:
        algorithm: An `Algorithm`.
        radius: Include the radius (`rho` or `sigma`).
    """
    found = by_class(type(algorithm))
    text = found.label if found else type(algorithm).__name__
    options = [o for o in ("center", "antithetic") if getattr(algorithm, o, False)]
    if options:
        text = text.split(" (")[0] + " + " + ", ".join(options)
    extras = []
    for key, symbol in (("rho", "ρ"), ("sigma", "σ")):
        value = getattr(algorithm, key, None)
        if radius and value is not None:
            extras.append(f"{symbol}={describe_radius(value)}")
    for option in ("interval", "k"):
        value = getattr(algorithm, option, 1)
        if isinstance(value, int) and value > 1:
            extras.append(f"{option}={value}")
    start = getattr(algorithm, "start", None)
    if start is not None:
        extras.append(f"start={start:g}")
    return f"{text}, {', '.join(extras)}" if extras else text


def describe_radius(value):
    """A radius for a label: `0.05`, or a schedule's class name."""
    return f"{value:g}" if isinstance(value, numbers.Real) else type(value).__name__


#: The line of a docstring that `fill_docstring` replaces with `describe()`.
PLACEHOLDER = "{registered_rules}"


def describe(indent="", width=79):
    """The registered algorithms as a docstring list, one item per name.

    Each item gives the name, its aliases, the class, the label tables and
    plots show, and the citation: a docstring built from it lists every rule
    registered when it is built, with nothing to keep in step by hand.

    Args:
        indent: Prefix of every line (the docstring's indentation).
        width: Longest line, including `indent`.

    Returns:
        A string of `- ` items, without a final newline.

    Example:

    >>> print(keras_flat.algorithms.registry.describe())  # doctest: +ELLIPSIS
    - "none", also "plain", "no_perturbation": `NoPerturbation`, shown as "plain
      SGD".
    - "sam": `SAM`, shown as "SAM". Foret et al., ICLR 2021, arXiv 2010.01412.
    ...
    """
    items = []
    for found in _ENTRIES.values():
        aliases = ", ".join(f'"{alias}"' for alias in found.aliases)
        text = (f'"{found.name}"' + (f", also {aliases}" if aliases else "")
                + f': `{found.cls.__name__}`, shown as "{found.label}".'
                + (f" {found.paper}." if found.paper else ""))
        items.append(textwrap.fill(text, width=width, initial_indent=indent + "- ",
                                   subsequent_indent=indent + "  ", break_long_words=False,
                                   break_on_hyphens=False))
    return "\n".join(items)


def fill_docstring(docstring, placeholder=PLACEHOLDER):
    """`docstring` with its placeholder line replaced by `describe()`, as indented.

    Args:
        docstring: A docstring, or None (under `python -OO`).
        placeholder: The text of the line to replace.

    Returns:
        The docstring (None stays None).

    Example:

    ```python
    class MyModel(keras.Model):
        '''Args:
            algorithm: A name, one of

                {registered_rules}
        '''
    MyModel.__doc__ = registry.fill_docstring(MyModel.__doc__)
    ```
    """
    if docstring is None:
        return None
    lines = docstring.split("\n")
    for i, line in enumerate(lines):
        if line.strip() == placeholder:
            lines[i] = describe(indent=line[:len(line) - len(line.lstrip())])
    return "\n".join(lines)
