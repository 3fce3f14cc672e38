"""The one table of algorithm names, aliases, labels and default arguments.

`keras_flat.algorithms.get`, the `keras-flat` command line, the demo and the
examples all read this table, so a new rule is known everywhere once it is
registered (and the registry-driven tests cover it with no test edited).
Each rule's module registers it, next to its class.
"""

import dataclasses
import textwrap


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered algorithm.

    Attributes:
        name: The short name (`"sam"`), lower case.
        cls: The `Algorithm` subclass the name builds.
        label: The name tables and plots show (`"SAM"`).
        aliases: Other names accepted by `get` (case and dashes ignored).
        defaults: Demo settings: arguments the demo and command line use
            when the user gives none, e.g. a radius suited to the demo's
            model. They do not change the class's own defaults.
        paper: Where the rule comes from.
    """

    name: str
    cls: type
    label: str
    aliases: tuple = ()
    defaults: dict = dataclasses.field(default_factory=dict)
    paper: str = ""

    def build(self, **kwargs):
        """The algorithm with `defaults` overridden by `kwargs`."""
        return self.cls(**{**self.defaults, **kwargs})


_ENTRIES = {}
_ALIASES = {}


def normalize(name):
    """The lookup key of a name: stripped, lower case, dashes as underscores."""
    return name.strip().lower().replace("-", "_")


def register(name, cls, label, aliases=(), defaults=None, paper=""):
    """Adds an algorithm to the table; returns its `Entry`.

    Args:
        name: Short name, e.g. `"looksam"`.
        cls: The `Algorithm` subclass.
        label: Display name for tables and plots.
        aliases: Other accepted names.
        defaults: Demo settings, the arguments the demo and command line
            use by default.
        paper: Citation.

    Raises:
        ValueError: if the name or an alias is already taken.
    """
    entry = Entry(normalize(name), cls, label, tuple(normalize(a) for a in aliases),
                  dict(defaults or {}), paper)
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

    The fragments come from the rule's pieces (`Piece.label_parts`), and
    options that depart from the published rule (`Piece.variant_options`,
    e.g. SA's `center`) replace the rule's citation, so a variant is never
    labelled as the paper's algorithm: `"SA (Alg. 2), ρ=0.1"` but
    `"SA + center, antithetic, ρ=0.1"`.

    Args:
        algorithm: An `Algorithm`.
        radius: Include the radius (`ρ` or `σ`).
    """
    found = by_class(type(algorithm))
    text = found.label if found else type(algorithm).__name__
    options = getattr(algorithm, "variant_options", list)()
    if options:
        text = text.split(" (")[0] + " + " + ", ".join(options)
    extras = [part for part in getattr(algorithm, "label_parts", list)()
              if radius or not part.startswith(("ρ=", "σ="))]
    return f"{text}, {', '.join(extras)}" if extras else text


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
